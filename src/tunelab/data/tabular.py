"""CSV / TSV and Parquet rows one at a time, with their header: what `read_table` lists for a small file and what
data/load.py parses a part at a time for a large one (never the file's text, nor all its rows, in memory). JSONL's
twin is data/jsonl.py."""

from __future__ import annotations

import csv
import json
from collections import deque
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


def _quotes_parse(path: Path, delimiter: str) -> bool:
    """Whether the whole file reads under strict CSV quoting (a pass through it at the csv module's C speed)."""
    try:
        for _ in csv.reader(_csv_lines(path), delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return False
    return True


MAX_FIELD_LINES = 1000  # a quoted field of a mixed TSV spans at most this many lines: a stray opening quote must
# not read (and hold) the rest of the file looking for its close


class _Ahead:
    """The lines of a file one at a time, numbered from 1, with those read past kept to be read again."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines, self.kept = enumerate(lines, start=1), deque[tuple[int, str]]()

    def at(self, i: int) -> tuple[int, str] | None:
        """The i-th line not yet taken (0: the next), or None past the file's end."""
        while len(self.kept) <= i:
            nxt = next(self.lines, None)
            if nxt is None:
                return None
            self.kept.append(nxt)
        return self.kept[i]

    def take(self, n: int) -> None:
        for _ in range(n):
            self.kept.popleft()


def _quoted(s: str, pos: int, ahead: _Ahead, used: int, delimiter: str) -> tuple[str, str, int, int] | None:
    """(the text, the line it closes on, the index after its closing quote there, the lines it reads past the `used`
    ones already in the row) of the field at s[pos] if it is quoted as csv.writer quotes (`_mixed_rows`), else None."""
    parts, j, extra = [], pos + 1, 0
    while True:
        k = s.find('"', j)
        if k == -1:  # no closing quote on this line: the field goes on on the next one
            parts.append(s[j:])
            nxt = ahead.at(used + extra) if extra < MAX_FIELD_LINES else None
            if nxt is None:
                return None
            s, j, extra = nxt[1], 0, extra + 1
        elif s.startswith('"', k + 1):  # a doubled quote
            parts.append(s[j:k + 1])
            j = k + 2
        elif k + 1 < len(s) and s[k + 1] not in (delimiter, "\r", "\n"):  # text after the closing quote
            return None
        else:
            text = "".join([*parts, s[j:k]])
            if text and not any(c in text for c in (delimiter, '"', "\r", "\n")):  # csv.writer writes it bare
                return None
            return text, s, k + 1, extra


def _row(s: str, ahead: _Ahead, delimiter: str) -> tuple[list[str], int, bool]:
    """(the fields, the lines after `s` the row spans, whether a quoted field was read) of the row starting at `s`."""
    fields: list[str] = []
    pos, used, had_quotes = 0, 0, False
    while True:
        got = _quoted(s, pos, ahead, used, delimiter) if s.startswith('"', pos) else None
        if got is not None:
            text, s, pos, extra = got
            had_quotes, used = True, used + extra
        else:
            body = s.rstrip("\r\n")
            end = body.find(delimiter, pos)
            text, pos = (body[pos:], len(s)) if end == -1 else (body[pos:end], end)
        fields.append(text)
        if pos >= len(s) or s[pos] != delimiter:
            return fields, used, had_quotes
        pos += 1


def _mixed_rows(lines: Iterator[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each row of a TSV that mixes csv.writer's quoting with hand-written quotes (a
    `\t`.join of texts like `he said "hi` or `"Yes," he said.`), as neither csv's quoting nor QUOTE_NONE reads
    whole. A field that starts with `"` is a quoted field where csv.writer would have written it so: it closes with a
    `"` followed by the delimiter or the line end, every quote inside is doubled, and its text needs quoting (holds
    the delimiter, a quote or a line break; or is empty) — it may then span lines. Any other quote is a plain
    character, and the field runs to the next delimiter on its line. A row read with quoted fields whose field count
    is not the header's, while its first line split at each delimiter is, is read that second way (its quotes plain)
    and the lines after it are rows of their own. Nothing is dropped: every line is in exactly one row."""
    ahead = _Ahead(lines)
    width: int | None = None
    while (first := ahead.at(0)) is not None:
        ahead.take(1)
        fields, used, had_quotes = _row(first[1], ahead, delimiter)
        plain = first[1].rstrip("\r\n").split(delimiter)
        if had_quotes and width is not None and len(fields) != width and len(plain) == width:
            fields, used = plain, 0  # the lines it read past are rows of their own
        ahead.take(used)
        if width is None and (len(fields) > 1 or fields[0].strip()):  # the header (not a blank line before it)
            width = len(fields)
        yield first[0], fields


def iter_delimited(path: Path, delimiter: str) -> tuple[list[str], Iterator[Record]]:
    """(the header, the rows one at a time): a large CSV is never held whole, nor all its rows (data/load.py).
    Strict quoting: a quote left open (to the file's end, or closed by a stray quote rows later) or text after a
    closing quote is an error naming the line the field starts on — never rows silently merged or quotes dropped.
    A TSV whose quotes do not parse that way (`"Yes," he said.<TAB>entailment`, as GLUE / MNLI files hold them, maybe
    mixed with rows csv.writer quoted) is read by `_mixed_rows`: csv.writer's quoted fields as it wrote them, every
    other quote a plain character (one more pass to find out)."""
    mixed = delimiter == "\t" and not _quotes_parse(path, delimiter)
    reader = csv.reader(_csv_lines(path), delimiter=delimiter, strict=True)
    start = 1

    def rows() -> Iterator[tuple[int, list[str]]]:
        nonlocal start
        try:
            for line, row in _mixed_rows(_csv_lines(path), delimiter) if mixed else parsed():
                if row and not (all(not cell.strip() for cell in row) and len(row) <= 1):  # else a blank line
                    yield line, row
        except csv.Error as exc:
            said = str(exc).replace("\t", "\\t")  # `'\t' expected after '"'`, not a raw tab
            quote = '"' in said or "quote" in said or "unexpected end of data" in said
            hint = (" (a field that starts with \" is quoted up to the next \" that ends a field: close it, double a "
                    "quote inside it, or write the text without the leading quote)") if quote else ""
            raise DataError(str(path), start, "csv", f"{said}{hint}") from None

    def parsed() -> Iterator[tuple[int, list[str]]]:
        nonlocal start
        for row in reader:
            line, start = start, reader.line_num + 1
            yield line, row

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
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits") or []
        raise DataError(str(path), None, None, "a DatasetDict: give one split's folder, e.g. "
                        + ", ".join(str(path / s) for s in splits[:3]))
    state = path / "state.json"
    if state.is_file():
        files = [path / f["filename"] for f in json.loads(state.read_text(encoding="utf-8")).get("_data_files", [])]
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
