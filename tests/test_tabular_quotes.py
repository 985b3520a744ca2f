"""A TSV that mixes csv.writer's quoting with hand-written quotes (`\\t`.join of texts like `he said "hi`) reads as
its writers meant, every row kept in order; a row that truly has the wrong number of fields is one error line."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.data.readers import read_table

WRITER_ROWS = [  # what csv.writer quotes: a tab, quotes, both, a text that starts with a quote
    ["tab\tinside", "pos"], ['say "hi" twice', "neg"], ["both\t\"q\"", "pos"], ['"Yes," he said.', "neg"],
    ["plain", "pos"],
]
HAND_ROWS = [  # joined with \t by hand: quotes are plain characters, unbalanced or not
    ['he said "hi', "neg"], ['a 5" screen', "pos"], ['"Hmm, not sure', "neg"], ['"Yes," she said.', "pos"],
    ['"Great"', "neg"], ['12 inch 5"', "pos"],
]


def mixed_tsv(path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, delimiter="\t")
        out.writerow(["text", "label"])
        for i, row in enumerate(WRITER_ROWS):
            out.writerow(row)
            f.write("\t".join(HAND_ROWS[i]) + "\n")
        f.write("\t".join(HAND_ROWS[-1]) + "\n")
    return path


def rows_of(path: Path) -> list[tuple[int, str, str]]:
    return [(r.line, r.data["text"], r.data["label"]) for r in read_table(path).records]


def test_a_tsv_mixing_csv_writer_quoting_and_literal_quotes_reads_every_row_as_written(tmp_path: Path) -> None:
    path = mixed_tsv(tmp_path / "mixed.tsv")
    expected = [r for i, w in enumerate(WRITER_ROWS) for r in (w, HAND_ROWS[i])] + [HAND_ROWS[-1]]
    got = rows_of(path)
    assert [(text, label) for _, text, label in got] == [tuple(r) for r in expected]
    assert [line for line, _, _ in got] == list(range(2, 13))

    res = CliRunner().invoke(app, ["data", "check", str(path)])
    assert res.exit_code == 0, res.output


def test_a_row_whose_quotes_would_merge_fields_is_read_with_them_plain(tmp_path: Path) -> None:
    """In a TSV with hand-written quotes (line 6), `"Oh, no<TAB>she said "` closes like a quoted field, but that
    leaves the row a field short: its quotes are plain text."""
    path = tmp_path / "pairs.tsv"
    path.write_text('a\tb\tlabel\n"x\ty"\tz\tpos\n"Oh, no\tshe said "\tneutral\n'
                    '"Yes," he said.\tb\tneg\n', encoding="utf-8")
    assert [(r.line, r.data) for r in read_table(path).records] == [
        (2, {"a": "x\ty", "b": "z", "label": "pos"}),
        (3, {"a": '"Oh, no', "b": 'she said "', "label": "neutral"}),
        (4, {"a": '"Yes," he said.', "b": "b", "label": "neg"}),
    ]


def test_a_csv_mixing_csv_writer_quoting_and_quotes_inside_unquoted_fields(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text", "label"], ["a, b", "pos"], ['say "hi"', "neg"], ["two\nlines", "pos"]])
        f.write('he said "hi,neg\na 5" screen,pos\n')
    assert rows_of(path) == [(2, "a, b", "pos"), (3, 'say "hi"', "neg"), (4, "two\nlines", "pos"),
                             (6, 'he said "hi', "neg"), (7, 'a 5" screen', "pos")]


def test_a_row_with_the_wrong_number_of_fields_in_a_mixed_tsv_is_one_error_line(tmp_path: Path) -> None:
    path = mixed_tsv(tmp_path / "train.tsv")
    with path.open("a", encoding="utf-8") as f:
        f.write('he said "no\tneg\textra\n')
    res = CliRunner().invoke(app, ["data", "check", str(path)])
    assert res.exit_code == 2, res.output
    assert res.stderr == f"error: {path}:13: row: expected 2 fields (text, label), got 3\n", res.stderr


def test_a_stray_opening_quote_never_swallows_the_rows_after_it(tmp_path: Path) -> None:
    """`"Hmm, not sure` opens a quote that `12 inch 5"` two lines later seems to close as csv.writer would: read as
    one quoted field, three rows would become one. Every line of such a file is its own row."""
    path = tmp_path / "stray.tsv"
    lines = ['"Yes," he said.\tneg', '"Hmm, not sure\tneg', "plain\tpos", '12 inch 5"\tpos']
    path.write_text("text\tlabel\n" + "\n".join(lines) + "\n", encoding="utf-8")
    assert rows_of(path) == [(i + 2, *line.split("\t")) for i, line in enumerate(lines)]


def test_a_csv_writer_field_holding_a_line_break_in_a_mixed_tsv_is_an_error_not_a_merge(tmp_path: Path) -> None:
    """In a TSV with hand-written quotes a quoted field is not read across lines (it could be a stray quote): the
    line it leaves short is one error line naming it."""
    path = tmp_path / "train.tsv"
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write('text\tlabel\n"Yes," he said.\tneg\n')
        csv.writer(f, delimiter="\t").writerow(["two\nlines", "pos"])
    res = CliRunner().invoke(app, ["data", "check", str(path)])
    assert res.exit_code == 2, res.output
    assert res.stderr == f"error: {path}:3: row: expected 2 fields (text, label), got 1\n", res.stderr


def test_a_quote_closed_rows_later_in_a_tsv_that_parses_as_csv_never_swallows_rows(tmp_path: Path) -> None:
    """`"Best phone ever` ... `Screen is 6.1"`: strict CSV quoting reads the three lines as one field, and the file
    has no other quote that fails it. Each of those lines reads as a row of the header's width: they are rows."""
    path = tmp_path / "reviews.tsv"
    lines = ['"Best phone ever\t1', "Battery is bad\t0", 'Screen is 6.1"\t1', "fine\t0"]
    path.write_text("text\tlabel\n" + "\n".join(lines) + "\n", encoding="utf-8")
    assert rows_of(path) == [(i + 2, *line.split("\t")) for i, line in enumerate(lines)]
    legit = tmp_path / "legit.tsv"  # csv.writer's quoted field over two lines: still one row
    with legit.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([["text", "label"], ["two\nlines", "1"], ["fine", "0"]])
    assert rows_of(legit) == [(2, "two\nlines", "1"), (4, "fine", "0")]
