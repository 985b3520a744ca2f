"""A finished run's data read again (report, export, compress) from its config's paths: relative paths are read
from the current folder, so from another folder they can name other files — one error line, not a check or a
report on the wrong rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def relative_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classification run trained with data paths relative to its folder."""
    home = tmp_path_factory.mktemp("relative")
    write_jsonl(home / "train.jsonl", sentiment_rows(48, 0))
    write_jsonl(home / "val.jsonl", sentiment_rows(16, 1))
    sets = ["task=classification", f"model={tiny_bert}", "data.train=train.jsonl", "data.validation=val.jsonl",
            "output_dir=run", "train.epochs=1", "train.batch_size=8", "train.save_steps=0", "train.precision=fp32"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return home / "run"


@pytest.mark.parametrize("command", [["report"], ["export", "--format", "onnx"], ["compress", "--prune", "heads:0.5"]])
def test_a_run_read_again_from_another_folder_with_other_files_is_one_error(
        relative_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, 0))
    write_jsonl(tmp_path / "val.jsonl", sentiment_rows(2, 7))  # another val.jsonl: 2 rows, the run used 16
    monkeypatch.chdir(tmp_path)
    report = (relative_run / "report.html").read_bytes()
    res = runner.invoke(app, [command[0], str(relative_run), *command[1:]])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: val.jsonl: validation: 2 rows now, where the run ") and "used 16" in line, line
    assert f"relative to the current folder {tmp_path}" in line and "Traceback" not in res.output
    assert (relative_run / "report.html").read_bytes() == report
    assert not (relative_run / "exports").exists() or not any((relative_run / "exports").iterdir())


def test_the_same_run_read_from_its_own_folder_works(relative_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(relative_run.parent)
    res = runner.invoke(app, ["report", str(relative_run)])
    assert res.exit_code == 0, res.output


def test_training_rows_resampled_after_reading_are_not_compared(tmp_path: Path) -> None:
    """rows_used.train counts the rows after data.sampling / augment: only then is train left out of the check."""
    import json

    from tunelab.config.run import build_config
    from tunelab.data.load import run_splits
    from tunelab.errors import DataError
    from tunelab.registry import TASKS

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, 0))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(16, 1))
    cfg = build_config({"task": "classification", "model": "minilm", "output_dir": str(tmp_path / "run"),
                        "data": {"train": str(train), "validation": str(val)}})
    task = TASKS.get("classification")(cfg.task, cfg.data)
    run = tmp_path / "run"
    run.mkdir()
    for applied, fails in (({"sampling": "oversample"}, False), ({"sampling": None, "augment": None}, True)):
        summary = {"rows_used": {"train": 60, "validation": 16}, "applied": applied}
        (run / "data_summary.json").write_text(json.dumps(summary), encoding="utf-8")
        if fails:
            with pytest.raises(DataError, match=r"train\.jsonl: train: 48 rows now, where the run .* used 60: the data "
                                                r"changed since$"):
                run_splits(run, cfg.data, task, cfg.train.seed)
        else:
            assert len(run_splits(run, cfg.data, task, cfg.train.seed)["train"]) == 48
