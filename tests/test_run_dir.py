"""Nothing lost: a run writes into output_dir only after every check passed, one process at a time, never over what is
not a finished run of the same config (unless --overwrite), and resume skips a damaged newest checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import WORDS, modes, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.training.run_dir import LOCK, RunDirLock

runner = CliRunner()


def _sets(tiny_bert: Path, tmp_path: Path, out: Path, **extra: str) -> list[str]:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24, 0))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(8, 1))
    base = {"task": "classification", "model": str(tiny_bert), "data.train": str(train), "data.validation": str(val),
            "output_dir": str(out), "train.max_steps": "2", "train.batch_size": "8", "train.save_steps": "1",
            "train.lr": "1e-3", **extra}
    return [x for k, v in base.items() for x in ("--set", f"{k}={v}")]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fails(args: list[str], match: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and "Traceback" not in line and match in line, line
    return line


@pytest.fixture()
def finished(tiny_bert: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    out = tmp_path / "run"
    sets = _sets(tiny_bert, tmp_path, out)
    res = runner.invoke(app, ["train", *sets])
    assert res.exit_code == 0, res.output
    return out, sets


def test_a_failed_rerun_leaves_the_run_as_it_was(finished: tuple[Path, list[str]], tiny_bert: Path,
                                                 tmp_path: Path) -> None:
    out, sets = finished
    before = _snapshot(out)
    other = _sets(tiny_bert, tmp_path, out, **{"train.lr": "5e-4"})  # another config into the same directory
    _fails(["train", *other], "holds a run of another config; pass --overwrite")
    train = tmp_path / "train.jsonl"
    good = train.read_bytes()
    train.write_text('{"text": "good", "label": "positive"}\n{"text": "bad"}\n', encoding="utf-8")
    _fails(["train", *sets], "train.jsonl:2")  # the same config, its data now broken: nothing touched
    train.write_bytes(good)
    # even --overwrite loses nothing when the run fails its checks (here after the model loaded)
    _fails(["train", *sets, "--set", "method=prefix", "--overwrite"], "prefix tuning works with causal LMs only")
    assert _snapshot(out) == before
    res = runner.invoke(app, ["train", *sets])  # the same config again: allowed, it replaces the finished run
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", *other, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "lr: 0.0005" in (out / "config.yaml").read_text()
    assert (out / LOCK).read_text() == ""  # the lock file stays, held by nobody


def test_user_files_and_unfinished_runs_are_not_clobbered(tiny_bert: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "weights.bin").write_bytes(b"precious")
    (mine / "notes.txt").write_text("mine", encoding="utf-8")
    _fails(["train", *_sets(tiny_bert, tmp_path, mine)], "holds files that no tunelab run wrote (notes.txt)")
    (mine / "notes.txt").unlink()
    _fails(["train", *_sets(tiny_bert, tmp_path, mine)], "holds files of a run without its config.yaml")
    assert (mine / "model" / "weights.bin").read_bytes() == b"precious"

    out = tmp_path / "run"
    sets = _sets(tiny_bert, tmp_path, out)
    res = runner.invoke(app, ["train", *sets])
    assert res.exit_code == 0, res.output
    (out / "metrics.json").unlink()  # as a run killed before its end leaves it
    _fails(["train", *sets], "holds an unfinished run of this config (--resume continues it)")
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    _fails(["train", *_sets(tiny_bert, tmp_path, a_file)], "is a file, not a directory")
    _fails(["train", *_sets(tiny_bert, tmp_path, a_file / "run")], f"output_dir: cannot write {a_file / 'run'}: ")
    assert a_file.read_text(encoding="utf-8") == "x"  # an output_dir that cannot be made: one line, nothing lost
    study = tmp_path / "study"  # what baseline / curve put into a run's output_dir is not in the way
    study.mkdir()
    (study / "baselines.json").write_text("{}", encoding="utf-8")
    (study / "eval.json").write_text("{}", encoding="utf-8")  # `tunelab eval RUN/model > RUN/eval.json` (make demo)
    assert runner.invoke(app, ["train", *_sets(tiny_bert, tmp_path, study)]).exit_code == 0
    assert runner.invoke(app, ["train", *_sets(tiny_bert, tmp_path, study)]).exit_code == 0  # again: replaces it
    assert (study / "baselines.json").read_text() == "{}" and (study / "eval.json").read_text() == "{}"


def test_a_second_run_into_a_busy_directory_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    sets = _sets(tiny_bert, tmp_path, out)
    with RunDirLock(out):
        _fails(["train", *sets], f"is in use by process {os.getpid()}")
        (out / "config.yaml").write_text("task: ner\n", encoding="utf-8")  # what a live run of another config
        (out / "metrics.jsonl").write_text("", encoding="utf-8")  # holds: the pid is still what is said
        _fails(["train", *sets], f"is in use by process {os.getpid()}")
    (out / "config.yaml").unlink()
    (out / "metrics.jsonl").unlink()
    assert (out / LOCK).read_text() == ""
    (out / LOCK).write_text("999999999\n", encoding="utf-8")  # a dead process's lock file, no OS lock held
    res = runner.invoke(app, ["train", *sets])
    assert res.exit_code == 0, res.output
    assert (out / LOCK).read_text() == ""


def test_max_length_above_the_positions_is_refused_before_writing(tiny_bert: Path, tmp_path: Path) -> None:
    long = [{"text": " ".join(WORDS * 6), "label": lab} for lab in ("positive", "negative")] * 4  # > 128 tokens
    train = write_jsonl(tmp_path / "long.jsonl", long)
    out = tmp_path / "run"
    sets = _sets(tiny_bert, tmp_path, out, **{"data.train": str(train), "data.max_length": "512"})
    _fails(["train", *sets], "--set data.max_length: 512 is above the model's 128 positions")
    assert not out.exists()


def test_resume_skips_a_damaged_newest_checkpoint(finished: tuple[Path, list[str]]) -> None:
    out, sets = finished
    newest = sorted((out / "checkpoints").iterdir())[-1]
    weights = newest / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as a full disk leaves it
    res = runner.invoke(app, ["train", *sets, "--resume"])
    assert res.exit_code == 0, res.output
    assert f"resume: skipped {newest}: trainable.safetensors does not match its checksum" in res.output
    (newest / "state.pt").unlink()  # the resumed run wrote it again; now damage it another way
    # asked for by name, a damaged checkpoint is refused in one line
    _fails(["train", *sets, "--resume", str(newest)], "is not a complete checkpoint (missing state.pt)")
    # a file missing from the newest one: `--resume` (auto) falls back past it too, saying so
    res = runner.invoke(app, ["train", *sets, "--resume"])
    assert res.exit_code == 0, res.output
    assert f"resume: skipped {newest}: missing state.pt" in res.output


def test_model_card_adapter_base_and_report_off(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", *_sets(tiny_bert, tmp_path, out, method="lora", **{"train.report": "false"})])
    assert res.exit_code == 0, res.output
    assert not (out / "report.html").exists()  # train.report: false
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlicense: unknown") and f"base_model: {tiny_bert}" in card
    assert "Labels (2): `negative`, `positive`" in card and "| accuracy |" in card
    assert f"tunelab train {out / 'config.yaml'}" in card and "| train |" in card
    import json

    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny_bert)
    res = runner.invoke(app, ["export", str(out), "--merge"])  # merging still finds the base
    assert res.exit_code == 0, res.output


def test_a_cut_students_card_has_the_teachers_base_and_licence(tmp_path: Path) -> None:
    import json

    from tunelab.config.run import build_config
    from tunelab.export.model_card import model_card
    from tunelab.tasks.classification import Classification

    teacher = tmp_path / "teacher"
    (teacher / "model").mkdir(parents=True)
    (teacher / "model" / "tunelab.json").write_text(json.dumps({"base_model": "minilm"}))
    cfg = build_config({"task": "classification", "model": "layers:0", "data": {"train": "t.jsonl"},
                        "distill": {"teacher": str(teacher)}, "output_dir": str(tmp_path / "student")})
    task = Classification(cfg.task, cfg.data)
    card = model_card(cfg, task, {})  # the teacher's tunelab.json: an alias, its licence from the alias table
    assert card.startswith("---\nlicense: apache-2.0\nbase_model: minilm\n"), card
    (teacher / "model" / "README.md").write_text("---\nlicense: mit\nbase_model: org/model\n---\n")
    card = model_card(cfg, task, {})  # the teacher's card (a student of a student: the first teacher's base)
    assert card.startswith("---\nlicense: mit\nbase_model: org/model\n"), card
    assert "The weights derive from `org/model`, whose licence is: mit." in card


def test_a_model_that_cannot_load_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    out = tmp_path / "run"
    for model, said in ((empty, "no file named model.safetensors"), ("no-such-org/no-such-model", "cannot load")):
        sets = ["--set", "task=classification", "--set", f"model={model}", "--set", f"output_dir={out}",
                "--set", f"data.train={write_jsonl(tmp_path / 't.jsonl', sentiment_rows(6))}"]
        line = _fails(["train", *sets], f"--set model: cannot load {model}")
        assert said in line
        assert not out.exists()


def test_resume_from_elsewhere_and_a_rerun_that_replaces(finished: tuple[Path, list[str]], tiny_bert: Path,
                                                        tmp_path: Path) -> None:
    """--resume PATH into another run's output_dir is checked like any run (it would have clobbered it); re-running a
    finished run of the same config replaces its files (old checkpoints never mix with the new ones); hidden files
    are nobody's work; a config.yaml of an older version (fields added since) is still the same config."""
    out, sets = finished
    other = tmp_path / "other"
    assert runner.invoke(app, ["train", *_sets(tiny_bert, tmp_path, other, **{"train.lr": "5e-4"})]).exit_code == 0
    before = _snapshot(other)
    step = sorted((out / "checkpoints").iterdir())[0]
    _fails(["train", *_sets(tiny_bert, tmp_path, other), "--resume", str(step)], "holds a run of another config")
    assert _snapshot(other) == before
    (out / ".DS_Store").write_bytes(b"finder")
    (out / "checkpoints" / "step-00000099").mkdir()  # a stale checkpoint of an earlier run
    saved = (out / "config.yaml").read_text().replace("  report: true\n", "")  # as a config.yaml before train.report
    (out / "config.yaml").write_text(saved)
    res = runner.invoke(app, ["train", *sets])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]


def test_a_replaced_run_is_kept_until_the_new_one_finishes(finished: tuple[Path, list[str]]) -> None:
    """A run that replaces a finished one (the same config again, or --overwrite) moves the old results into
    OUTPUT_DIR/.replaced; a new run that fails leaves them there, one that finishes deletes them."""
    from tunelab.config.run import load_config
    from tunelab.pipeline import run

    out, sets = finished
    old = {k: v for k, v in _snapshot(out).items() if not k.startswith(".")}
    cfg = load_config(None, [*sets[1::2], "train.eval_steps=1"])

    def stop(step: int, scores: dict) -> None:
        raise RuntimeError("stopped at the first evaluation")

    with pytest.raises(RuntimeError, match="first evaluation"):
        run(cfg, overwrite=True, on_eval=stop)
    assert _snapshot(out / ".replaced") == old  # the finished run's files, every byte
    assert not (out / "metrics.json").exists()
    run(cfg, overwrite=True)  # again over the failed one: the finished run stays aside until this one ends
    assert (out / "metrics.json").is_file() and not (out / ".replaced").exists()
    (out / "metrics.json").unlink()
    for step in (out / "checkpoints").iterdir():  # as a run that failed before its first checkpoint leaves it
        shutil.rmtree(step)
    res = runner.invoke(app, ["train", *sets, "--set", "train.eval_steps=1"])  # nothing to resume: no refusal
    assert res.exit_code == 0, res.output


def test_exports_left_alone_in_a_folder_are_the_users_work(tiny_bert: Path, tmp_path: Path) -> None:
    """A folder holding only exports/ (the rest of its run removed): a new run would take them away, so it needs
    --overwrite, and the refusal says why; with --overwrite they wait in .replaced until the new run finishes (a run
    that fails leaves them there)."""
    from tunelab.config.run import load_config
    from tunelab.pipeline import run

    out = tmp_path / "run"
    (out / "exports" / "onnx-int8").mkdir(parents=True)
    (out / "exports" / "onnx-int8" / "model.onnx").write_bytes(b"deployed")
    sets = _sets(tiny_bert, tmp_path, out, **{"train.eval_steps": "1"})
    line = _fails(["train", *sets], "holds only what was exported")
    assert line == (f"error: output_dir: {out} holds only what was exported from an earlier run (exports/; its model "
                    "and config.yaml are gone), and a new run takes a run's exports away: move them elsewhere to keep "
                    "them, pass --overwrite to replace them, or choose another output_dir")
    assert (out / "exports" / "onnx-int8" / "model.onnx").read_bytes() == b"deployed"

    def stop(step: int, scores: dict) -> None:
        raise RuntimeError("stopped at the first evaluation")

    with pytest.raises(RuntimeError, match="first evaluation"):
        run(load_config(None, sets[1::2]), overwrite=True, on_eval=stop)
    assert (out / ".replaced" / "exports" / "onnx-int8" / "model.onnx").read_bytes() == b"deployed"
    assert not (out / "exports").exists()
    res = runner.invoke(app, ["train", *sets, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / ".replaced").exists() and not (out / "exports").exists()


def test_a_run_that_wrote_the_folder_since_the_first_check_is_not_replaced(tiny_bert: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs into one new output_dir at once: the one that takes the lock second checks the folder again, and
    the first one's finished run (another config) is refused, not moved aside and deleted."""
    import tunelab.pipeline

    out = tmp_path / "race"
    first = _sets(tiny_bert, tmp_path, out, **{"train.lr": "5e-4"})
    loaded = tunelab.pipeline.load_splits

    def meanwhile(*args: object, **kwargs: object) -> object:  # the other run finishes while this one loads data
        monkeypatch.setattr(tunelab.pipeline, "load_splits", loaded)
        assert runner.invoke(app, ["train", *first]).exit_code == 0
        return loaded(*args, **kwargs)

    monkeypatch.setattr(tunelab.pipeline, "load_splits", meanwhile)
    _fails(["train", *_sets(tiny_bert, tmp_path, out)], "holds a run of another config")
    assert "lr: 0.0005" in (out / "config.yaml").read_text() and (out / "metrics.json").is_file()
    assert not (out / ".replaced").exists()


def test_a_checkpoint_resumed_into_another_runs_folder_never_mixes_with_it(finished: tuple[Path, list[str]],
                                                                          tiny_bert: Path, tmp_path: Path) -> None:
    """--resume of another run's checkpoint: the output_dir is checked as for a new run (a folder that merely holds
    the resumed run is not its own), and a finished run of the same config there is replaced whole — its later
    checkpoints and log lines never mixed with the resumed history. --overwrite does not lift the settings check."""
    out, sets = finished
    step = sorted((out / "checkpoints").iterdir())[0]
    project = tmp_path / "project"
    shutil.copytree(out, project / "a")
    (project / "notes.txt").write_text("mine", encoding="utf-8")
    _fails(["train", *_sets(tiny_bert, tmp_path, project), "--resume", str(project / "a" / "checkpoints" / step.name)],
           "holds files that no tunelab run wrote")
    assert sorted(p.name for p in project.iterdir()) == ["a", "notes.txt"]
    other = tmp_path / "other"  # a finished run of the same config, its own checkpoints 1 and 2
    assert runner.invoke(app, ["train", *_sets(tiny_bert, tmp_path, other)]).exit_code == 0
    res = runner.invoke(app, ["train", *_sets(tiny_bert, tmp_path, other), "--resume", str(step)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (other / "checkpoints").iterdir()) == ["step-00000002"]
    steps = [line for line in (other / "metrics.jsonl").read_text().splitlines() if '"step": 1,' in line]
    assert steps == [] and not (other / ".replaced").exists()
    _fails(["train", *sets, "--set", "train.lr=0.5", "--resume", "--overwrite"], "train.lr: 0.5 where the run")


def test_a_resume_on_other_rows_of_the_same_count_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    """The batches a resume skips are positions in the training rows: rows edited in place (as many, labels
    flipped) are refused in one line, before anything is written; the same rows from a copied file resume."""
    out = tmp_path / "run"
    sets = _sets(tiny_bert, tmp_path, out, **{"train.max_steps": "3"})
    assert runner.invoke(app, ["train", *sets, "--set", "train.max_steps=1"]).exit_code == 0
    (out / "metrics.json").unlink()  # as an interrupted run leaves it: checkpoint 1, not finished
    train = tmp_path / "train.jsonl"
    rows = sentiment_rows(24, 0)
    write_jsonl(train, [{**r, "label": "negative" if r["label"] == "positive" else "positive"} for r in rows])
    before = _snapshot(out)
    _fails(["train", *sets, "--resume"], "data.train: the training rows differ from those the run being resumed")
    assert _snapshot(out) == before
    write_jsonl(train, rows)
    summary = out / "data_summary.json"  # damaged: said, not skipped as an older run's (which has no fingerprint)
    good = summary.read_text(encoding="utf-8")
    summary.write_text(good[:20], encoding="utf-8")
    _fails(["train", *sets, "--resume"], "data_summary.json: data.train: cannot be read")
    summary.write_text(good, encoding="utf-8")
    res = runner.invoke(app, ["train", *sets, "--resume"])
    assert res.exit_code == 0, res.output


def test_a_relative_model_resumed_from_another_folder_names_the_model_it_trained(
        tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`model: base` (relative) from the folder training ran in; resumed from another folder where `base` is another
    model: refused as a change of model, not trained on over another base."""
    for folder in ("a", "b"):  # two folders named base (their weights alike here: what is checked is which one)
        shutil.copytree(tiny_bert, tmp_path / folder / "base")
    out = tmp_path / "run"
    sets = _sets(tiny_bert, tmp_path, out, model="base")
    monkeypatch.chdir(tmp_path / "a")
    assert runner.invoke(app, ["train", *sets]).exit_code == 0
    (out / "metrics.json").unlink()  # interrupted after its checkpoints
    monkeypatch.chdir(tmp_path / "b")
    _fails(["train", *sets, "--resume"], "--set model: 'base' where the run being resumed has")
    monkeypatch.chdir(tmp_path / "a")
    assert runner.invoke(app, ["train", *sets, "--resume"]).exit_code == 0
    from tunelab.data.load import run_model
    from tunelab.data.report import read_summary

    (tmp_path / "a" / "minilm").mkdir()  # a folder named as an alias: the alias is what `model: minilm` names
    summary = read_summary(out)
    assert run_model(summary, "minilm") == "minilm" and run_model(summary, "base") == str(tmp_path / "a" / "base")


def test_the_training_rows_fingerprint_is_of_their_values(tiny_bert: Path, tmp_path: Path) -> None:
    """Equal rows hash alike however their strings are shared (one label object or equal copies), a column the task
    does not read is not in it, and a run with the default checkpoints (once an epoch) records it."""
    import json

    from tunelab.data.report import training_fingerprint

    label = "positive"
    shared = [{"text": "a", "label": label, "row": {"id": 1}}, {"text": "b", "label": label, "row": {"id": 2}}]
    copies = [{"text": "a", "label": "".join(["posi", "tive"]), "row": {"id": 7}},
              {"text": "b", "label": "".join(["pos", "itive"]), "row": {"id": 8}}]
    assert training_fingerprint(shared) == training_fingerprint(copies)
    assert training_fingerprint(shared) != training_fingerprint([shared[0], {**shared[1], "label": "negative"}])
    # where in the file a row is (a CoNLL sentence's first word's line too) is not what it holds
    assert training_fingerprint([{**r, "line": 9, "first_item_line": 10} for r in shared]) == training_fingerprint(
        shared)
    out = tmp_path / "run"
    given = _sets(tiny_bert, tmp_path, out)
    sets = [x for flag, value in zip(given[::2], given[1::2], strict=True) if value != "train.save_steps=1"
            for x in (flag, value)]  # train.save_steps left at its default
    assert runner.invoke(app, ["train", *sets]).exit_code == 0
    summary = json.loads((out / "data_summary.json").read_text())
    assert len(summary["training_rows_sha256"]) == 64


def test_a_checkpoint_of_other_shapes_is_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    """--resume of a LoRA rank-1 run's checkpoint by a rank-2 run: refused by shape, before anything is copied (copy_
    broadcast the rank-1 matrices into rank-2 ones, and the fused AdamW crashed on the optimizer state)."""
    one = tmp_path / "r1"
    assert runner.invoke(app, ["train", *_sets(tiny_bert, tmp_path, one, method="lora", **{"method.r": "1"})]
                         ).exit_code == 0
    step = sorted((one / "checkpoints").iterdir())[0]
    two = tmp_path / "r2"
    rank_two = ["train", *_sets(tiny_bert, tmp_path, two, method="lora", **{"method.r": "2"}), "--resume", str(step)]
    _fails(rank_two, "--set method.r: 2 where the run being resumed has 1")  # its run's settings, first
    (one / "config.yaml").unlink()  # a checkpoint without its run's config: its own shapes still checked
    _fails(rank_two, "is [1, 32] there, [2, 32] here")
    assert not two.exists()  # refused before the folder was claimed: the run with the right r starts there as new
    _fails(["train", *_sets(tiny_bert, tmp_path, tmp_path / "fz", method="freeze", **{"method.k": "5"})],
           "method.k: 5 is more than the model's 2 layers")  # a method's settings too
    assert not (tmp_path / "fz").exists()


def test_a_brief_shared_probe_of_the_lock_is_no_holder(tmp_path: Path) -> None:
    """`tunelab ui` reads whether a run is live by a brief shared lock; a run starting at that instant was refused
    as "in use" (by the dead pid its lock file named); now it tries for half a second first."""
    import fcntl
    import threading
    import time

    from tunelab.training.run_dir import LOCK, RunDirLock

    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("999999\n")  # a dead run's pid
    fd = os.open(out / LOCK, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.2, lambda: os.close(fd)).start()  # the probe lets go
    t0 = time.monotonic()
    with RunDirLock(out):
        assert (out / LOCK).read_text() == f"{os.getpid()}\n"
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize(("mask", "want"), [(0o002, {"664", "775"}), (0o027, {"640", "750"})])
def test_every_file_of_a_run_follows_the_umask(mask: int, want: set[str], tiny_bert: Path, tmp_path: Path) -> None:
    """A checkpoint's trainable.safetensors was 0600 (safetensors' own) beside 0644 files, and RUN/model, RUN/adapter
    and the checkpoints' folders were 0644 / 0755 under any umask, the run's lock 0644: a teammate, or a server's user,
    could not read it, nor a group member resume it (umask 002)."""
    out = tmp_path / "run"
    old = os.umask(mask)
    try:
        res = runner.invoke(app, ["train", *_sets(tiny_bert, tmp_path, out, **{"method": "lora", "method.r": "2"})])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert (out / "checkpoints" / "step-00000002" / "trainable.safetensors").is_file()
    assert modes(out) == want


def test_a_saved_config_that_is_not_utf8_is_no_config(tmp_path: Path) -> None:
    """A run's config.yaml with a byte that is not UTF-8 (`# caf\\xe9`, edited in a Latin-1 editor) ended `train
    --resume` and `curve` in a UnicodeDecodeError traceback: it is a config that does not read (one line where said)."""
    from tunelab.pipeline import run_config

    (tmp_path / "config.yaml").write_bytes(b"# caf\xe9\ntask: classification\nmodel: x\n")
    assert run_config(tmp_path) is None
