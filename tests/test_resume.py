"""Checkpoints and resume: a run SIGKILLed between checkpoints (or in the middle of writing one) and
resumed with `--resume` continues exactly as if it had never stopped — same per-step losses, same
final metrics and weights (dropout on, gradient accumulation 2, epochs that end mid-accumulation)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.registry import METHODS, TASKS
from tunelab.training import checkpoint as ckpt
from tunelab.training import engine

TOL = 1e-6


def _data(tmp: Path) -> tuple[Path, Path]:
    # 42 rows / batch 4 = 11 batches: with grad_accum 2 an epoch is 6 optimizer steps, the 6th of one batch
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(42, 0))
    return train, write_jsonl(tmp / "val.jsonl", sentiment_rows(12, 1))


def _cmd(model: Path, data: tuple[Path, Path], out: Path, extra: list[str]) -> list[str]:
    sets = [f"model={model}", "task=classification", f"data.train={data[0]}", f"data.validation={data[1]}",
            f"output_dir={out}", "train.epochs=2", "train.batch_size=4", "train.grad_accum=2",
            "train.log_steps=1", "train.save_steps=4", "train.dropout=0.1", "train.lr=5e-3",
            "train.report=false", *extra]  # (the report reads the finished run: nothing of it resumes)
    return [sys.executable, "-m", "tunelab.cli", "train", *(x for s in sets for x in ("--set", s))]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TUNELAB_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}


def _kill_when(cmd: list[str], pause: str, ready: Callable[[], bool], timeout: float = 180,
               meanwhile: Callable[[], None] = lambda: None) -> None:
    """Start the run paused at `pause` (TUNELAB_TEST_PAUSE), run `meanwhile()` here while it starts up and sleeps
    there, wait until `ready()`, then SIGKILL it."""
    proc = subprocess.Popen(cmd, env={**ENV, "TUNELAB_TEST_PAUSE": pause},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        meanwhile()
        while not ready():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before it reached {pause}"
            assert time.monotonic() < deadline, f"the run did not reach {pause} in {timeout} s"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@contextmanager
def _one_thread() -> Iterator[None]:
    """A run in this process computes with one thread, as the run started with OMP_NUM_THREADS=1 does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rows(out: Path) -> dict[tuple[int, str], dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    keyed = {}
    for r in rows:
        kind = "loss" if "loss" in r else "eval" if any(k.startswith("eval/") for k in r) else r.get("final", "other")
        assert (r["step"], kind) not in keyed, f"duplicate metrics.jsonl row {r}"
        keyed[(r["step"], kind)] = r
    return keyed


def _assert_same_numbers(got: object, want: object, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: {sorted(got)} != {sorted(want)}"
        for k in want:
            _assert_same_numbers(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert abs(got - want) <= TOL, f"{where}: {got} != {want}"
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same_numbers(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


TIMING = {"tokens_per_s", "elapsed_s", "wall_s", "real_tokens_per_s", "total_wall_s", "resumed_from"}


def _strip(row: dict) -> dict:
    return {k: (_strip(v) if isinstance(v, dict) else v) for k, v in row.items() if k not in TIMING}


@pytest.mark.parametrize(
    ("extra", "pause", "resume_arg", "complete"),
    [
        # killed while writing checkpoint 8 (weights written, the rest not): `--resume` takes checkpoint 4; NEFTune's
        # noise on: a resume draws what the uninterrupted run drew (the generators' states restored)
        (["method=full", "train.neftune_alpha=5"], "save:8", None, [4]),
        # best tracked (a checkpoint at each new best: step 6); killed after step 7, between checkpoints;
        # `--resume PATH` to the older checkpoint 4 replaces the later history (checkpoint 6 is discarded)
        (["method.name=lora", "method.r=4", "train.best_metric=accuracy"], "step:7", "checkpoints/step-00000004",
         [4, 6]),
    ],
    ids=["full-killed-mid-save", "lora-killed-between"],
)
def test_sigkill_then_resume_equals_uninterrupted(
    extra: list[str], pause: str, resume_arg: str | None, complete: list[int], tiny_bert: Path, tmp_path: Path
) -> None:
    data = _data(tmp_path)
    ref, run = tmp_path / "ref", tmp_path / "run"
    cmd = _cmd(tiny_bert, data, run, extra)

    def reference() -> None:
        """The uninterrupted reference: the same run through the Python API, in this process (one thread, as the
        killed run's), while that run starts up — no process of its own to start."""
        import tunelab

        sets = _cmd(tiny_bert, data, ref, extra)[5::2]  # (the `--set` values)
        with _one_thread():
            tunelab.train(None, **dict(a.split("=", 1) for a in sets))

    step = int(pause.split(":")[1])
    if pause.startswith("save:"):
        _kill_when(cmd, pause, lambda: any(run.glob(f"checkpoints/.tmp-step-{step:08d}-*/trainable.safetensors")),
                   meanwhile=reference)
        assert list(run.glob("checkpoints/.tmp-step-*")), "the interrupted save left its temp dir"
    else:
        _kill_when(cmd, pause, lambda: (run / "metrics.jsonl").is_file()
                   and f'{{"step": {step}, "epoch"' in (run / "metrics.jsonl").read_text(), meanwhile=reference)
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == complete
    assert not (run / "metrics.json").exists()

    resume = ["--resume"] + ([str(run / resume_arg)] if resume_arg else [])
    with _one_thread():  # `tunelab train ... --resume` in this process: what was killed is the other one
        res = CliRunner().invoke(app, [*cmd[3:], *resume])
    assert res.exit_code == 0, res.output[-3000:]

    want, got = _rows(ref), _rows(run)
    assert sorted(got) == sorted(want)
    assert [s for s, kind in sorted(want) if kind == "loss"] == list(range(1, 13))
    for key in want:
        _assert_same_numbers(_strip(got[key]), _strip(want[key]), f"metrics.jsonl {key}")
    m_ref, m_run = (json.loads((d / "metrics.json").read_text()) for d in (ref, run))
    assert m_run["train"]["resumed_from"].endswith("step-00000004")
    _assert_same_numbers(_strip(m_run), _strip(m_ref), "metrics.json")
    w_ref, w_run = (load_file(str(d / "model" / "model.safetensors")) for d in (ref, run))
    assert set(w_ref) == set(w_run)
    assert max(float((w_ref[k] - w_run[k]).abs().max()) for k in w_ref) <= TOL
    # checkpoints continue as usual: the newest two plus the best; no temp dirs left behind
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (ref / "checkpoints").iterdir())
    assert {"step-00000008", "step-00000012"} <= set(names) and not any(n.startswith(".") for n in names)


# ------------------------------------------------------------------------ in-process, every method
def _table(rows: list[dict]) -> Table:
    return Table("mem.jsonl", [Record("mem.jsonl", i + 1, r) for i, r in enumerate(rows)])


class Crash(Exception):
    pass


def _build(model_path: Path, method: str, options: dict, out: Path, **train: object):
    cfg = build_config({"task": "classification", "model": str(model_path), "output_dir": str(out),
                        "method": {"name": method, **options},
                        "train": {"max_steps": 9, "batch_size": 4, "grad_accum": 2, "lr": 5e-3, "log_steps": 1,
                                  "save_steps": 3, "eval_steps": 2, "dropout": 0.2, **train}})
    engine.seed_everything(cfg.train.seed)
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(_table(sentiment_rows(30)))
    val = task.parse(_table(sentiment_rows(8, 1)))
    model, tok = task.build_model(str(model_path), examples)
    model = METHODS.get(method)(cfg.method).apply(model, task.head_modules(model))
    feats, collate = task.encode(examples, tok), partial(task.collate, pad_id=tok.pad_token_id)

    def score(m: torch.nn.Module) -> dict:
        from tunelab.evaluation.evaluate import evaluate

        return evaluate(task, m, tok, val, 16)

    return cfg, model, feats, collate, score


@pytest.mark.parametrize(("method", "options", "train"), [
    ("full", {}, {}), ("freeze", {"k": 1}, {}), ("lora", {"r": 4}, {}), ("dora", {"r": 4}, {}),
    ("full", {}, {"optimizer": "sgd", "momentum": 0.9, "scheduler": "reduce_on_plateau", "warmup": 2, "l1": 1e-4}),
    ("lora", {"r": 4}, {"optimizer": "adafactor", "scheduler": "cosine", "warmup": 0.2}),
], ids=["full", "freeze", "lora", "dora", "sgd-plateau-l1", "lora-adafactor-cosine"])
def test_resume_in_process_every_method(
    method: str, options: dict, train: dict, tiny_bert: Path, tmp_path: Path
) -> None:
    """A crash in step 4's evaluation (after checkpoint 3), then a resume into a fresh model: the same run."""
    train = {"best_metric": "f1_macro", **train}
    cfg, model, feats, collate, score = _build(tiny_bert, method, options, tmp_path / "ref", **train)
    ref = engine.train(model, feats, collate, cfg.train, 5e-3, tmp_path / "ref", evaluate=score)
    ref_weights = ckpt.trainable_state(model)

    out = tmp_path / "run"

    def crash_at_4(step: int, _: dict) -> None:
        if step == 4:
            raise Crash

    cfg, model, feats, collate, score = _build(tiny_bert, method, options, out, **train)
    with pytest.raises(Crash):
        engine.train(model, feats, collate, cfg.train, 5e-3, out, evaluate=score, on_eval=crash_at_4)
    path = ckpt.find_checkpoint("auto", out)
    assert path.name == "step-00000003"
    ckpt.truncate_metrics(out / "metrics.jsonl", 3)

    cfg, model, feats, collate, score = _build(tiny_bert, method, options, out, **train)
    got = engine.train(model, feats, collate, cfg.train, 5e-3, out, evaluate=score, resume_from=path)
    assert got.steps == ref.steps == 9
    assert abs(got.train_loss - ref.train_loss) <= TOL
    assert (got.best_step, got.selected_step) == (ref.best_step, ref.selected_step)
    weights = ckpt.trainable_state(model)
    assert max(float((weights[k] - ref_weights[k]).abs().max()) for k in ref_weights) <= TOL
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ref_lines = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [r["step"] for r in ref_lines]
    for r, w in zip(lines, ref_lines, strict=True):
        _assert_same_numbers(_strip(r), _strip(w), f"step {w['step']}")


# ------------------------------------------------------------------------ finding checkpoints
def _fake_checkpoint(root: Path, step: int, complete: bool = True, name: str | None = None) -> Path:
    d = root / (name or f"step-{step:08d}")
    d.mkdir(parents=True)
    (d / "trainable.safetensors").write_bytes(b"x")
    if complete:  # with the checksums a real save writes, which resume verifies
        (d / "state.pt").write_bytes(b"x")
        sums = {f: ckpt.sha256(d / f) for f in ("trainable.safetensors", "state.pt")}
        (d / "trainer_state.json").write_text(json.dumps({"step": step, "sha256": sums}))
    return d


def test_find_checkpoint_ignores_partial_and_temp_dirs(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    good = _fake_checkpoint(root, 4)
    _fake_checkpoint(root, 8, complete=False)  # a step dir without all its files is never picked up
    _fake_checkpoint(root, 12, name=".tmp-step-00000012-abc")  # a save killed before its rename
    _fake_checkpoint(root, 16, name=".old-step-00000016-1")
    assert ckpt.find_checkpoint("auto", tmp_path) == good
    assert ckpt.find_checkpoint(str(root), tmp_path) == good
    assert ckpt.find_checkpoint(str(good), tmp_path) == good
    from tunelab.errors import TunelabError

    with pytest.raises(TunelabError, match="not a complete checkpoint"):
        ckpt.find_checkpoint(str(root / "step-00000008"), tmp_path)
    with pytest.raises(TunelabError, match="no complete checkpoint"):
        ckpt.find_checkpoint("auto", tmp_path / "elsewhere")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "metrics.json").write_text("{}", encoding="utf-8")
    with pytest.raises(TunelabError, match="finished and kept no checkpoint .* nothing to resume"):
        ckpt.find_checkpoint("auto", tmp_path / "done")


def test_a_finished_runs_last_checkpoint_resumes_only_to_train_on(tmp_path: Path) -> None:
    """A resume of a finished run's last checkpoint that would train no step (at the run's last step, or stopped early
    as its early_stopping says) is refused: it would only export the same model again. Training longer is not, nor
    the resume of a run stopped before its export (its metrics.json is of fewer steps, or it has no model/)."""
    from tunelab.config.sections import TrainConfig
    from tunelab.errors import TunelabError
    from tunelab.training.batching import check_steps

    path = _fake_checkpoint(tmp_path / "run" / "checkpoints", 6)
    state = json.loads((path / "trainer_state.json").read_text())
    tracker = {"metric": "accuracy", "best_step": 4, "best_value": 0.5, "bad": 1}
    (path / "trainer_state.json").write_text(json.dumps({**state, "tracker": tracker}))
    (tmp_path / "run" / "model").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"train": {"steps": 6}}))

    def train(**train: object) -> TrainConfig:
        return TrainConfig.model_validate({"batch_size": 4, **train})

    with pytest.raises(TunelabError, match=r"^--resume: the run in .*run finished at step 6 \(train.max_steps 6\); "
                                           r"there is nothing to resume \(to train longer, resume with a larger "
                                           r"train.max_steps, or start a new run from its model: --set model="):
        check_steps(path, train(max_steps=6), 20)
    with pytest.raises(TunelabError, match=r"finished at step 6 \(the 6 steps of train.epochs 2\)"):
        check_steps(path, train(epochs=2), 12)  # 3 batches an epoch
    stop = {"early_stopping": {"patience": 1}}
    with pytest.raises(TunelabError, match=r"finished at step 6 \(stopped early by train.early_stopping\); .* a "
                                           "larger train.early_stopping.patience"):
        check_steps(path, train(max_steps=9, **stop), 20)
    check_steps(path, train(max_steps=9), 20)  # longer
    check_steps(path, train(max_steps=9, early_stopping={"patience": 2}), 20)  # more patient
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"train": {"steps": 4}}))  # resumed longer, stopped
    check_steps(path, train(max_steps=6), 20)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"train": {"steps": 6}}))
    (tmp_path / "run" / "model").rmdir()  # its model removed: the resume exports it again
    check_steps(path, train(max_steps=6), 20)


def test_truncate_metrics_keeps_up_to_the_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}, {"step": 2, "eval/accuracy": 0.5},
            {"step": 3, "loss": 0.8}, {"step": 2, "final": "validation", "accuracy": 0.5}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')  # a torn last line
    ckpt.truncate_metrics(log, 2)
    assert [json.loads(x) for x in log.read_text().splitlines()] == rows[:3]


def test_rng_state_round_trip() -> None:
    import random

    state = ckpt.rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    ckpt.set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == a


def test_resume_refuses_a_different_data_order(tiny_bert: Path, tmp_path: Path) -> None:
    from tunelab.errors import TunelabError

    cfg, model, feats, collate, score = _build(tiny_bert, "full", {}, tmp_path, max_steps=3)
    engine.train(model, feats, collate, cfg.train, 5e-3, tmp_path)
    cfg, model, feats, collate, score = _build(tiny_bert, "full", {}, tmp_path, max_steps=6, batch_size=2)
    path = ckpt.find_checkpoint("auto", tmp_path)
    with pytest.raises(TunelabError, match=r"--resume: batch_size was 4 in .*step-00000003, now 2"):
        engine.train(model, feats, collate, cfg.train, 5e-3, tmp_path, resume_from=path)


def test_ctrl_c_says_where_the_run_stopped_and_how_to_continue(tiny_bert: Path, tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) after a checkpoint: one line naming it and the exact command that resumes; exit code 130."""
    out = tmp_path / "run"
    cmd = _cmd(tiny_bert, _data(tmp_path), out, [])
    paused = tmp_path / "paused"  # created by the run once it sleeps at step 5, after checkpoint 4
    # PYTHONFAULTHANDLER: a SIGABRT makes it print every thread's Python stack (what a hang below was doing).
    # SIGINT as a terminal's foreground job has it: a suite started in the background of a shell (`make test &`)
    # ignores SIGINT, its children inherit that, and Python then never raises KeyboardInterrupt (the cause of the
    # two hangs seen, 2026-12-05 and 2026-12-06)
    proc = subprocess.Popen(cmd, env={**ENV, "TUNELAB_TEST_PAUSE": "step:5", "TUNELAB_TEST_PAUSED": str(paused),
                                      "PYTHONFAULTHANDLER": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not paused.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not reach step 5"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # its stacks
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        stacks = err.split("\nExtension modules:")[0]  # every thread's stack, innermost call first
        (tmp_path / "stacks.txt").write_text(err)
        pytest.fail(f"still running 60 s after SIGINT; its stderr and stacks: {stacks[-12000:]}")
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"interrupted: the newest checkpoint is {out / 'checkpoints' / 'step-00000004'}"), err
    assert line.endswith("--resume") and f"output_dir={out}" in line and "Traceback" not in err
