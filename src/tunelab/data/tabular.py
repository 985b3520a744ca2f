"""CSV / TSV and Parquet rows one at a time, with their header: what `read_table` lists for a small file and what
data/load.py parses a part at a time for a large one (never the file's text, nor all its rows, in memory). JSONL's
twin is data/jsonl.py."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tunelab.data.jsonl import decoded_lines
from tunelab.data.records import Record
from tunelab.errors import DataError

csv.field_size_limit(1 << 30)  # a single multi-megabyte text is valid input


def _csv_lines(path: Path) -> Iterator[str]:
    """The file's lines one at a time, split at "\n", "\r\n" and a lone "\r" (old Mac files), as csv wants them (a
    text file opened with newline=""), a UTF-8 BOM dropped. Bad bytes: the file is scanned again to name their line
    and column."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for number, line in enumerate(f):
                yield line.removeprefix("\ufeff") if number == 0 else line
    except UnicodeDecodeError as exc:
        for _ in decoded_lines(path):  # raises the DataError that names the bad byte's line and column
            pass
        raise DataError(str(path), None, "bytes", f"not valid UTF-8 ({exc.reason})") from None


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


def iter_parquet(path: Path, batch_rows: int = 65_536) -> tuple[list[str], Iterator[Record]]:
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
        except (OSError, pa.ArrowException) as exc:  # a damaged page or row group (pyarrow's IOError is OSError)
            raise DataError(str(path), number + 1, None, f"cannot read Parquet: {exc}") from None

    return list(source.schema_arrow.names), records()
