"""How the engine cuts the training data: shuffled batches grouped by length, and a batch cut into forward/
backward passes of at most `train.micro_batch_tokens` tokens, each weighted by its share of the optimizer step's
loss units (`step_passes`, `pass_weights`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.config.sections import TrainConfig
from tunelab.errors import ConfigError, TunelabError, option
from tunelab.training.checkpoint import finished_at, read_trainer_state, resume_option
from tunelab.training.distributed import rank_rows
from tunelab.training.early_stopping import MetricTracker


def batch_order(lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool) -> list[list[int]]:
    """Shuffled batches of indices. With grouping, each window of 50 batches is sorted by length
    before it is cut into batches (as HF's LengthGroupedSampler), then the batch order is shuffled;
    the longest batch goes first so an out-of-memory shows at step 1."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(lengths))
    if not group_by_length:
        return [idx[i : i + batch_size].tolist() for i in range(0, len(idx), batch_size)]
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(idx), window):
        chunk = sorted(idx[start : start + window].tolist(), key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(batches)).tolist()
    longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
    order.remove(longest)
    return [batches[longest]] + [batches[b] for b in order]


def micro_batch_tokens(setting: int | str | None, device: torch.device, copies: int = 1) -> int | None:
    """`train.micro_batch_tokens` resolved: auto = 1024 on CPU, no limit on GPU. Measured on 2 cores, SmolLM2
    all-linear LoRA, packed batches of 8 x 512 tokens: 5 steps took 69 s in one 4096-token pass (10.0 GB peak
    RSS) and 57 s in 2048-token passes (6.3 GB); 9 steps took 121 s in 2048-token passes (7.2 GB) and 119 s in
    1024-token passes (5.3 GB). MiniLM SST-2 classification (batches of 32 short rows) ran as fast either way.
    A loss that runs each row `copies` times (R-Drop) gets passes as large."""
    tokens = (1024 if device.type == "cpu" else None) if setting == "auto" else setting
    return None if tokens is None else max(1, int(tokens) // copies)


def split_batch(features: list[dict[str, Any]], max_tokens: int | None) -> list[list[dict[str, Any]]]:
    """A batch cut into consecutive parts of at most `max_tokens` padded tokens (rows x longest row of the
    part; a row longer than that alone is a part of its own)."""
    if max_tokens is None:
        return [features]
    parts: list[list[dict[str, Any]]] = [[]]
    width = 0
    for f in features:
        n = len(f["input_ids"])
        if parts[-1] and max(width, n) * (len(parts[-1]) + 1) > max_tokens:
            parts.append([])
            width = 0
        parts[-1].append(f)
        width = max(width, n)
    return parts


def rows(batch: dict[str, torch.Tensor]) -> int:
    return len(batch["input_ids"])


def step_passes(window: list[list[int]], features: Sequence[dict[str, Any]], collate: Callable[..., Any],
                max_tokens: int | None, loss_units: Callable[[dict[str, torch.Tensor]], int], rank: int,
                processes: int) -> list[tuple[dict[str, torch.Tensor], int, int]]:
    """One optimizer step's passes on this process, as (batch, its loss units, its rows): this process's rows of
    each global batch of `window`, in passes of at most `max_tokens` tokens (units counted on the host copies: no
    device sync). A batch with none of its rows gives one stand-in pass of no units and no rows (every process must
    run backward)."""
    passes = []
    for ids in window:
        mine = rank_rows(ids, rank, processes) if processes > 1 else ids
        for part in split_batch([features[i] for i in mine or ids[:1]], max_tokens):
            batch = collate(part)
            passes.append((batch, loss_units(batch) if mine else 0, rows(batch) if mine else 0))
    return passes


def pass_weights(units: list[int], row_counts: list[int]) -> list[float]:
    """Each pass's share of an optimizer step's loss units (by rows when its passes have no units at all; all 0
    when they have no rows either: a process given none of the step's rows)."""
    counts = units if sum(units) > 0 else row_counts
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def plan_steps(cfg: TrainConfig, n_batches: int) -> int:
    """Optimizer steps of a run: `max_steps`, or the epochs' batches over `grad_accum` (at least one)."""
    per_epoch = max(1, math.ceil(n_batches / cfg.grad_accum))
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))


def check_steps(path: Path, cfg: Any, rows: int) -> None:
    """Before the run claims its output_dir: the checkpoint at `path` is not past this run's last step (train.max_steps,
    or its epochs' steps over `rows` training features): such a resume trained no step and exported the checkpoint's
    model under a config.yaml that says fewer steps. Nor is it the last step of a run that finished there
    (`finished_at`) and would train no step now (at this run's last step, or stopped early as these early_stopping
    settings say): its resume would only export the same model again, newer than the run's exports."""
    saved = read_trainer_state(path)
    step = saved.get("step")
    total = plan_steps(cfg, math.ceil(rows / cfg.batch_size))
    if not isinstance(step, int):
        return
    key, what = (("train.max_steps", f"train.max_steps {total}") if cfg.max_steps else
                 ("train.epochs", f"the {total} steps of train.epochs {cfg.epochs:g}"))
    if step > total:
        raise ConfigError(f"config: {key}: the checkpoint {path} is at step {step}, past {what}; resume with at "
                          f"least {step} steps, or train without {resume_option()}")
    stopped = step < total and _stops_early(saved, cfg)
    if (step == total or stopped) and (run := finished_at(path, step)) is not None:
        why, more = (("stopped early by train.early_stopping", "train.early_stopping.patience") if stopped else
                     (what, key))
        raise TunelabError(f"{resume_option()}: the run in {run} finished at step {step} ({why}); there is nothing to "
                           f"resume (to train longer, resume with a larger {more}, or start a new run from its model: "
                           f"{option('--set model=RUN/model', 'model=RUN/model')})")


def _stops_early(saved: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a resume from a checkpoint whose trainer state is `saved` stops at once under `cfg`'s early stopping
    (as the engine's resume decides)."""
    if cfg.early_stopping is None or not saved.get("tracker"):
        return False
    tracker = MetricTracker.from_config(cfg)
    tracker.load_state_dict(saved["tracker"])
    return tracker.should_stop
