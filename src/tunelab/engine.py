"""The training loop — the only module that runs optimisation. A plain loop on `accelerate`
(device placement, DDP/FSDP/DeepSpeed via `accelerate launch`, mixed precision), measured faster
on a 2-core CPU than `transformers.Trainer` for the same work (benchmarks/classification.py).

Why it is fast: examples are tokenised once and batched by similar length (little padding); the
collate is a few tensor copies; AdamW runs as one fused kernel; nothing is synchronised per step
except the loss that is logged every `log_steps`.
"""

from __future__ import annotations

import ctypes
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.checkpoint import save_checkpoint
from tunelab.config import TrainConfig
from tunelab.errors import TunelabError
from tunelab.progress import TrainProgress

Collate = Callable[[Sequence[dict[str, Any]]], dict[str, torch.Tensor]]


@dataclass
class TrainResult:
    steps: int
    epochs: float
    wall_s: float
    train_loss: float
    real_tokens: int
    padded_tokens: int
    precision: str
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def real_tokens_per_s(self) -> float:
        return self.real_tokens / max(self.wall_s, 1e-9)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` picks bf16 only where the hardware runs it natively: on a CPU without AVX-512-BF16 or
    AMX, bf16 matmuls are ~3x slower than fp32 (measured 44 vs 147 GFLOP/s on this project's CI CPU)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "fp32"


def keep_freed_memory() -> None:
    """Stop glibc from returning big blocks to the OS after every step: gradient and activation
    buffers are then reused instead of page-faulted in afresh (MiniLM on SST-2: 44.7 -> 40.8 s)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            return
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks up to 1 GiB from the heap
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: keep up to 2 GiB of freed heap


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only, not on biases and norm weights (as HF Trainer does)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr, fused=True)


def plan_steps(cfg: TrainConfig, n_batches: int) -> int:
    per_epoch = max(1, math.ceil(n_batches / cfg.grad_accum))
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))


class MetricsLog:
    """`metrics.jsonl`: one JSON object per log step or evaluation, flushed as written."""

    def __init__(self, path: Path | None) -> None:
        self._f = path.open("a", encoding="utf-8") if path else None

    def write(self, row: dict[str, Any]) -> None:
        if self._f:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f:
            self._f.close()


def train(
    model: torch.nn.Module,
    features: Sequence[dict[str, Any]],
    collate: Collate,
    cfg: TrainConfig,
    lr: float,
    out_dir: Path | None = None,
    evaluate: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None,
    on_eval: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Optimise `model` on tokenised `features`; evaluate and checkpoint as configured.

    `loss_fn(model, batch)` replaces the model's own loss (class weights, focal loss, ...);
    `on_eval(step, metrics)` sees every evaluation (e.g. a hyperparameter-search pruner)."""
    from accelerate import Accelerator
    from transformers import get_scheduler

    keep_freed_memory()
    probe = Accelerator(cpu=not torch.cuda.is_available())
    precision = resolve_precision(cfg.precision, probe.device)
    acc = Accelerator(
        cpu=not torch.cuda.is_available(), gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision],
    )
    lengths = [len(f["input_ids"]) for f in features]
    n_batches = math.ceil(len(features) / cfg.batch_size) // acc.num_processes  # per process
    if n_batches == 0:
        raise TunelabError(f"train: {len(features)} training rows make fewer batches than the "
                           f"{acc.num_processes} processes; lower train.batch_size")
    total = plan_steps(cfg, n_batches)
    warmup = int(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)
    optimizer = make_optimizer(model, cfg, lr)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    params = [p for p in model.parameters() if p.requires_grad]
    log = MetricsLog(out_dir / "metrics.jsonl" if out_dir and acc.is_main_process else None)
    bar = TrainProgress(total, enabled=acc.is_main_process)
    per_epoch = max(1, math.ceil(n_batches / cfg.grad_accum))
    eval_every = cfg.eval_steps or per_epoch
    save_every = per_epoch if cfg.save_steps is None else cfg.save_steps

    step, epoch, real, padded = 0, 0, 0, 0
    loss_sum, loss_n, all_loss, all_n = torch.zeros(()), 0, 0.0, 0
    evals: list[dict[str, Any]] = []
    start = last_t = time.perf_counter()
    last_real = 0
    model.train()
    with bar:
        while step < total:
            order = batch_order(lengths, cfg.batch_size, cfg.seed + epoch, cfg.group_by_length)
            # each process takes every n-th batch (same count on all, as DDP needs)
            usable = len(order) - len(order) % acc.num_processes
            for ids in order[acc.process_index : usable : acc.num_processes]:
                batch = {k: v.to(acc.device) for k, v in collate([features[i] for i in ids]).items()}
                with acc.accumulate(model):
                    loss = loss_fn(model, batch) if loss_fn else model(**batch).loss
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach().float()
                loss_n += 1
                real += int(batch["attention_mask"].sum())
                padded += batch["attention_mask"].numel()
                if not acc.sync_gradients:
                    continue
                step += 1
                if step % cfg.log_steps == 0 or step == total:
                    now = time.perf_counter()
                    mean_loss = float(acc.reduce(loss_sum, "mean")) / max(loss_n, 1)  # over processes
                    if not math.isfinite(mean_loss):
                        raise FloatingPointError(f"train: loss is {mean_loss} at step {step}")
                    all_loss, all_n = all_loss + mean_loss * loss_n, all_n + loss_n
                    row = {"step": step, "epoch": round(epoch + (step % per_epoch or per_epoch) / per_epoch, 4),
                           "loss": round(mean_loss, 6), "lr": scheduler.get_last_lr()[0],
                           "tokens_per_s": round((real - last_real) / max(now - last_t, 1e-9), 1),
                           "elapsed_s": round(now - start, 2)}
                    log.write(row)
                    bar.update(step, mean_loss, row["tokens_per_s"])
                    loss_sum, loss_n, last_t, last_real = torch.zeros(()), 0, now, real
                else:
                    bar.update(step)
                if evaluate is not None and step % eval_every == 0 and step < total:  # final: pipeline
                    result = {"step": step, **{f"eval/{k}": v for k, v in evaluate(acc.unwrap_model(model)).items()}}
                    evals.append(result)
                    log.write(result)
                    if on_eval is not None:
                        on_eval(step, result)
                    model.train()
                if out_dir and save_every and (step % save_every == 0) and acc.is_main_process:
                    save_checkpoint(out_dir / "checkpoints", step, acc.unwrap_model(model), optimizer, scheduler,
                                    cfg.save_total_limit)
                if step >= total:
                    break
            epoch += 1
    wall = time.perf_counter() - start
    log.close()
    return TrainResult(step, round(step / per_epoch, 4), wall, all_loss / max(all_n, 1), real, padded, precision, evals)


@torch.inference_mode()
def forward_logits(
    model: torch.nn.Module, features: Sequence[dict[str, Any]], collate: Collate, batch_size: int,
    precision: str = "auto",
) -> np.ndarray:
    """Logits for every feature, in input order; batches are formed by length (little padding)."""
    model.eval()
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    out: list[np.ndarray | None] = [None] * len(features)
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        batch = {k: v.to(device) for k, v in collate([features[i] for i in chunk]).items() if k != "labels"}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(**batch).logits.float().cpu().numpy()
        for j, i in enumerate(chunk):  # per-token logits: cut each row back to its own length
            out[i] = logits[j][: len(features[i]["input_ids"])] if logits.ndim == 3 else logits[j]
    if not out:
        return np.zeros((0,))
    return np.stack(out) if len({o.shape for o in out}) == 1 else np.asarray(out, dtype=object)
