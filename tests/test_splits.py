"""The validation hold-out (`data.validation_split`) and cv's folds: their size, their classes, their groups."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from tunelab.cli import app
from tunelab.config.sections import DataConfig
from tunelab.data.load import load_splits, run_splits
from tunelab.data.report import DataReport, training_fingerprint
from tunelab.errors import DataError
from tunelab.studies.cv import fold_indices
from tunelab.tasks.classification import Classification, ClassificationConfig
from tunelab.tasks.qa import Qa, QaConfig


def _load(rows: list[dict], tmp_path: Path, seed: int = 0, multi: bool = False, qa: bool = False,
          **data: object) -> tuple[dict, DataReport]:
    cfg = DataConfig(train=str(write_jsonl(tmp_path / "train.jsonl", rows)), **data)
    task = Qa(QaConfig(), cfg) if qa else Classification(ClassificationConfig(multi_label=multi), cfg)
    report = DataReport()
    return load_splits(cfg, task, seed, report), report


def test_small_classes_still_give_the_fraction_asked(tmp_path: Path) -> None:
    """20 classes of 5 rows at 0.1: 10 validation rows (each class's own share, round(0.5), was none: 1 row), shared
    one each among 10 classes, every class keeping rows in train; seeded: the same seed, the same rows."""
    rows = [{"text": f"row {c} {i}", "label": f"c{c}"} for c in range(20) for i in range(5)]
    splits, _ = _load(rows, tmp_path)
    val = Counter(r["label"] for r in splits["validation"])
    assert len(splits["validation"]) == 10 and set(val.values()) == {1}
    assert {r["label"] for r in splits["train"]} == {f"c{c}" for c in range(20)}
    again, _ = _load(rows, tmp_path)
    assert [r["text"] for r in again["validation"]] == [r["text"] for r in splits["validation"]]
    other = {tuple(r["text"] for r in _load(rows, tmp_path, seed)[0]["validation"]) for seed in range(1, 6)}
    assert len(other) > 1


def test_the_classes_share_the_hold_out_by_largest_remainder(tmp_path: Path) -> None:
    rows = [{"text": f"row {i}", "label": lab} for i, lab in enumerate(["a"] * 55 + ["b"] * 33 + ["c"] * 12)]
    splits, report = _load(rows, tmp_path, validation_split=0.1)
    assert Counter(r["label"] for r in splits["validation"]) == {"a": 6, "b": 3, "c": 1}  # 5.5, 3.3, 1.2 → 10
    assert report.applied["validation_split"] == {"fraction": 0.1, "rows": 10, "note": None,
                                                  "rows_sha256": training_fingerprint(splits["validation"])}


def test_multi_label_rows_are_held_out_by_their_rarest_label(tmp_path: Path) -> None:
    """Keyed by the whole label set, 20 sets of 5 rows held out 1 row; by the rarest label, 10, and every label of a
    validation row is in train."""
    rows = [{"text": f"row {c} {i}", "label": ["common", f"c{c}"]} for c in range(20) for i in range(5)]
    splits, _ = _load(rows, tmp_path, multi=True)
    assert len(splits["validation"]) == 10
    trained = {lab for r in splits["train"] for lab in r["label"]}
    assert all(lab in trained for r in splits["validation"] for lab in r["label"])


def test_a_label_never_leaves_train_whole(tmp_path: Path) -> None:
    """A multi-label row whose rarest label keeps rows in train but whose other label is on that row alone stays in
    train."""
    rows = [{"text": f"a {i}", "label": ["a"]} for i in range(4)] + [{"text": "ab", "label": ["a", "only"]}] + \
        [{"text": f"b {i}", "label": ["b"]} for i in range(5)]
    for seed in range(10):
        splits, _ = _load(rows, tmp_path, seed, multi=True, validation_split=0.5)
        assert "ab" in {r["text"] for r in splits["train"]}


def test_a_class_of_one_row_stays_in_train(tmp_path: Path) -> None:
    """The tiny-data fallback held out one row of any class: `b`'s only row, and the run then failed on it as "not
    among the training labels" of the user's file."""
    rows = [{"text": f"a {i}", "label": "a"} for i in range(5)] + [{"text": "b", "label": "b"}]
    for seed in range(20):
        splits, _ = _load(rows, tmp_path, seed)
        assert "b" in {r["label"] for r in splits["train"]} and len(splits["validation"]) == 1


def test_no_class_of_two_rows_is_one_line(tmp_path: Path, tiny_bert: Path) -> None:
    rows = [{"text": "a", "label": "a"}, {"text": "b", "label": "b"}, {"text": "c", "label": "c"}]
    with pytest.raises(DataError, match=r"train.jsonl: data.validation_split: no class has two rows to hold one out "
                                        r"\(3 classes of one row each\): give data.validation"):
        _load(rows, tmp_path)
    sets = ["task=classification", f"model={tiny_bert}", f"output_dir={tmp_path / 'run'}",
            f"data.train={tmp_path / 'train.jsonl'}"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 2 and "no class has two rows to hold one out" in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_a_hold_out_far_below_the_size_asked_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"text": f"r{i}", "label": f"c{i}"} for i in range(8)] + [{"text": "x", "label": "x"},
                                                                     {"text": "y", "label": "x"}]
    splits, report = _load(rows, tmp_path, validation_split=0.5)
    assert len(splits["validation"]) == 1
    note = "data.validation_split 0.5: 1 validation rows of the 5 asked (each class keeps a row in train)"
    assert report.applied["validation_split"]["note"].startswith(note)
    assert note in capsys.readouterr().err


def _qa_rows(contexts: int, per: int, titles: int = 0) -> list[dict]:
    """`contexts` paragraphs of `per` questions each; with `titles`, the paragraphs shared among that many articles."""
    rows = []
    for c in range(contexts):
        context = f"paragraph {c} says the answer is word{c}."
        for q in range(per):
            row = {"context": context, "question": f"question {q} about {c}?",
                   "answers": {"text": [f"word{c}"], "answer_start": [context.index(f"word{c}")]}}
            rows.append({**row, "title": f"article {c % titles}"} if titles else row)
    return rows


def test_qa_holds_out_whole_contexts(tmp_path: Path) -> None:
    """Held out by question, most validation questions asked about a paragraph trained on."""
    splits, _ = _load(_qa_rows(10, 4), tmp_path, qa=True, validation_split=0.2)
    held = {r["context"] for r in splits["validation"]}
    assert len(splits["validation"]) == 8 and not held & {r["context"] for r in splits["train"]}


def test_qa_rows_of_one_article_are_held_out_by_context(tmp_path: Path) -> None:
    """Grouped by title, a one-article file of 20 paragraphs was refused ("all 20 rows share one context (or
    title)"), and two articles of 100 rows at 0.1 held out one article, half of train; by context, the size asked."""
    splits, _ = _load(_qa_rows(20, 1, titles=1), tmp_path, qa=True, validation_split=0.1)
    assert len(splits["validation"]) == 2 and len(splits["train"]) == 18
    splits, _ = _load(_qa_rows(40, 5, titles=2), tmp_path, qa=True, validation_split=0.1)
    held = {r["context"] for r in splits["validation"]}
    assert len(splits["validation"]) == 20 and not held & {r["context"] for r in splits["train"]}


def test_qa_of_one_context_cannot_be_held_out(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.validation_split: all 4 rows share one context, so none "
                                        r"can be held out without training on its context: give data.validation$"):
        _load(_qa_rows(1, 4), tmp_path, qa=True)


def test_cv_folds_keep_a_context_in_one_fold(tmp_path: Path) -> None:
    splits, _ = _load(_qa_rows(7, 3), tmp_path, qa=True, validation_split=0.0)
    rows = splits["train"]
    task = Qa(QaConfig(), DataConfig())
    folds, how = fold_indices(rows, task, 3, seed=0)
    assert how == "grouped" and sorted(i for _, held in folds for i in held) == list(range(21))
    for train_idx, held_idx in folds:
        assert not {rows[i]["context"] for i in held_idx} & {rows[i]["context"] for i in train_idx}
    assert fold_indices(rows, task, 3, seed=0)[0][0][1].tolist() == folds[0][1].tolist()  # seeded


def test_cv_folds_of_one_article_keep_each_context_in_one_fold(tmp_path: Path) -> None:
    """One title over 6 paragraphs: `--folds 3` was "more than the 1 context (or title) groups"."""
    splits, _ = _load(_qa_rows(6, 2, titles=1), tmp_path, qa=True, validation_split=0.0)
    rows = splits["train"]
    folds, how = fold_indices(rows, Qa(QaConfig(), DataConfig()), 3, seed=0)
    assert how == "grouped" and [len(held) for _, held in folds] == [4, 4, 4]
    for train_idx, held_idx in folds:
        assert not {rows[i]["context"] for i in held_idx} & {rows[i]["context"] for i in train_idx}


def test_a_class_kept_in_train_is_not_then_dropped_as_a_test_duplicate(tmp_path: Path) -> None:
    """Held out before data.dedup dropped the training rows found in data.test: of `neutral`'s two rows one was held
    out and the other, kept in train, repeated a test row and was dropped (then `label 'neutral' is not among the
    training labels`, blamed on the validation row's line). Now the hold-out sees only the rows that stay, and the
    counts add up: rows read − removed − held out = rows used."""
    rows = [{"text": f"{lab} {i}", "label": lab} for lab in ("a", "b") for i in range(10)]
    rows += [{"text": "neutral 0", "label": "neutral"}, {"text": "neutral 1", "label": "neutral"}]
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "neutral 0", "label": "neutral"},
                                                 {"text": "a test row", "label": "a"}])
    for seed in range(8):
        splits, report = _load(rows, tmp_path, seed, validation_split=0.5, test=str(test), dedup=True)
        assert "neutral" in {r["label"] for r in splits["train"]}, seed
        assert "neutral" not in {r["label"] for r in splits["validation"]}
        assert [(r["split"], r["reason"], r["line"]) for r in report.removed] == [("train", "in_test", 21)]
        summary = report.summary(splits)
        assert summary["rows_read"]["train"] - 1 - summary["held_out_for_validation"] == \
            summary["rows_used"]["train"] == len(splits["train"])
        assert summary["rows_used"]["validation"] == summary["held_out_for_validation"] == 10


def test_a_run_read_again_checks_the_rows_it_held_out(tmp_path: Path) -> None:
    """The same number of rows in another order hold out other rows: report / compress read them as the run's
    validation rows (only counts were compared). The summary keeps the held-out rows' hash; a mismatch is one line."""
    rows = [{"text": f"{lab} {i}", "label": lab} for lab in ("a", "b") for i in range(20)]
    cfg = DataConfig(train=str(write_jsonl(tmp_path / "train.jsonl", rows)))
    task = Classification(ClassificationConfig(), cfg)
    report = DataReport()
    splits = load_splits(cfg, task, 0, report)
    run = tmp_path / "run"
    run.mkdir()
    report.write(run, splits)
    again = run_splits(run, cfg, task, 0)
    assert [r["text"] for r in again["validation"]] == [r["text"] for r in splits["validation"]]
    write_jsonl(tmp_path / "train.jsonl", rows[::-1])
    with pytest.raises(DataError, match=r"train\.jsonl: validation: the rows held out now are not those the run "
                                        r".*run validated on: the data changed since$"):
        run_splits(run, cfg, task, 0)
    applied = json.loads((run / "data_summary.json").read_text())["applied"]["validation_split"]
    assert applied["rows_sha256"] == training_fingerprint(splits["validation"])


def test_a_run_of_the_older_hold_out_reads_the_rows_it_validated_on(tmp_path: Path) -> None:
    """A summary written by the tunelab before `applied.validation_split`: its hold-out is that tunelab's (seed 0
    held out a 12, a 13, b 1, b 8; today's algorithm 4 other rows, so the run was reported on rows it trained on,
    silently: the counts agree)."""
    rows = [{"text": f"{lab} {i}", "label": lab} for lab in ("a", "b") for i in range(20)]
    cfg = DataConfig(train=str(write_jsonl(tmp_path / "train.jsonl", rows)))
    task = Classification(ClassificationConfig(), cfg)
    run = tmp_path / "run"
    run.mkdir()
    summary = {"rows_read": {"train": 40}, "rows_used": {"train": 36, "validation": 4}, "removed": {},
               "removed_total": 0, "removed_file": "removed.jsonl", "held_out_for_validation": 4,
               "applied": {"clean": None, "dedup": False}, "class_distribution": {}, "data_folder": str(tmp_path)}
    (run / "data_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    old = ["a 12", "a 13", "b 1", "b 8"]
    assert [r["text"] for r in load_splits(cfg, task, 0)["validation"]] != old  # today's hold-out
    assert [r["text"] for r in run_splits(run, cfg, task, 0)["validation"]] == old
    from tunelab.data.splits import split_validation_legacy  # the old algorithm, kept

    assert split_validation_legacy(rows, 0.1, 0, lambda r: r["label"])[1] == [r for r in rows if r["text"] in old]
