"""`tunelab curve`: fractions of data.train as sub-runs, a fixed validation split held out once, curve.json/png."""

from __future__ import annotations

import json
import re
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
from tunelab.training.run_dir import RunDirLock

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
    for bad, message in (("0", "not in (0, 1]"), ("1.5", "not in (0, 1]"), ("a", "'a' is not a number"),
                         ("0.3333333,0.33333334,1", "0.3333333 and 0.33333334 are one fraction to 6 digits "
                                                   "(frac-0.333333); give one of them")):
        with pytest.raises(ConfigError, match=re.escape(message)):
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


def _curve_config(tmp_path: Path, tiny_bert: Path) -> Path:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40, 0))
    cfg = {"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "out"),
           "data": {"train": str(train), "validation_split": 0.25},
           "train": {"max_steps": 1, "batch_size": 8, "lr": 5e-3, "save_steps": 0, "precision": "fp32"}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_a_curve_run_again_keeps_its_points_and_refuses_another_config(tiny_bert: Path, tmp_path: Path) -> None:
    """Run again, a curve keeps the points that finished and trains the rest (it trained them all again); a curve of
    another config is refused in one line before anything is written (it took the folder over); --overwrite
    replaces it."""
    path, root = _curve_config(tmp_path, tiny_bert), tmp_path / "out" / "curve"
    res = runner.invoke(app, ["curve", str(path), "--fractions", "0.5,1"])
    assert res.exit_code == 0, res.output
    stamp = (root / "frac-0.5" / "metrics.json").stat().st_mtime_ns
    (root / "frac-1" / "metrics.json").unlink()  # the point an interrupted curve was training
    res = runner.invoke(app, ["curve", str(path), "--fractions", "0.5,1"])
    assert res.exit_code == 0, res.output
    assert f"curve: fraction 0.5: finished, kept ({root / 'frac-0.5'})" in res.stderr
    assert "curve: fraction 1: 30 training rows" in res.stderr and "fraction 0.5: 15 training rows" not in res.stderr
    assert (root / "frac-0.5" / "metrics.json").stat().st_mtime_ns == stamp
    assert (root / "frac-1" / "metrics.json").is_file()
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json")}
    for sets, said in ((["train.lr=1e-3"], "frac-0.5: config.yaml: train.lr 0.005 (now 0.001) and 1 more"),
                       (["data.validation_split=0.5"], "validation.jsonl: other rows and 2 more")):
        res = runner.invoke(app, ["curve", str(path), "--fractions", "0.5,1", *(x for s in sets for x in ("--set", s))])
        assert res.exit_code == 2, res.output
        assert res.stderr.strip().splitlines()[-1] == (
            f"error: output_dir: {root} holds a curve of another config or other rows ({said}); pass --overwrite to "
            "replace it, or choose another output_dir")
        assert {p: p.read_bytes() for p in files} == files
    res = runner.invoke(app, ["curve", str(path), "--fractions", "0.5", "--set", "train.lr=1e-3", "--overwrite"])
    assert res.exit_code == 0 and "finished, kept" not in res.output, res.output
    assert yaml.safe_load((root / "frac-0.5" / "config.yaml").read_text())["train"]["lr"] == 1e-3


def test_ctrl_c_in_a_curve_says_what_is_kept(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the second point: one line naming the points kept and the command that continues (was: exit
    130, nothing said)."""
    import tunelab.studies.cv

    real, calls = tunelab.studies.cv.run, []  # (a curve point runs through cv.run_sub)

    def interrupted_second(*args: object, **kwargs: object) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tunelab.studies.cv, "run", interrupted_second)
    path, out = _curve_config(tmp_path, tiny_bert), tmp_path / "out"
    res = runner.invoke(app, ["curve", str(path), "--fractions", "0.5,1"])
    assert res.exit_code == 130, res.output
    assert res.stderr.strip().splitlines()[-1] == (
        f"curve: interrupted; its finished points (frac-0.5) are kept in {out / 'curve'}; the same command continues "
        f"it: tunelab curve {path} --fractions 0.5,1 --set output_dir={out}")


def test_points_of_fractions_not_asked_for(tiny_bert: Path, tmp_path: Path) -> None:
    """The `frac-F` folders of fractions not in --fractions (an earlier curve's) are never read into curve.json and
    each run says what becomes of them (they were left silently, of another config too): this config's kept; another
    config's kept, or removed under --overwrite with the old curve's summary."""
    path, root = _curve_config(tmp_path, tiny_bert), tmp_path / "out" / "curve"

    def curve(fractions: str, *more: str) -> str:
        res = runner.invoke(app, ["curve", str(path), "--fractions", fractions, *more])
        assert res.exit_code == 0, res.output
        assert [p["fraction"] for p in json.loads((root / "curve.json").read_text())["points"]] == \
            [float(f) for f in fractions.split(",")]
        return res.stderr

    curve("0.5,1")
    assert "curve: frac-0.5 (not in --fractions): kept, not read into curve.json" in curve("1")
    (root / "frac-0.5" / "study_inputs.json").write_text('{"a":')  # damaged, in a point not asked for: no stop
    said = curve("0.25", "--set", "train.lr=1e-3")
    assert "curve: frac-0.5, frac-1 (not in --fractions; another config or other rows): kept, not read into " \
           "curve.json (--overwrite removes them)" in said
    assert (root / "frac-0.5" / "metrics.json").is_file() and (root / "frac-1" / "metrics.json").is_file()
    with RunDirLock(root / "frac-1"):  # a run writing a point that --overwrite would remove: refused, nothing removed
        res = runner.invoke(app, ["curve", str(path), "--fractions", "0.25", "--set", "train.lr=1e-3", "--overwrite"])
    assert res.exit_code == 2 and "frac-1 is in use by process" in res.stderr, res.output
    assert (root / "frac-0.5" / "metrics.json").is_file() and (root / "frac-1" / "config.yaml").is_file()
    said = curve("0.25", "--set", "train.lr=1e-3", "--overwrite")
    assert "curve: frac-0.5, frac-1 (not in --fractions; another config or other rows): removed (--overwrite)" in said
    assert "curve: fraction 0.25: finished, kept" in said
    assert sorted(p.name for p in root.glob("frac-*")) == ["frac-0.25"]
    kept = {**_files(root / "frac-0.25"), "curve.json": (root / "curve.json").read_bytes()}
    with RunDirLock(root / "frac-0.25"):  # an asked point a run is writing: refused before anything changes (its
        # study_inputs.json and the curve's summary went, its rows were written again, then the run was refused)
        res = runner.invoke(app, ["curve", str(path), "--fractions", "0.25", "--set", "train.lr=2e-3", "--overwrite"])
    assert res.exit_code == 2 and "frac-0.25 is in use by process" in res.stderr, res.output
    assert {**_files(root / "frac-0.25"), "curve.json": (root / "curve.json").read_bytes()} == kept


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".tunelab.lock"}
