"""Class imbalance: class weights, focal loss, label smoothing, soft labels, over/undersampling, and a
tiny end-to-end `tunelab train` with all of it (and augmentation) on."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import load_config
from tunelab.config.sections import DataConfig, TrainConfig
from tunelab.data.readers import read_table
from tunelab.data.sampling import label_counts, resample
from tunelab.errors import ConfigError, DataError
from tunelab.tasks.classification import Classification, ClassificationConfig
from tunelab.tasks.losses import binary_focal_loss, class_weights, focal_loss

BASE = ["task=classification", "model=/tmp"]


def _task(multi_label: bool = False, labels: list[str] | None = None) -> Classification:
    task = Classification(ClassificationConfig(multi_label=multi_label), DataConfig())
    task.labels = labels or []
    return task


class _Logits(torch.nn.Module):
    """Stands in for a model: returns fixed logits, checks that labels are not passed in."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits)


def _batch(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.zeros(len(labels), 3, dtype=torch.long),
            "attention_mask": torch.ones(len(labels), 3, dtype=torch.long), "labels": labels}


def test_class_weights_auto_like_sklearn() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    y = ["a"] * 6 + ["b"] * 2 + ["c"] * 4
    weights = class_weights("auto", ["a", "b", "c"], dict(Counter(y)), len(y), multi_label=False)
    expected = compute_class_weight("balanced", classes=np.array(["a", "b", "c"]), y=y)
    assert weights == pytest.approx(list(expected)) and weights == pytest.approx([12 / 18, 2.0, 1.0])
    # a class absent from the data keeps weight 1 and does not count
    assert class_weights("auto", ["a", "b", "z"], {"a": 6, "b": 2}, 8, False) == pytest.approx([8 / 12, 2.0, 1.0])
    # multi-label: negatives / positives per label (BCE pos_weight)
    assert class_weights("auto", ["x", "y"], {"x": 2, "y": 8}, 10, True) == pytest.approx([4.0, 0.25])
    assert class_weights({"b": 3.0}, ["a", "b"], {}, 0, False) == [1.0, 3.0]
    with pytest.raises(ConfigError, match=r"train\.class_weights: unknown label 'q' \(labels: a, b\)"):
        class_weights({"q": 2.0}, ["a", "b"], {}, 0, False)


def test_class_weights_config() -> None:
    cfg = load_config(None, [*BASE, "train.class_weights={0: 2, true: 1.5}"])
    assert cfg.train.class_weights == {"0": 2.0, "true": 1.5}
    assert load_config(None, [*BASE, "train.class_weights=auto"]).train.class_weights == "auto"
    for bad, msg in (("balanced", "expected auto or a mapping"), ("{a: 0}", "weight of 'a' must be a number > 0")):
        with pytest.raises(ConfigError, match=f"--set train.class_weights: {msg}"):
            load_config(None, [*BASE, f"train.class_weights={bad}"])
    with pytest.raises(ConfigError, match="--set train.focal_gamma"):
        load_config(None, [*BASE, "train.focal_gamma=-1"])
    with pytest.raises(ConfigError, match="--set train.label_smoothing"):
        load_config(None, [*BASE, "train.label_smoothing=1"])


def test_weighted_loss_matches_manual_formula() -> None:
    task = _task(labels=["neg", "pos"])
    examples = [{"label": "neg"}] * 6 + [{"label": "pos"}] * 2
    summary = task.configure_loss(TrainConfig(class_weights="auto"), examples)
    assert summary["class_weights"] == {"neg": pytest.approx(8 / 12), "pos": 2.0}
    assert summary["type"] == "cross_entropy" and summary["weights_as"] == "class weight"
    torch.manual_seed(0)
    logits = torch.randn(5, 2)
    y = torch.tensor([0, 1, 1, 0, 0])
    loss = task.loss_fn()(_Logits(logits), _batch(y))
    w = torch.tensor([8 / 12, 2.0])
    nll = -F.log_softmax(logits, -1)[torch.arange(5), y]
    manual = (w[y] * nll).sum() / w[y].sum()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-3)
    # nothing configured: the model's own loss
    assert task.configure_loss(TrainConfig(), examples) == {"type": "model", "soft_labels": False}
    assert task.loss_fn() is None


def test_multi_label_weights_are_pos_weight() -> None:
    task = _task(multi_label=True, labels=["x", "y"])
    examples = [{"label": ["x"]}, {"label": ["x", "y"]}, {"label": ["y"]}, {"label": ["y"]}]
    summary = task.configure_loss(TrainConfig(class_weights="auto"), examples)
    assert summary["weights_as"] == "pos_weight" and summary["class_weights"] == {"x": 1.0, "y": pytest.approx(1 / 3)}
    logits = torch.randn(4, 2)
    target = torch.tensor([[1.0, 0], [1, 1], [0, 1], [0, 1]])
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor([1.0, 1 / 3]))
    assert task.loss_fn()(_Logits(logits), _batch(target)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_loss() -> None:
    torch.manual_seed(1)
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    w = torch.tensor([0.5, 1.0, 2.0])
    # gamma 0 is cross-entropy, with and without weights and smoothing
    assert focal_loss(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    expected = F.cross_entropy(logits, y, weight=w, label_smoothing=0.2)
    assert focal_loss(logits, y, weight=w, label_smoothing=0.2).item() == pytest.approx(expected.item(), rel=1e-6)
    # gamma > 0: the textbook -(1 - p_t)^gamma log p_t, smaller than CE, easy rows scaled down most
    p_t = F.softmax(logits, -1)[torch.arange(8), y]
    textbook = (-(1 - p_t) ** 2 * p_t.log()).mean()
    assert focal_loss(logits, y, gamma=2.0).item() == pytest.approx(textbook.item(), rel=1e-6)
    assert focal_loss(logits, y, gamma=2.0) < F.cross_entropy(logits, y)
    easy, hard = torch.tensor([[4.0, 0, 0]]), torch.tensor([[0.0, 0, 0]])
    zero = torch.tensor([0])
    ratio_easy = focal_loss(easy, zero, gamma=2.0) / focal_loss(easy, zero)
    assert ratio_easy < focal_loss(hard, zero, gamma=2.0) / focal_loss(hard, zero)
    # binary: gamma 0 is BCE with pos_weight
    t = (torch.rand(8, 3) > 0.5).float()
    expected = F.binary_cross_entropy_with_logits(logits, t, pos_weight=w)
    assert binary_focal_loss(logits, t, pos_weight=w).item() == pytest.approx(expected.item(), rel=1e-6)
    assert binary_focal_loss(logits, t, gamma=2.0) < F.binary_cross_entropy_with_logits(logits, t)


def test_label_smoothing() -> None:
    torch.manual_seed(2)
    logits, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    expected = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert focal_loss(logits, y, label_smoothing=0.1).item() == pytest.approx(expected.item(), rel=1e-6)
    target = F.one_hot(y, 4).float() * 0.9 + 0.1 / 4  # the same as a soft target
    assert focal_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    t = torch.tensor([[1.0, 0.0]])
    x = torch.tensor([[0.3, -0.2]])
    smoothed = F.binary_cross_entropy_with_logits(x, torch.tensor([[0.95, 0.05]]))
    assert binary_focal_loss(x, t, label_smoothing=0.1).item() == pytest.approx(smoothed.item(), rel=1e-6)
    task = _task(labels=["a", "b"])
    assert task.configure_loss(TrainConfig(label_smoothing=0.1), [{"label": "a"}, {"label": "b"}])["type"] == \
        "cross_entropy"
    assert task.loss_fn() is not None


def test_soft_labels(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "soft.jsonl", [
        {"text": "good", "label": {"pos": 0.8, "neg": 0.2}},
        {"text": "bad", "label": "neg"},
        {"text": "fine", "label": {"pos": 1}},
    ])
    task = _task()
    examples = task.parse(read_table(path))
    assert examples[0]["label"] == {"pos": 0.8, "neg": 0.2}
    assert label_counts(examples) == {"neg": 1.2, "pos": 1.8}
    assert [task.stratify_key(ex) for ex in examples] == ["pos", "neg", "pos"]
    task.labels = ["neg", "pos"]
    summary = task.configure_loss(TrainConfig(), examples)
    assert summary == {"type": "cross_entropy", "soft_labels": True, "class_weights": None, "weights_as": None,
                       "focal_gamma": 0.0, "label_smoothing": 0.0}

    class _Tok:
        def __call__(self, texts: list, pairs: object, **kw: object) -> dict:
            return {"input_ids": [[1, 2]] * len(texts)}

    feats = task.encode(examples, _Tok())
    assert [f["labels"] for f in feats] == [[0.2, 0.8], [1.0, 0.0], [0.0, 1.0]]  # one shape for the whole split
    target = torch.tensor([f["labels"] for f in feats])
    logits = torch.randn(3, 2)
    loss = task.loss_fn()(_Logits(logits), _batch(target))
    assert loss.item() == pytest.approx((-(target * F.log_softmax(logits, -1)).sum(-1)).mean().item(), rel=1e-6)
    # scored against the most probable label
    metrics = task.metrics(torch.tensor([[0.0, 1], [1, 0], [0, 1]]).numpy(), examples)
    assert metrics["accuracy"] == 1.0


@pytest.mark.parametrize(("label", "message"), [
    ({"pos": 0.5, "neg": 0.2}, "label probabilities sum to 0.7; expected 1"),
    ({"pos": 1.5}, "probability of 'pos' must be in \\[0, 1\\], got 1.5"),
    ({"pos": "high"}, "probability of 'pos' must be in \\[0, 1\\], got 'high'"),
    ({}, "empty label distribution"),
])
def test_soft_label_errors(tmp_path: Path, label: dict, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok", "label": "neg"}, {"text": "x", "label": label}])
    with pytest.raises(DataError, match=f"bad.jsonl:2: label: {message}"):
        _task().parse(read_table(path))


def test_soft_multi_label_needs_no_sum(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"text": "x", "label": {"a": 0.9, "b": 0.7}}])
    task = _task(multi_label=True)
    [ex] = task.parse(read_table(path))
    task.labels = ["a", "b", "c"]
    assert task._target(ex, {"a": 0, "b": 1, "c": 2}) == [0.9, 0.7, 0.0]
    assert task.stratify_key(ex) == ("a", "b")


def test_over_and_undersampling() -> None:
    rows = [{"label": "a", "i": i} for i in range(7)] + [{"label": "b", "i": i} for i in range(3)] + \
        [{"label": "c", "i": 0}]
    task = _task()
    over = resample(rows, "oversample", 0, task.stratify_key)
    assert label_counts(over) == {"a": 7, "b": 7, "c": 7}
    assert over[:11] == rows  # originals first, in order
    # 3 rows grow to 7: each row once more, then one drawn without replacement
    assert sorted(Counter(r["i"] for r in over if r["label"] == "b").values()) == [2, 2, 3]
    under = resample(rows, "undersample", 0, task.stratify_key)
    assert label_counts(under) == {"a": 1, "b": 1, "c": 1}
    assert resample(rows, "undersample", 0, task.stratify_key) == under  # seeded
    picks = {tuple(r["i"] for r in resample(rows, "undersample", s, task.stratify_key)) for s in range(10)}
    assert len(picks) > 1
    # multi-label rows are balanced by their label set
    multi = [{"label": ["x"]}] * 4 + [{"label": ["x", "y"]}]
    assert Counter(tuple(r["label"]) for r in resample(multi, "oversample", 0, _task(True).stratify_key)) == \
        {("x",): 4, ("x", "y"): 4}


def test_ner_token_weighted_loss() -> None:
    """NER: per-tag weights (a type name covers B- and I-), -100 positions ignored, as torch's own."""
    from tunelab.registry import TASKS

    ner = TASKS.get("ner")
    task = ner(ner.Config(), DataConfig())
    task.labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    examples = [{"tags": ["O", "O", "O", "B-PER", "I-PER"]}, {"tags": ["O", "B-LOC", "O", "O", "O"]}]
    assert task.configure_loss(TrainConfig(), examples) == {"type": "model"}
    applied = task.configure_loss(TrainConfig(class_weights={"PER": 3.0, "B-LOC": 2.0}), examples)
    assert applied["class_weights"] == {"O": 1.0, "B-PER": 3.0, "I-PER": 3.0, "B-LOC": 2.0, "I-LOC": 1.0}
    auto = task.configure_loss(TrainConfig(class_weights="auto"), examples)["class_weights"]
    assert auto["O"] == pytest.approx(10 / (4 * 7)) and auto["B-LOC"] == pytest.approx(10 / 4)
    assert auto["I-LOC"] == 1.0  # absent from the data
    logits = torch.randn(2, 6, 5)
    labels = torch.tensor([[-100, 0, 0, 0, 1, 2], [-100, 0, 3, -100, 0, 0]])
    got = task.loss_fn()(_Logits(logits), _batch(labels))
    w = torch.tensor([auto[t] for t in task.labels])
    want = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), weight=w, ignore_index=-100)
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ConfigError, match="unknown label 'ORG'"):
        task.configure_loss(TrainConfig(class_weights={"ORG": 2.0}), examples)


def test_train_end_to_end_with_imbalance_and_augmentation(tiny_bert: Path, tmp_path: Path) -> None:
    rows = sentiment_rows(30, 0)
    rows = [r for r in rows if r["label"] == "positive"] + [r for r in rows if r["label"] == "negative"][:5]
    rows += [dict(rows[0]), {"text": "<b>" + rows[1]["text"] + "</b>", "label": rows[1]["label"]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(8, 1) + [dict(rows[2])])
    out = tmp_path / "run"
    sets = [f"model={tiny_bert}", "task=classification", f"data.train={train}", f"data.validation={val}",
            f"output_dir={out}", "data.clean=true", "data.dedup=true", "data.sampling=oversample",
            "data.augment={ops: [delete, swap, insert, synonym], ratio: 0.2, copies: 2}",
            "train.class_weights=auto", "train.focal_gamma=1.0", "train.label_smoothing=0.1",
            "train.max_steps=2", "train.batch_size=8", "train.save_steps=0"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "data_summary.json").read_text())
    dropped = summary["applied"]["augment"]["duplicates_dropped"]  # copies repeating a row or another copy
    assert summary["removed"] == {"train": {"duplicate": 2, "in_validation": 1, "augmented_duplicate": dropped}}
    removed = [json.loads(x) for x in (out / "removed.jsonl").read_text().splitlines()]
    assert [r["line"] for r in removed[:3]] == [21, 22, 3] and removed[1]["row"]["text"].startswith("<b>")
    assert {r["reason"] for r in removed[3:]} <= {"augmented_duplicate"}
    _add_up(summary)
    dist = summary["class_distribution"]
    assert dist["before_sampling"] == {"negative": 5, "positive": 14}
    assert dist["after_sampling"] == {"negative": 14, "positive": 14}
    applied = summary["applied"]
    assert applied["sampling"] == {"method": "oversample", "rows_before": 19, "rows_after": 28}
    aug = applied["augment"]
    assert aug["rows_before"] == 28 and aug["copies_added"] + aug["unchanged_not_added"] + dropped == 56
    assert aug["synonym_source"].startswith("input-embedding neighbours")
    assert sum(dist["after_augment"].values()) == 28 + aug["copies_added"]
    loss = applied["loss"]
    assert loss["type"] == "focal_cross_entropy" and loss["weights_as"] == "class weight"
    assert set(loss["class_weights"]) == {"negative", "positive"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 and metrics["train"]["rows"]["train"] == 28 + aug["copies_added"]


def _add_up(summary: dict) -> None:
    """Per split: rows read − removed − held out + added = rows used (a held-out validation split starts from what
    was held out)."""
    removed = {s: sum(c.values()) for s, c in summary["removed"].items()}
    added = {s: sum(c.values()) for s, c in summary.get("rows_added", {}).items()}
    held = summary.get("held_out_for_validation", 0)
    for split, used in summary["rows_used"].items():
        start = summary["rows_read"].get(split, held if split == "validation" else 0)
        moved = held if split == "train" else 0
        assert start - removed.get(split, 0) - moved + added.get(split, 0) == used, (split, summary)


@pytest.mark.parametrize("how", ["undersample", "oversample"])
def test_resampled_rows_are_accounted_for(tiny_bert: Path, tmp_path: Path, how: str) -> None:
    """Undersampling's dropped rows were in no removed.jsonl, and oversampling's copies in no count: read − removed
    was not the rows used. Now each dropped row is there (`undersampled`, with its class) and the copies are
    `rows_added.train.oversampled`; the counts add up, a validation hold-out included."""
    rows = [{"text": f"good movie number {i}", "label": "pos"} for i in range(16)] + \
        [{"text": f"bad film number {i}", "label": "neg"} for i in range(6)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "run"
    sets = [f"model={tiny_bert}", "task=classification", f"data.train={train}", f"output_dir={out}",
            f"data.sampling={how}", "data.validation_split=0.2", "train.max_steps=1", "train.save_steps=0"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "data_summary.json").read_text())
    removed = [json.loads(x) for x in (out / "removed.jsonl").read_text().splitlines()]
    assert summary["held_out_for_validation"] == 4 and summary["rows_used"]["validation"] == 4
    if how == "undersample":  # 13 pos and 5 neg left after the hold-out: 8 pos go
        assert summary["removed"] == {"train": {"undersampled": 8}} and "rows_added" not in summary
        assert {r["class"] for r in removed} == {"pos"} and all(r["row"]["label"] == "pos" for r in removed)
        assert len({r["line"] for r in removed}) == 8 and summary["rows_used"]["train"] == 10
    else:
        assert summary["removed"] == {} and removed == []
        assert summary["rows_added"] == {"train": {"oversampled": 8}} and summary["rows_used"]["train"] == 26
    _add_up(summary)


def test_undersampling_a_spilled_file_keeps_no_copy_of_its_dropped_rows(tmp_path: Path) -> None:
    """A training file too large to hold (spilled to disk) kept every row undersampling dropped in memory, for
    removed.jsonl (103 MB of 200k rows): it names them by file and line there, and the counts are the same."""
    from tunelab.data.report import DataReport
    from tunelab.data.row_spill import spill_rows
    from tunelab.data.sampling import resample

    rows = [{"text": f"t{i}", "label": "a" if i % 4 else "b", "source": "t.jsonl", "line": i + 1,
             "row": {"text": f"t{i}"}} for i in range(40)]
    for spilled in (False, True):
        report = DataReport()
        examples = spill_rows(rows, tmp_path) if spilled else rows
        assert (type(examples) is list) is not spilled
        kept = resample(examples, "undersample", 0, lambda ex: ex["label"], report)
        assert len(kept) == 20 and len(report.removed) == 20
        assert all(("row" in r) is not spilled and r["file"] == "t.jsonl" for r in report.removed)
