"""Ensembles: `tunelab predict / eval MODEL_DIR MODEL_DIR` average the members' class probabilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.studies.ensemble import as_logits

runner = CliRunner()


@pytest.fixture(scope="module")
def two_models(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two tiny classifiers trained differently, and a labelled file to score."""
    from tunelab.config.run import build_config
    from tunelab.pipeline import run

    root = tmp_path_factory.mktemp("ensemble")
    train = write_jsonl(root / "train.jsonl", sentiment_rows(32, 0))
    val = write_jsonl(root / "validation.jsonl", [{**r, "id": i} for i, r in enumerate(sentiment_rows(12, 1))])
    dirs = []
    for name, lr, seed in (("m1", 1e-2, 1), ("m2", 2e-3, 5)):
        run(build_config({
            "task": "classification", "model": str(tiny_bert), "output_dir": str(root / name),
            "data": {"train": str(train), "validation": str(val)},
            "train": {"epochs": 1, "batch_size": 8, "lr": lr, "seed": seed, "save_steps": 0, "precision": "fp32"},
        }))
        dirs.append(root / name / "model")
    return dirs[0], dirs[1], val


def _predict(args: list[str], out: Path) -> list[dict]:
    res = runner.invoke(app, ["predict", *args, "--output", str(out)])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_generation_options_on_an_ensemble_are_one_line(two_models: tuple[Path, Path, Path]) -> None:
    """eval's generation options on an ensemble (classification) are refused in one line, by eval (it had ignored
    them) and by predict, before any row is read."""
    m1, m2, val = two_models
    for command, data in (("eval", "--data"), ("predict", "--input")):
        res = runner.invoke(app, [command, str(m1), str(m2), data, str(val), "--num-beams", "2"])
        assert res.exit_code == 2, res.output
        assert res.stderr == (f"error: {command}: --num-beams: generation is for models of task sft (this one: "
                              "classification)\n"), res.stderr


def test_ensemble_averages_probabilities(two_models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    m1, m2, val = two_models
    one = _predict([str(m1), "--input", str(val)], tmp_path / "one.jsonl")
    two = _predict([str(m2), "--input", str(val)], tmp_path / "two.jsonl")
    both = _predict([str(m1), str(m2), "--input", str(val)], tmp_path / "both.jsonl")
    labels = ["negative", "positive"]
    p1 = np.array([[r["scores"][n] for n in labels] for r in one])
    p2 = np.array([[r["scores"][n] for n in labels] for r in two])
    pe = np.array([[r["scores"][n] for n in labels] for r in both])
    assert np.abs(p1 - p2).max() > 1e-3  # the members differ, so the average is a real test
    np.testing.assert_allclose(pe, (p1 + p2) / 2, atol=2e-6)
    assert [r["pred_label"] for r in both] == [labels[int(i)] for i in pe.argmax(axis=1)]
    assert [r["id"] for r in both] == list(range(12)) and all("text" in r for r in both)  # input row kept
    # eval: the metrics of the averaged probabilities
    res = runner.invoke(app, ["eval", str(m1), str(m2), "--data", str(val)])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    gold = [json.loads(line)["label"] for line in val.read_text().splitlines()]
    hits = [g == r["pred_label"] for g, r in zip(gold, both, strict=True)]
    assert metrics["accuracy"] == pytest.approx(np.mean(hits))
    assert metrics["n"] == 12


def test_ensemble_from_stdin(two_models: tuple[Path, Path, Path]) -> None:
    m1, m2, _ = two_models
    res = runner.invoke(app, ["predict", str(m1), str(m2), "--input", "-"], input="good great film\nbad awful\n")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["good great film", "bad awful"]
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-5 for r in rows)


def _copy_with_meta(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "tunelab.json").read_text())
    meta.update(changes)
    (dst / "tunelab.json").write_text(json.dumps(meta), encoding="utf-8")
    return dst


def test_ensemble_mismatch_errors(two_models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    m1, m2, val = two_models
    swapped = _copy_with_meta(m2, tmp_path / "swapped", labels=["positive", "negative"])
    res = runner.invoke(app, ["predict", str(m1), str(swapped), "--input", str(val)])
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"error: {swapped}: label map [positive, negative] differs from {m1}'s "
                                  "[negative, positive]; ensemble members need the same task and label map")
    res = runner.invoke(app, ["eval", str(m1), str(swapped), "--data", str(val)])
    assert res.exit_code == 2 and f"{swapped}: label map" in res.stderr
    ner = _copy_with_meta(m2, tmp_path / "ner", task={"name": "ner"}, labels=["O", "B-PER", "I-PER"])
    res = runner.invoke(app, ["predict", str(m1), str(ner), "--input", str(val)])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"error: {ner}: task ner: ensembles support task classification"
    res = runner.invoke(app, ["predict", str(m1), str(tmp_path), "--input", str(val)])
    assert res.exit_code == 2 and "not a tunelab model directory" in res.stderr


@pytest.mark.parametrize("multi_label", [False, True])
def test_as_logits_round_trip(multi_label: bool) -> None:
    from tunelab.metrics.classification import sigmoid, softmax

    rng = np.random.default_rng(0)
    p = rng.random((5, 3))
    p = p if multi_label else p / p.sum(axis=1, keepdims=True)
    back = (sigmoid if multi_label else softmax)(as_logits(p, multi_label))
    np.testing.assert_allclose(back, p, atol=1e-12)
