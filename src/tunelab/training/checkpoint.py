"""Atomic checkpoints and resuming from them.

Everything is written into a temp directory (`.tmp-step-N-*`) that is renamed into place, so a crash
mid-save never leaves a half-written `step-N/` behind; resume only ever looks at `step-N/` names.

    checkpoints/step-00000040/
      trainable.safetensors   trainable parameters by `named_parameters()` name (peft: adapter + head)
      state.pt                optimizer, scheduler, AMP scaler, RNG states (python, numpy, torch, cuda)
      trainer_state.json      step, epoch, batches consumed in the epoch, loss sums, best metric, evaluations
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tunelab.errors import TunelabError, option
from tunelab.io import atomic_dir, commit_dir, open_permissions, write_text_atomic
from tunelab.progress import say
from tunelab.training.layout import FILES, STEP_DIR, list_checkpoints


def pause_for_tests(where: str, step: int) -> None:
    """Test hook: with TUNELAB_TEST_PAUSE=`where:step` (e.g. `save:8`, `step:5`) the run sleeps there,
    so a test can SIGKILL it at a known point; TUNELAB_TEST_PAUSED names a file created once it sleeps (under a
    launch, one for each process: the name with `.RANK` added)."""
    if os.environ.get("TUNELAB_TEST_PAUSE") == f"{where}:{step}":
        if os.environ.get("TUNELAB_TEST_PAUSED"):
            rank = f".{os.environ['RANK']}" if "RANK" in os.environ else ""
            Path(os.environ["TUNELAB_TEST_PAUSED"] + rank).touch()
        time.sleep(3600)


# ---------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, in a form `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state(),
                             "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- save
def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy (never a view of the live parameters) of the trainable weights."""
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    root: Path, step: int, weights: dict[str, torch.Tensor], optimizer: dict[str, Any] | None,
    scheduler: Any, trainer_state: dict[str, Any], keep: int, protect: int | None = None, scaler: Any = None,
    rng: list[dict[str, Any]] | None = None, tmp: Path | None = None,
) -> Path:
    """Write `root/step-N` atomically, then prune to the newest `keep` plus step `protect` (the best).
    `weights`: the full trainable tensors (`trainable_state`, or gathered from FSDP shards); `optimizer`: its state
    (None where the engine saved its own); `rng`: every process's RNG states, in rank
    order (default: this process's); `tmp`: the temp dir (`new_temp_dir`) when an engine has already written
    into it (DeepSpeed's `deepspeed/` folder of per-process optimizer partitions)."""
    final = root / f"step-{step:08d}"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # left by a run killed mid-save; only the main process saves
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = tmp or atomic_dir(final)
    try:
        save_file(weights, str(tmp / "trainable.safetensors"))
        pause_for_tests("save", step)
        ranks = rng or [rng_state()]
        torch.save({"optimizer": optimizer, "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "rng": ranks[0], "rng_ranks": ranks},
                   tmp / "state.pt")
        sums = {name: sha256(tmp / name) for name in FILES[:2]}  # resume verifies them (and skips a bad checkpoint)
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state, "sha256": sums}) + "\n")
        open_permissions(tmp)  # safetensors writes trainable.safetensors 0600: readable as the other files are
        commit_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old_step, path in list_checkpoints(root)[:-keep]:
        if old_step != protect:
            shutil.rmtree(path, ignore_errors=True)
    return final


def new_temp_dir(root: Path, step: int) -> Path:
    """The temp dir that will become `root/step-N` (for an engine that writes into it before save_checkpoint)."""
    return atomic_dir(root / f"step-{step:08d}")


# ---------------------------------------------------------------------------- find & load
def sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed (a file missing, unreadable state, a checksum that does not
    match, weights that do not parse), or None when it is intact."""
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        state = read_trainer_state(path)
    except (OSError, ValueError) as e:
        return f"trainer_state.json unreadable ({e})"
    for name, digest in (state.get("sha256") or {}).items():
        if sha256(path / name) != digest:
            return f"{name} does not match its checksum (truncated or changed)"
    if not state.get("sha256"):  # written before checkpoints carried checksums: the weights must at least parse
        try:
            with safe_open(str(path / FILES[0]), "pt"):
                pass
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            return f"{FILES[0]} unreadable ({type(e).__name__})"
    return None


class Verified(NamedTuple):
    """A checkpoint its finder verified (a study's `resumable`, as find_checkpoint does): `pipeline.run` resumes it
    without hashing its files again (a full model's: gigabytes). A path given as a string is always verified."""

    path: Path


def newest_intact(root: Path) -> Path | None:
    """The newest checkpoint under `root` that verifies (checked newest first, stopping at the first good one)."""
    return next((p for _, p in reversed(list_checkpoints(root)) if verify(p) is None), None)


def resume_option() -> str:
    """`--resume` as the caller spells it: the CLI's flag, the API's `resume` argument."""
    return option("--resume", "resume")


def find_checkpoint(resume: str, run_dir: Path) -> Path:
    """`--resume` (`auto`: the run's newest intact checkpoint) or `--resume PATH` (a step-N directory, a
    checkpoints directory or a run directory) → one complete, verified checkpoint directory. A damaged newest
    checkpoint is skipped, with one line on stderr naming it and why, for the newest one that verifies."""
    path = run_dir if resume == "auto" else Path(resume)
    if STEP_DIR.fullmatch(path.name) and path.is_dir():
        why = verify(path)
        if why is not None:
            raise TunelabError(f"{resume_option()}: {path} is not a complete checkpoint ({why})")
        return path
    for root in (path / "checkpoints", path):
        found = list_checkpoints(root)
        for _, candidate in reversed(found):
            why = verify(candidate)
            if why is None:
                return candidate
            say(f"resume: skipped {candidate}: {why}")
        if found:
            break
    if resume == "auto" and (path / "metrics.json").is_file():
        raise TunelabError(f"{resume_option()}: the run in {path} finished and kept no checkpoint "
                           "(train.save_steps); there is nothing to resume (to train longer, start a new run from "
                           f"its model: {option('--set model=RUN/model', 'model=RUN/model')})")
    if resume == "auto":
        raise TunelabError(f"{resume_option()}: no complete checkpoint in {path / 'checkpoints'} "
                           "(set output_dir to the interrupted run's directory)")
    raise TunelabError(f"{resume_option()}: no complete checkpoint in {path}")


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / "trainer_state.json").read_text())


def finished_at(path: Path, step: int) -> Path | None:
    """The run whose checkpoint `path` is (RUN/checkpoints/step-N), where that run finished at `step`, the
    checkpoint's: its metrics.json says so and its model/ is there. None otherwise (a run stopped after its last
    checkpoint, before its export: its resume exports; one resumed to train longer and stopped: its metrics.json is
    the earlier run's, of fewer steps)."""
    run = path.parent.parent
    if path.parent.name != "checkpoints" or not (run / "model").is_dir():
        return None
    try:
        steps = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["train"]["steps"]
    except (OSError, ValueError, KeyError, TypeError):  # none, or unreadable: not known to have finished
        return None
    return run if steps == step else None


def load_trainable(path: Path, model: torch.nn.Module) -> None:
    """Copy a checkpoint's trainable weights into `model`."""
    copy_trainable(load_file(str(path / "trainable.safetensors")), model, str(path))


def copy_trainable(saved: dict[str, torch.Tensor], model: torch.nn.Module, source: str = "checkpoint") -> None:
    """Copy weights by name into `model`'s trainable parameters; the names and shapes must be exactly those."""
    params = _fits({n: list(t.shape) for n, t in saved.items()}, model, source)
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name])


def check_fits(path: Path, model: torch.nn.Module) -> None:
    """A checkpoint's trainable weights (their names and shapes, read from the file's header) are this model's and
    method's: checked before the run claims its output_dir. (FSDP / DeepSpeed checkpoints, sharded, are not.)"""
    file = path / "trainable.safetensors"
    if file.is_file():
        with safe_open(str(file), "pt") as f:
            _fits({k: list(f.get_slice(k).get_shape()) for k in f.keys()}, model, str(path))  # noqa: SIM118


def _fits(shapes: dict[str, list[int]], model: torch.nn.Module, source: str) -> dict[str, torch.nn.Parameter]:
    """`model`'s trainable parameters by name, refused in one line unless `shapes` are exactly theirs — shapes too:
    copy_ broadcasts (a rank-1 LoRA matrix would fill a rank-8 one silently, and its optimizer state crash AdamW)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(shapes) != set(params):
        extra, missing = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
        raise TunelabError(f"{resume_option()}: {source} does not match this model and method "
                           f"(not in the model: {extra[:3]}; not in the checkpoint: {missing[:3]})")
    for name, p in params.items():
        if shapes[name] != list(p.shape):
            raise TunelabError(f"{resume_option()}: {source} does not match this model and method ({name} is "
                               f"{shapes[name]} there, {list(p.shape)} here: another model or method setting, e.g. "
                               "method.r); resume with the settings it was written with")
    return params


def trained_heads(path: Path | None, heads: list[str]) -> list[str]:
    """The task-head modules a run resumed from the checkpoint at `path` trains whole: those an adapter's checkpoint
    saved whole (peft's `modules_to_save`, read from its weights' names; a sharded one: its run's
    adapter/adapter_config.json, where the run finished), so a LoRA run of an older tunelab, whose head set was
    another (DeBERTa's `pooler`, ModernBERT's `head` had LoRA over them), resumes as it trained; `heads` (the task's
    now) for a new run and a checkpoint that is not an adapter's."""
    if path is None:
        return heads
    file, config = path / "trainable.safetensors", path.parent.parent / "adapter" / "adapter_config.json"
    if file.is_file():
        with safe_open(str(file), "pt") as f:
            names = list(f.keys())
        if not any(n.startswith(PEFT_PREFIX) for n in names):
            return heads
        return list(dict.fromkeys(n[len(PEFT_PREFIX):].split(SAVED)[0] for n in names if SAVED in n))
    if path.parent.name == "checkpoints" and config.is_file():
        saved = json.loads(config.read_text()).get("modules_to_save")
        return list(saved or []) if isinstance(saved, list | type(None)) else heads
    return heads


PEFT_PREFIX, SAVED = "base_model.model.", ".modules_to_save."


def resumed_best(path: Path, best: int | None, root: Path | None) -> Path | None:
    """The trainable weights' file of the best step so far of the run resumed from `path` (that checkpoint itself,
    or one beside it), when this run's own checkpoints (`root`; None: it saves none) will not hold it for
    select_best at its end: a checkpoint of another folder, or a resume with train.save_steps 0. None when they will.
    (A path, read at the end: a full model's weights are not held in memory the whole run.)"""
    if best is None:
        return None
    file = path.parent / f"step-{best:08d}" / FILES[0]
    if not file.is_file():
        raise TunelabError(f"{resume_option()}: {path}: the best step so far ({best}) has no checkpoint beside it "
                           f"({file}), and the run selects its best weights at the end (train.select_best): restore "
                           "it, or resume with train.select_best=false")
    return None if root is not None and root.resolve() == path.parent.resolve() else file


def check_resumed_best(path: Path, cfg: Any, out: Path, evaluates: bool) -> None:
    """Before the run claims its output_dir, on every process: the best step a resume will select at its end
    (`resumed_best`) has its checkpoint (else one line, instead of a refusal after the folder was started)."""
    saved = read_trainer_state(path).get("tracker")
    if not (cfg.selects_best() and evaluates and saved):
        return
    from tunelab.training.early_stopping import MetricTracker

    tracker = MetricTracker.from_config(cfg)
    tracker.load_state_dict(saved)  # (resumed with another metric: its best sought afresh, none needed)
    resumed_best(path, tracker.best_step, out / "checkpoints" if cfg.save_steps != 0 else None)


def check_data_order(path: Path, order: dict[str, Any]) -> None:
    """What the batch order depends on (`order`) is what it was in the checkpoint at `path`: else skipping the batches
    it consumed means nothing."""
    saved = read_trainer_state(path).get("data_order", {})
    for key, value in order.items():
        if saved.get(key, value) != value:
            raise TunelabError(f"{resume_option()}: {key} was {saved[key]} in {path}, now {value}; resume with the "
                               "interrupted run's config and data")


def follow_schedule(scheduler: Any, base_lrs: list[float]) -> None:
    """After a resume restored the optimizer and scheduler: each parameter group's lr as this run's schedule (its
    `base_lrs`, its length: train.max_steps / epochs may have grown) gives it at the restored step. The optimizer's
    state holds the lr the old schedule gave the next step (0.0 after a finished linear decay), which the first
    resumed step would otherwise run at. (reduce_on_plateau sets its lr from its own state when loaded.)"""
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas is None:
        return
    scheduler.base_lrs = list(base_lrs)
    lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(base_lrs, lambdas, strict=True)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() returns: the lr the next step runs at (and logs)


def load_checkpoint(
    path: Path, model: torch.nn.Module | None, optimizer: Any, scheduler: Any, scaler: Any = None, rank: int = 0,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Restore weights (unless `model` is None: FSDP shards them itself), optimizer, scheduler and scaler; return
    (trainer state, this process's RNG state, the full state.pt). Set the RNG state last, right before the next
    step, so nothing in between draws from it. A process without saved RNG states (a resume on more processes)
    takes the main process's."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    if model is not None:
        load_trainable(path, model)
        if state["optimizer"] is not None:  # None: the engine keeps its own (DeepSpeed)
            try:
                optimizer.load_state_dict(state["optimizer"])
            except ValueError as e:  # torch: "loaded state dict has a different number of parameter groups"
                raise TunelabError(f"resume: {path}: its optimizer state does not fit this run ({e}); "
                                   "train.layer_lr_decay, the method or what trains changed since it was written: "
                                   "resume with the settings it was written with") from None
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    ranks = state.get("rng_ranks") or [state["rng"]]
    return read_trainer_state(path), ranks[rank] if rank < len(ranks) else ranks[0], state


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics.jsonl lines up to `step` (drop later ones, final scores and a torn last line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("step", step + 1) <= step and "final" not in row:
            kept.append(line + "\n")
    write_text_atomic(path, "".join(kept))


def discard_after(root: Path, step: int) -> list[Path]:
    """Before a resume from `step`: remove newer checkpoints (they belong to the history the resume
    replaces) and temp dirs of interrupted saves."""
    gone = [p for s, p in list_checkpoints(root) if s > step] + list(root.glob(".tmp-step-*"))
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone
