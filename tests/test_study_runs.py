"""A study's runs (`tunelab cv` folds, `tunelab curve` points) run again: an unfinished one resumed from its newest
checkpoint, a continued study held to its first run's text rules, what --overwrite removes checked removable first."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import tunelab.studies.cv
import tunelab.training.checkpoint
from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.text import rules_version

runner = CliRunner()
ARGS = {"cv": ["--folds", "2"], "curve": ["--fractions", "0.5,1"]}
SUB = {"cv": ("fold-1", "fold-2"), "curve": ("frac-0.5", "frac-1")}  # (kept, the one run again)


def _config(tmp_path: Path, tiny_bert: Path, **train: object) -> Path:
    data = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40, 0))
    cfg = {"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "out"),
           "data": {"train": str(data), "validation_split": 0.25},
           "train": {"max_steps": 1, "batch_size": 8, "lr": 5e-3, "save_steps": 0, "precision": "fp32",
                     "report": False, **train}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _study(study: str, path: Path, *more: str, code: int = 0) -> str:
    res = runner.invoke(app, [study, str(path), *ARGS[study], *more])
    assert res.exit_code == code, res.output
    return res.stderr


def _killed(run: Path) -> None:
    """`run` as SIGKILL at step 3 leaves it (training/run_dir.py): its config.yaml, data_summary.json, log and
    checkpoint step 2; not the files a run writes as it ends, nor the study's record of the inputs it read."""
    for name in ("metrics.json", "study_inputs.json", "model", "predictions", "checkpoints/step-00000004"):
        target = run / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


@pytest.mark.parametrize("study", ["cv", "curve"])
def test_a_missing_unlabeled_file_is_refused_before_any_sub_run(study: str, tiny_bert: Path, tmp_path: Path) -> None:
    """A distillation config whose data.unlabeled is missing: refused as `tunelab train` refuses it (its config line),
    before the study writes a fold or point (it had been found by the first sub-run, its folder written)."""
    path = _config(tmp_path, tiny_bert)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["data"]["unlabeled"] = str(tmp_path / "gone.jsonl")
    cfg["distill"] = {"teacher": str(tiny_bert)}  # (not read: the refusal comes first)
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    line = path.read_text(encoding="utf-8").splitlines().index(f"  unlabeled: {tmp_path / 'gone.jsonl'}") + 1
    said = _study(study, path, code=2)
    assert said == f"error: {path}:{line}: data.unlabeled: {tmp_path / 'gone.jsonl'}: file not found\n", said
    assert not [p for p in (tmp_path / "out" / study).iterdir() if p.name != ".tunelab-study.lock"]


@pytest.mark.parametrize("study", ["cv", "curve"])
def test_an_unfinished_fold_or_point_resumes_from_its_checkpoint(study: str, tiny_bert: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Run again after a kill, the fold / point that was training goes on from its newest checkpoint (it trained
    again from step 0, its checkpoints deleted) and says so; the finished one is kept. Not under --overwrite (as
    `train --overwrite`, it starts over), nor from checkpoints trained on other rows than it now has (it resumed
    them, and the run refused them: 'the training rows differ', exit 2, on every run, --overwrite too)."""
    path = _config(tmp_path, tiny_bert, max_steps=4, save_steps=2)
    root = tmp_path / "out" / study
    _study(study, path)
    kept, killed = (root / name for name in SUB[study])
    before = json.loads((killed / "metrics.json").read_text())
    stamp = (kept / "metrics.json").stat().st_mtime_ns
    _killed(killed)
    hashed, sha256 = [], tunelab.training.checkpoint.sha256
    with monkeypatch.context() as patched:  # (its files hashed once: they were twice, minutes for a full model's)
        patched.setattr(tunelab.training.checkpoint, "sha256", lambda file, *a: hashed.append(file) or sha256(file, *a))
        said = _study(study, path)
    step2 = killed / "checkpoints" / "step-00000002"
    assert sorted(file.name for file in hashed if file.parent == step2) == ["state.pt", "trainable.safetensors"]
    label = "cv: fold 2" if study == "cv" else "curve: fraction 1"
    assert f"{label}: resumed from step 2 of its unfinished run ({step2})" in said
    assert "finished, kept" in said and (kept / "metrics.json").stat().st_mtime_ns == stamp
    after = json.loads((killed / "metrics.json").read_text())
    assert after["train"]["resumed_from"] == str(step2) and after["train"]["steps"] == 4
    assert after["validation"]["accuracy"] == pytest.approx(before["validation"]["accuracy"])
    assert after["train"]["loss"] == pytest.approx(before["train"]["loss"], rel=1e-4)  # as if never stopped

    _killed(killed)
    said = _study(study, path, "--overwrite")
    assert f"{label}: its unfinished run is not resumed (--overwrite); it trains again from its start" in said
    assert "resumed from" not in said
    assert "resumed_from" not in json.loads((killed / "metrics.json").read_text())["train"]

    # killed again; then an --overwrite on other rows stopped (Ctrl-C) once it wrote them, before its run began
    _killed(killed)
    other = write_jsonl(tmp_path / "other.jsonl", sentiment_rows(40, 7))
    real = tunelab.studies.cv.run  # (a study's run: cv.run_sub)

    def stopped(config: Any, **kwargs: Any) -> dict:
        if Path(config.output_dir) == killed:
            raise KeyboardInterrupt
        return real(config, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(tunelab.studies.cv, "run", stopped)
        _study(study, path, "--set", f"data.train={other}", "--overwrite", code=130)
    said = _study(study, path, "--set", f"data.train={other}")
    assert f"{label}: its unfinished run is not resumed (its checkpoints are those of a run it replaces, on other " \
           "rows or data files); it trains again from its start" in said and "resumed from" not in said
    after = json.loads((killed / "metrics.json").read_text())
    assert "resumed_from" not in after["train"] and after["train"]["steps"] == 4


@pytest.mark.parametrize("study", ["cv", "curve"])
def test_a_continued_study_reads_rows_by_its_first_runs_rules(study: str, tiny_bert: Path, tmp_path: Path) -> None:
    """A cv / curve begun by an older tunelab (its rows read by text rules 2) and continued by this one: the new fold /
    point reads its rows so too (it read them by today's rules, as `tunelab tune`'s trials no longer do); but not
    by those of the folds / points --overwrite replaces."""
    path, root = _config(tmp_path, tiny_bert), tmp_path / "out" / study
    _study(study, path)
    first, again = (root / name for name in SUB[study])
    summary = first / "data_summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "text_rules": 2}))
    (again / "metrics.json").unlink()  # interrupted
    said = _study(study, path)
    assert "finished, kept" in said
    assert json.loads((again / "data_summary.json").read_text())["text_rules"] == 2

    # --overwrite with other rows replaces every fold / point: none is kept, so it reads its rows by today's rules
    # (it kept the replaced study's: its config matched, without the data file it split)
    other = write_jsonl(tmp_path / "other.jsonl", sentiment_rows(40, 7))
    said = _study(study, path, "--set", f"data.train={other}", "--overwrite")
    assert "finished, kept" not in said
    assert [json.loads((root / name / "data_summary.json").read_text())["text_rules"] for name in SUB[study]] == \
        [rules_version()] * 2


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, IMMUTABLE = 0x80086601, 0x40086602, 0x10


@contextmanager
def _unremovable(file: Path) -> Iterator[None]:
    """`file` (and so its folder) not removable: its folder read-only for a user; immutable for root (`chattr +i`:
    permissions do not stop root's rmtree)."""
    if os.geteuid() != 0:
        file.parent.chmod(0o555)
        try:
            yield
        finally:
            file.parent.chmod(0o755)
        return
    fd = os.open(file, os.O_RDONLY)
    try:
        flags = struct.unpack_from("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8)))[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | IMMUTABLE) + bytes(4))
    except OSError as e:
        os.close(fd)
        pytest.skip(f"run as root, and {file.parent} cannot mark a file immutable ({e.strerror}): nothing else stops "
                    "root's rmtree")
    try:
        yield
    finally:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags) + bytes(4))
        os.close(fd)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name not in (".tunelab.lock", ".tunelab-study.lock")}


@pytest.mark.parametrize("study", ["cv", "curve"])
def test_overwrite_removes_nothing_when_a_folder_cannot_be_removed(study: str, tiny_bert: Path,
                                                                   tmp_path: Path) -> None:
    """--overwrite replacing a study whose folder holds something that cannot be removed: one line naming it, before
    anything is removed (curve: the points not asked for went one by one until rmtree stopped half-way; cv: the
    replaced folds were trained over and removed, then the fold past --folds stopped it)."""
    path, root = _config(tmp_path, tiny_bert), tmp_path / "out" / study
    first = ["--folds", "3"] if study == "cv" else ["--fractions", "0.5,1"]
    res = runner.invoke(app, [study, str(path), *first])
    assert res.exit_code == 0, res.output
    stuck = root / ("fold-3" if study == "cv" else "frac-1") / "model" / "config.json"
    before = _files(root)
    again = ["--folds", "2"] if study == "cv" else ["--fractions", "0.25"]
    with _unremovable(stuck):
        res = runner.invoke(app, [study, str(path), *again, "--set", "train.lr=1e-3", "--overwrite"])
    assert res.exit_code == 2, res.output
    assert _files(root) == before  # (first: what the old code lost)
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: output_dir: {stuck.parent.parent} cannot be removed (this command would replace "
                           "it): ") and line.endswith("; nothing was removed (make it removable, or choose another "
                                                      "output_dir)"), line


def test_a_damaged_study_record_is_said_and_nothing_resumed(tiny_bert: Path, tmp_path: Path) -> None:
    """A fold's study_started.json that does not read (truncated, or `older` not a list) is said so (it was called
    missing, or `older: 5` raised a TypeError) and its checkpoints are not resumed."""
    from tunelab.config.run import build_config
    from tunelab.studies.cv import STARTED, resume_candidates

    out = tmp_path / "fold-1"
    (out / "checkpoints" / "step-00000002").mkdir(parents=True)
    (out / "config.yaml").write_text("task: classification\n")
    cfg = build_config({"task": "classification", "model": str(tiny_bert)})
    assert resume_candidates(out, cfg)[1] == f"what its checkpoints trained on is not recorded: no {STARTED}"
    for damaged in ('{"inputs": {', '{"inputs": {}, "older": 5}'):
        (out / STARTED).write_text(damaged)
        assert resume_candidates(out, cfg) == ([], f"what its checkpoints trained on does not read: {STARTED} is "
                                                   "damaged")


def _fold(tiny_bert: Path, tmp_path: Path, **data: object) -> tuple[Path, Any, dict[str, str]]:
    """A fold's folder, its run's config (on its train.jsonl, with `data`) and its rows."""
    from tunelab.config.run import build_config

    out = tmp_path / "cv" / "fold-2"
    cfg = build_config({"task": "classification", "model": str(tiny_bert), "output_dir": str(out),
                        "data": {"train": str(out / "train.jsonl"), **data}})
    return out, cfg, {"train.jsonl": "".join(json.dumps(row) + "\n" for row in sentiment_rows(8, 0))}


def test_a_rerun_stopped_before_its_run_began_keeps_what_the_checkpoints_trained_on(
        tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fold killed at step 2, resumed and killed at step 4; run again on an edited synonyms file (twice) and stopped
    each time before its run claimed the folder (its checkpoints still there): with the file restored byte for byte,
    the step-4 checkpoint resumes — it trained on exactly these files (the rewritten study_started.json called every
    checkpoint there another run's: 'its checkpoints trained on another data.augment.synonyms')."""
    from tunelab.studies.cv import STARTED, resume_candidates, run_sub

    synonyms = tmp_path / "synonyms.tsv"
    synonyms.write_bytes(b"good\tfine,great\n")
    out, cfg, rows = _fold(tiny_bert, tmp_path, augment={"synonyms": str(synonyms)})
    steps = out / "checkpoints"

    def killed_at(step: int) -> Any:  # its run claims the folder, trains to `step` and is killed
        def run(config: Any, **kwargs: Any) -> dict:
            (out / "config.yaml").write_text("task: classification\n")
            (steps / f"step-{step:08d}").mkdir(parents=True)
            (steps / f"step-{step:08d}" / "trainer_state.json").write_text(json.dumps({"step": step}))
            raise KeyboardInterrupt
        return run

    def stopped(config: Any, **kwargs: Any) -> dict:  # Ctrl-C before its run claimed the folder
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(tunelab.studies.cv, "run", killed_at(2))
        with pytest.raises(KeyboardInterrupt):
            run_sub(cfg, out, rows)
        found = resume_candidates(out, cfg)[0]
        assert found == [steps / "step-00000002"]
        patched.setattr(tunelab.studies.cv, "run", killed_at(4))
        with pytest.raises(KeyboardInterrupt):
            run_sub(cfg, out, rows, tunelab.training.checkpoint.Verified(found[0]))
        assert resume_candidates(out, cfg)[0] == [steps / "step-00000004", steps / "step-00000002"]
        patched.setattr(tunelab.studies.cv, "run", stopped)
        for edited in (b"good\tnice\n", b"good\tswell\n"):
            synonyms.write_bytes(edited)
            assert resume_candidates(out, cfg) == ([], "its checkpoints trained on another data.augment.synonyms")
            before = (out / STARTED).read_bytes()
            with pytest.raises(KeyboardInterrupt):
                run_sub(cfg, out, rows)
            assert (out / STARTED).read_bytes() != before  # (rewritten, as the reviewer's repro waited for)
            assert resume_candidates(out, cfg) == ([], "its checkpoints are those of a run it replaces, on other "
                                                       "rows or data files")
    synonyms.write_bytes(b"good\tfine,great\n")
    assert resume_candidates(out, cfg) == ([steps / "step-00000004", steps / "step-00000002"], "")

    # a record of an older tunelab ("older": a list of ids) reads as before: those checkpoints are never resumed
    older = json.loads((out / STARTED).read_text())
    (out / STARTED).write_text(json.dumps({"inputs": older["inputs"], "older": list(older["older"])}))
    assert resume_candidates(out, cfg)[0] == []


@pytest.mark.parametrize("study", ["cv", "curve"])
def test_a_data_file_is_hashed_once_per_command(study: str, tiny_bert: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A data file every fold / point reads (data.test, the synonyms) is hashed once per command, not once per fold
    (and again by each check of it: a 1 GB file 5-7 times a 5-fold rerun); its sha256 as recorded is the same, and a
    later command sees the file as it is then."""
    import hashlib

    import tunelab.studies.records

    test = write_jsonl(tmp_path / "test.jsonl", sentiment_rows(10, 3))
    synonyms = tmp_path / "synonyms.tsv"
    synonyms.write_text("good\tfine\n")
    path = _config(tmp_path, tiny_bert)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(test=str(test), augment={"synonyms": str(synonyms)})
    path.write_text(yaml.safe_dump(cfg))
    hashed, sha256 = [], tunelab.training.checkpoint.sha256

    def counted(file: Path, *a: Any) -> str:
        hashed.append(Path(file).resolve())
        return sha256(file, *a)

    def run(config: Any, **kwargs: Any) -> dict:  # (the study's part alone: its runs' training is not the question)
        return {"validation": {"accuracy": 0.5, "loss": 1.0}}

    more = ["--folds", "3"] if study == "cv" else ["--fractions", "0.3,0.6,1"]
    for text in ("good\tfine\n", "good\tnice\n"):  # a second command, the synonyms edited: hashed again
        synonyms.write_text(text)
        hashed.clear()
        with monkeypatch.context() as patched:
            patched.setattr(tunelab.studies.cv, "run", run)
            for module in (tunelab.studies.cv, tunelab.studies.records):
                patched.setattr(module, "sha256", counted, raising=False)
            res = runner.invoke(app, [study, str(path), *more])
        assert res.exit_code == 0, res.output
        assert hashed.count(test.resolve()) == 1 and hashed.count(synonyms.resolve()) == 1
        subs = sorted(p for p in (tmp_path / "out" / study).iterdir() if p.is_dir())
        assert len(subs) == 3
        for sub in subs:
            inputs = json.loads((sub / "study_inputs.json").read_text())
            assert inputs["test"] == hashlib.sha256(test.read_bytes()).hexdigest()
            assert inputs["augment.synonyms"] == hashlib.sha256(text.encode()).hexdigest()
            assert inputs["train"] == hashlib.sha256((sub / "train.jsonl").read_bytes()).hexdigest()
