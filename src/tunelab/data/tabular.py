"""CSV / TSV and Parquet rows one at a time, with their header: what `read_table` lists for a small file and what
data/load.py parses a part at a time for a large one (never the file's text, nor all its rows, in memory). JSONL's
twin is data/jsonl.py."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tunelab.data.decode import decoded_lines, wide_bom
from tunelab.data.jsonl import BAD_JSON
from tunelab.data.records import Record
from tunelab.errors import DataError

csv.field_size_limit(1 << 30)  # a single multi-megabyte text is valid input


def header_hint(columns: list[str], source: str) -> str:
    """`; the header separates its names with ';', not ','` where a CSV / TSV header names its columns split at
    another mark: a Chinese input method's full-width comma (`text，label`), or ';' in a header read as one column
    (what Excel writes a CSV with in much of Europe, pandas with `sep=';'`); '' otherwise. Said, not guessed: such a
    file is not read at its ';' (a header alone cannot tell the rows are cut the same way, and a row read at another
    mark is a row misread)."""
    expected = "a tab" if source.lower().endswith((".tsv", ".tab")) else "','"
    if any("\uff0c" in c for c in columns):
        return f"; the header separates its names with '，' (U+FF0C, a full-width comma), not {expected}"
    if len(columns) == 1 and sum(bool(part.strip()) for part in columns[0].split(";")) > 1:
        between = "tabs" if expected == "a tab" else "commas"
        return f"; the header separates its names with ';', not {expected}: save the file with {between} between fields"
    return ""


def _csv_lines(path: Path) -> Iterator[str]:
    """The file's lines one at a time, split at "\n", "\r\n" and a lone "\r" (old Mac files), as csv wants them (a
    text file opened with newline=""), a UTF-8 BOM dropped; a UTF-16 / UTF-32 file (Excel's "Unicode text") read as
    its byte-order mark says (`decode.decoded_lines`). Bad bytes: the file is scanned again to name their line and
    column."""
    if wide_bom(path) is not None:
        yield from (line for _, line in decoded_lines(path))
        return
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for number, line in enumerate(f):
                yield line.removeprefix("\ufeff") if number == 0 else line
    except UnicodeDecodeError as exc:
        for _ in decoded_lines(path):  # raises the DataError that names the bad byte's line and column
            pass
        raise DataError(str(path), None, "bytes", f"not valid UTF-8 ({exc.reason})") from None


def _quotes_parse(path: Path, delimiter: str) -> bool:
    """Whether the whole file reads under strict CSV quoting (a pass through it at the csv module's C speed) without
    a quoted field that swallowed rows (`_swallows_rows`)."""
    reader = csv.reader(_csv_lines(path), delimiter=delimiter, strict=True)
    width, last = None, 0
    try:
        for row in reader:
            if width is None and row and (len(row) > 1 or row[0].strip()):
                width = len(row)
            elif reader.line_num > last + 1 and (width or 0) > 1 and _swallows_rows(row, delimiter, width):
                return False
            last = reader.line_num
    except csv.Error:
        return False
    return True


def _swallows_rows(row: list[str], delimiter: str, width: int) -> bool:
    """Whether a row read over several lines is rows run together by one stray quote: each of its lines, split at
    the delimiter with its quotes plain, has the header's `width` (`"Best phone ever<TAB>1` ... `Screen is 6.1"<TAB>1`,
    three rows read as one). Asked of TSV only, where text rarely holds a tab: a CSV text may hold a comma per line."""
    lines = delimiter.join(row).split("\n")
    return len(lines) > 1 and all(len(line.rstrip("\r").split(delimiter)) == width for line in lines)


def _quoted(line: str, pos: int, delimiter: str) -> tuple[str, int] | None:
    """(the text, the index after its closing quote) of the field at line[pos] if csv.writer could have written it
    quoted on this line (`_line_fields`), else None."""
    parts, j = [], pos + 1
    while (k := line.find('"', j)) != -1:
        if line.startswith('"', k + 1):  # a doubled quote
            parts.append(line[j:k + 1])
            j = k + 2
            continue
        if k + 1 < len(line) and line[k + 1] != delimiter:  # text after the closing quote: not csv.writer's
            return None
        text = "".join([*parts, line[j:k]])
        if text and delimiter not in text and '"' not in text:  # csv.writer would have written it bare
            return None
        return text, k + 1
    return None  # no closing quote on this line


def _line_fields(line: str, delimiter: str) -> list[str]:
    """The fields of one line of a TSV that mixes csv.writer's quoting with hand-written quotes: a field that starts
    with `"` and closes on this line as csv.writer writes one (a `"` then the delimiter or the line's end, quotes
    inside doubled, a text that needs quoting: it holds the delimiter or a quote, or is empty) is read as quoted;
    every other quote is a plain character and the field runs to the next delimiter."""
    fields, pos = [], 0
    while True:
        got = _quoted(line, pos, delimiter) if line.startswith('"', pos) else None
        if got is not None:
            text, pos = got
        else:
            end = line.find(delimiter, pos)
            text, pos = (line[pos:], len(line)) if end == -1 else (line[pos:end], end)
        fields.append(text)
        if pos >= len(line):
            return fields
        pos += 1  # past the delimiter


def _mixed_rows(lines: Iterator[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each line of a TSV whose quotes do not parse as CSV quoting (GLUE / MNLI files: `"Yes," he
    said.`, maybe mixed with rows csv.writer quoted): one row per line, as TSV has no quoting. A line read with
    csv.writer's quoted fields (`_line_fields`) is taken that way if that gives the header's number of fields, else
    split at each delimiter with its quotes plain. A quoted field is never read across lines: a stray opening quote
    could then swallow the rows up to the next quote that looks like a close (a csv.writer field holding a line
    break, in such a file, is an error naming its line)."""
    width: int | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line:  # an empty line, as csv.reader gives it
            yield number, []
            continue
        plain = line.split(delimiter)
        fields = _line_fields(line, delimiter) if '"' in line else plain
        if width is not None and len(fields) != width:
            fields = plain
        if width is None and (len(fields) > 1 or fields[0].strip()):  # the header (not a blank line before it)
            width = len(fields)
        yield number, fields


def _empty_cells(rows: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, list[str]]]:
    """The rows without empty lines (no rows, as pandas' `skip_blank_lines` has it) nor, in a file of several
    columns, lines of spaces only. In a one-column file a line of spaces or `""` is a cell, a row (its empty text then
    refused at its line, never silently left out so that predictions no longer line up with the sheet)."""
    width = 0
    for line, row in rows:
        if not row or (len(row) == 1 and not row[0].strip() and width != 1):
            continue
        width = width or len(row)
        yield line, row


def iter_delimited(path: Path, delimiter: str) -> tuple[list[str], Iterator[Record]]:
    """(the header, the rows one at a time): a large CSV is never held whole, nor all its rows (data/load.py).
    Blank lines are no rows, except between the rows of a one-column file (`_empty_cells`). Strict quoting: a quote
    left open (to the file's end, or closed by a stray quote rows later) or text after a
    closing quote is an error naming the line the field starts on — never rows silently merged or quotes dropped.
    A TSV whose quotes do not parse that way (`"Yes," he said.<TAB>entailment`, as GLUE / MNLI files hold them, maybe
    mixed with lines csv.writer quoted) is read by `_mixed_rows`, one row per line (one more pass to find out)."""
    mixed = delimiter == "\t" and not _quotes_parse(path, delimiter)
    start = 1

    def rows() -> Iterator[tuple[int, list[str]]]:
        nonlocal start
        try:
            yield from _empty_cells(_mixed_rows(_csv_lines(path), delimiter) if mixed else parsed())
        except csv.Error as exc:
            said = str(exc).replace("\t", "\\t")  # `'\t' expected after '"'`, not a raw tab
            quote = '"' in said or "quote" in said or "unexpected end of data" in said
            hint = (" (a field that starts with \" is quoted up to the next \" that ends a field: close it, double a "
                    "quote inside it, or write the text without the leading quote)") if quote else ""
            raise DataError(str(path), start, "csv", f"{said}{hint}{header_hint(header, str(path))}") from None

    def parsed() -> Iterator[tuple[int, list[str]]]:
        nonlocal start
        reader = csv.reader(_csv_lines(path), delimiter=delimiter, strict=True)
        for row in reader:
            line, start = start, reader.line_num + 1
            yield line, row

    header: list[str] = []  # (none while the header itself is read)
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
                raise DataError(str(path), line, "row", expected + header_hint(header, str(path)))
            yield Record(str(path), line, dict(zip(header, row, strict=True)))

    return header, records()


def _unique_columns(path: Path, names: list[str]) -> list[str]:
    """`names`, or a DataError naming one given twice (Parquet and Arrow allow it; a row, a dict, would keep only
    the last column's value)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(str(path), None, name, "duplicate column name: a row would keep only the last column's "
                            "value; give each column its own name")
        seen.add(name)
    return names


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

    return _unique_columns(path, list(source.schema_arrow.names)), records()


def _arrow_batches(path: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """An Arrow IPC file in either of its formats — the stream format (`datasets`' save_to_disk) or the file format
    (`pyarrow.ipc.new_file`, Feather v2), told apart by the file format's magic bytes — a record batch at a time,
    read (not mapped: mapped pages would count in the process's memory)."""
    with path.open("rb") as f:
        magic = f.read(6)
    source = pa.OSFile(str(path), "rb")
    if magic == b"ARROW1":
        reader = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    stream = pa.ipc.open_stream(source)
    return stream.schema, iter(stream)


_ROW_FILES = (".parquet", ".arrow", ".feather", ".jsonl", ".csv", ".tsv")  # what a data folder must not mix


def folder_files(path: Path) -> list[Path]:
    """The data files of a Hugging Face `datasets` folder (`save_to_disk`: the Arrow files named in state.json) or of
    a folder of Parquet or Arrow files (in name order)."""
    if (path / "dataset_dict.json").is_file():
        splits = _json_field(path / "dataset_dict.json", "splits")
        raise DataError(str(path), None, None, "a DatasetDict: give one split's folder, e.g. "
                        + ", ".join(str(path / s) for s in splits[:3] if isinstance(s, str)))
    named = _json_field(path / "state.json", "_data_files") if (path / "state.json").is_file() else []
    if named:  # a datasets save_to_disk folder: its files, in its order
        if not all(isinstance(f, dict) and isinstance(f.get("filename"), str) for f in named):
            raise DataError(str(path / "state.json"), None, "_data_files", "expected a list of {\"filename\": ...}")
        files = [path / f["filename"] for f in named]
    else:
        files = sorted(path.glob("*.parquet")) or sorted(path.glob("*.arrow"))
        others = sorted({p.suffix for p in path.iterdir() if p.suffix in _ROW_FILES and not p.name.startswith(".")}
                        - {files[0].suffix if files else ""})
        if files and others:  # read one kind, the rest would be silently left out
            raise DataError(str(path), None, None, f"a folder of {files[0].suffix} files that also holds "
                            f"{', '.join(others)} files: keep one format per folder, or name the file")
    if not files:
        raise DataError(str(path), None, None, "a folder without data: expected a datasets save_to_disk folder or "
                        ".parquet / .arrow files")
    return files


def _json_field(path: Path, field: str) -> list:
    """The list `field` of the JSON object in `path` ([] where it has none); a file that is not such an object is
    a DataError naming it."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except BAD_JSON as exc:  # bad JSON, bad UTF-8 (UnicodeDecodeError is a ValueError)
        raise DataError(str(path), None, None, f"cannot read: {exc}") from None
    value = obj.get(field) if isinstance(obj, dict) else None
    if not isinstance(value, list | None):
        raise DataError(str(path), None, field, f"expected a list, got {type(value).__name__}")
    return value or []


def iter_arrow(path: Path, batch_rows: int = 65_536) -> tuple[list[str], Iterator[Record]]:
    """(the columns, the rows `batch_rows` at a time) of an Arrow / Feather file (`.arrow`, `.feather`) or of a
    dataset folder (`folder_files`, in order; each row holding every file's columns, as `pyarrow.concat_tables` would
    give them, and named by its own file and row number there): never held whole as Python rows."""
    files = folder_files(path) if path.is_dir() else [path]

    def opened(f: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        try:
            if f.suffix == ".parquet":
                source = pq.ParquetFile(f)
                return source.schema_arrow, source.iter_batches(batch_size=batch_rows)
            return _arrow_batches(f)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise DataError(str(f), None, None, f"cannot read: {exc}") from None

    schemas = [opened(f)[0] for f in files]
    for f, schema in zip(files, schemas, strict=True):
        _unique_columns(f, schema.names)
    try:
        names = pa.unify_schemas(schemas, promote_options="default").names
    except (pa.ArrowException, ValueError) as exc:
        raise DataError(str(path), None, None, f"cannot read: the files' columns differ ({exc})") from None

    def records() -> Iterator[Record]:
        for f in files:
            _, batches = opened(f)
            number = 0
            try:
                for batch in batches:
                    whole = batch.schema.names == names  # else a file without some columns: those are None
                    for start in range(0, batch.num_rows, batch_rows):
                        for row in batch.slice(start, batch_rows).to_pylist():
                            number += 1
                            yield Record(str(f), number, row if whole else {k: row.get(k) for k in names})
            except (OSError, pa.ArrowException) as exc:  # a damaged batch or page
                raise DataError(str(f), None, None, f"cannot read: {exc}") from None

    return names, records()
