"""`tunelab curve`: fractions of data.train as sub-runs, a fixed validation split held out once, curve.json/png."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.errors import ConfigError
from tunelab.studies.curve import nested_subsets, parse_fractions

runner = CliRunner()


def _ids(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_curve_two_fractions(tiny_bert: Path, tmp_path: Path) -> None:
    rows = [{**r, "id": i} for i, r in enumerate(sentiment_rows(60, 0))]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = {"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "out"),
           "data": {"train": str(train), "validation_split": 0.2},
           "train": {"epochs": 1, "batch_size": 8, "lr": 5e-3, "save_steps": 0, "precision": "fp32"}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = runner.invoke(app, ["curve", str(path), "--fractions", "1,0.5", "--set", "train.seed=7"])
    assert res.exit_code == 0, res.output
    root = tmp_path / "out" / "curve"
    result = json.loads((root / "curve.json").read_text())
    assert result["metric"] == "accuracy" and result["seed"] == 7
    assert [p["fraction"] for p in result["points"]] == [0.5, 1.0]
    # validation held out once, exactly as a normal run with this seed would, and never trained on
    from tunelab.config.run import load_config
    from tunelab.data.load import load_splits
    from tunelab.registry import TASKS

    full = load_config(path, ["train.seed=7"])
    splits = load_splits(full.data, TASKS.get("classification")(full.task, full.data), 7)
    val_ids = _ids(root / "validation.jsonl")
    assert val_ids == [ex["row"]["id"] for ex in splits["validation"]] and len(val_ids) == 12
    half, whole = (_ids(root / f"frac-{f}" / "train.jsonl") for f in ("0.5", "1"))
    assert sorted(whole + val_ids) == list(range(60))  # fraction 1: every non-validation row
    assert set(half) < set(whole) and not set(half) & set(val_ids)
    assert len(half) == 24 and result["points"][0]["rows"] == 24 and result["points"][1]["rows"] == 48
    labels = Counter(rows[i]["label"] for i in half)
    assert labels == {"negative": 12, "positive": 12}  # stratified
    for p, f in zip(result["points"], ("0.5", "1"), strict=True):
        run_dir = root / f"frac-{f}"
        assert p["run_dir"] == str(run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert p["value"] == pytest.approx(metrics["validation"]["accuracy"])
        assert metrics["train"]["rows"] == {"train": p["rows"], "validation": 12}
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["data"]["train"] == str(run_dir / "train.jsonl")
        assert saved["data"]["validation"] == str(root / "validation.jsonl")
        assert saved["train"]["seed"] == 7
    # a standalone SVG file: the metric's line through one point per fraction, each labelled with its fraction
    svg = ElementTree.parse(root / "curve.svg").getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    (line,) = svg.findall(".//s:polyline", ns)
    assert line.get("data-name") == "accuracy" and int(line.get("data-points")) == len(result["points"])
    assert {"0.5", "1"} <= {t.text for t in svg.findall(".//s:text", ns)}
    assert "learning curve" in res.stderr and "frac-0.5" in res.stderr


def test_parse_fractions() -> None:
    assert parse_fractions("0.3, 0.1,1,0.3") == [0.1, 0.3, 1.0]
    for bad, message in (("0", "not in (0, 1]"), ("1.5", "not in (0, 1]"), ("a", "'a' is not a number")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
            parse_fractions(bad)


def test_nested_subsets_keep_every_class() -> None:
    keys = ["a"] * 20 + ["b"] * 5 + ["c"]
    subsets = nested_subsets(keys, [0.1, 0.5, 1.0], seed=3)
    assert Counter(keys[i] for i in subsets[0.1]) == {"a": 2, "b": 1, "c": 1}
    assert Counter(keys[i] for i in subsets[0.5]) == {"a": 10, "b": 2, "c": 1}  # round(2.5) = 2
    assert set(subsets[0.1]) <= set(subsets[0.5]) <= set(subsets[1.0]) == set(range(26))
    assert subsets == nested_subsets(keys, [0.1, 0.5, 1.0], seed=3)
    assert subsets[0.5] != nested_subsets(keys, [0.5], seed=4)[0.5]


def test_curve_bad_fraction_is_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20, 0))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"task": "classification", "model": str(tiny_bert),
                                    "data": {"train": str(train)}}), encoding="utf-8")
    res = runner.invoke(app, ["curve", str(path), "--fractions", "0.5,2"])
    assert res.exit_code == 2 and res.stderr.strip() == "error: curve: --fractions: 2 is not in (0, 1]"
