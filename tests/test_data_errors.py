"""Bad data fails with one line naming `file:line: field`; awkward but valid data loads exactly.

Errors are checked twice: at library level (`read_table` + the classification task's `parse`, which
raise `DataError`) and through `tunelab train`, which must exit 2 with `error: <the same line>` and
no traceback. `train` validates the data before it loads the model, so these runs take milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import run_config_class
from tunelab.config.sections import DataConfig
from tunelab.data.readers import read_table
from tunelab.data.records import ItemLine, Table
from tunelab.errors import DataError

runner = CliRunner()


def make_task(data: DataConfig | None = None, **task_options: Any) -> Any:
    run_config_class()  # registers the tasks
    from tunelab.registry import TASKS

    cls = TASKS.get("classification")
    return cls(cls.Config(**task_options), data or DataConfig())


def parse(path: Path, **task_options: Any) -> list[dict[str, Any]]:
    return make_task(**task_options).parse(read_table(path))


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")  # keep \r\n exactly as written
    return path


def train_cli(model: Path, out: Path, train: Path, *sets: str) -> Any:
    args = ["train"]
    for s in ("task=classification", f"model={model}", f"data.train={train}", f"output_dir={out}", *sets):
        args += ["--set", s]
    return runner.invoke(app, args)


def assert_one_line_error(res: Any, expected: str) -> None:
    """Exit code 2 and exactly `error: <expected>` on stderr: no traceback, nothing else."""
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.stderr == f"error: {expected}\n", res.stderr
    assert "Traceback" not in res.output


def where(path: Path, line: int | None, field: str | None) -> str:
    """The `file:line: field: ` prefix of a DataError message."""
    head = f"{path}:{line}" if line is not None else str(path)
    return f"{head}: {field}: " if field else f"{head}: "


GOOD = '{"text": "good film", "label": "pos"}\n{"text": "bad film", "label": "neg"}\n'

J = "train.jsonl"

# id, file name, content, line, field, words the problem must contain
ERRORS = [
    ("empty-file", J, "", None, None, "empty file"),
    ("blank-only-file", J, "\n   \n\r\n\t\n", None, None, "empty file"),
    ("truncated-json", J, GOOD + '{"text": "cut off", "lab', 3, "json", "invalid JSON"),
    ("not-an-object", J, GOOD + '["a list", "pos"]\n', 3, "json", "expected a JSON object, got list"),
    ("missing-label", J, GOOD + '{"text": "no label"}\n', 3, "label", "missing field (the row has: text)"),
    ("null-label", J, GOOD + '{"text": "x", "label": null}\n', 3, "label", "missing label"),
    ("nan-label", J, GOOD + '{"text": "x", "label": NaN}\n', 3, "label", "missing label"),
    # a {label: probability} object is a soft label; its probabilities must be valid
    ("dict-label", J, GOOD + '{"text": "x", "label": {"a": 2}}\n', 3, "label", "probability of 'a' must be in [0, 1]"),
    ("empty-label", J, GOOD + '{"text": "x", "label": " "}\n', 3, "label", "empty label"),
    ("missing-text", J, GOOD + '{"label": "pos"}\n', 3, "text", "missing field (the row has: label)"),
    ("null-text", J, GOOD + '{"text": null, "label": "pos"}\n', 3, "text", "is null"),
    ("empty-text", J, GOOD + '{"text": "  \\t ", "label": "pos"}\n', 3, "text", "empty text"),
    ("number-text", J, GOOD + '{"text": 42, "label": "pos"}\n', 3, "text", "expected text, got int"),
    (
        "list-label-single-label-mode",
        J,
        GOOD + '{"text": "x", "label": ["pos", "neg"]}\n',
        3,
        "label",
        "task.multi_label=true",
    ),
    (
        "unpaired-surrogate",
        J,
        GOOD + '{"text": "broken \\ud800 escape", "label": "pos"}\n',
        3,
        "text",
        "unpaired surrogate",
    ),
    ("surrogate-label", J, GOOD + '{"text": "x", "label": "\\udc00"}\n', 3, "label", "unpaired surrogate"),
    ("not-utf8", J, GOOD.encode() + b'{"text": "caf\xe9", "label": "pos"}\n', 3, "bytes", "UTF-8"),
    ("csv-not-utf8", "train.csv", b"text,label\ngood,pos\ncaf\xe9,neg\n", 3, "bytes", "UTF-8"),
    # what Excel on a Chinese Windows writes: a GBK line said so, with the command that converts it
    ("csv-gbk", "train.csv", "text,label\ngood,pos\n这部电影很好看,正面\n".encode("gbk"), 3, "bytes",
     "reads as Chinese in GBK (GB18030)"),
    ("json-gbk", "train.json", '[{"text": "a", "label": "b"},\n {"text": "好看", "label": "正面"}]'.encode("gbk"), 2,
     "bytes", "iconv -f GB18030 -t UTF-8"),
    (
        # the quoted field on lines 2-3 spans two lines: the bad row starts on line 5, not row 4
        "csv-wrong-field-count",
        "train.csv",
        'text,label\n"first line\nsecond line",pos\nok,neg\nbad,neg,extra\n',
        5,
        "row",
        "expected 2 fields",
    ),
    ("csv-missing-column", "train.csv", "review,label\ngood,pos\nbad,neg\n", 1, "text", "missing column"),
    ("csv-duplicate-column", "train.csv", "text,label,text\na,pos,b\n", 1, "text", "duplicate column"),
    ("csv-empty-text-cell", "train.csv", "text,label\ngood,pos\n,neg\n", 3, "text", "empty text"),
    ("tsv-missing-label-cell", "train.tsv", "text\tlabel\ngood\tpos\nbad\n", 3, "row", "expected 2 fields"),
    # a CSV quote opened at a field's start and closed by a stray quote rows later: not rows merged into one
    ("csv-quote-closed-rows-later", "train.csv", 'text,label\ngood,pos\n"Hmm not sure,neg\nfine,pos\n'
     'a 12" pizza,neg\n', 3, "csv", "',' expected after '\"'"),
    ("csv-quote-open-to-the-end", "train.csv", 'text,label\nhello,pos\nworld,"neg\nfoo,pos\n', 3, "csv",
     "unexpected end of data (a field that starts with"),
    ("csv-text-after-a-closing-quote", "train.csv", 'text,label\n"Trust me" he said,neg\nok,pos\n', 2, "csv",
     "',' expected after '\"'"),
    ("unknown-extension", "train.xml", "good film\tpos\n", None, None, "unknown file type '.xml'"),
    # one object over several lines with a comma missing on line 3: that line, not line 1 read as JSON lines
    ("json-object-missing-comma", "train.json", '{\n "text": "a"\n "label": "b"\n}\n', 3, "json",
     "Expecting ',' delimiter"),
    ("json-nested-too-deeply", J, GOOD + "[" * 100_000 + "\n", 3, "json", "nested too deeply"),
    ("json-5000-digit-number", J, GOOD + '{"text": "x", "label": ' + "1" * 5000 + "}\n", 3, "json",
     "Exceeds the limit (4300 digits)"),
    # what a UTF-16 file without its byte-order mark reads as in UTF-8
    ("nul-in-text", "train.csv", "text,label\ngood,pos\nh\x00i\x00,neg\n", 3, "text",
     "a NUL character at character 2: a UTF-16 file without its byte-order mark?"),
    # a JSON array's item at the line it starts on, as its parse errors are (was its number in the array: 3, 2), and
    # its row (its place in the array) beside it
    ("json-array-item-at-its-line", "train.json", json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"},
                                                              {"text": "", "label": "x"}], indent=2), ItemLine(10, 3),
     "text", "empty text"),
    ("json-array-not-an-object", "train.json", '[\n  {"text": "a", "label": "x"},\n\n  3\n]\n', ItemLine(4, 2), "json",
     "expected a JSON object, got int"),
    # a CSV written with ';' (Excel in much of Europe, pandas' sep=';'): said so, as a full-width comma is
    ("csv-semicolon-header", "train.csv", "text;label\nhi;ham\nwin;spam\n", 1, "text",
     "missing column (columns: text;label); the header separates its names with ';', not ','"),
    ("csv-semicolon-row", "train.csv", "text;label\nhi, there;ham\nwin;spam\n", 2, "row",
     "expected 1 fields (text;label), got 2; the header separates its names with ';', not ','"),
    ("csv-semicolon-quote", "train.csv", 'text;label\nwin;spam\n"a;b";ham\n', 3, "csv",
     "the header separates its names with ';', not ','"),
    ("tsv-semicolon-header", "train.tsv", "text;label\nhi;ham\n", 1, "text",
     "the header separates its names with ';', not a tab: save the file with tabs between fields"),
]


@pytest.mark.parametrize(
    ("name", "content", "line", "field", "problem"),
    [pytest.param(*case[1:], id=case[0]) for case in ERRORS],
)
def test_data_error(
    name: str,
    content: str | bytes,
    line: int | None,
    field: str | None,
    problem: str,
    tiny_bert: Path,
    tmp_path: Path,
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        parse(path)
    err = info.value
    assert (err.source, err.line, err.field) == (str(path), line, field)
    assert problem in err.problem
    assert str(err).startswith(where(path, line, field))

    res = train_cli(tiny_bert, tmp_path / "run", path)
    assert_one_line_error(res, str(err))


def test_data_is_checked_before_the_model_loads(tmp_path: Path) -> None:
    """An empty directory passes the config's model check but cannot be loaded: the data error wins."""
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    bad = write(tmp_path / "train.jsonl", GOOD + '{"text": "no label"}\n')
    res = train_cli(not_a_model, tmp_path / "run", bad)
    assert_one_line_error(res, f"{where(bad, 3, 'label')}missing field (the row has: text)")


def test_single_class(tiny_bert: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": f"text {i}", "label": "pos"} for i in range(6)])
    task = make_task()
    with pytest.raises(DataError) as info:
        task.check_train(task.parse(read_table(path)))
    assert (info.value.source, info.value.field) == (str(path), "label")
    assert "single class ('pos')" in info.value.problem

    res = train_cli(tiny_bert, tmp_path / "run", path)
    assert_one_line_error(res, str(info.value))


def test_validation_label_not_in_training_labels(tiny_bert: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(12))
    val_rows = sentiment_rows(3, seed=1) + [{"text": "the plot", "label": "neutral"}]
    val = write_jsonl(tmp_path / "validation.jsonl", val_rows)
    expected = (
        f"{where(val, 4, 'label')}label 'neutral' is not among the training labels (negative, positive)"
    )

    task = make_task()
    task.labels = sorted({ex["label"] for ex in task.parse(read_table(train))})
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    with pytest.raises(DataError) as info:
        task.encode(task.parse(read_table(val)), tokenizer)
    assert str(info.value) == expected

    res = train_cli(tiny_bert, tmp_path / "run", train, f"data.validation={val}", "train.max_steps=1")
    assert_one_line_error(res, expected)


def test_a_text_pair_the_config_does_not_read_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    """Rows with a `text_pair` value (the name predict and serve read a second text by) while data.text_pair_field
    is unset trained on the first text alone, silently: one line naming the first such row, before any training,
    from train and from data check alike. An empty value carries no second text; the field read by another name, or
    as the text itself, is no second text left unread."""
    rows = sentiment_rows(8)
    rows[1]["text_pair"] = ""  # a CSV's empty column: no second text
    rows[2]["text_pair"] = "the plot"
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    expected = (f"{where(path, 3, 'text_pair')}data.text_pair_field is not set, so this second text would not be "
                "read (only text is); set data.text_pair_field=text_pair to use it, or drop the field")
    with pytest.raises(DataError) as info:
        parse(path)
    assert str(info.value) == expected
    assert_one_line_error(train_cli(tiny_bert, tmp_path / "run", path), expected)
    assert not (tmp_path / "run").exists()
    assert_one_line_error(runner.invoke(app, ["data", "check", str(path), "--model", str(tiny_bert)]), expected)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{**r, "text_pair": "the plot"} for r in sentiment_rows(4)])
    assert [ex["text_pair"] for ex in make_task(DataConfig(text_pair_field="text_pair")).parse(read_table(pairs))] \
        == ["the plot"] * 4
    other = write_jsonl(tmp_path / "other.jsonl", [{**r, "hypothesis": "a b", "text_pair": "c"}
                                                   for r in sentiment_rows(4)])
    assert [ex["text_pair"] for ex in make_task(DataConfig(text_pair_field="hypothesis")).parse(read_table(other))] \
        == ["a b"] * 4
    assert len(make_task(DataConfig(text_field="text_pair")).parse(read_table(other))) == 4
    # read again (a trained run's splits, `data augment`'s copies): nothing to refuse, the rows as they are
    from tunelab.data.records import read_again

    with read_again():
        assert len(make_task(DataConfig()).parse(read_table(path))) == 8


# ---------------------------------------------------------------------------------------- valid input
def texts_labels(examples: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(ex["text"], ex["label"]) for ex in examples]


def test_utf8_bom_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "bom.jsonl", "\ufeff" + GOOD)
    csv = write(tmp_path / "bom.csv", "\ufefftext,label\ngood film,pos\nbad film,neg\n")
    expected = [("good film", "pos"), ("bad film", "neg")]
    assert texts_labels(parse(jsonl)) == expected
    assert texts_labels(parse(csv)) == expected  # the header's first column is `text`, not `\ufefftext`


def test_crlf_line_ends(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "crlf.jsonl", GOOD.replace("\n", "\r\n"))
    csv = write(tmp_path / "crlf.csv", "text,label\r\ngood film,pos\r\nbad film,neg\r\n")
    for path in (jsonl, csv):
        examples = parse(path)
        assert texts_labels(examples) == [("good film", "pos"), ("bad film", "neg")]
    assert [ex["line"] for ex in parse(csv)] == [2, 3]


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    a, b = '{"text": "a", "label": "x"}', '{"text": "b", "label": "y"}'
    path = write(tmp_path / "blank.jsonl", f"\n{a}\n\n  \n{b}\n\n\n \n")
    examples = parse(path)
    assert texts_labels(examples) == [("a", "x"), ("b", "y")]
    assert [ex["line"] for ex in examples] == [2, 5]
    csv = write(tmp_path / "blank.csv", "text,label\na,x\nb,y\n\n\n")
    assert len(parse(csv)) == 2


def test_quoted_csv_fields_with_commas_and_newlines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "quoted.csv",
        'text,label\n"good, very good",pos\n"line one\nline two, with a comma",neg\n"say ""hi""",pos\n',
    )
    examples = parse(path)
    assert texts_labels(examples) == [
        ("good, very good", "pos"),
        ("line one\nline two, with a comma", "neg"),
        ('say "hi"', "pos"),
    ]
    assert [ex["line"] for ex in examples] == [2, 3, 5]


def test_a_nested_list_in_a_column_the_task_does_not_read(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", '{"text": "good", "label": "pos", "meta": ["src", {"page": 1}, [2]]}\n'
                                           '{"text": "bad", "label": "neg", "meta": ["src"]}\n')
    assert texts_labels(parse(path)) == [("good", "pos"), ("bad", "neg")]


def test_a_tsv_with_literal_quotes_keeps_them_one_row_per_line(tmp_path: Path) -> None:
    """Quotes that do not parse as CSV quoting (GLUE / MNLI-style TSV): plain characters, one row per line — not rows
    merged up to a stray quote, nor quotes dropped; a TSV whose quoting parses (csv.writer's) keeps it."""
    path = write(tmp_path / "data.tsv", 'text\tlabel\n"Yes," he said.\tpos\ngood\tneg\n"Hmm, not sure\tneg\n'
                                        'a 12" pizza\tpos\n')
    assert texts_labels(parse(path)) == [('"Yes," he said.', "pos"), ("good", "neg"), ('"Hmm, not sure', "neg"),
                                         ('a 12" pizza', "pos")]
    quoted = write(tmp_path / "quoted.tsv", 'text\tlabel\n"two\nlines"\tpos\n"say ""hi"""\tneg\n')
    assert texts_labels(parse(quoted)) == [("two\nlines", "pos"), ('say "hi"', "neg")]


def test_tsv(tmp_path: Path) -> None:
    path = write(tmp_path / "data.tsv", "text\tlabel\ngood, fine film\tpos\nbad film\tneg\n")
    assert texts_labels(parse(path)) == [("good, fine film", "pos"), ("bad film", "neg")]


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["good film", "bad film", "电影很好"], "label": [1, 0, 1]}), path)
    examples = parse(path)
    assert texts_labels(examples) == [("good film", "1"), ("bad film", "0"), ("电影很好", "1")]
    assert [ex["line"] for ex in examples] == [1, 2, 3]  # row numbers

    multi = tmp_path / "multi.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [["x", "y"], []]}), multi)
    assert texts_labels(parse(multi, multi_label=True)) == [("a", ["x", "y"]), ("b", [])]

    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", None]}), missing)
    with pytest.raises(DataError, match=r"missing\.parquet:2: label: missing label"):
        parse(missing)


def test_chinese_and_emoji_text(tmp_path: Path) -> None:
    rows = [{"text": "这部电影非常好看！", "label": "正面"}, {"text": "terrible 😡👎 film", "label": "😞"}]
    jsonl = write_jsonl(tmp_path / "zh.jsonl", rows)
    csv = write(tmp_path / "zh.csv", "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    for path in (jsonl, csv):
        assert texts_labels(parse(path)) == [(r["text"], r["label"]) for r in rows]


def test_two_megabyte_text_loads_and_truncates(tiny_bert: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    big = "good film " * 200_000  # 2,000,000 characters, 400,000 words
    rows = [{"text": big, "label": "pos"}, {"text": "short text", "label": "neg"}]
    jsonl = write_jsonl(tmp_path / "big.jsonl", rows)
    # 2 MB is far above the csv module's default field limit (128 KiB)
    csv = write(tmp_path / "big.csv", f"text,label\n{big},pos\nshort text,neg\n")
    for path in (jsonl, csv):
        assert [len(ex["text"]) for ex in parse(path)] == [2_000_000, 10]

    task = make_task(DataConfig(max_length=32))
    examples = task.parse(read_table(jsonl))
    task.labels = ["neg", "pos"]
    features = task.encode(examples, AutoTokenizer.from_pretrained(tiny_bert))
    assert [len(f["input_ids"]) for f in features] == [32, 4]  # [CLS] short text [SEP]
    batch = task.collate(features, pad_id=0)
    assert tuple(batch["input_ids"].shape) == (2, 32) and batch["labels"].tolist() == [1, 0]


def test_multi_label_lists(tmp_path: Path) -> None:
    rows = [
        {"text": "a", "label": ["sports", "news"]},
        {"text": "b", "label": []},
        {"text": "c", "label": "news"},  # a single label is a one-item list
        {"text": "d", "label": [1, True]},
    ]
    path = write_jsonl(tmp_path / "multi.jsonl", rows)
    assert [ex["label"] for ex in parse(path, multi_label=True)] == [
        ["sports", "news"],
        [],
        ["news"],
        ["1", "true"],
    ]


def test_multi_label_cells_hold_json_lists_or_are_cut_at_the_separator(tiny_bert: Path, tmp_path: Path) -> None:
    """A CSV / Parquet text cell holding a JSON list (pandas' list column written with json.dumps) is that list of
    labels, not one label `["ham", "question"]`; a cell holding | ; or , is cut at task.label_separator, and without
    one refused in one line that names both ways out (a label holding a comma: a JSON list of one)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"text": ["good film", "bad plot", "the story", "a scene"],
                          "labels": [["ham", "question"], ["ham"], [], ["spam, eggs"]]})
    csv = tmp_path / "multi.csv"
    frame.assign(labels=frame["labels"].map(json.dumps)).to_csv(csv, index=False)
    want = [["ham", "question"], ["ham"], [], ["spam, eggs"]]
    data = DataConfig(label_field="labels")
    assert [ex["label"] for ex in make_task(data, multi_label=True).parse(read_table(csv))] == want
    parquet = tmp_path / "multi.parquet"
    pq.write_table(pa.table({"text": list(frame["text"]), "labels": list(frame["labels"].map(json.dumps))}), parquet)
    assert [ex["label"] for ex in make_task(data, multi_label=True).parse(read_table(parquet))] == want
    res = runner.invoke(app, ["data", "check", str(csv), "--model", str(tiny_bert), "--json", "--set",
                              "task.multi_label=true", "--set", "data.label_field=labels"])
    assert res.exit_code == 0, res.output
    assert '"ham": 2' in res.stdout and '"question": 1' in res.stdout and '["ham"' not in res.stdout
    assert [ex["label"] for ex in make_task(multi_label=True).parse(read_table(write(
        tmp_path / "one.csv", "text,label\ngood,ham\nbad,[NSFW]\n")))] == [["ham"], ["[NSFW]"]]  # one label each

    cut = write(tmp_path / "cut.csv", 'text,label\ngood,spam|promo\nbad,ham\nplot," a | b , c "\n')
    assert [ex["label"] for ex in make_task(multi_label=True, label_separator="|").parse(read_table(cut))] == [
        ["spam", "promo"], ["ham"], ["a", "b , c"]]
    expected = (f"{where(cut, 2, 'label')}'spam|promo' holds '|': several labels or one? Set "
                "task.label_separator='|' to split cells at it, or write each cell as a JSON list: "
                '["spam", "promo"], or ["spam|promo"] for one label')
    with pytest.raises(DataError) as info:
        parse(cut, multi_label=True)
    assert str(info.value) == expected
    assert_one_line_error(train_cli(tiny_bert, tmp_path / "run", cut, "task.multi_label=true"), expected)
    python = write(tmp_path / "python.csv", "text,label\ngood,\"['ham', 'spam']\"\n")
    with pytest.raises(DataError, match=r"python.csv:2: label: \"\['ham', 'spam'\]\" is not a JSON list of labels"):
        parse(python, multi_label=True, label_separator=",")
    with pytest.raises(ValueError, match="set task.multi_label=true"):
        make_task(label_separator="|")
    with pytest.raises(ValueError, match="quote a '\\|' for YAML"):
        make_task(multi_label=True, label_separator="")



def test_a_multi_label_text_that_is_one_of_the_models_labels_is_that_label(tmp_path: Path) -> None:
    """A review of the fix: a model trained before multi-label cells were cut (its label `Arts, Culture`) refused
    its own data in eval ("holds ',': several labels or one?"): a text that is one of its labels is that label."""
    from tunelab.data.records import Record
    from tunelab.tasks.class_labels import cell_labels

    row = Record("m.jsonl", 3, {})
    assert cell_labels(row, "label", "Arts, Culture", None, ["Arts, Culture", "Sport"]) == ["Arts, Culture"]
    with pytest.raises(DataError, match="several labels or one"):
        cell_labels(row, "label", "Arts, Culture", None, ["Sport"])


def test_a_study_run_exports_into_its_own_folder_and_other_tools_folders_are_no_runs(tmp_path: Path) -> None:
    """A review of the fix: a cv fold (a run inside its study's run folder) could not be exported to its own
    exports/ ("inside the run's folder" of the run around it), and a Hydra / Lightning project folder (a config.yaml
    beside checkpoints/ or metrics.json) was taken for a run, refusing every --output below it."""
    from tunelab.errors import TunelabError
    from tunelab.export.output import _around_runs
    from tunelab.training.layout import is_run_dir

    outer, fold = tmp_path / "run", tmp_path / "run" / "cv" / "fold-1"
    for run in (outer, fold):
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text("task: classification\n")
        (run / "data_summary.json").write_text("{}")
    _around_runs(fold / "exports" / "onnx-fp32", [fold])  # its own: allowed
    with pytest.raises(TunelabError, match="is inside the run's folder"):
        _around_runs(outer / "model", [fold])  # the run around it: its model is that run's
    hydra = tmp_path / "proj"
    (hydra / "checkpoints").mkdir(parents=True)
    (hydra / "config.yaml").write_text("lr: 1\n")
    (hydra / "metrics.json").write_text("{}")
    assert not is_run_dir(hydra) and is_run_dir(fold)
    _around_runs(hydra / "onnx", [fold])

def test_integer_and_bool_labels_become_strings(tmp_path: Path) -> None:
    rows = [{"text": t, "label": lab} for t, lab in zip("abcd", [1, 0, True, 2.5], strict=True)]
    path = write_jsonl(tmp_path / "numbers.jsonl", rows)
    assert [ex["label"] for ex in parse(path)] == ["1", "0", "true", "2.5"]
    csv = write(tmp_path / "numbers.csv", "text,label\na,1\nb,0\n")
    assert [ex["label"] for ex in parse(csv)] == ["1", "0"]  # the same strings as JSON numbers
    # task.labels given as YAML numbers / bools names the same strings; duplicates are refused
    assert make_task(labels=[0, 1, True]).cfg.labels == ["0", "1", "true"]
    with pytest.raises(ValueError, match="duplicate label '1'"):
        make_task(labels=[1, "1"])


# ---------------------------------------------------------------------------------------- data check
def test_data_check_json_report(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "good movie", "label": "pos"},
            {"text": "good movie", "label": "pos"},  # exact duplicate
            {"text": "Good   MOVIE", "label": "pos"},  # duplicate after case/space normalisation
            {"text": "bad plot", "label": "neg"},
        ],
    )
    val = write_jsonl(
        tmp_path / "validation.jsonl",
        [
            {"text": "GOOD movie", "label": "pos"},  # also in train (normalised)
            {"text": "awful film", "label": "neg"},
            {"text": "sad story", "label": "neg"},
        ],
    )
    res = runner.invoke(app, ["data", "check", str(train), str(val), "--model", str(tiny_bert), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    t, v = report["files"][str(train)], report["files"][str(val)]
    assert (t["rows"], t["labels"]) == (4, {"pos": 3, "neg": 1})
    assert (v["rows"], v["labels"]) == (3, {"neg": 2, "pos": 1})
    assert (t["duplicates_exact"], t["duplicates_normalised"]) == (1, 2)
    assert (v["duplicates_exact"], v["duplicates_normalised"]) == (0, 0)
    assert report["overlap"] == [{"a": str(train), "b": str(val), "shared_texts": 1}]
    assert t["token_length"]["max"] == 4 and t["over_max_length"] == 0  # [CLS] good movie [SEP]


def test_data_check_bad_file(tiny_bert: Path, tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", sentiment_rows(4))
    bad = write(tmp_path / "bad.jsonl", GOOD + '{"text": "x", "label": null}\n')
    res = runner.invoke(app, ["data", "check", str(good), str(bad), "--model", str(tiny_bert), "--json"])
    assert_one_line_error(res, f"{where(bad, 3, 'label')}missing label (null)")
    assert res.stdout == ""


def test_datasets_folders_are_read(tmp_path: Path) -> None:
    """A `datasets` save_to_disk folder, a DatasetDict (one split's folder), a Parquet folder: rows in order."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": f"row {i}", "label": "a" if i % 2 else "b"} for i in range(5)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    table = read_table(tmp_path / "ds")
    assert [r.data for r in table.records] == rows and table.records[2].line == 3
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"a DatasetDict: give one split's folder, e.g. .*dd/train"):
        read_table(tmp_path / "dd")
    assert [r.data for r in read_table(tmp_path / "dd" / "train").records] == rows
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:2]), tmp_path / "pq" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[2:]), tmp_path / "pq" / "part-1.parquet")
    records = read_table(tmp_path / "pq").records
    assert [r.data for r in records] == rows
    assert [(Path(r.source).name, r.line) for r in records[1:3]] == [("part-0.parquet", 2), ("part-1.parquet", 1)]
    (tmp_path / "gap").mkdir()  # the second file lacks the label column: the error names that file and its row
    pq.write_table(pa.Table.from_pylist(rows[:2]), tmp_path / "gap" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist([{"text": "no label"}]), tmp_path / "gap" / "part-1.parquet")
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "gap"), "--task", "classification"])
    assert res.exit_code == 2 and res.output.strip().endswith("gap/part-1.parquet:1: label: missing label (null)"), \
        res.output
    (tmp_path / "arrow").mkdir()  # Arrow's file format (Feather v2, pyarrow.ipc.new_file), as a folder and alone
    for i, part in enumerate((rows[:3], rows[3:])):
        with pa.ipc.new_file(str(tmp_path / "arrow" / f"part-{i}.arrow"), pa.schema([("text", pa.string()),
                                                                                     ("label", pa.string())])) as w:
            w.write_table(pa.Table.from_pylist(part))
    assert [r.data for r in read_table(tmp_path / "arrow").records] == rows
    (tmp_path / "arrow" / "more.jsonl").write_text('{"text": "row 9", "label": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"arrow: a folder of .arrow files that also holds .jsonl files: keep one"):
        read_table(tmp_path / "arrow")  # not its Arrow rows with the JSONL row silently left out
    assert [r.data for r in read_table(tmp_path / "arrow" / "part-1.arrow").records] == rows[3:]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="a folder without data"):
        read_table(tmp_path / "empty")
    for state, problem in (("", "state.json: cannot read: Expecting value"), ('{"_data_files": 3}',
                           "state.json: _data_files: expected a list, got int")):  # one line, not a traceback
        (tmp_path / "ds" / "state.json").write_text(state, encoding="utf-8")
        with pytest.raises(DataError, match=problem):
            read_table(tmp_path / "ds")
    (tmp_path / "ds" / "state.json").write_text("{}", encoding="utf-8")  # no files named: its own Arrow files
    assert [r.data for r in read_table(tmp_path / "ds").records] == rows
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "ds"), "--json"])  # as data.train takes it too
    assert res.exit_code == 0 and json.loads(res.stdout)["files"][str(tmp_path / "ds")]["rows"] == 5, res.output


def test_a_hub_dataset_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hf:org/name:split` goes through datasets.load_dataset; offline it is one DataError line naming the spec."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(app, ["data", "check", "hf:no-org/no-dataset:validation", "--model", "minilm"])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("error: hf:no-org/no-dataset:validation: cannot load the hub dataset: ") and "\n" not in line


def test_a_hub_dataset_is_read_through_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hf:NAME:split` as `datasets.load_dataset(NAME, split=...)` reads it, offline here: NAME a local folder laid out
    as a hub dataset repository (data/train.csv, data/validation.csv)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\n", encoding="utf-8")
    (repo / "data" / "validation.csv").write_text("text,label\nfine,pos\n", encoding="utf-8")
    table = read_table(f"hf:{repo}:validation")
    assert [r.data for r in table.records] == [{"text": "fine", "label": "pos"}] and table.records[0].line == 1
    assert [r.data["text"] for r in read_table(f"hf:{repo}").records] == ["good film", "bad film"]  # default: train


def test_jsonl_rows_share_repeated_short_strings(tmp_path: Path) -> None:
    """Keys, labels and tags repeated across rows are one string each (memory per row), texts stay as read."""
    rows = [{"text": f"a film of some length, number {i}", "label": "positive" if i % 2 else "negative",
             "tags": ["O", "B-PER"]} for i in range(6)]
    table = read_table(write_jsonl(tmp_path / "rows.jsonl", rows))
    got = [r.data for r in table.records]
    assert got == rows
    assert got[1]["label"] is got[3]["label"] and got[0]["tags"][1] is got[4]["tags"][1]
    assert [next(iter(g)) for g in got][0] is next(iter(got[5]))


def test_a_lone_carriage_return_ends_a_line(tmp_path: Path) -> None:
    """Old Mac line ends: three texts to label are three rows, two paragraphs of a .txt corpus two documents."""
    from tunelab.data.readers import iter_txt, read_rows

    texts = write(tmp_path / "in.txt", "great movie\rterrible film\r\rokay I guess\r")
    table = read_rows(texts, "text")
    assert [(r.line, r.data["text"]) for r in table.records] == [(1, "great movie"), (2, "terrible film"),
                                                                   (4, "okay I guess")]
    corpus = write(tmp_path / "corpus.txt", "para one\rstill one\r\rpara two\r")
    assert [(r.line, r.data["text"]) for r in iter_txt(corpus)] == [(1, "para one\nstill one"), (4, "para two")]


def test_jsonl_with_lone_carriage_returns_reads_as_tsv_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSONL split at "\n" only: a lone-CR file was one line, `cr.jsonl:1: json: invalid JSON (Extra data ...)`. Now
    its rows, streamed or whole, are numbered as the TSV of the same rows numbers them; a bad row and a bad byte are
    named at their own line; CRLF is unchanged."""
    from tunelab.data import load

    body = ('{"text": "good film", "label": "pos"}\r{"text": "bad film", "label": "neg"}\r\r'
            '{"text": "ok", "label": "pos"}\r')
    jsonl = write(tmp_path / "cr.jsonl", body)
    tsv = write(tmp_path / "cr.tsv", "text\tlabel\rgood film\tpos\rbad film\tneg\r\rok\tpos\r")
    want = [(1, {"text": "good film", "label": "pos"}), (2, {"text": "bad film", "label": "neg"}),
            (4, {"text": "ok", "label": "pos"})]
    assert [(r.line, r.data) for r in read_table(jsonl).records] == want
    assert [(r.line - 1, r.data) for r in read_table(tsv).records] == want  # (its line 1 is the header)
    monkeypatch.setattr(load, "STREAM_BYTES", 0)  # parsed as a large file is: a line at a time
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    assert [(ex["line"], ex["text"]) for ex in load.parse_file(str(jsonl), make_task(), stream=True)] == \
        [(1, "good film"), (2, "bad film"), (4, "ok")]
    with pytest.raises(DataError, match=r"bad.jsonl:4: json: invalid JSON \(Expecting value"):
        read_table(write(tmp_path / "bad.jsonl", body.replace('{"text": "ok"', '{"text": ok')))
    (tmp_path / "byte.jsonl").write_bytes(body.replace("ok", "o\xff").encode("latin-1"))
    with pytest.raises(DataError, match=r"byte.jsonl:4: bytes: not valid UTF-8 \(byte 0xff at column 12\)"):
        read_table(tmp_path / "byte.jsonl")
    crlf = write(tmp_path / "crlf.jsonl", body.replace("\r", "\r\n"))
    assert [(r.line, r.data) for r in read_table(crlf).records] == want


def test_one_json_object_over_several_lines_is_one_row(tmp_path: Path) -> None:
    """A pretty-printed object is a row (not JSON lines whose first line is `{`); a SQuAD file with no articles has
    no rows; a JSON-lines file with a broken first line is still named at that line."""
    pretty = write(tmp_path / "one.json", '{\n  "text": "good film",\n  "label": "pos"\n}\n')
    assert [(r.line, r.data) for r in read_table(pretty).records] == [(1, {"text": "good film", "label": "pos"})]
    with pytest.raises(DataError, match=r"squad.json: empty file: no data rows"):
        read_table(write(tmp_path / "squad.json", '{"version": "1.1",\n "data": []}\n'))
    broken = write(tmp_path / "lines.json", '{"text": "good", "label": \n{"text": "bad", "label": "neg"}\n')
    with pytest.raises(DataError, match=r"lines.json:1: json: invalid JSON"):
        read_table(broken)


def test_an_empty_cell_of_a_one_column_file_is_a_row(tmp_path: Path) -> None:
    """Empty lines are no rows (pandas' skip_blank_lines); in a one-column file a `""` cell or a line of spaces is
    one — refused as an empty text at its line, never silently left out so that predictions no longer line up with
    the sheet. In a file of several columns a line of spaces is no row, as before."""
    path = write(tmp_path / "texts.csv", 'text\ngood\n\n""\n   \nbad\n\n')
    assert [(r.line, r.data) for r in read_table(path).records] == [
        (2, {"text": "good"}), (4, {"text": ""}), (5, {"text": "   "}), (6, {"text": "bad"})]
    with pytest.raises(DataError) as info:
        make_task().parse(read_table(path), labelled=False)
    assert str(info.value) == f"{where(path, 4, 'text')}empty text"
    two = write(tmp_path / "two.csv", "text,label\ngood,pos\n   \nbad,neg\n")
    assert [r.line for r in read_table(two).records] == [2, 4]
    cell = write(tmp_path / "cell.tsv", 'text\n"first line\nsecond line"\nplain row\n')  # one column, one cell
    assert [r.data["text"] for r in read_table(cell).records] == ["first line\nsecond line", "plain row"]


def test_rows_echoed_from_parquet_are_written_as_json(tmp_path: Path) -> None:
    """Dates, decimals and bytes of a Parquet column, and NaN, are written as standard JSON (what `predict` echoes)."""
    import datetime
    import decimal

    from tunelab.io import json_line

    row = {"when": datetime.datetime(2024, 1, 2, 3, 4), "day": datetime.date(2024, 1, 2),
           "price": decimal.Decimal("1.50"), "raw": b"\xff\x00", "text": "ok", "score": float("nan"),
           "scores": [float("inf"), 1.0]}
    assert json.loads(json_line(row)) == {"when": "2024-01-02T03:04:00", "day": "2024-01-02", "price": 1.5,
                                          "raw": "/wA=", "text": "ok", "score": None, "scores": [None, 1.0]}


def test_gbk_hint_for_one_chinese_character_a_line_and_for_configs(tmp_path: Path) -> None:
    """The GBK hint wanted two Chinese characters on the bad line: a character-level CoNLL file (`中 B-ORG`) never got
    it, and a GBK config YAML said only `not valid UTF-8`."""
    conll = write(tmp_path / "zh.conll", "我 O\n在 O\n北 B-LOC\n京 I-LOC\n".encode("gb18030"))
    with pytest.raises(DataError, match=r"zh.conll:1: bytes: not valid UTF-8 \(byte 0xce at column 1\); the line "
                                        r"reads as Chinese in GBK \(GB18030\).*iconv -f GB18030 -t UTF-8 "):
        read_table(conll)
    config = write(tmp_path / "run.yaml", "task: ner\n# 中文注释\nmodel: minilm\n".encode("gb18030"))
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert res.stderr == (f"error: {config}:2: not valid UTF-8 (byte 0xd6); the line reads as Chinese in GBK "
                          f"(GB18030), the encoding of a Chinese Windows: save the file as UTF-8, or convert it: "
                          f"iconv -f GB18030 -t UTF-8 {config} > {tmp_path / 'run.utf8.yaml'}\n")
    # Latin-1: an accent before an ASCII letter also decodes as a GBK ideograph (0xEF 0x76), but is not said so
    for text in ("naïve approach", "informação", "Größe 42", "café» Größe"):  # (an accent pair: one GBK ideograph)
        latin = write(tmp_path / "latin.jsonl", b'{"text": "%s", "label": "pos"}\n' % text.encode("cp1252"))
        with pytest.raises(DataError) as info:
            read_table(latin)
        assert "GBK" not in str(info.value), text
    # a Chinese character between two Latin letters is no accent pair's
    from tunelab.text.encodings import encoding_hint

    assert encoding_hint("苹果iPhone和iPad都很好用,1".encode("gb18030"), "x.csv")
    assert encoding_hint('{"text": "iPhone和iPad", "label": "好"}'.encode("gb18030"), "x.jsonl")


def test_a_json_array_on_one_line_names_the_row(tiny_bert: Path, tmp_path: Path) -> None:
    """`json.dump(rows, f)` writes the array on one line: every bad row was named `train.json:1`. The row, its place
    in the array, is named beside the line, read whole or streamed, in train's one line; the line stays an int
    (removed.jsonl's `line`, a spilled row's pickle keeps the row)."""
    import pickle

    from tunelab.data.jsonl import iter_json_array

    rows = sentiment_rows(40)
    rows[36]["label"] = ""
    path = write(tmp_path / "train.json", json.dumps(rows))
    expected = f"{path}:1 (row 37): label: empty label"
    with pytest.raises(DataError) as info:
        parse(path)
    assert str(info.value) == expected and info.value.line == 1
    streamed = list(iter_json_array(path, block=64))
    assert [str(r.line) for r in streamed[35:38]] == ["1 (row 36)", "1 (row 37)", "1 (row 38)"]
    with pytest.raises(DataError, match=r"^.*:1 \(row 37\): label: empty label$"):
        make_task().parse(Table(str(path), streamed))
    assert_one_line_error(train_cli(tiny_bert, tmp_path / "run", path), expected)
    kept = pickle.loads(pickle.dumps(streamed[36].line))
    assert (str(kept), json.dumps(kept)) == ("1 (row 37)", "1")
    # removed.jsonl named every row it dropped `"line": 1`: its row is written beside (`array_row`), as its
    # duplicate_of names it
    from tunelab.data.dedup import dedup_within
    from tunelab.data.report import DataReport
    from tunelab.data.sampling import resample

    rows[36] = dict(rows[4])  # a duplicate of row 5, which leaves a class one row larger to undersample
    path.write_text(json.dumps(rows), encoding="utf-8")
    report = DataReport()
    resample(dedup_within(parse(path), "train", report), "undersample", 0, lambda ex: ex["label"], report)
    report.write(tmp_path)
    removed = [json.loads(line) for line in (tmp_path / "removed.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["reason"], r["line"], r["array_row"], r.get("duplicate_of")) for r in removed] == [
        ("duplicate", 1, 37, f"{path}:1 (row 5)"), ("undersampled", 1, removed[1]["array_row"], None)]
    assert rows[removed[1]["array_row"] - 1] == removed[1]["row"]
