"""JSONL → `Record`s, one line at a time: `iter_jsonl` never holds the file, its lines or its rows whole, so a
10 M-row training file can be parsed and spilled a chunk at a time (data/load.py); `read_jsonl` is its list."""

from __future__ import annotations

import json
import json.scanner
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from tunelab.data.decode import decoded_lines, open_text
from tunelab.data.json_keys import duplicate_key, inner_keys, near_keys, twice
from tunelab.data.records import ItemLine, Record
from tunelab.errors import DataError
from tunelab.text.full_width import json_mark

SHARED = 10_000  # distinct short strings a JSONL file's rows share (see iter_jsonl)


BAD_JSON = (ValueError, RecursionError)  # json's errors: JSONDecodeError, and for hostile input a >4,300-digit number
# (ValueError) or nesting deeper than the interpreter's stack (RecursionError)


def json_error(exc: Exception, column: bool = True) -> str:
    """What is wrong, for one of BAD_JSON: the decoder's message (with its column; a full-width mark it stopped at
    named, `json_mark`), or the other two's."""
    if isinstance(exc, json.JSONDecodeError):
        return (f"{exc.msg} at column {exc.colno}" if column else exc.msg) + json_mark(exc.doc, exc.pos, exc.msg)
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def iter_jsonl(path: Path) -> Iterator[Record]:
    """One record per non-blank line. A JSON parser makes a new string for every key and value of every row; the
    rows keep one copy of each repeated short string instead (keys, labels, NER tags: 30 % less memory per SST-2
    row), up to SHARED distinct ones (unique short texts are not worth it). Inlined: per row it costs ~0.5 µs. A key
    given twice in one object is an error (`duplicate_key`); `keys` counts the row's as `near_keys` does, and a line
    with no more `:` than that has none twice (CPU added: ~0.1 µs an SST-2 row, 3 %; ~1.8 µs a chat row with its
    messages, 35 %, a sixth of them with a `:` in a text; the pair-keeping parse for every row: ~2 and ~3 µs)."""
    source = str(path)
    memo: dict[str, str] = {}
    get = memo.get
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except BAD_JSON as exc:
            raise DataError(str(path), number, "json", f"invalid JSON ({json_error(exc)})") from None
        if not isinstance(obj, dict):
            raise DataError(str(path), number, "json", f"expected a JSON object, got {type(obj).__name__}")
        row, keys = {}, len(obj)
        for key, value in obj.items():
            kept = get(key)
            if kept is None:
                memo[key] = kept = key
            if type(value) is str and len(value) <= 32:
                value = get(value) or (memo.setdefault(value, value) if len(memo) < SHARED else value)
            elif type(value) is list and value and type(value[0]) is str and len(value[0]) <= 32:
                value = [(get(v) or (memo.setdefault(v, v) if len(memo) < SHARED else v)) if type(v) is str else v
                         for v in value]  # (a list or object inside is the task's to refuse, not a crash here)
            elif type(value) is list or type(value) is dict:  # chat messages
                keys += inner_keys(value)
            row[kept] = value
        if line.count(":") != keys and (dup := duplicate_key(line, obj, keys)) is not None:
            raise DataError(source, number, "json", twice(dup[1], dup[0]))
        yield Record(source, number, row)


def read_jsonl(path: Path) -> list[Record]:
    return list(iter_jsonl(path))


_SPACE = re.compile(r"[ \t\n\r]*")
_DECODE = json.JSONDecoder().raw_decode
_NUMBER_REST = re.compile(r"[0-9.eE+-]*")
JSON_BLOCK = 1 << 20  # characters of a JSON array (or a SQuAD object) read at a time


class _Blocks:
    """A text file read `block` characters at a time: `buf[pos:]` is what is not yet read, `line` the line buf[0] is
    on, `eof` whether the file's end is in `buf`; `buf[start:pos]` the text of the value `value` read last; `buf[seen]`
    is on line `seen_line` (`start_line` counts on from there)."""

    def __init__(self, f: TextIO, block: int) -> None:
        self.f, self.block = f, block
        self.buf, self.pos, self.line, self.eof, self.start = "", 0, 1, False, 0
        self.seen, self.seen_line = 0, 1
        self.refill()

    def start_line(self) -> int:
        """The line the value read last starts on (its lines counted on from the last one asked, never from buf[0])."""
        self.seen_line += self.buf.count("\n", self.seen, self.start)
        self.seen = self.start
        return self.seen_line

    def refill(self) -> None:
        """Drop what was read; read on, as much again as is left unread (at least a block): an item that spans many
        blocks is read in a time linear in its length."""
        self.line += self.buf.count("\n", 0, self.pos)
        want = max(self.block, len(self.buf) - self.pos)
        more = self.f.read(want)
        self.buf, self.pos, self.eof = self.buf[self.pos :] + more, 0, len(more) < want
        self.seen, self.seen_line = 0, self.line

    def peek(self) -> str:
        """The next character after blanks ("" at the file's end)."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr] - always matches
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos : self.pos + 1]
            self.refill()

    def error(self, msg: str, line_in_buf: int | None = None) -> DataError:
        line = self.buf.count("\n", 0, self.pos) + 1 if line_in_buf is None else line_in_buf
        return DataError(self.f.name, self.line + line - 1, "json", f"invalid JSON ({msg})")

    def value(self) -> Any:
        """The JSON value at `pos`. One the block's end may have cut is read on: a decode error at the buffer's last
        characters (a cut literal such as `-Infinity`, a number or an escape) or an unterminated string, a value other
        than an object that ends where the buffer does (`1.5` cut to `1`), or a number followed by nothing but number
        characters up to the buffer's end (`1.5` cut to `1.`: the decoder reads `1`); any other error is the file's
        own, named at once."""
        while True:
            try:
                obj, end = _DECODE(self.buf, self.pos)
                rest = _NUMBER_REST.match(self.buf, end).end()  # type: ignore[union-attr] - always matches
                number_cut = type(obj) in (int, float) and rest == len(self.buf)
                if (end < len(self.buf) and not number_cut) or self.eof or isinstance(obj, dict):
                    self.start, self.pos = self.pos, end
                    return obj
            except json.JSONDecodeError as exc:
                cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - 9
                if self.eof or not cut:
                    raise self.error(exc.msg + json_mark(exc.doc, exc.pos, exc.msg), exc.lineno) from None
            except BAD_JSON as exc:  # not a decode error: no refill mends it
                raise self.error(json_error(exc), None) from None
            self.refill()

    def items(self) -> Iterator[Any]:
        """The values of the JSON array whose `[` is at `pos`, one at a time; `pos` ends after its `]`."""
        self.pos += 1
        c = self.peek()
        if c == "]":  # an empty array
            self.pos += 1
        while c != "]":
            yield self.value()
            c = self.peek()
            if c not in (",", "]"):
                raise self.error("Expecting ',' delimiter" + json_mark(self.buf, self.pos, "Expecting ',' delimiter"))
            self.pos += 1
            if c == ",":
                self.peek()  # raw_decode reads from the value's first character, not from blanks


def _utf8_error(path: Path, exc: UnicodeDecodeError) -> DataError:
    """What a block read that hit a bad byte raises: `decoded_lines` names its line and column."""
    for _ in decoded_lines(path):  # raises that DataError
        pass
    return DataError(str(path), None, "bytes", f"not valid UTF-8 ({exc.reason})")


def iter_json_array(path: Path, block: int | None = None) -> Iterator[Record]:
    """The objects of a file holding one JSON array, one at a time, each at the line it starts on and its row, its
    place in the array from 1 (`ItemLine`: what `read_table` lists too): the text is read `block` characters at a
    time, never whole; a parse error names its line."""
    try:
        with open_text(path, newline="") as f:  # lines as JSON counts them: at "\n" only
            text = _Blocks(f, block or JSON_BLOCK)
            if text.peek() != "[":
                raise text.error("Expecting '['")
            for number, obj in enumerate(text.items(), start=1):
                line = ItemLine(text.start_line(), number)
                if not isinstance(obj, dict):
                    raise DataError(str(path), line, "json", f"expected a JSON object, got {type(obj).__name__}")
                colons = text.buf.count(":", text.start, text.pos)  # no more than its keys: none twice
                if colons != len(obj) and colons != (keys := near_keys(obj)) and \
                        (dup := duplicate_key(text.buf, obj, keys, text.start, text.pos)) is not None:
                    raise DataError(str(path), line, "json", twice(dup[1], dup[0]))
                yield Record(str(path), line, obj)
            if text.peek():
                raise text.error("Extra data")
    except UnicodeDecodeError as exc:
        raise _utf8_error(path, exc) from None


_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # what raw_decode calls, without its wrapper


def item_lines(text: str, count: int) -> list[int]:
    """The line each of the `count` items of the JSON array `text` (valid JSON: parsed whole before) starts on, as
    `iter_json_array` names them: the items of an array written on one line all on that line, at no cost; else each
    item's end found by the decoder again (~1.5 µs an SST-2 row) and the lines counted between their starts."""
    pos = _SPACE.match(text, text.index("[") + 1).end()  # type: ignore[union-attr] - always matches
    first = 1 + text.count("\n", 0, pos)
    if not count or text.find("\n", pos, text.rindex("]")) == -1:
        return [first] * count
    lines, line, seen = [], first, pos
    while True:
        line += text.count("\n", seen, pos)
        lines.append(line)
        seen = pos
        pos = _SPACE.match(text, _SCAN(text, pos)[1]).end()  # type: ignore[union-attr] - always matches
        if text[pos] == "]":
            return lines
        pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr] - always matches


def squad_records(path: Path, i: int, article: Any) -> Iterator[Record]:
    """The questions of SQuAD article `data[i]` (`{"title", "paragraphs": [{"context", "qas": [...]}]}`), one
    record each: `{id, title, context, question, answers}`; `is_impossible: true` means no answers. The record's
    source names its place (`file.json: data[3].paragraphs[0].qas[2]`); it has no line."""

    def items(value: Any, where: str, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise DataError(f"{path}: {where}", None, field, f"expected a list, got {type(value).__name__}")
        return value

    if not isinstance(article, dict):
        raise DataError(f"{path}: data[{i}]", None, None, "expected a JSON object")
    for j, para in enumerate(items(article.get("paragraphs"), f"data[{i}]", "paragraphs")):
        where = f"data[{i}].paragraphs[{j}]"
        if not isinstance(para, dict):
            raise DataError(f"{path}: {where}", None, None, "expected a JSON object")
        for k, qa in enumerate(items(para.get("qas"), where, "qas")):
            if not isinstance(qa, dict):
                raise DataError(f"{path}: {where}.qas[{k}]", None, None, "expected a JSON object")
            row = {key: qa[key] for key in ("id",) if key in qa}
            if "title" in article:
                row["title"] = article["title"]
            if "context" in para:
                row["context"] = para["context"]
            row.update({key: value for key, value in qa.items() if key not in ("id", "is_impossible")})
            if qa.get("is_impossible") is True:
                row["answers"] = []
            yield Record(f"{path}: {where}.qas[{k}]", None, row)


def _squad_articles(path: Path, block: int | None = None, check: bool = True) -> Iterator[Any]:
    """The items of the `data` array of a file holding one JSON object, one at a time (the object's other values
    are read and dropped); nothing when it has no `data` array. With `check`, a key twice in the object or in an
    article is an error (`json_shape` looks without)."""
    with open_text(path, newline="") as f:
        text = _Blocks(f, block or JSON_BLOCK)
        if text.peek() != "{":
            raise text.error("Expecting '{'")
        text.pos += 1
        c = text.peek()
        if c == "}":  # an empty object
            text.pos += 1
        seen: set[str] = set()
        while c != "}":
            key = text.value() if text.peek() == '"' else None
            if key is None or text.peek() != ":":
                raise text.error("Expecting property name and ':'")
            text.pos += 1
            if key == "data" and key in seen:  # json.loads would keep the last; the articles already read stand
                raise text.error("a second \"data\" key in the object: one list of SQuAD articles per file")
            if key in seen and check:
                raise DataError(str(path), text.line + text.buf.count("\n", 0, text.pos), "json", twice(key))
            seen.add(key)
            if text.peek() == "[" and key == "data":  # (peek also moves past the blanks before the value)
                for i, article in enumerate(text.items()):
                    if check and (dup := duplicate_key(text.buf, article, 0, text.start, text.pos)) is not None:
                        inside = f"data[{i}]" + (f".{dup[0]}" if dup[0] and not dup[0].startswith("[") else dup[0])
                        raise DataError(f"{path}: {inside}", None, "json", twice(dup[1]))
                    yield article
            else:
                text.value()
            c = text.peek()
            if c not in (",", "}"):
                raise text.error("Expecting ',' delimiter")
            text.pos += 1
        if text.peek():
            raise text.error("Extra data after the SQuAD object: a SQuAD .json file holds one object")


def iter_squad(path: Path, block: int | None = None) -> Iterator[Record]:
    """The questions of a SQuAD `.json` file (`squad_records`), read `block` characters at a time and parsed one
    article at a time: the same records as the whole parse (data/readers.py), never the file held whole."""
    try:
        for i, article in enumerate(_squad_articles(path, block)):
            yield from squad_records(path, i, article)
    except UnicodeDecodeError as exc:
        raise _utf8_error(path, exc) from None


def json_shape(path: Path, peek: int = 1 << 20) -> str:
    """What a `.json` file holds, from its start: "array" (one JSON array of rows), "lines" (one object per line,
    the first line a row of its own), "squad" (one object whose `data` holds SQuAD articles: read an article at a
    time by `iter_squad`) or "object" (any other one object over the whole file, read whole)."""
    with open_text(path, errors="replace") as f:
        head = f.read(peek)
    text = head.lstrip()
    if text.startswith("["):
        return "array"
    first, newline, _ = text.partition("\n")
    if newline:
        try:
            obj = json.loads(first)
        except BAD_JSON:
            obj = None
        if obj is not None:
            data = obj.get("data") if isinstance(obj, dict) else None
            return "squad" if isinstance(data, list) and data and _is_article(data[0]) else "lines"
    try:  # one object over several lines (or one line): SQuAD if its first article is one
        article = next(_squad_articles(path, check=False), None)
    except (DataError, UnicodeDecodeError):
        return "object"
    return "squad" if _is_article(article) else "object"


def _is_article(value: Any) -> bool:
    """Whether `value` is a SQuAD article (an object with `paragraphs`): `json_shape`'s one test for SQuAD."""
    return isinstance(value, dict) and "paragraphs" in value
