"""A finished run's data read again (report, export, compress, distill, the --output checks) from its config's paths:
a relative path is read from the folder training ran in (RUN/data_summary.json's data_folder), whatever the current
folder, and a file that changed since is one error line. A run that did not record that folder (an older tunelab)
reads them from the current folder, so from another folder they can name other files — one error line, not a check or
a report on the wrong rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.text import TEXT_RULES

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


def _decoys(folder: Path) -> None:
    """Files named as the run's, other rows: what a relative path read from `folder` would find."""
    write_jsonl(folder / "train.jsonl", sentiment_rows(48, 0))
    write_jsonl(folder / "val.jsonl", sentiment_rows(2, 7))  # another val.jsonl: 2 rows, the run used 16


@pytest.mark.parametrize("command", [["report"], ["export", "--format", "torch", "--quantize", "int8"],
                                     ["compress", "--prune", "heads:0.5", "--recover-epochs", "0", "--force"]])
def test_a_run_read_again_from_another_folder_reads_its_own_files(
        relative_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    """It read the current folder's val.jsonl (one error line when the row count differed; the wrong rows when not),
    or no file at all where the folder had none. (Export reads a run's rows so for every format, before its exporter:
    torchao int8 here, under a second where torch.onnx traces ~7 s.)"""
    if command[0] == "export":
        pytest.importorskip("torchao")
    home = relative_run.parent
    _decoys(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [command[0], str(relative_run), *command[1:]])
    assert res.exit_code == 0, res.output
    assert json.loads((relative_run / "data_summary.json").read_text())["data_folder"] == str(home)
    if command[0] != "report":
        out = relative_run / "exports" / ("torch-int8" if command[0] == "export" else "heads-0.5")
        report = json.loads((out / "report.json").read_text())
        assert report["data"] == str(home / "val.jsonl") and {r["rows"] for r in report["rows"]} == {16}, report
    empty = tmp_path / "empty"  # no data files here at all: was `train.jsonl: file not found`
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert runner.invoke(app, ["report", str(relative_run)]).exit_code == 0


def test_what_else_reads_a_runs_data_reads_its_own_files(relative_run: Path, tiny_bert: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The files an --output never replaces and a distilled student's data: the run's own, not the current folder's;
    a --set value is the caller's own, read from the current folder."""
    from tunelab.export.output import run_reads
    from tunelab.studies.distill import distill_config

    home = relative_run.parent
    _decoys(tmp_path)
    monkeypatch.chdir(tmp_path)
    data = {r.role: r.path for r in run_reads(relative_run) if "data." in r.role}
    assert data == {"the run's data.train file": home / "train.jsonl",
                    "the run's data.validation file": home / "val.jsonl"}
    res = runner.invoke(app, ["export", str(relative_run), "--format", "onnx", "--output", str(home / "val.jsonl"),
                              "--overwrite"])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: --output: {home / 'val.jsonl'} would replace the " \
        "run's data.validation file; choose another --output", res.output
    cfg = distill_config(relative_run, str(tiny_bert), 2.0, 0.5, tmp_path / "student", [])
    assert (cfg.data.train, cfg.data.validation) == (str(home / "train.jsonl"), str(home / "val.jsonl"))
    cfg = distill_config(relative_run, str(tiny_bert), 2.0, 0.5, tmp_path / "student", ["data.validation=val.jsonl"])
    assert (cfg.data.train, cfg.data.validation) == (str(home / "train.jsonl"), "val.jsonl")


def test_an_older_run_read_again_from_another_folder_with_other_files_is_one_error(
        relative_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that did not record the folder it trained in: its relative paths from the current folder, checked."""
    old = tmp_path / "old"
    shutil.copytree(relative_run, old, ignore=shutil.ignore_patterns("exports"))
    summary = json.loads((old / "data_summary.json").read_text())
    del summary["data_folder"]
    (old / "data_summary.json").write_text(json.dumps(summary))
    work = tmp_path / "work"
    work.mkdir()
    _decoys(work)
    monkeypatch.chdir(work)
    report = (old / "report.html").read_bytes()
    res = runner.invoke(app, ["report", str(old)])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: val.jsonl: validation: 2 rows now, where the run ") and "used 16" in line, line
    assert f"relative to the current folder {work}" in line and "Traceback" not in res.output
    assert (old / "report.html").read_bytes() == report
    monkeypatch.chdir(relative_run.parent)
    assert runner.invoke(app, ["report", str(old)]).exit_code == 0  # from the folder it trained in


def test_the_same_run_read_from_its_own_folder_works(relative_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(relative_run.parent)
    res = runner.invoke(app, ["report", str(relative_run)])
    assert res.exit_code == 0, res.output


def test_training_rows_resampled_after_reading_are_not_compared(tmp_path: Path) -> None:
    """rows_used.train counts the rows after data.sampling / augment: only then is train left out of the check."""
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


def test_a_moved_project_reads_the_files_beside_it(relative_run: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The project folder moved (or was copied to another machine): the recorded folder holds no such files, so the
    paths are read from the current folder, as before data_folder was recorded; the rows are checked all the same."""
    moved = tmp_path / "moved"
    shutil.copytree(relative_run.parent, moved)
    summary = json.loads((moved / "run" / "data_summary.json").read_text())
    (moved / "run" / "data_summary.json").write_text(json.dumps({**summary, "data_folder": str(tmp_path / "gone")}))
    monkeypatch.chdir(moved)
    res = runner.invoke(app, ["report", "run"])
    assert res.exit_code == 0, res.output
    (moved / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows(2, 7)))  # other rows now
    res = runner.invoke(app, ["report", "run"])
    assert res.exit_code == 2 and "val.jsonl" in res.output, res.output


def test_a_resume_from_another_folder_with_other_files_is_refused(relative_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`--resume` checks the config against the run's: its relative data paths are from the folder it trained in, so
    the same spelling from another folder (other files of the same names) is a change of data, refused in one line;
    from its own folder, or a folder where the files are the same ones, nothing changed."""
    from tunelab.config.run import load_config
    from tunelab.errors import ConfigError
    from tunelab.pipeline import _check_resumed_config

    home = relative_run.parent
    saved = relative_run / "config.yaml"
    monkeypatch.chdir(home)
    _check_resumed_config(relative_run, load_config(saved))
    _decoys(tmp_path)
    monkeypatch.chdir(tmp_path)
    # (the decoy train.jsonl holds the same bytes as the run's: the same data; its val.jsonl other rows)
    with pytest.raises(ConfigError, match=r"config: data\.validation: 'val\.jsonl' where the run being resumed has "):
        _check_resumed_config(relative_run, load_config(saved))


def test_an_older_runs_rows_are_read_again_by_its_own_text_rules(tiny_bert: Path, tmp_path: Path) -> None:
    """Since text rules 2, `早餐 一般` repeats `早餐一般` (no space between CJK characters): a run trained before,
    which kept both, is read again (report, export, compress, resume) by its rules — not refused as "the data
    changed" though its file did not."""
    import tunelab
    from tunelab.data.load import run_splits
    from tunelab.registry import TASKS

    rows = sentiment_rows(24, 0) + [{"text": t, "label": "negative"} for t in ("早餐 一般", "早餐一般")]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(8, 1))
    run = tunelab.train({"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "run"),
                         "data": {"train": str(train), "validation": str(val), "dedup": True},
                         "train": {"max_steps": 1, "save_steps": 0, "report": False}})
    summary_path = run.dir / "data_summary.json"
    summary = json.loads(summary_path.read_text())
    assert summary["text_rules"] == TEXT_RULES and summary["rows_used"]["train"] == len(set(map(str, rows))) - 1
    task = TASKS.get("classification")(run.config.task, run.config.data)
    assert len(run_splits(run.dir, run.config.data, task, 0)["train"]) == summary["rows_used"]["train"]
    older = {k: v for k, v in summary.items() if k != "text_rules"}  # as a run of the earlier rules wrote it
    older["rows_used"] = {**summary["rows_used"], "train": summary["rows_used"]["train"] + 1}  # both rows kept then
    summary_path.write_text(json.dumps(older))
    assert len(run_splits(run.dir, run.config.data, task, 0)["train"]) == older["rows_used"]["train"]
    summary_path.write_text(json.dumps({**older, "text_rules": TEXT_RULES}))  # the same counts, today's rules: changed
    with pytest.raises(Exception, match="rows now, where the run"):
        run_splits(run.dir, run.config.data, task, 0)


def test_a_run_whose_base_model_is_gone_reports_and_exports(tiny_bert: Path, tmp_path: Path) -> None:
    """A run copied to another machine, or tuned from a folder since deleted: report, export and compress read its
    model/, not the base — they refused with "model: 'base' is not a known alias ..." (the saved config checked)."""
    from conftest import train_sentiment

    base = tmp_path / "base"
    shutil.copytree(tiny_bert, base)
    run = train_sentiment(base, tmp_path / "run", sets=("train.epochs=1",))
    shutil.rmtree(base)
    for args in (["report", str(run)], ["export", str(run), "--format", "torch", "--quantize", "int8"],
                 ["compress", str(run), "--prune", "heads:0.5", "--recover-epochs", "0", "--force"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
