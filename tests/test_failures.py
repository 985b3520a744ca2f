"""Every command on a broken input: one line on stderr naming what is wrong, exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

runner = CliRunner()


def _cases(tmp: Path) -> list[tuple[list[str], str]]:
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("task: classification\nmodel: [minilm\n", encoding="utf-8")
    not_a_run = tmp / "not-a-run"
    not_a_run.mkdir()
    missing = tmp / "missing.jsonl"
    base = ["--set", "task=classification", "--set", "model=minilm", "--set", f"data.train={missing}"]
    return [
        (["train", str(bad_yaml)], "bad.yaml:3: invalid YAML"),
        (["train", str(tmp / "nope.yaml")], "config file not found"),
        (["train", *base], f"{missing}: file not found"),
        (["train", "--set", "task=classification", "--set", "model=minilm", "--set", "train.lerning_rate=1"],
         "config: train.lerning_rate: unknown key"),
        (["tune", str(bad_yaml), "--trials", "2"], "invalid YAML"),
        (["cv", str(bad_yaml)], "invalid YAML"),
        (["curve", str(bad_yaml)], "invalid YAML"),
        (["compare", str(not_a_run)], "compare: pass at least two run directories"),
        (["compare", str(not_a_run), str(not_a_run)], "not-a-run"),
        (["baseline", *base], f"{missing}: file not found"),
        (["eval", str(not_a_run), "--data", str(missing)], "not a tunelab model directory"),
        (["predict", str(not_a_run), "--input", "-"], "not a tunelab model directory"),
        (["chat", str(not_a_run)], "not a tunelab model directory"),
        (["export", str(not_a_run)], "export: say what to export"),
        (["export", str(not_a_run), "--merge"], "no adapter"),
        (["report", str(not_a_run)], "is not a finished run"),
        (["data", "check", str(missing)], f"{missing}: file not found"),
        (["data", "augment", str(missing), "--output", str(tmp / "aug.jsonl")], f"{missing}: file not found"),
        (["env", str(bad_yaml)], "invalid YAML"),
    ]


@pytest.mark.parametrize("index", range(19))
def test_broken_input_is_one_line(index: int, tmp_path: Path) -> None:
    args, said = _cases(tmp_path)[index]
    res = runner.invoke(app, args)
    out = res.output.strip()
    assert res.exit_code == 2, (args, out)
    assert "Traceback" not in out and len(out.splitlines()) == 1, (args, out)
    assert out.startswith("error: ") and said in out, (args, out)
    assert not (tmp_path / "aug.jsonl").exists()  # nothing half-written
