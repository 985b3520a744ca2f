"""JSONL / JSON / CSV / TSV / Parquet / plain text → `Table` of `Record`s that remember their file and line.

Every malformed file or row raises `DataError("file:line: field: problem")`; nothing is dropped.
Accepted as valid: a UTF-8 BOM, UTF-16 / UTF-32 with their BOM (data/decode.py), CRLF line ends, blank lines
(skipped, not rows), quoted CSV fields holding commas and newlines, any Unicode text. A `.json` file in SQuAD shape
(`{"data": [...]}`) becomes one record per question, placed by its index path instead of a line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tunelab.data.conll import iter_conll, looks_like_conll
from tunelab.data.decode import decode_whole, numbered_lines, pieces, utf8_lines
from tunelab.data.json_keys import duplicate_key, near_keys, surely_once, twice
from tunelab.data.jsonl import (
    BAD_JSON,
    item_lines,
    iter_json_array,
    iter_jsonl,
    iter_squad,
    json_error,
    json_shape,
    read_jsonl,
)
from tunelab.data.records import ItemLine, Record, Table
from tunelab.data.tabular import header_hint, iter_arrow, iter_delimited, iter_parquet
from tunelab.errors import DataError, first_line
from tunelab.progress import say
from tunelab.text import unicode_problem


def _read_json(path: Path) -> list[Record]:
    shape = json_shape(path)
    if shape == "squad":  # one object holding SQuAD articles in `data`: one record per question
        return list(iter_squad(path))
    text = decode_whole(path)
    if shape == "object":  # one object, pretty-printed over several lines: one row (an empty SQuAD `data`: none)
        try:
            obj = json.loads(text)
        except BAD_JSON as exc:
            if not _second_line_a_row(text):  # one object with an error in it: the whole text's error is the one
                raise DataError(str(path), getattr(exc, "lineno", None), "json",
                                f"invalid JSON ({json_error(exc)})") from None
            obj = None  # JSON lines with a broken first line: their reader names it
        if isinstance(obj, dict):
            if (dup := duplicate_key(text, obj)) is not None:
                raise DataError(str(path), 1, "json", twice(dup[1], dup[0]))
            return [] if obj.get("data") == [] else [Record(str(path), 1, obj)]
    if not text.lstrip().startswith("["):
        return read_jsonl(path)  # a .json file with one object per line
    try:
        items = json.loads(text)
    except BAD_JSON as exc:
        raise DataError(str(path), getattr(exc, "lineno", None), "json",  # (no column: as the streamed parse says it)
                        f"invalid JSON ({json_error(exc, column=False)})") from None
    if not surely_once(text, items, sum(map(len, (obj for obj in items if type(obj) is dict)))):
        return list(iter_json_array(path))  # a key twice: named at its item, as the streamed parse names it
    out = []
    for i, (obj, line) in enumerate(zip(items, item_lines(text, len(items)), strict=True), start=1):
        if not isinstance(obj, dict):
            raise DataError(str(path), ItemLine(line, i), "json", f"expected a JSON object, got {type(obj).__name__}")
        out.append(Record(str(path), ItemLine(line, i), obj))
    return out


def _second_line_a_row(text: str) -> bool:
    """Whether the second non-blank line of `text` is a JSON object of its own (JSON lines, not one object)."""
    lines = (line for line in text.splitlines() if line.strip())
    second = next(lines, None) and next(lines, None)
    try:
        return second is not None and isinstance(json.loads(second), dict)
    except BAD_JSON:
        return False


def iter_txt(path: Path) -> Iterator[Record]:
    """Plain text: one record `{"text": paragraph}` per run of non-blank lines (paragraphs are separated by
    blank or whitespace-only lines; the lines of a paragraph are joined with a newline), at its first line; read
    one paragraph at a time."""
    source = str(path)
    lines: list[str] = []
    start = 0
    for number, line in numbered_lines(path):
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        elif lines:
            yield Record(source, start, {"text": "\n".join(lines)})
            lines = []
    if lines:
        yield Record(source, start, {"text": "\n".join(lines)})


def hub_dataset(spec: str) -> Any:
    """`hf:org/name` or `hf:org/name:split` (default train): a Hugging Face hub dataset through `datasets.load_dataset`
    (an optional package; the network, or its cache, must have the data): Arrow files in datasets' cache, mapped."""
    name, _, split = spec.removeprefix("hf:").partition(":")
    try:
        import datasets  # optional: pip install datasets
    except ImportError:
        raise DataError(spec, None, None, "reading a hub dataset needs the datasets package: pip install datasets") \
            from None
    from tunelab.models import hub

    ours = hub.turned_offline()
    hub.reach_hub(f"hf:{name}")  # no route to the hub: its cache only, at once (not 25 s of retries a file)
    if ours or hub.turned_offline():  # datasets' own flag follows the offline mode tunelab turned on (or off again)
        datasets.config.HF_HUB_OFFLINE = hub.turned_offline()
    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # noqa: BLE001 - offline, unknown name, unknown split: datasets' own error types
        raise DataError(spec, None, None, f"cannot load the hub dataset: {type(exc).__name__}: {first_line(exc)}") \
            from None


def iter_hub(spec: str, batch_rows: int = 65_536) -> tuple[list[str], Iterator[Record]]:
    """(the columns, the rows `batch_rows` at a time) of a hub dataset (`hub_dataset`), numbered from 1."""
    ds = hub_dataset(spec)
    try:  # datasets 5 stores mixed-type columns (chat `content`) as JSON text and decodes them in `to_list`
        from datasets.utils.json import get_json_field_paths_from_feature, json_decode_field

        json_paths = [(col, sub) for col, *sub in get_json_field_paths_from_feature(ds.features)]
    except ImportError:  # older datasets: no such columns
        json_paths = []

    def records() -> Iterator[Record]:
        number = 0
        for batch in ds.with_format("arrow").iter(batch_size=batch_rows):
            for row in batch.to_pylist():
                for col, sub in json_paths:  # as `Dataset.to_list` does
                    row[col] = json_decode_field(row[col], sub)
                number += 1
                yield Record(spec, number, row)

    return list(ds.column_names), records()


def _read_hub(spec: str) -> Table:
    columns, rows = iter_hub(spec)
    records = list(rows)
    return Table(spec, records, columns if records else None)


# file suffix → (the columns where the format names them, else None; the rows one at a time): `read_table` lists
# them; a large training file is parsed from them a part at a time, never held whole (data/load.py)
STREAMS: dict[str, Callable[[Path], tuple[list[str] | None, Iterator[Record]]]] = {
    **dict.fromkeys((".jsonl", ".ndjson"), lambda p: (None, iter_jsonl(p))),
    ".csv": lambda p: iter_delimited(p, ","), **dict.fromkeys((".tsv", ".tab"), lambda p: iter_delimited(p, "\t")),
    **dict.fromkeys((".parquet", ".pq"), iter_parquet), **dict.fromkeys((".arrow", ".feather"), iter_arrow),
    **dict.fromkeys((".conll", ".bio", ".bmes", ".iob"), lambda p: (None, iter_conll(p))),
    ".txt": lambda p: (None, iter_txt(p)),
}


def streamable(path: str | Path) -> bool:
    """Whether `row_stream` reads `path` a row at a time: `STREAMS`' formats, a `.json` array or JSON-lines `.json`
    file (SQuAD's too), an Arrow / Parquet dataset folder, an `hf:` dataset; not another one-object `.json`."""
    if isinstance(path, str) and path.startswith("hf:"):
        return True
    p = Path(path)
    suffix = p.suffix.lower()
    return p.is_dir() or suffix in STREAMS or (suffix == ".json" and json_shape(p) != "object")


def _stream(p: Path, conll_txt: bool) -> Callable[[Path], tuple[list[str] | None, Iterator[Record]]] | None:
    """How `STREAMS` reads the file; with `conll_txt` (`Task.txt_as_conll`: a task that reads tokens and tags), a
    `.txt` whose lines are CoNLL's (`looks_like_conll`) as CoNLL, not as paragraphs of text."""
    suffix = p.suffix.lower()
    if suffix == ".txt" and conll_txt and looks_like_conll(p):
        suffix = ".conll"
    return STREAMS.get(suffix)


def row_stream(path: str | Path, conll_txt: bool = False) -> tuple[list[str] | None, Iterator[Record]]:
    """(the columns where the format names them, the rows one at a time) of a `streamable` file, folder or hub
    dataset: what data/load.py parses a large training file from, a part at a time; the rows are `read_table`'s."""
    if isinstance(path, str) and path.startswith("hf:"):
        return iter_hub(path)
    p = Path(path)
    if p.is_dir():
        return iter_arrow(p)
    if p.suffix.lower() == ".json":
        shape = json_shape(p)
        return None, (iter_json_array(p) if shape == "array" else iter_squad(p) if shape == "squad" else iter_jsonl(p))
    return _stream(p, conll_txt)(p)  # type: ignore[misc] - streamable: a STREAMS suffix


def read_table(path: str | Path, conll_txt: bool = False) -> Table:
    """Read one data file (the format comes from its extension; with `conll_txt`, a `.txt` of CoNLL lines is CoNLL:
    `_stream`), a datasets / Parquet / Arrow folder, or a hub dataset named `hf:org/name[:split]`."""
    if isinstance(path, str) and path.startswith("hf:"):
        return _read_hub(path)
    p = Path(path)
    if p.is_dir():
        columns, rows = iter_arrow(p)
        records = list(rows)
        if not records:
            raise DataError(str(p), None, None, "empty dataset: no data rows")
        return Table(str(p), records, columns)
    if not p.is_file():
        raise DataError(str(p), None, None, "file not found")
    suffix = p.suffix.lower()
    stream = _stream(p, conll_txt)
    if stream is not None:
        columns, rows = stream(p)
        records = list(rows)
    elif suffix == ".json":
        records, columns = _read_json(p), None
    else:
        raise DataError(str(p), None, None, f"unknown file type {suffix!r}; use .jsonl, .json, .csv, .tsv, .parquet, "
                        ".arrow, .conll or .txt")
    if not records:
        raise DataError(str(p), None, None, "empty file: no data rows")
    return Table(str(p), records, columns)


def read_rows(path: str | Path, field: str, conll_txt: bool = False) -> Table:
    """Rows to label from a file (`predict`, `tunelab.load(...).predict(Path)`): a .txt is one text (or JSON object)
    per line, decoded as every other file (BOM, bad bytes named by line) — with `conll_txt`, one of CoNLL lines its
    sentences (`read_table`); any other format as `read_table` reads it."""
    p = Path(path)
    if p.suffix.lower() == ".txt" and p.is_file() and not (conll_txt and looks_like_conll(p)):
        return lines_table(decode_whole(p).split("\n"), str(p), field)  # (lines_table splits at a lone "\r" too)
    return read_table(p, conll_txt)


def stdin_lines(stream: Any, source: str = "<stdin>") -> list[str]:
    """The lines of standard input (`predict --input -`), each decoded as UTF-8 as a file's are (`decoded_lines`: a
    BOM dropped, bad bytes named by line and column), not read through the locale's codec (which made them unpaired
    surrogates, or a UnicodeDecodeError); a stream without bytes beneath it (`io.StringIO`) as it reads."""
    raw = getattr(stream, "buffer", None)
    if raw is None:
        return list(stream.readlines())
    return [line for _, line in utf8_lines(raw, Path(source))]


def lines_table(lines: Sequence[str], source: str, field: str) -> Table:
    """Rows to label, one per non-blank line (`predict --input -`, a .txt file for predict): a line that starts
    with `{` is a JSON object (JSONL), any other line the text of `field`. A lone "\r" (old Mac files) ends a line
    as "\n" and "\r\n" do."""
    records: list[Record] = []
    blank = skipped = 0  # blank lines so far; of them, those before a row (they shift the outputs)
    for number, line in enumerate((piece for raw in lines for piece in pieces(raw)), start=1):
        if not line.strip():
            blank += 1
            continue
        skipped = blank
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)  # valid JSON that starts with { is an object
            except BAD_JSON as e:
                raise DataError(source, number, None, f"invalid JSON: {json_error(e)}") from None
            if line.count(":") != len(obj) and (dup := duplicate_key(line, obj, near_keys(obj))) is not None:
                raise DataError(source, number, None, twice(dup[1], dup[0]))
            records.append(Record(source, number, obj))
        else:
            records.append(Record(source, number, {field: line}))
    if not records:
        raise DataError(source, None, None, "empty input: no rows")
    if skipped:  # said, as the outputs then no longer line up with the input's lines
        say(f"{source}: {skipped} blank line{'s' * (skipped > 1)} left out (no rows): the {len(records)} outputs "
            "follow the other lines, in order")
    return Table(source, records)


def rows_table(rows: Sequence[dict[str, Any]], source: str = "<input>") -> Table:
    """In-memory rows as a Table; errors name `source:N` (N: the row's 1-based position)."""
    return Table(source, [Record(source, i, r) for i, r in enumerate(rows, start=1)])


def require_field(record: Record, name: str, columns: list[str] | None) -> Any:
    """The value of `name`, or a DataError naming the missing field (the header line for CSV)."""
    if name not in record.data:
        if columns is not None:  # (a header split at another mark: said so)
            raise DataError(record.source, 1, name,
                            f"missing column (columns: {', '.join(columns)}){header_hint(columns, record.source)}")
        raise DataError(record.source, record.line, name, f"missing field ({row_has(record.data)})")
    return record.data[name]


def row_has(row: dict[str, Any]) -> str:
    """What a row missing a field holds instead (`the row has: txt, label`), as a CSV's refusal names its columns:
    a key spelt another way shows at once. At most 8 names, each cut to 40 characters; one not plain: its repr."""
    if not row:
        return "the row has no fields"
    names = [k if isinstance(k, str) and k.isprintable() and k.strip() == k and k else repr(k) for k in list(row)[:8]]
    more = f" and {len(row) - 8} more" if len(row) > 8 else ""
    return "the row has: " + ", ".join(n if len(n) <= 40 else n[:39] + "…" for n in names) + more


def require_text(record: Record, name: str, columns: list[str] | None) -> str:
    value = require_field(record, name, columns)
    if value is None:
        raise DataError(record.source, record.line, name, "is null; expected text")
    if not isinstance(value, str):
        raise DataError(record.source, record.line, name, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise DataError(record.source, record.line, name, "empty text")
    check_unicode(record, name, value)
    return value


def check_unicode(record: Record, name: str, value: str) -> None:
    """Reject text holding an unpaired surrogate (`text.unicode_problem`)."""
    if (problem := unicode_problem(value)) is not None:
        raise DataError(record.source, record.line, name, problem)
