"""CoNLL column files (one token per line, its tag in the last column, a blank line between sentences) → one
`Record` `{tokens, tags}` per sentence, read a sentence at a time; and whether a file so named otherwise (a `.txt`)
holds such lines (`looks_like_conll`), for a task that reads tokens and tags (`Task.txt_as_conll`)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tunelab.data.decode import numbered_lines
from tunelab.data.jsonl import SHARED
from tunelab.data.records import Record
from tunelab.errors import DataError


def iter_conll(path: Path) -> Iterator[Record]:
    """CoNLL columns: one token per line, the tag in the last column, sentences separated by blank
    lines, `-DOCSTART-` lines skipped (each ends a sentence, as a blank line does). Each sentence is a record
    `{tokens, tags}` at its first line, read one sentence at a time; the sentences share one copy of each of the
    first SHARED distinct tokens and tags. Of several problems the first in the file is named (a bad byte on a later
    line no longer comes first).

    A line holding a tab is cut at its tabs (`New York<TAB>B-LOC`: the token keeps its space); another at spaces,
    where in a file of token + tag lines a line of more columns is refused (`New York B-LOC` among them would lose
    `York`; CoNLL-2003's four columns, token POS chunk tag, and lines of other widths in
    a file of three or more are read as before: the first column and the last)."""
    source, memo = str(path), {}
    tokens: list[str] = []
    tags: list[str] = []
    start, last = 0, 0
    width: tuple[int, int] | None = None  # (columns, line) of the file's first line cut at spaces
    for number, line in numbered_lines(path):
        cols, spaced = _columns(line)
        if not cols or cols[0] == "-DOCSTART-":  # (a document's start ends a sentence, as HF's conll2003 reads it)
            if tokens:
                yield Record(source, start, {"tokens": tokens, "tags": tags}, start if last == start + len(tokens) - 1
                             else None)  # (its tokens on lines of their own, one after another: each named by line)
            tokens, tags = [], []
            continue
        if len(cols) < 2:
            raise DataError(source, number, "tags", "expected a token and a tag separated by a space or tab"
                            + _odd_space(line))
        if spaced:  # a token + tag file (two columns) with a line of more: a token holding a space would lose a part
            width = width or (len(cols), number)
            if width[0] == 2 and len(cols) > 2:
                raise DataError(source, number, "tags", f"{len(cols)} columns where line {width[1]} has {width[0]}: "
                                "columns are cut at spaces, so a token holding a space reads as two; separate this "
                                "file's columns with tabs (a token then keeps its spaces)")
        if not tokens:
            start = number
        token, tag = cols[0], (cols[-1].split() or [cols[-1]])[-1]  # a tag has no space (`EU<TAB>NNP B-ORG`: B-ORG)
        tokens.append(memo.get(token) or (memo.setdefault(token, token) if len(memo) < SHARED else token))
        tags.append(memo.get(tag) or (memo.setdefault(tag, tag) if len(memo) < SHARED else tag))
        last = number
    if tokens:
        yield Record(source, start, {"tokens": tokens, "tags": tags},
                     start if last == start + len(tokens) - 1 else None)


def _columns(line: str) -> tuple[list[str], bool]:
    """The columns of a CoNLL line ([] for a blank one), and whether they were cut at ASCII spaces. A line holding a
    tab: cut at its tabs, each column without the spaces around it. Else at ASCII spaces: a character-level Chinese
    file's token may be a space of its own (`\u3000 O`, U+3000 IDEOGRAPHIC SPACE); at any whitespace where that
    leaves no tag, or a column holding another space inside or at its end (a non-breaking one: `John\u00a0NNP B-PER`,
    `B-PER\u00a0`), as before."""
    text = line.lstrip(" \t").rstrip()
    if "\t" in text:
        return [col.strip(" ") for col in text.split("\t")], False
    cols = _COLUMNS.split(text) if text else []
    if len(cols) == 1 or any(not c.isspace() and any(ch.isspace() for ch in c) for c in cols):
        return line.split(), False
    return cols, bool(cols)


_COLUMNS = re.compile(r"[ \t]+")


def _odd_space(line: str) -> str:
    """`; U+3000 IDEOGRAPHIC SPACE is not one` for the first whitespace on `line` other than a space or tab."""
    odd = next((c for c in line if c.isspace() and c not in " \t"), None)
    return "" if odd is None else f"; U+{ord(odd):04X} {unicodedata.name(odd, 'whitespace')} is not one"


# a tag: O, or a prefix and a type holding a letter (B-PER, I-LOC, E-ORG, S-MISC, M-LOC, L-, U-; not `I-95`, `B-12`)
_TAG = re.compile(r"O|[BIESMLU]-(?=\S*[^\W\d_])\S+")
SNIFFED = 50  # lines of a `.txt` looked at by `looks_like_conll`
_FEW = 3  # lines of text that tell a `.txt` is CoNLL (fewer: a blank line between sentences, or read as text)


def looks_like_conll(path: Path) -> bool:
    """Whether a file's first SNIFFED lines that hold text (`-DOCSTART-` left out) are CoNLL's, nine in ten of them at
    least: a token, perhaps more columns — five in all at most, CoNLL-2003's token (lemma) POS chunk tag — and a tag (O,
    B-PER ...) last (`EU B-ORG`, `EU<TAB>NNP<TAB>B-ORG`), nine in ten of the same number of columns; and _FEW lines of
    them or more, or a blank line between two (a sentence's end). A paragraph of prose is not: `The film was long.`,
    a line of six words or more, a type of digits alone (`Vitamin B-12`), one line or
    two (`Big O`), lines of ever other widths (`Big O`, `The Story of O`). A bad line among them is `iter_conll`'s to
    name."""
    lines, widths, tagged, blank, between = 0, Counter[int](), 0, False, False
    for _, line in numbered_lines(path):
        if not line.strip():
            blank = lines > 0
            continue
        if line.lstrip().startswith("-DOCSTART-"):
            continue
        cols = _columns(line)[0]
        lines, between = lines + 1, between or blank
        widths[len(cols)] += 1
        tagged += 2 <= len(cols) <= 5 and _TAG.fullmatch(cols[-1].split()[-1]) is not None
        if lines == SNIFFED:
            break
    return (lines >= _FEW or between) and tagged >= 0.9 * lines and max(widths.values(), default=0) >= 0.9 * lines
