"""The training loop — the only module that runs optimisation. A plain loop on `accelerate`
(device placement, DDP/FSDP/DeepSpeed via `accelerate launch`, mixed precision), measured faster
on a 2-core CPU than `transformers.Trainer` for the same work (benchmarks/classification.py).

Why it is fast: examples tokenised once, batched by similar length (little padding); one fused AdamW; host syncs
only for finiteness (loss; gradient norm when clipping); leaner kernels for dropout, short-row attention, LoRA's
forward, the word embedding's gradient (training/dropout.py, attention.py, lora_forward.py, sparse_rows.py).
Resumable: the batch order of an epoch is a function of seed + epoch only, and a checkpoint holds the `LoopState`
(step, epoch, batches consumed), so a resume skips exactly the consumed batches and continues with the same weights,
optimizer, schedule and RNG states (checkpoint.py).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import closing, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState

from tunelab.config.sections import TrainConfig
from tunelab.metrics import scalars
from tunelab.models.inference import Collate
from tunelab.models.precision import resolve_precision, slow_precision_note
from tunelab.progress import say
from tunelab.training import checkpoint as ckpt
from tunelab.training import distributed as dist
from tunelab.training.attention import restore_attention, use_short_row_attention
from tunelab.training.batching import batch_order, micro_batch_tokens, pass_weights, plan_steps, rows, step_passes
from tunelab.training.dropout import use_fast_dropout
from tunelab.training.early_stopping import MetricTracker
from tunelab.training.lora_forward import restore_lora, use_fast_lora
from tunelab.training.memory import keep_freed_memory
from tunelab.training.neftune import noisy_embeddings
from tunelab.training.optim import check_finite, l1_penalty, make_optimizer, make_scheduler, set_dropout
from tunelab.training.progress import TrainProgress
from tunelab.training.recompute import restore_recompute, use_recompute
from tunelab.training.sparse_rows import clip_grad_norm, sparse_embedding
from tunelab.training.state import LoopState, TrainResult
from tunelab.training.tracking import MetricsLog


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(model: torch.nn.Module, features: Sequence[dict[str, Any]], collate: Collate, cfg: TrainConfig, lr: float,
          out_dir: Path | None = None, evaluate: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
          loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None,
          on_eval: Callable[[int, dict[str, Any]], None] | None = None, resume_from: Path | None = None,
          loss_units: Callable[[dict[str, torch.Tensor]], int] | None = None) -> TrainResult:
    """Optimise `model` on tokenised `features`; evaluate and checkpoint as configured.

    `loss_fn(model, batch)` replaces the model's own loss (class weights, focal loss, ...);
    `loss_units(batch)`: what the loss is a mean over (trained tokens, rows: the default), counted in a
    batch; it weights the passes of an optimizer step (its batches, split by `train.micro_batch_tokens`);
    `on_eval(step, metrics)` sees every evaluation (e.g. a hyperparameter-search pruner);
    `resume_from`: a checkpoint directory to continue from (see checkpoint.py)."""
    cfg.check_evaluations(evaluate is not None)
    loop = Loop(model, features, collate, cfg, lr, out_dir, evaluate, loss_fn, on_eval, loss_units)
    try:
        if resume_from is not None:
            loop.resume(resume_from)
        return loop.run()
    finally:  # the word embedding back to dense gradients, peft's LoRA forward, plain layers: after an error too
        restore_lora(loop.lora)
        restore_recompute(loop.recompute)
        if loop.embedding is not None:
            loop.embedding.sparse = False
            loop.optimizer.optimizer.release()


class Loop:
    """One training run; `run()` reads top to bottom: batches → optimizer steps → log, evaluate, checkpoint."""

    def __init__(self, model: torch.nn.Module, features: Sequence[dict[str, Any]], collate: Collate,
                 cfg: TrainConfig, lr: float, out_dir: Path | None, evaluate: Callable[..., dict[str, Any]] | None,
                 loss_fn: Callable[..., torch.Tensor] | None, on_eval: Callable[[int, dict[str, Any]], None] | None,
                 loss_units: Callable[[dict[str, torch.Tensor]], int] | None = None) -> None:
        keep_freed_memory()
        if cfg.dropout is not None:
            set_dropout(model, cfg.dropout)
        if cfg.fast_dropout:
            use_fast_dropout(model)
        self.recompute = use_recompute(model) if cfg.gradient_checkpointing else None  # (before DDP / FSDP wrap it)
        # the device from PartialState: an Accelerator probe would fix the process's mixed precision to "no"
        self.precision = resolve_precision(cfg.precision, PartialState(cpu=not torch.cuda.is_available()).device)
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.precision]
        if note := slow_precision_note(self.precision, PartialState().device):
            say(note)
        if AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
            AcceleratorState._reset_state()  # an earlier run in this process (tests, tune trials) chose another
        # a strategy applies under a launcher (torchrun, --nproc), even with one process
        self.strategy = cfg.distributed.strategy if dist.launched() else "ddp"
        if self.strategy != "ddp":
            dist.check_strategy(cfg)
            dist.ensure_group()
        extra = dist.accelerator_kwargs(cfg.distributed, cfg, dist.world()[1], mixed) if self.strategy != "ddp" else {}
        # accumulation is the loop's own (forward_backward); DeepSpeed's engine also counts it, in its config
        accumulate = cfg.grad_accum if self.strategy == "deepspeed" else 1
        self.acc = acc = Accelerator(cpu=not torch.cuda.is_available(), gradient_accumulation_steps=accumulate,
                                     mixed_precision=mixed, **extra)
        self.attention = use_short_row_attention(model, acc.device) if cfg.short_row_attention else None
        self.lora = use_fast_lora(model) if cfg.fast_lora and self.strategy == "ddp" else []
        self.features, self.collate, self.cfg = features, collate, cfg
        self.evaluate, self.loss_fn, self.on_eval, self.loss_units = evaluate, loss_fn, on_eval, loss_units or rows
        # DeepSpeed's engine counts its own micro-steps: one backward per batch there
        self.pass_tokens = None if self.strategy == "deepspeed" else micro_batch_tokens(
            cfg.micro_batch_tokens, acc.device, getattr(loss_fn, "copies", 1))
        lengths = getattr(features, "lengths", None)  # a FeatureStore knows them without reading its rows
        self.lengths = list(lengths) if lengths is not None else [len(f["input_ids"]) for f in features]
        n_batches = math.ceil(len(features) / cfg.batch_size)  # global batches: each process takes its rows of each
        self.total = plan_steps(cfg, n_batches)
        self.per_epoch = max(1, math.ceil(n_batches / cfg.grad_accum))
        self.eval_every = cfg.eval_steps or self.per_epoch
        self.save_every = self.per_epoch if cfg.save_steps is None else cfg.save_steps
        self.ckpt_root = out_dir / "checkpoints" if out_dir is not None and self.save_every else None
        if self.strategy == "fsdp":  # sharded before the optimizer is made: it must hold the shards
            model = dist.fully_shard_model(model.to(acc.device), cfg.distributed)
        self.param_dtype = next(model.parameters()).dtype  # DeepSpeed casts the model: saved weights take this back
        self.embedding = sparse_embedding(model, cfg, acc.num_processes, self.strategy, self.precision, lr)
        optimizer = make_optimizer(model, cfg, lr, row_grads=self.embedding is not None)
        self.scheduler = make_scheduler(cfg, optimizer, self.total)  # not prepared: stepped once per optimizer step
        # (fsdp: accelerate would wrap the FSDP model in DDP: only the optimizer is prepared)
        self.model, self.optimizer = (model, acc.prepare(optimizer)) if self.strategy == "fsdp" else acc.prepare(
            model, optimizer)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.keep_best, self.select = cfg.tracks_best(), cfg.selects_best() and evaluate is not None
        self.tracker = MetricTracker.from_config(cfg) if evaluate is not None and cfg.needs_evaluations() else None
        self.best_weights: dict[str, torch.Tensor] | Path | None = None  # the best, when no checkpoint of its own
        self.log = MetricsLog(out_dir / "metrics.jsonl" if out_dir and acc.is_main_process else None, cfg.report_to)
        self.s, self.rng = LoopState(), None  # rng: the RNG states to restore right before the next step
        self.resumed_from: Path | None = None
        self.last_saved: Path | None = None

    def data_order(self) -> dict[str, Any]:
        """What the batch order depends on: a resume must see the same, or skipping batches means nothing."""
        c = self.cfg
        order = {"rows": len(self.features), "batch_size": c.batch_size, "grad_accum": c.grad_accum, "seed": c.seed,
                 "group_by_length": c.group_by_length, "strategy": self.strategy}  # optimizer state layouts differ
        if self.strategy == "deepspeed":  # ZeRO's optimizer partitions are per process: the same number to resume
            order["processes"] = self.acc.num_processes
        return order

    def resume(self, path: Path) -> None:
        ckpt.check_data_order(path, self.data_order())
        sharded, base_lrs = self.strategy in ("fsdp", "deepspeed"), list(self.scheduler.base_lrs)
        saved, self.rng, state = ckpt.load_checkpoint(path, None if sharded else self.unwrapped, self.optimizer,
                                                      self.scheduler, self.acc.scaler, self.acc.process_index)
        if self.strategy == "deepspeed":  # weights, fp32 masters, optimizer partitions
            self.model.load_checkpoint(str(path / "deepspeed"), tag="zero", load_module_strict=False,
                                       load_optimizer_states=True, load_lr_scheduler_states=False)
        elif sharded:
            dist.load_sharded(self.model, self.optimizer, ckpt.load_file(str(path / ckpt.FILES[0])), state["optimizer"])
        ckpt.follow_schedule(self.scheduler, base_lrs)  # this run's schedule (a longer one) at the restored step
        self.s = LoopState(**{**saved["loop"], **({} if self.acc.is_main_process else {"real": 0, "padded": 0})})
        if self.tracker is not None and saved.get("tracker"):
            self.tracker.load_state_dict(saved["tracker"])
            if self.select and self.acc.is_main_process:  # the best so far, where this run's checkpoints lack it
                self.best_weights = ckpt.resumed_best(path, self.tracker.best_step, self.ckpt_root)
        # stopped early, resumed with other early_stopping settings (or none): it stops as these say
        self.s.stopped = self.cfg.early_stopping is not None and self.tracker is not None and self.tracker.should_stop
        self.resumed_from = self.last_saved = path

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.acc.unwrap_model(self.model)

    def run(self) -> TrainResult:
        s, acc, cfg = self.s, self.acc, self.cfg
        if self.embedding is not None:  # rows owing weight decay pay it before the forward reads them (train's
            self.optimizer.optimizer.read_by(self.embedding)  # finally releases it: a failed __init__ holds none)
        self.loss_sum = torch.tensor(s.log_loss, device=acc.device)
        self.start = self.last_t = time.perf_counter() - s.elapsed
        self.last_real = s.real
        bar = self.bar = TrainProgress(self.total, enabled=acc.is_main_process)
        self.model.train()
        if self.rng is not None:
            ckpt.set_rng_state(self.rng)  # last: nothing may draw from the RNGs before the next step
        with bar, closing(self.log), noisy_embeddings(self.unwrapped, cfg.neftune_alpha):  # undone on errors too
            bar.update(s.step)
            while s.step < self.total and not s.stopped:
                order = batch_order(self.lengths, cfg.batch_size, cfg.seed + s.epoch, cfg.group_by_length)[s.batch :]
                # an optimizer step's global batches (each process takes its rows); an epoch's last may be fewer
                for window in (order[k : k + cfg.grad_accum] for k in range(0, len(order), cfg.grad_accum)):
                    s.batch += len(window)
                    self.forward_backward(window)
                    self.optimizer_step()  # an optimizer-step boundary: the only place a checkpoint is taken
                    self.log_step()
                    improved = self.evaluate_step()
                    if s.stopped and s.log_n:  # stopped between log lines: their loss logged (before a checkpoint)
                        self.log_step(due=True)
                    self.checkpoint(improved)
                    ckpt.pause_for_tests("step", s.step)
                    if s.step >= self.total or s.stopped:
                        break
                else:
                    s.epoch, s.batch = s.epoch + 1, 0
        return self.finish(time.perf_counter() - self.start)

    def forward_backward(self, window: list[list[int]]) -> None:
        """The batches of one optimizer step, in passes of at most `pass_tokens` tokens. Each pass's loss is weighted
        by its share of the step's loss units (rows, or trained tokens: HF Trainer's `num_items_in_batch`), so the
        summed gradients and the logged loss are those of all the step's rows in one pass."""
        s, acc = self.s, self.acc
        n = acc.num_processes
        passes = step_passes(window, self.features, self.collate, self.pass_tokens, self.loss_units,
                             acc.process_index, n)
        weights = pass_weights([p[1] for p in passes], [p[2] for p in passes])
        if n > 1:  # this process's share of the step's global batches
            share = dist.step_share(sum(p[1] for p in passes), sum(p[2] for p in passes), sum(map(len, window)),
                                    self.loss_units is rows, acc.device, n)
            weights = [w * share for w in weights]
        scale = self.cfg.grad_accum if self.strategy == "deepspeed" else 1  # DeepSpeed divides by its own count
        with acc.autocast() if self.strategy == "fsdp" else nullcontext():
            for j, ((cpu_batch, _, pass_rows), weight) in enumerate(zip(passes, weights, strict=True)):
                batch = {k: v.to(acc.device) for k, v in cpu_batch.items()}
                last = j == len(passes) - 1
                if self.strategy == "deepspeed":  # its engine steps at the boundary accelerate says
                    acc.gradient_state._set_sync_gradients(last)
                with nullcontext() if last else acc.no_sync(self.model):  # DDP: all-reduce once, after the last
                    loss = self.loss_fn(self.model, batch) if self.loss_fn else self.model(**batch).loss
                    if self.cfg.l1:
                        loss = loss + self.cfg.l1 * l1_penalty(self.params)
                    acc.backward(loss if weight * scale == 1.0 else loss * (weight * scale))
                self.loss_sum += loss.detach().float() * weight
                mask = cpu_batch["attention_mask"] if pass_rows else cpu_batch["attention_mask"][:0]  # (a stand-in's:
                s.real, s.padded = s.real + int(mask.sum()), s.padded + mask.numel()  # none) the host copy: no sync
        s.log_n += 1

    def optimizer_step(self) -> None:
        step = self.s.step + 1
        check_finite(self.acc, self.loss_sum, "loss", step, self.last_saved, reduce=True)
        if self.cfg.max_grad_norm:
            clip = clip_grad_norm if self.embedding is not None else self.acc.clip_grad_norm_
            norm = clip(self.params, self.cfg.max_grad_norm)
            if norm is not None:
                check_finite(self.acc, dist.scalar(norm), "gradient norm", step, self.last_saved, reduce=False)
        self.s.lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        if not self.optimizer.step_was_skipped:  # fp16: a step with overflowing gradients is skipped
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.s.step = step

    def log_step(self, due: bool = False) -> None:
        s = self.s
        if s.step % self.cfg.log_steps and s.step != self.total and not due:
            self.bar.update(s.step)
            return
        now = time.perf_counter()
        mean_loss = float(self.acc.reduce(self.loss_sum, "mean")) / max(s.log_n, 1)  # over processes
        s.all_loss, s.all_n = s.all_loss + mean_loss * s.log_n, s.all_n + s.log_n
        rate = round(dist.total(self.acc, s.real - self.last_real) / max(now - self.last_t, 1e-9), 1)
        row = {"step": s.step, "epoch": round(s.step / self.per_epoch, 4), "loss": round(mean_loss, 6),
               "lr": s.lr, "tokens_per_s": rate, "elapsed_s": round(now - self.start, 2)}
        self.log.write(row)
        self.bar.update(s.step, mean_loss, row["tokens_per_s"])
        self.loss_sum.zero_()
        s.log_n, self.last_t, self.last_real = 0, now, s.real

    def evaluate_step(self) -> bool:
        """Evaluate when due; True if this is the best evaluation so far. The final evaluation is the
        pipeline's, unless a best step is tracked (the last step may be the best)."""
        s, tracker = self.s, self.tracker
        due = s.step % self.eval_every == 0 and s.step < self.total or self.keep_best and s.step == self.total
        if self.evaluate is None or not due:
            return False
        self.settle()
        metrics = self.evaluate(self.unwrapped)
        if self.acc.is_main_process:  # one line per evaluation, above the bar or in the log
            say(f"eval at step {s.step}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in list(scalars(metrics).items())[:6]))
        result = {"step": s.step, **{f"eval/{k}": v for k, v in metrics.items()}}
        s.evals.append(result)
        self.log.write(result)
        if self.on_eval is not None:
            self.on_eval(s.step, result)
        self.model.train()
        if tracker is None:
            return False
        improved = tracker.update(s.step, metrics)
        if hasattr(self.scheduler, "step_metric"):
            self.scheduler.step_metric(tracker.last_score, tracker.metric)
        s.stopped = self.cfg.early_stopping is not None and tracker.should_stop
        if s.stopped:
            self.log.write({"step": s.step, "early_stopping": tracker.state_dict()})
        return improved

    def checkpoint(self, improved: bool) -> None:
        """Every `save_every` steps, and at each new best when a best is tracked (so it is on disk)."""
        s, tracker = self.s, self.tracker
        if improved:  # (the best in memory: a resumed run's — no longer the best — or, without checkpoints, this one)
            self.best_weights = self.gathered(trainable_only=True) if self.ckpt_root is None and self.select else None
        if self.ckpt_root is None:
            return
        if not (s.step % self.save_every == 0 or self.keep_best and improved):
            return
        # every process takes part: shards are gathered, each process's RNG collected
        weights, rng = self.gathered(trainable_only=True), dist.gather_objects(ckpt.rng_state())
        tmp = None
        if self.strategy == "deepspeed":  # ZeRO's optimizer partitions: each process writes its own, DeepSpeed's way
            tmp = dist.broadcast_object(ckpt.new_temp_dir(self.ckpt_root, s.step) if self.acc.is_main_process else None)
            self.model.save_checkpoint(str(tmp / "deepspeed"), tag="zero", client_state={}, save_latest=False,
                                       exclude_frozen_parameters=True)
            self.acc.wait_for_everyone()
        optim = None if tmp else dist.optimizer_state(self.model, self.optimizer)
        # over processes: the mean loss (each resumes from it), all tokens (a resume's main process goes on from them)
        s.log_loss, s.elapsed = float(self.acc.reduce(self.loss_sum.clone(), "mean")), time.perf_counter() - self.start
        loop = {**asdict(s), "real": dist.total(self.acc, s.real), "padded": dist.total(self.acc, s.padded)}
        if not self.acc.is_main_process:
            return
        self.last_saved = ckpt.save_checkpoint(
            self.ckpt_root, s.step, weights, optim, self.scheduler,
            {"loop": loop, "tracker": tracker.state_dict() if tracker else None, "data_order": self.data_order()},
            self.cfg.save_total_limit, tracker.best_step if tracker and self.keep_best else None, self.acc.scaler, rng,
            tmp)

    def settle(self) -> None:
        """Row gradients (sparse_rows): the weights made those of dense AdamW before they are read."""
        if self.embedding is not None:
            self.optimizer.optimizer.settle()

    def gathered(self, trainable_only: bool) -> dict[str, torch.Tensor]:
        """Full tensors on the main process's CPU; every process calls it (FSDP and ZeRO-3 gather)."""
        self.settle()
        return dist.gathered(self.strategy, self.acc, self.model, self.unwrapped, trainable_only, self.param_dtype)

    def finish(self, wall: float) -> TrainResult:
        """With select_best, the model gets the best step's weights back before it is exported."""
        s, t = self.s, self.tracker
        self.settle()
        selected = t.best_step if self.select and t is not None else None
        held = (self.best_weights or self.ckpt_root / f"step-{selected:08d}" / ckpt.FILES[0]  # (a resume's: a file)
                if selected is not None and selected != s.step and self.acc.is_main_process else None)
        best = ckpt.load_file(str(held)) if isinstance(held, Path) else held
        full = None
        if self.strategy in ("fsdp", "deepspeed"):  # the trained weights, gathered: the caller builds the model anew
            full = self.gathered(trainable_only=False)
            full.update(best or {})
        elif best is not None:
            ckpt.copy_trainable(best, self.unwrapped, "the best weights")
        self.acc.unwrap_model(self.model, keep_fp32_wrapper=False)  # drop accelerate's autocast-patched forward
        restore_attention(self.unwrapped, self.attention)
        real, padded = dist.total(self.acc, s.real), dist.total(self.acc, s.padded)  # every process's tokens
        return TrainResult(
            s.step, round(s.step / self.per_epoch, 4), wall, s.all_loss / max(s.all_n, 1), real, padded,
            self.precision, s.evals, t.metric if t else None, t.best_value if t else None,
            t.best_step if t else None, selected, s.stopped, str(self.resumed_from) if self.resumed_from else None,
            full if self.acc.is_main_process else None,
        )
