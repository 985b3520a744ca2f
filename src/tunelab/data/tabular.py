"""CSV / TSV and Parquet rows one at a time, with their header: what `read_table` lists for a small file and what
data/load.py parses a part at a time for a large one (never the file's text, nor all its rows, in memory). JSONL's
twin is data/jsonl.py."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tunelab.data.jsonl import decoded_lines
from tunelab.data.records import Record
from tunelab.errors import DataError

csv.field_size_limit(1 << 30)  # a single multi-megabyte text is valid input

_LONE_CR = re.compile(r"(?<=\r)(?!\n)")  # a line break that is a lone "\r" (old Mac files): csv needs it split


def _csv_lines(path: Path) -> Iterator[str]:
    """The file's lines one at a time, as a text file opened with newline="" gives them to csv."""
    for _, line in decoded_lines(path):
        if "\r" in line:
            yield from (piece for piece in _LONE_CR.split(line) if piece)
        else:
            yield line


def iter_delimited(path: Path, delimiter: str) -> tuple[list[str], Iterator[Record]]:
    """(the header, the rows one at a time): a large CSV is never held whole, nor all its rows (data/load.py)."""
    reader = csv.reader(_csv_lines(path), delimiter=delimiter)
    start = 1

    def rows() -> Iterator[tuple[int, list[str]]]:
        nonlocal start
        try:
            for row in reader:
                line, start = start, reader.line_num + 1
                if row and not (all(not cell.strip() for cell in row) and len(row) <= 1):  # else a blank line
                    yield line, row
        except csv.Error as exc:
            raise DataError(str(path), start, "csv", str(exc)) from None

    lines = rows()
    first = next(lines, None)
    if first is None:
        return [], iter(())
    header = [h.strip() for h in first[1]]
    named = [h for h in header if h]
    if len(set(named)) < len(named):  # a dict of the row would silently keep only the last one
        dup = next(h for h in named if named.count(h) > 1)
        raise DataError(str(path), first[0], dup, "duplicate column name in the header")

    def records() -> Iterator[Record]:
        for line, row in lines:
            if len(row) != len(header):
                expected = f"expected {len(header)} fields ({', '.join(header)}), got {len(row)}"
                raise DataError(str(path), line, "row", expected)
            yield Record(str(path), line, dict(zip(header, row, strict=True)))

    return header, records()


def iter_parquet(path: Path, batch_rows: int) -> tuple[list[str], Iterator[Record]]:
    """(the columns, the rows one record batch at a time): a large Parquet file is never held whole."""
    try:
        source = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(str(path), None, None, f"cannot read Parquet: {exc}") from None

    def records() -> Iterator[Record]:
        number = 0
        try:
            for batch in source.iter_batches(batch_size=batch_rows):
                for row in batch.to_pylist():
                    number += 1
                    yield Record(str(path), number, row)
        except pa.ArrowException as exc:
            raise DataError(str(path), number + 1, None, f"cannot read Parquet: {exc}") from None

    return list(source.schema_arrow.names), records()
