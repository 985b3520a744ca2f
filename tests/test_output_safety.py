"""Files a command writes (predict --output, eval --report and the records beside it, eval --predictions, compare
--output and the .txt beside it) never replace an input, a file of a model or run directory being read, or a
directory; an existing one only with --overwrite. Each refusal is one line, exit code 2, before any model loads,
and leaves every file as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import train_sentiment
from tunelab.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def work(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classification run `run` (its data `val.jsonl` beside it) and `twin`, a copy of it."""
    root = tmp_path_factory.mktemp("out-safety")
    train_sentiment(tiny_bert, root / "run", sets=("train.epochs=1",))
    shutil.copytree(root / "run", root / "twin")
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(root: Path, args: list[str], said: str) -> None:
    before = _snapshot(root)
    res = runner.invoke(app, args)
    out = res.output.strip()
    assert res.exit_code == 2, (args, out)
    assert "Traceback" not in out and len(out.splitlines()) == 1 and out == f"error: {said}", (args, out)
    assert _snapshot(root) == before  # nothing replaced, nothing written


def test_inputs_and_directories_are_refused_even_with_overwrite(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    (work / "cv.jsonl").write_bytes((work / "val.jsonl").read_bytes())
    (work / "out").mkdir()
    for overwrite in ([], ["--overwrite"]):
        _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--report", "val.jsonl", *overwrite],
                 "--report: val.jsonl is the --data file; write the report elsewhere")
        _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--report", "run/model/model.safetensors",
                        *overwrite],
                 "--report: run/model/model.safetensors is a file of the model directory run/model; write the "
                 "report elsewhere")
        _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--report", "run/report.html", *overwrite],
                 "--report: run/report.html is a file of the run directory run; write the report elsewhere")
        _refused(work, ["eval", "run/model", "--data", "cv.jsonl", "--predictions", "./cv.jsonl", *overwrite],
                 "--predictions: cv.jsonl is the --data file; write the predictions elsewhere")
        _refused(work, ["predict", "run/model", "--input", "val.jsonl", "--output", "val.jsonl", *overwrite],
                 "--output: val.jsonl is the --input file; write the output elsewhere")
        _refused(work, ["predict", "run/model", "--input", "val.jsonl", "--output", "out", *overwrite],
                 "--output: out is a directory; name a file to write")
        _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--report", "out", *overwrite],
                 "--report: out is a directory; name a file to write")
        _refused(work, ["compare", "run", "twin", "--output", "run/report.html", *overwrite],
                 "--output: run/report.html is a file of the run directory run; write the output elsewhere")
        _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--report", "run/metrics.json", *overwrite],
                 "--report: run/metrics.json is a file of the run directory run; write the report elsewhere")
        # the run's own files, whichever of its models is read (its model/, an export): they were replaced
        _refused(work, ["predict", "run", "--input", "val.jsonl", "--output", "run/metrics.json", *overwrite],
                 "--output: run/metrics.json is a file of the run directory run; write the output elsewhere")
        _refused(work, ["predict", "run/exports/onnx-int8", "--input", "val.jsonl", "--output", "run/report.html",
                        *overwrite],
                 "--output: run/report.html is a file of the run directory run; write the output elsewhere")
        _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--predictions", "run/metrics.jsonl", *overwrite],
                 "--predictions: run/metrics.jsonl is a file of the run directory run; write the predictions elsewhere")
        # of predictions/, the records the run wrote (compare and the report read them): not a file of one's own
        _refused(work, ["predict", "run", "--input", "val.jsonl", "--output", "run/predictions/validation.jsonl",
                        *overwrite],
                 "--output: run/predictions/validation.jsonl is a file of the run directory run; write the output "
                 "elsewhere")
        # a link to a missing folder on the way: said as such (it was "part of dl is a file", or "File exists")
        if not (work / "dl").is_symlink():
            (work / "dl").symlink_to(work / "missing")
        _refused(work, ["predict", "run", "--input", "val.jsonl", "--output", "dl/p.jsonl", *overwrite],
                 f"--output: dl/p.jsonl cannot be written: dl is a link to a missing folder ({work / 'missing'})")
    # a run directory named `exports` (its model is not an export of a run above it), and a run whose model/ is a
    # link to another run's: each run's own files, not only the one the path spells (they were replaced)
    shutil.copytree(work / "twin", work / "proj" / "exports", ignore=shutil.ignore_patterns("exports"))
    _refused(work, ["predict", "proj/exports", "--input", "val.jsonl", "--output", "proj/exports/metrics.json",
                    "--overwrite"],
             "--output: proj/exports/metrics.json is a file of the run directory proj/exports; write the output "
             "elsewhere")
    shutil.copytree(work / "twin", work / "linked", ignore=shutil.ignore_patterns("model", "exports"))
    (work / "linked" / "model").symlink_to(work / "run" / "model")
    _refused(work, ["predict", "linked/model", "--input", "val.jsonl", "--output", "run/metrics.json", "--overwrite"],
             f"--output: run/metrics.json is a file of the run directory {(work / 'run').resolve()}; write the output "
             "elsewhere")
    _refused(work, ["predict", "linked/model", "--input", "val.jsonl", "--output", "linked/report.html",
                    "--overwrite"],
             "--output: linked/report.html is a file of the run directory linked; write the output elsewhere")
    (work / "same.jsonl").hardlink_to(work / "val.jsonl")  # another name for the same file
    _refused(work, ["predict", "run/model", "--input", "val.jsonl", "--output", "same.jsonl", "--overwrite"],
             "--output: same.jsonl is the --input file; write the output elsewhere")


def test_existing_outputs_need_overwrite(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    for name in ("preds.jsonl", "rep.html", "rep2.predictions.jsonl", "replies.jsonl", "cmp.html", "notes.txt"):
        (work / name).write_text("keep me\n", encoding="utf-8")
    _refused(work, ["predict", "run/model", "--input", "val.jsonl", "--output", "preds.jsonl"],
             "--output: preds.jsonl exists; pass --overwrite to replace it")
    _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--report", "rep.html"],
             "--report: rep.html exists; pass --overwrite to replace it")
    _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--report", "rep2.html"],  # the records beside it
             "--report: rep2.predictions.jsonl exists; pass --overwrite to replace it")
    _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--predictions", "replies.jsonl"],
             "--predictions: replies.jsonl exists; pass --overwrite to replace it")
    _refused(work, ["compare", "run", "twin", "--output", "cmp.html"],
             "--output: cmp.html exists; pass --overwrite to replace it")
    _refused(work, ["compare", "run", "twin", "--output", "notes.html"],  # an unrelated .txt where it would write
             "--output: notes.txt exists; pass --overwrite to replace it")


def test_overwrite_replaces_a_previous_output(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    for name in ("p.jsonl", "r.html", "r.predictions.jsonl", "c.html", "c.txt", "run/mine.html"):
        (work / name).write_text("old\n", encoding="utf-8")
    res = runner.invoke(app, ["predict", "run/model", "--input", "val.jsonl", "--output", "p.jsonl", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert len((work / "p.jsonl").read_text(encoding="utf-8").splitlines()) == 40
    res = runner.invoke(app, ["eval", "run/model", "--data", "val.jsonl", "--report", "r.html", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (work / "r.html").read_text(encoding="utf-8").lower().startswith("<!doctype html>")
    assert len((work / "r.predictions.jsonl").read_text(encoding="utf-8").splitlines()) == 40
    # a file of one's own in a run directory (not one the run wrote) is like any other
    _refused(work, ["eval", "run/model", "--data", "val.jsonl", "--report", "run/mine.html"],
             "--report: run/mine.html exists; pass --overwrite to replace it")
    res = runner.invoke(app, ["eval", "run/model", "--data", "val.jsonl", "--report", "run/mine.html", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (work / "run" / "mine.predictions.jsonl").is_file()
    # the run's directory given for its model (eval / predict take either): the same rules, not all of RUN protected
    res = runner.invoke(app, ["eval", "run", "--data", "val.jsonl", "--report", "run/mine.html", "--overwrite"])
    assert res.exit_code == 0, res.output
    _refused(work, ["eval", "run", "--data", "val.jsonl", "--report", "run/report.html", "--overwrite"],
             "--report: run/report.html is a file of the run directory run; write the report elsewhere")
    res = runner.invoke(app, ["compare", "run", "twin", "--output", "c.html", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (work / "c.html").read_text(encoding="utf-8").lower().startswith("<!doctype html>")
    assert (work / "c.txt").read_text(encoding="utf-8").startswith("tunelab compare: validation split")
    assert not list(work.glob(".*.tmp"))  # written atomically: no temp file left
    # a file of one's own in the run's predictions/: replaced with --overwrite, again and again (it was refused as
    # "a file of the run directory", as all of predictions/ and exports/ were)
    # and beside the run's exports; an export's own files are not
    (work / "run" / "exports" / "onnx-fp32").mkdir(parents=True)
    (work / "run" / "exports" / "onnx-fp32" / "model.onnx").write_text("an export\n", encoding="utf-8")
    _refused(work, ["predict", "run", "--input", "val.jsonl", "--output", "run/exports/onnx-fp32/model.onnx",
                    "--overwrite"],
             "--output: run/exports/onnx-fp32/model.onnx is a file of the run directory run; write the output "
             "elsewhere")
    for mine in ("run/predictions/my.jsonl", "run/exports/mine.jsonl"):
        (work / mine).write_text("old\n", encoding="utf-8")
        _refused(work, ["predict", "run", "--input", "val.jsonl", "--output", mine],
                 f"--output: {mine} exists; pass --overwrite to replace it")
        for _ in range(2):
            res = runner.invoke(app, ["predict", "run", "--input", "val.jsonl", "--output", mine, "--overwrite"])
            assert res.exit_code == 0, res.output
            assert len((work / mine).read_text(encoding="utf-8").splitlines()) == 40
    (work / "run" / "predictions" / "my.jsonl").unlink()  # (the report would read it as a split's records)
    shutil.rmtree(work / "run" / "exports")
