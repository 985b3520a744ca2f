"""A large JSONL training file is parsed a chunk at a time and spilled as it is parsed (data.load.parse_file): the
rows, the held-out split, the errors, `data check` and the trained model are what the whole-file parse gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from test_feature_cache import _curve, _train
from test_ner import _ner_rows
from tunelab.cli import app
from tunelab.config.sections import DataConfig
from tunelab.data import load, row_spill
from tunelab.data.feature_store import RowSequence
from tunelab.data.report import DataReport
from tunelab.errors import DataError
from tunelab.registry import TASKS


@pytest.fixture()
def small_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every training file streamed (JSONL, CSV, Parquet), 5 rows parsed at a time into pickles of 3 (these cross)."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(load, "STREAM_BYTES", 0)
    monkeypatch.setattr(load, "STREAM_ROWS", 0)
    monkeypatch.setattr(load, "PARSE_CHUNK", 5)
    monkeypatch.setattr(row_spill, "CHUNK", 3)
    return tmp_path / "cache" / "features"


def _splits(path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool, task: str = "classification",
            **data: object) -> dict:
    monkeypatch.setattr(load, "STREAM_BYTES", 0 if stream else 1 << 60)
    monkeypatch.setattr(load, "STREAM_ROWS", 0 if stream else 1 << 60)
    cfg = DataConfig(train=str(path), **data)
    return load.load_splits(cfg, TASKS.get(task)(TASKS.get(task).Config(name=task), cfg), 7, DataReport())


def _whole_and_streamed(path: Path, monkeypatch: pytest.MonkeyPatch, task: str = "classification",
                        ) -> tuple[dict, dict]:
    """The splits (20 % held out) parsed whole and streamed: a list and a spill, with the same rows."""
    whole = _splits(path, monkeypatch, False, task, validation_split=0.2)
    streamed = _splits(path, monkeypatch, True, task, validation_split=0.2)
    assert isinstance(whole["train"], list) and isinstance(streamed["train"], RowSequence)
    for split in ("train", "validation"):
        assert list(streamed[split]) == list(whole[split])
    return whole, streamed


def test_streamed_rows_and_held_out_split_equal_the_whole_parse(tmp_path: Path, small_parts: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(23))
    whole, streamed = _whole_and_streamed(train, monkeypatch)
    assert isinstance(streamed["validation"], list), "evaluation writes into the held-out rows: kept in memory"
    for split in ("train", "validation"):
        assert [streamed[split][i] for i in range(len(whole[split]))] == whole[split]
    assert streamed["train"][2:7] == whole["train"][2:7]
    assert not list(small_parts.glob(".rows.*")), "the spill file is unlinked once mapped"


_JSONL_ROWS = [json.dumps(r) for r in sentiment_rows(12)]
_CSV_ROWS = ["text,label", *(f"row {i},pos" for i in range(9))]


@pytest.mark.parametrize(("name", "lines", "error", "empty"), [
    ("train.jsonl", [*_JSONL_ROWS[:10], '{"text": "a row without a label"}', _JSONL_ROWS[11]], ":11: label:", "\n\n"),
    ("train.csv", [*_CSV_ROWS, "a row,pos,extra"], ":11: row: expected 2 fields", "text,label\n"),
    ("train.conll", ["EU B-ORG", "rejects O", "", "Peter B-PER", "Blackburn", ""], ":5: tags: expected a token",
     "-DOCSTART- O\n\n"),
])
def test_a_bad_row_names_its_line_and_leaves_no_file(tmp_path: Path, small_parts: Path, name: str, lines: list[str],
                                                     error: str, empty: str, monkeypatch: pytest.MonkeyPatch) -> None:
    train = tmp_path / name
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = "ner" if name.endswith(".conll") else "classification"
    with pytest.raises(DataError) as err:
        _splits(train, monkeypatch, True, task, validation_split=0.2)
    assert str(err.value).startswith(f"{train}{error}"), str(err.value)
    assert not list(small_parts.glob(".rows.*")), "nothing half-written is left"
    (tmp_path / "empty").mkdir()
    train = tmp_path / "empty" / name
    train.write_text(empty, encoding="utf-8")
    with pytest.raises(DataError, match="empty file: no data rows"):
        _splits(train, monkeypatch, True, task)


def test_data_clean_streams_with_the_same_rows_and_removals(tmp_path: Path, small_parts: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`data.clean` runs a part at a time on a streamed file: the rows kept and changed, and every removal with
    its line, are the whole parse's."""
    rows = sentiment_rows(23)
    for i in (2, 9, 16):
        rows[i]["text"] = f"  <b>{rows[i]['text']}</b>\u200b  "  # changed by cleaning
    for i in (4, 11, 20):
        rows[i]["text"] = "<i>ok</i>"  # 2 characters left: under min_chars
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    results = []
    for stream in (False, True):
        monkeypatch.setattr(load, "STREAM_BYTES", 0 if stream else 1 << 60)
        cfg = DataConfig(train=str(train), validation_split=0.2, clean={"min_chars": 5})
        task = TASKS.get("classification")(TASKS.get("classification").Config(name="classification"), cfg)
        report = DataReport()
        splits = load.load_splits(cfg, task, 7, report)
        results.append(({k: list(v) for k, v in splits.items()}, report.summary(), report.removed))
        assert isinstance(splits["train"], RowSequence) == stream
    assert results[0] == results[1]
    assert results[1][1]["removed"] == {"train": {"too_short": 3}}, results[1][1]
    assert results[1][1]["rows_read"] == {"train": 23} and results[1][1]["rows_changed_by_cleaning"] == {"train": 3}
    assert [r["line"] for r in results[1][2]] == [5, 12, 21]
    assert all("<b>" not in ex["text"] for part in results[1][0].values() for ex in part)


def test_data_dedup_streams_with_the_same_rows_and_removals(tmp_path: Path, small_parts: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`data.dedup` on a streamed file (data/dedup._dedup_spilled): the rows kept, the held-out split and every
    removal (its line, the row it repeats, exact or normalised, a differing label), in order, are the whole
    parse's; so is the comparison with a validation file."""
    rows = sentiment_rows(30)
    for i, j in ((7, 2), (12, 2), (13, 5), (21, 19), (25, 0), (29, 28)):
        rows[i] = dict(rows[j])
    rows[12]["text"] = rows[12]["text"].upper() + "  "  # a normalised duplicate of row 3 (line 3)
    rows[25]["label"] = "positive" if rows[0]["label"] == "negative" else "negative"
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", [rows[4], {"text": "unseen", "label": "positive"}])
    for data in ({"validation_split": 0.2}, {"validation": str(val)}):
        results = []
        for stream in (False, True):
            monkeypatch.setattr(load, "STREAM_BYTES", 0 if stream else 1 << 60)
            cfg = DataConfig(train=str(train), dedup=True, **data)
            task = TASKS.get("classification")(TASKS.get("classification").Config(name="classification"), cfg)
            report = DataReport()
            splits = load.load_splits(cfg, task, 7, report)
            assert isinstance(splits["train"], RowSequence) == stream
            results.append(({k: list(v) for k, v in splits.items()}, report.summary(), report.removed))
        assert results[0] == results[1], data
        removed = results[1][2]
        assert [r["line"] for r in removed if r["reason"] == "duplicate"] == [8, 13, 14, 22, 26, 30]
        assert [r["match"] for r in removed if r["reason"] == "duplicate"] == ["exact", "normalised", *["exact"] * 4]
        assert next(r for r in removed if r["line"] == 26).get("label_differs") is True
        assert next(r for r in removed if r["line"] == 14)["duplicate_of"].endswith("train.jsonl:6")
        if "validation" in data:
            assert [(r["line"], r["reason"]) for r in removed if r["reason"] != "duplicate"] == [(5, "in_validation")]
    assert not list(small_parts.glob(".rows.*"))


def test_a_json_array_names_each_row_by_the_line_its_item_starts_on(tmp_path: Path, small_parts: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A pretty-printed JSON array, parsed whole and streamed (read 7 characters at a time): a row's line, its error's
    and dedup's `removed.jsonl` (`line`, `duplicate_of`) are the line its item starts on, as a parse error's is (was
    its number in the array: `"line": 61, "duplicate_of": "jd.json:3"` for lines 242 and 10); the row, its place in
    the array, is named beside the line (`jd.json:10 (row 3)`)."""
    from tunelab.data.jsonl import iter_json_array
    from tunelab.data.readers import read_table

    rows = sentiment_rows(12)
    rows[9] = {"note": "a row\nof three\nlines", **rows[2]}  # (an escaped line break is no line)
    train = tmp_path / "jd.json"
    train.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    want = [2 + 4 * i + (i > 9) for i in range(12)]  # 4 lines an item; item 10 has a fifth
    assert [r.line for r in read_table(train).records] == [r.line for r in iter_json_array(train, block=7)] == want
    for stream in (False, True):
        monkeypatch.setattr(load, "STREAM_BYTES", 0 if stream else 1 << 60)
        cfg = DataConfig(train=str(train), dedup=True, validation_split=0.2)
        task = TASKS.get("classification")(TASKS.get("classification").Config(name="classification"), cfg)
        report = DataReport()
        splits = load.load_splits(cfg, task, 7, report)
        assert isinstance(splits["train"], RowSequence) == stream
        assert sorted(ex["line"] for split in splits.values() for ex in split) == want[:9] + want[10:]
        assert [(r["line"], r["duplicate_of"]) for r in report.removed] == [(want[9], f"{train}:{want[2]} (row 3)")]
    one_line = tmp_path / "compact.json"
    one_line.write_text(json.dumps(rows[:3]), encoding="utf-8")  # every item on line 1
    assert [r.line for r in read_table(one_line).records] == [r.line for r in iter_json_array(one_line)] == [1, 1, 1]


def test_a_spill_restarted_in_another_folder_counts_each_row_once(tmp_path: Path, small_parts: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache folder fails after two parts were cleaned (a full disk): the parse starts again in the temporary
    folder, and the report counts what the whole parse counts, not the first attempt's parts as well."""
    rows = sentiment_rows(23)
    for i in (1, 4, 11):
        rows[i]["text"] = "<i>ok</i>"
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    real, calls = row_spill.spill_chunks, []

    def full_disk_once(parts, directory):  # noqa: ANN001, ANN202
        calls.append(directory)
        if len(calls) == 1:
            next(parts), next(parts)
            raise OSError(28, "No space left on device")
        return real(parts, directory)

    summaries = []
    for stream in (False, True):
        monkeypatch.setattr(load, "STREAM_BYTES", 0 if stream else 1 << 60)
        monkeypatch.setattr(row_spill, "spill_chunks", full_disk_once if stream else real)
        cfg = DataConfig(train=str(train), validation_split=0.2, clean={"min_chars": 5})
        task = TASKS.get("classification")(TASKS.get("classification").Config(name="classification"), cfg)
        report = DataReport()
        load.load_splits(cfg, task, 7, report)
        summaries.append((report.summary(), report.removed))
    assert len(calls) == 2, "the first folder failed, the second was used"
    assert summaries[0] == summaries[1]
    assert summaries[1][0]["rows_read"] == {"train": 23} and summaries[1][0]["removed"] == {"train": {"too_short": 3}}


def test_data_check_reads_the_streamed_file_alike(tiny_bert: Path, tmp_path: Path, small_parts: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40) + sentiment_rows(3))  # 3 duplicates
    reports = []
    for limit in (0, 1 << 60):
        monkeypatch.setattr(load, "STREAM_BYTES", limit)
        res = CliRunner().invoke(app, ["data", "check", str(train), "--model", str(tiny_bert), "--json"])
        assert res.exit_code == 0, res.output
        reports.append(json.loads(res.stdout))
    assert reports[0] == reports[1] and reports[0]["files"][str(train)]["duplicates_exact"] == 3


def test_training_on_a_streamed_file_is_the_same_run(tiny_bert: Path, tmp_path: Path, small_parts: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _train(tiny_bert, tmp_path, "streamed", "data.cache=true")
    assert code == 0, out
    monkeypatch.setattr(load, "STREAM_BYTES", 1 << 60)
    code, out = _train(tiny_bert, tmp_path, "whole", "data.cache=false")
    assert code == 0, out
    assert _curve(tmp_path / "streamed") == _curve(tmp_path / "whole")
    for name in ("model/model.safetensors", "data_summary.json"):
        assert (tmp_path / "streamed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


@pytest.mark.parametrize("sampling", ["oversample", "undersample"])
def test_sampling_and_augment_on_a_streamed_file_are_the_same_run(tiny_bert: Path, tmp_path: Path, small_parts: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  sampling: str) -> None:
    """`data.sampling` gives an index view of the spilled rows and `data.augment` spills its copies beside them: the
    rows trained on, the losses, the weights and the data summary are the whole parse's."""
    rows = sentiment_rows(64, 0)
    write_jsonl(tmp_path / "train.jsonl", [r for i, r in enumerate(rows) if r["label"] == "positive" or i % 4 == 0])
    write_jsonl(tmp_path / "val.jsonl", sentiment_rows(16, 1))
    sets = (f"data.sampling={sampling}", "data.augment.ops=[delete,swap]", "data.augment.copies=1")
    code, out = _train(tiny_bert, tmp_path, "streamed", "data.cache=true", *sets)
    assert code == 0, out
    monkeypatch.setattr(load, "STREAM_BYTES", 1 << 60)
    code, out = _train(tiny_bert, tmp_path, "whole", "data.cache=false", *sets)
    assert code == 0, out
    assert _curve(tmp_path / "streamed") == _curve(tmp_path / "whole")
    for name in ("model/model.safetensors", "data_summary.json"):
        assert (tmp_path / "streamed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    applied = json.loads((tmp_path / "whole" / "data_summary.json").read_text())["applied"]
    assert applied["sampling"]["rows_after"] != applied["sampling"]["rows_before"]
    assert applied["augment"]["copies_added"] > 0, applied
    assert not list(small_parts.glob(".rows.*"))


def test_sampling_and_augment_keep_spilled_rows_off_the_heap(tmp_path: Path, small_parts: Path) -> None:
    """On spilled rows, `resample` returns an index view and `augment_examples` the rows then their spilled copies
    (RowSequences, not lists), with the rows a list gives."""
    from tunelab.config.sections import AugmentConfig
    from tunelab.data.augment import augment_examples
    from tunelab.data.sampling import resample

    rows = [dict(r, line=i + 1) for i, r in enumerate(sentiment_rows(40)) if r["label"] == "positive" or i % 3 == 0]
    spilled = row_spill.spill_chunks([rows[:7], rows[7:]], tmp_path)
    for how in ("oversample", "undersample"):
        got = resample(spilled, how, 3, lambda ex: ex["label"])
        assert isinstance(got, RowSequence) and list(got) == resample(rows, how, 3, lambda ex: ex["label"])
    cfg = AugmentConfig(ops=["delete", "swap"], copies=2)
    got, stats = augment_examples(spilled, cfg, 5, None)
    want, want_stats = augment_examples(rows, cfg, 5, None)
    assert isinstance(got, RowSequence) and list(got) == want and stats == want_stats
    assert stats["copies_added"] > len(rows) and got[len(rows)]["augmented_from"] == rows[0]["line"]


def test_ner_evaluates_rows_held_out_of_a_streamed_file(tiny_bert: Path, tmp_path: Path, small_parts: Path) -> None:
    """NER's evaluation writes each held-out row's word ids into it: those rows must not be read back from the
    spill (a fresh copy each read) — the run would fail at its first evaluation."""
    train = write_jsonl(tmp_path / "train.jsonl", _ner_rows(40))
    args = ["task=ner", f"model={tiny_bert}", f"data.train={train}", "data.validation_split=0.2",
            f"output_dir={tmp_path / 'run'}", "train.epochs=1", "train.batch_size=8", "train.save_steps=0",
            "train.precision=fp32", "train.report=false"]
    res = CliRunner().invoke(app, ["train", *[a for s in args for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "f1" in metrics["validation"], metrics


def _write_as(path: Path, rows: list[dict]) -> Path:
    """The rows as CSV (lone-\r line ends), TSV or Parquet; row 4's text has a comma and a line break (quoted)."""
    rows = [dict(r, text=r["text"] + ", twice\nover") if i == 3 else r for i, r in enumerate(rows)]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)  # row groups cross the parts
        return path
    sep = "," if path.suffix == ".csv" else "\t"
    lines = [f"text{sep}label", *(f'"{r["text"]}"{sep}{r["label"]}' for r in rows)]
    path.write_bytes(("\r".join(lines) + "\r").encode() if sep == "," else ("\n".join(lines) + "\n").encode())
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_csv_tsv_and_parquet_files_stream_like_the_whole_parse(tmp_path: Path, small_parts: Path, suffix: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    train = _write_as(tmp_path / f"train{suffix}", sentiment_rows(23))
    whole, _ = _whole_and_streamed(train, monkeypatch)
    rows = sorted([*whole["train"], *whole["validation"]], key=lambda ex: ex["line"])
    assert len(rows) == 23 and any(", twice\nover" in ex["text"] for ex in rows)
    if suffix != ".parquet":  # the header is line 1; the quoted field spans lines 5-6
        assert [ex["line"] for ex in rows] == [2, 3, 4, 5, *range(7, 26)]


def test_the_csv_modules_own_error_names_the_line(tmp_path: Path, small_parts: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import csv

    train = tmp_path / "train.csv"
    train.write_text("\n".join([*_CSV_ROWS, "a much longer row,pos"]) + "\n", encoding="utf-8")
    limit = csv.field_size_limit(12)  # as a cell over the real 1 GB limit would
    try:
        with pytest.raises(DataError) as err:
            _splits(train, monkeypatch, True)
    finally:
        csv.field_size_limit(limit)
    assert str(err.value).startswith(f"{train}:11: csv: field larger than field limit"), str(err.value)
    assert not list(small_parts.glob(".rows.*")), "nothing half-written is left"


def _write_other(path: Path, rows: list[dict]) -> Path:
    """The rows as a pretty-printed JSON array, a JSON-lines `.json`, an Arrow file of batches of 4, a Feather file, a
    `datasets` save_to_disk folder, or a folder of Parquet files whose second lacks a column."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    kind = path.name
    if kind == "array.json":
        path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    elif kind == "lines.json":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind == "batches.arrow":
        table = pa.Table.from_pylist(rows)
        with pa.ipc.new_file(str(path), table.schema) as w:
            for batch in table.to_batches(max_chunksize=4):
                w.write_batch(batch)
    elif kind == "rows.feather":
        feather.write_feather(pa.Table.from_pylist(rows), str(path), chunksize=6)
    elif kind == "ds":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    else:  # a Parquet folder: the second file without `note`, which the rows then hold as None
        path.mkdir()
        pq.write_table(pa.Table.from_pylist([dict(r, note="n") for r in rows[:9]]), path / "part-0.parquet")
        pq.write_table(pa.Table.from_pylist(rows[9:]), path / "part-1.parquet", row_group_size=5)
    return path


@pytest.mark.parametrize("name", ["array.json", "lines.json", "batches.arrow", "rows.feather", "ds", "parquet-folder"])
def test_json_arrow_and_dataset_folders_stream_like_the_whole_parse(tmp_path: Path, small_parts: Path, name: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tunelab.data import jsonl

    monkeypatch.setattr(jsonl, "JSON_BLOCK", 7)  # a JSON array read 7 characters at a time: items cross blocks
    rows = sentiment_rows(23)
    rows[3]["text"] += ' with "quotes", [brackets] and 中文'
    train = _write_other(tmp_path / name, rows)
    _, streamed = _whole_and_streamed(train, monkeypatch)
    got = sorted([*streamed["train"], *streamed["validation"]], key=lambda ex: (ex["source"], ex["line"]))
    lines = [*range(1, 10), *range(1, 15)] if name == "parquet-folder" else list(range(1, 24))  # a folder: per file
    if name == "array.json":  # an item at the line it starts on, 4 lines each
        lines = [2 + 4 * i for i in range(23)]
    assert [ex["line"] for ex in got] == lines and [ex["text"] for ex in got] == [r["text"] for r in rows]
    if name == "parquet-folder":
        assert got[0]["row"]["note"] == "n" and got[-1]["row"]["note"] is None


@pytest.mark.parametrize("text", [
    '[{"text": "a", "label": "x"},\n {"text": "b", "label": "y"}\n {"text": "c", "label": "x"}]',  # no comma
    '[{"text": "a", "label": "x"},\n {"text": "b", "label": "y"},\n {"text": "c", "label": "x"}] ]',  # extra data
    '[{"text": "a", "label": "x"},\n {"text": "b\n", "label": "y"}]',  # a raw line break in a string
    '[{"text": "a", "label": "x"},\n {"text": "b", "label": "y"',  # cut short
    '[{"text": "a", "label": "x"},\n 7]',  # not an object
    '[{"text": "a", "label": "x"},\n 12.125]',  # not an object, cut by a block's end
    '[{"text": "a", "label": "x"}',  # the array not closed
    '[{"text": "a", "label": "x"},\r{"text": "b", "label": "y"},\r{"text" 3}]',  # lone-CR line ends: not lines to JSON
    '[{"text": "a", "label": "x"},\n {"text": "b", "label": fals}]',  # a cut-looking literal that is wrong
])
def test_a_streamed_json_array_names_the_error_as_the_whole_parse(tmp_path: Path, small_parts: Path, text: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tunelab.data import jsonl

    monkeypatch.setattr(jsonl, "JSON_BLOCK", 5)
    train = tmp_path / "train.json"
    train.write_text(text, encoding="utf-8")
    errors = []
    for stream in (False, True):
        with pytest.raises(DataError) as err:
            _splits(train, monkeypatch, stream, validation_split=0.2)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and errors[0].startswith(f"{train}:"), errors
    assert not list(small_parts.glob(".rows.*"))


def test_a_hub_dataset_streams_like_the_whole_parse(tmp_path: Path, small_parts: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`hf:NAME` (a local folder laid out as a hub repository, offline) is read a batch at a time from datasets'
    mapped Arrow cache: the rows and the held-out split are the whole read's."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    (tmp_path / "repo" / "data").mkdir(parents=True)
    _write_as(tmp_path / "repo" / "data" / "train.csv", sentiment_rows(23))
    spec = f"hf:{tmp_path / 'repo'}"
    results = []
    for stream in (False, True):
        monkeypatch.setattr(load, "STREAM_BYTES", 0 if stream else 1 << 60)
        monkeypatch.setattr(load, "STREAM_ROWS", 0 if stream else 1 << 60)
        cfg = DataConfig(train=spec, validation_split=0.2)
        task = TASKS.get("classification")(TASKS.get("classification").Config(name="classification"), cfg)
        splits = load.load_splits(cfg, task, 7, DataReport())
        assert isinstance(splits["train"], RowSequence) == stream
        results.append({k: list(v) for k, v in splits.items()})
    assert results[0] == results[1]
    rows = sorted([*results[1]["train"], *results[1]["validation"]], key=lambda ex: ex["line"])
    assert [ex["line"] for ex in rows] == list(range(1, 24)) and rows[0]["source"] == spec


def test_a_view_in_any_order_reads_the_rows_it_names(tmp_path: Path, small_parts: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A view of spilled rows whose indices are out of order and repeat (oversampled copies) is read a window at a
    time in the file's order: iterating and slicing give exactly the rows named, in the view's order."""
    import random

    from tunelab.data import feature_store

    monkeypatch.setattr(feature_store, "WINDOW", 7)
    rows = [{"text": f"row {i}", "line": i + 1} for i in range(50)]
    spilled = row_spill.spill_chunks([rows[:20], rows[20:]], tmp_path)
    rng = random.Random(0)
    indices = [*range(50), *(rng.randrange(50) for _ in range(40)), 3, 3, 49, 0]
    view = spilled.take(indices)
    assert list(view) == [rows[i] for i in indices]
    assert view[5:33] == [rows[i] for i in indices[5:33]] and view[88:] == [rows[i] for i in indices[88:]]
    assert view.take([93, 60, 60, 1])[1:] == [rows[i] for i in (indices[60], indices[60], indices[1])]


def test_a_hub_datasets_json_typed_column_reads_as_to_list_gives_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """datasets 5 stores a column of mixed types (a chat turn's `content`: text or a list of parts) as JSON text and
    decodes it in `Dataset.to_list`; read a batch at a time, the rows are decoded alike."""
    from tunelab.data.readers import hub_dataset, iter_hub

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    (tmp_path / "repo" / "data").mkdir(parents=True)
    rows = [{"text": "a", "extra": "hi"}, {"text": "b", "extra": [{"type": "text", "text": "x"}]},
            {"text": "c", "extra": 3}]
    write_jsonl(tmp_path / "repo" / "data" / "train.jsonl", rows)
    spec = f"hf:{tmp_path / 'repo'}"
    assert [r.data for r in iter_hub(spec)[1]] == hub_dataset(spec).to_list() == rows


def test_conll_and_text_files_stream_like_the_whole_parse(tmp_path: Path, small_parts: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A CoNLL file (NER) is read a sentence at a time and a .txt corpus (pretrain) a paragraph at a time: CRLF and
    lone blank or whitespace-only lines, a BOM, `-DOCSTART-` lines; the same examples, lines and texts."""
    sentences = [(["EU", "rejects", "German", "中文"], ["B-ORG", "O", "B-MISC", "O"]), (["Peter"], ["B-PER"])] * 7
    blocks = ["\r\n".join(f"{t} NNP {g}" for t, g in zip(*s, strict=True)) for s in sentences]
    conll = tmp_path / "train.conll"
    conll.write_bytes(("\ufeff-DOCSTART- -X- O\n\n" + "\n\n \n".join(blocks) + "\n").encode())
    _, streamed = _whole_and_streamed(conll, monkeypatch, "ner")
    got = sorted([*streamed["train"], *streamed["validation"]], key=lambda ex: ex["line"])
    assert [ex["tokens"] for ex in got] == [s[0] for s in sentences] and got[1]["line"] == 9
    paragraphs = [f"paragraph {i}\r\nits second line 第{i}行" for i in range(17)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(("\ufeff" + "\r\n\r\n   \n".join(paragraphs)).encode())
    _, streamed = _whole_and_streamed(corpus, monkeypatch, "pretrain")
    got = sorted([*streamed["train"], *streamed["validation"]], key=lambda ex: ex["line"])
    assert [ex["text"] for ex in got] == [p.replace("\r\n", "\n") for p in paragraphs]
    assert [ex["line"] for ex in got[:2]] == [1, 5]


def _squad_doc(articles: int) -> dict:
    """Articles of 1-3 paragraphs of 1-3 questions; an unanswerable one; Chinese, quotes and brackets in texts."""
    data = []
    for a in range(articles):
        paras = []
        for p in range(a % 3 + 1):
            context = f'Article {a} "part" [{p}]: the cat sat on the mat. 猫坐在垫子上。'
            qas = [{"id": f"{a}-{p}-{q}", "question": f"Who sat {q}?", "answers": [{"text": "the cat",
                    "answer_start": context.index("the cat")}]} for q in range((a + p) % 3 + 1)]
            if a == 1 and p == 0:
                qas.append({"id": "none", "question": "Why?", "answers": [], "is_impossible": True})
            paras.append({"context": context, "qas": qas})
        data.append({"title": f"T{a}", "paragraphs": paras})
    return {"data": data, "version": "1.1"}  # `version` after `data`: read on and dropped


@pytest.mark.parametrize("indent", [None, 2])
def test_a_squad_json_file_streams_like_the_whole_parse(tmp_path: Path, small_parts: Path, indent: int | None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQuAD `.json` (one object) is read an article at a time, 7 characters per block: the questions, their
    places and the held-out split are the whole parse's; `read_table` reads it the same way."""
    from tunelab.data import jsonl
    from tunelab.data.readers import read_table

    train = tmp_path / "squad.json"
    train.write_text(json.dumps(_squad_doc(9), indent=indent, ensure_ascii=False), encoding="utf-8")
    records = [(r.source, r.data) for r in read_table(train).records]
    monkeypatch.setattr(jsonl, "JSON_BLOCK", 7)
    assert jsonl.json_shape(train) == "squad" and [(r.source, r.data) for r in jsonl.iter_squad(train)] == records
    questions = sum(len(para["qas"]) for art in _squad_doc(9)["data"] for para in art["paragraphs"])
    assert len(records) == questions and records[-1][0].endswith("squad.json: data[8].paragraphs[2].qas[1]")
    assert next(r for s, r in records if r["id"] == "none")["answers"] == []
    _, streamed = _whole_and_streamed(train, monkeypatch, "qa")
    got = sorted((ex["source"], ex["row"]) for ex in [*streamed["train"], *streamed["validation"]])
    assert got == sorted(records)
    other = tmp_path / "one.json"  # one object that is not SQuAD: read whole, as one row
    other.write_text('{"text": "a", "label": "x"}', encoding="utf-8")
    assert jsonl.json_shape(other) == "object" and read_table(other).records[0].data == {"text": "a", "label": "x"}
    for version in (1.5, -12.5e3, 1e-7, float("-inf")):  # a number a block's end cuts (`1.` is read on, not `1`)
        doc = {"version": version, "data": _squad_doc(2)["data"], "n": 2.0}
        train.write_text(json.dumps(doc, indent=indent), encoding="utf-8")
        assert all(list(jsonl._squad_articles(train, size)) == doc["data"] for size in range(1, 18)), version
    empty = tmp_path / "empty.json"
    empty.write_text('{"version": "1.1", "data": []}', encoding="utf-8")
    assert list(jsonl.iter_squad(empty)) == []


@pytest.mark.parametrize(("tail", "want"), [
    (',\n {"title": "U", "paragraphs": [{"context": "c", "qas": [{"id": "x"}]}]\n', r":4: json: invalid JSON"),  # cut
    (',\n 7\n]}', r"data\[1\]: expected a JSON object"),
    (',\n {"title": "U", "paragraphs": {"context": "c"}}\n]}', r"data\[1\]: paragraphs: expected a list, got dict"),
    ('\n] "version": 1}', r":3: json: invalid JSON \(Expecting ',' delimiter\)"),
    ('\n], "data": []}', r":3: json: invalid JSON \(a second \"data\" key"),  # json.loads kept the last silently
    ('\n]}\n{"data": []}\n', r":4: json: invalid JSON \(Extra data after the SQuAD object"),  # SQuAD objects per line
])
def test_a_bad_squad_file_names_the_place_streamed_or_whole(tmp_path: Path, small_parts: Path, tail: str, want: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut short, a non-object article, paragraphs not a list, a missing comma, a second `data` key, a second object:
    one line naming the line or the article, the same whether the file is streamed or read whole; no spill left."""
    from tunelab.data import jsonl

    monkeypatch.setattr(jsonl, "JSON_BLOCK", 5)
    first = json.dumps(_squad_doc(1)["data"][0], ensure_ascii=False)
    train = tmp_path / "train.json"
    train.write_text('{"data": [\n ' + first + tail, encoding="utf-8")
    errors = []
    for stream in (False, True):
        with pytest.raises(DataError) as err:
            _splits(train, monkeypatch, stream, "qa", validation_split=0.2)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and errors[0].startswith(str(train)), errors
    assert re.search(want, errors[0]), errors[0]
    assert not list(small_parts.glob(".rows.*"))
