"""A data file's text, decoded a line at a time (a large file is never held whole, nor all its lines): UTF-8, a BOM
dropped; UTF-16 or UTF-32 where the file starts with its byte-order mark (Excel's "Unicode text", what PowerShell's
`>` and Windows Notepad's "Unicode" write: a BOM says the encoding and byte order without doubt); bytes that are
neither named by line and column, with what they read as (text/encodings.py). Every line-based reader (JSONL, CSV /
TSV, CoNLL, plain text) opens its file here, and the JSON readers through `open_text`."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tunelab.errors import DataError
from tunelab.text.encodings import UTF16_BOMS, More, Whole, bad_line, encoding_hint, utf16_hint, whole_file

EXCEL_KINDS = (".csv", ".tsv", ".tab")  # the data files Excel saves (its Windows-1252 or GBK CSV)


def not_utf8(path: Path, line: int, byte: int, column: int, head: bytes = b"", line_bytes: bytes = b"",
             whole: Whole = None, more: More = None) -> DataError:
    """Bytes that are not UTF-8, by line and column; `head`: the text's first bytes (UTF-16's byte order mark says
    what the text is: standard input's, as a file's is read as it says, `decoded_lines`); `line_bytes`: the bad
    line's, text in GBK, Big5, Windows-1252 ... said so (`encoding_hint`); `whole`: whether the text holds no UTF-8
    text besides (None: the file read again to find out, `_whole`); `more`: the text's lines from the bad one on,
    where a line that reads as both GBK and Big5 is to be told which (None: the file's, read again, `_from_line`)."""
    if head[:2] in UTF16_BOMS:
        hint = utf16_hint(path)
    else:  # Excel's CSV named, and its "CSV UTF-8" advised, for the files Excel writes only (not JSONL, CoNLL, text)
        hint = encoding_hint(line_bytes, path, Path(path).suffix.lower() in EXCEL_KINDS,
                             whole if whole is not None else lambda codec: _whole(path, line, codec),
                             more if more is not None else _from_line(path, line), column - 1)
    return DataError(str(path), line, "bytes", f"not valid UTF-8 (byte 0x{byte:02x} at column {column}){hint}")


def _whole(path: Path, bad: int, codec: str) -> bool | None:
    """Whether the file holds no UTF-8 text besides its line `bad`, which reads as `codec` (`whole_file`; None: not
    known), its lines numbered as `utf8_lines` numbers them; standard input (not read again): True for its first
    line, else not known (None)."""
    if not path.is_file():
        return True if bad == 1 else None

    def lines() -> Iterator[bytes]:
        with path.open("rb") as f:
            yield from byte_lines(f)

    try:
        return whole_file(lines(), bad, codec)
    except OSError:
        return None


def _from_line(path: Path, bad: int) -> More:
    """A function that gives the file's lines from its line `bad` on, numbered as `utf8_lines` numbers them; None for
    standard input (not read again)."""
    if not path.is_file():
        return None

    def lines() -> Iterator[bytes]:
        with path.open("rb") as f:
            for number, line in enumerate(byte_lines(f), start=1):
                if number >= bad:
                    yield line

    return lines


# a byte-order mark → (its codec without one, its name); UTF-32's first, as UTF-32 LE's starts with UTF-16 LE's
BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
        (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"), (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"))
_BLOCK = 1 << 16  # bytes of a UTF-16 / UTF-32 file decoded at a time


def wide_bom(path: Path) -> tuple[bytes, str, str] | None:
    """(the byte-order mark, its codec, its name) where the file starts with UTF-16's or UTF-32's, else None."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:  # (not a file: the reader says so)
        return None
    return next((bom for bom in BOMS if head.startswith(bom[0])), None)


def open_text(path: Path, **options: Any) -> IO[str]:
    """The file opened as text in its encoding (`wide_bom`, else UTF-8), its BOM dropped."""
    bom = wide_bom(path)
    return path.open(encoding=bom[2].lower() if bom else "utf-8-sig", **options)


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text with its line end) of each line, decoded one at a time (a large file is never held whole,
    nor all its lines), a BOM dropped; UTF-16 / UTF-32 by their BOM (`wide_bom`); bad bytes named by line and
    column."""
    bom = wide_bom(path)
    if bom is not None:
        yield from _wide_lines(path, *bom)
        return
    with path.open("rb") as f:
        yield from utf8_lines(f, path)


_ENDS = re.compile(r"\r\n?|\n")
_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")  # a line with its end: "\n", "\r\n" or a lone "\r"


def _wide_lines(path: Path, bom: bytes, codec: str, name: str) -> Iterator[tuple[int, str]]:
    """`decoded_lines` of a UTF-16 / UTF-32 file: `_BLOCK` bytes decoded at a time, cut into lines as `utf8_lines`
    cuts a UTF-8 file's (at "\n", "\r\n" and a lone "\r", each line keeping its end); what follows a block's last
    line end (a "\r" at its very end held too, as a "\n" may follow it) kept for the next, so that no more than a
    line is held (an old Mac file, its lines ended by "\r" alone, is read in linear time); bytes that are not `name`
    (an unpaired surrogate, a file cut inside a character) named by line and column."""
    decoder = codecs.getincrementaldecoder(codec)()
    number, rest = 0, ""
    with path.open("rb") as f:
        f.seek(len(bom))
        while True:
            block = f.read(_BLOCK)
            try:
                text = rest + decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                before = rest + exc.object[:exc.start].decode(codec)  # (valid up to there)
                lines = _ENDS.split(before)
                raise DataError(str(path), number + len(lines), "bytes", f"not valid {name}, the encoding its byte "
                                f"order mark names ({exc.reason} at column {len(lines[-1]) + 1})") from None
            end = max(text.rfind("\n"), text.rfind("\r", 0, len(text) - (1 if block else 0))) + 1
            for line in _LINES.findall(text, 0, end):
                number += 1
                yield number, line
            rest = text[end:]
            if not block:
                break
    if rest:
        yield number + 1, rest


def byte_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of a binary stream with their ends, cut at "\n", "\r\n" and a lone "\r" (old Mac files end lines
    with it) as `bytes.splitlines` cuts them, `_BLOCK` bytes read at a time: no more than a line and a block are
    held. (`for line in f` cuts at "\n" only: a file of lone-"\r" line ends was read whole, then cut.) UTF-8 has no
    0x0D or 0x0A byte inside a character, so the bytes are cut before they are decoded."""
    held: list[bytes] = []  # the start of a line that the blocks so far have not ended
    while block := stream.read(_BLOCK):
        if held and held[-1].endswith(b"\r") and not block.startswith(b"\n"):
            yield b"".join(held)  # a lone "\r" at the last block's end: its line's end
            held = []
        lines = block.splitlines(True)
        last: bytes | None = lines[-1]
        if last.endswith(b"\r") or not last.endswith(b"\n"):  # unended, or a "\r" a "\n" may follow: held
            lines.pop()
        else:
            last = None
        if lines and held:
            lines[0] = b"".join([*held, lines[0]])
            held = []
        yield from lines
        if last is not None:
            held.append(last)
    if held:
        yield b"".join(held)


def utf8_lines(stream: IO[bytes], path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text with its line end) of each line of a binary stream (a file's, standard input's) decoded as
    UTF-8, read a block at a time (`byte_lines`), a BOM dropped from the first; a lone "\r" ends a line as "\n" and
    "\r\n" do, so JSONL and the lines of stdin number their lines as the CSV / TSV readers do; bad bytes named by
    line and column of `path`."""
    for number, raw in enumerate(byte_lines(stream), start=1):
        try:  # (inlined: a call a line would cost as much)
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise not_utf8(path, number, raw[exc.start], exc.start + 1, raw if number == 1 else b"", raw) from None
        yield number, (line.removeprefix("\ufeff") if number == 1 else line)


def decode_whole(path: Path) -> str:
    """The file's text, read whole (`decoded_lines` decodes a line at a time), a BOM dropped; UTF-16 / UTF-32 by
    their BOM; bytes that are not that encoding named by line and column."""
    if (bom := wide_bom(path)) is not None:
        try:
            return path.read_bytes()[len(bom[0]):].decode(bom[1])
        except UnicodeDecodeError:
            for _ in decoded_lines(path):  # raises the DataError that names the bad bytes' line and column
                pass
            raise DataError(str(path), None, "bytes", f"not valid {bom[2]}") from None
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col, bad, whole, more = bad_line(raw, exc.start)
        raise not_utf8(path, line, raw[exc.start], col, raw[:2], bad, whole, more) from None
    return text.removeprefix("\ufeff")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(number, text without its line end) of each line, one at a time (`decoded_lines`); a lone "\r" (old Mac
    files) ends a line as "\n" and "\r\n" do."""
    number = 0
    for _, line in decoded_lines(path):
        for piece in pieces(line):
            number += 1
            yield number, piece


def pieces(line: str) -> list[str]:
    """A line as read up to "\n" (with its end or without), cut at each lone "\r" (old Mac files end lines with it)."""
    body = line[:-1] if line.endswith("\n") else line
    return (body[:-1] if body.endswith("\r") else body).split("\r")
