"""What the training loop optimises with: the optimizer, the learning-rate schedule (including
reduce-on-plateau after warmup), the regularisers `train.l1` and `train.dropout`, and the finiteness check before
each step."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from transformers import get_scheduler
from transformers.optimization import Adafactor

from tunelab.config.sections import TrainConfig
from tunelab.errors import ConfigError
from tunelab.training.sparse_rows import RowAdamW

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBEDDING = re.compile(r"embed|(?:^|\.)(?:wte|wpe)\.")
_NEW_ROWS = re.compile(r"trainable_tokens|token_adapter")  # peft's rows of added tokens (LoRA's new_token_ids)
LAYER_NAMES = "layer.N, layers.N, h.N, block.N or blocks.N"


def layer_depths(names: list[str]) -> tuple[dict[str, int], int]:
    """({name: depth}, layers): depth 0 for embeddings, i + 1 for a parameter of numbered layer i, layers + 1 for
    the rest (final norm, pooler, task head)."""
    numbered = {n: int(m.group(1)) for n in names if (m := _LAYER.search(n))}
    layers = max(numbered.values(), default=-1) + 1
    return {n: numbered[n] + 1 if n in numbered else 0 if _EMBEDDING.search(n) else layers + 1 for n in names}, layers


def check_layer_decay(model: torch.nn.Module, layer_decay: float | None) -> None:
    """Refuse `train.layer_lr_decay` for a model without numbered layers, or (once the method is applied) whose
    trainable parameters sit in none, before anything is written."""
    if layer_decay is None:
        return
    if not layer_depths([n for n, _ in model.named_parameters()])[1]:
        raise ConfigError(f"config: train.layer_lr_decay: the model has no numbered layers ({LAYER_NAMES})")
    if not layer_depths([n for n, p in model.named_parameters() if p.requires_grad])[1]:
        raise ConfigError(f"config: train.layer_lr_decay: no trainable parameter sits in a numbered layer "
                          f"({LAYER_NAMES}); prefix / prompt tuning trains virtual tokens only")


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float | None = None,
                 layer_decay: float | None = None) -> list[dict[str, Any]]:
    """Weight decay on matrices only, not on biases and norm weights (as HF Trainer does). `layer_decay`
    (layer-wise learning-rate decay, Clark et al. 2020 / Howard & Ruder's discriminative fine-tuning): the task
    head and the top layer train at `lr`, each layer below at `layer_decay` times the one above, the embeddings
    lowest — one group per depth, the top one first (the lr the logs show)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depths, layers = layer_depths([n for n, _ in named]) if layer_decay is not None else ({}, 0)
    check_layer_decay(model, layer_decay)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if layer_decay is not None and callable(get_head) else None
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in named:
        no_decay = p.ndim < 2 or "norm" in name.lower()
        # the top layer and the head share the peak lr; so do a tied output layer and the rows of added tokens
        depth = layers if id(p) in head_ids or _NEW_ROWS.search(name) else min(depths.get(name, 0), layers)
        group = groups.setdefault((-depth, no_decay), {"params": [], "weight_decay": 0.0 if no_decay else weight_decay})
        if layer_decay is not None and lr is not None:
            group["lr"] = lr * layer_decay ** (layers - depth)
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]  # no empty group (LoRA has no biases): DeepSpeed drops them


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float, row_grads: bool = False
                   ) -> torch.optim.Optimizer:
    """`row_grads`: AdamW that also steps a sparse (row) gradient on its touched rows (sparse_rows.RowAdamW)."""
    groups = param_groups(model, cfg.weight_decay, lr, cfg.layer_lr_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    if cfg.optimizer == "adafactor":  # lr as an absolute step size, as HF Trainer's `adafactor`

        return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    return (RowAdamW if row_grads else torch.optim.AdamW)(groups, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                                          eps=cfg.adam_epsilon, fused=True)  # one kernel for all


def warmup_steps(cfg: TrainConfig, total: int) -> int:
    """A fraction rounds up, as HF Trainer's warmup_ratio: 3 % of 9 steps is 1 warmup step (at lr 0, so
    AdamW's moments see one gradient before the first update), not 0."""
    return math.ceil(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total: int) -> Any:
    """A per-optimizer-step schedule. `reduce_on_plateau` also has `step_metric(score)`, called after
    each evaluation with a score that is better when higher."""
    warmup = warmup_steps(cfg, total)
    if cfg.scheduler == "reduce_on_plateau":
        return PlateauWithWarmup(optimizer, warmup, cfg.plateau_factor, cfg.plateau_patience)

    # transformers' "constant" ignores a warmup: here every schedule warms up as train.warmup says
    name = "constant_with_warmup" if cfg.scheduler == "constant" and warmup else cfg.scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


class PlateauWithWarmup:
    """Linear warmup (as transformers' schedules: lr = peak * step / warmup), then the learning rate is
    multiplied by `factor` whenever the eval score has not improved for more than `patience` evaluations."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, factor: float, patience: int) -> None:
        self.optimizer, self.warmup = optimizer, warmup
        self.factor, self.patience = factor, patience
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.count, self.scale, self.best, self.bad = 0, 1.0, None, 0
        self.metric: str | None = None  # what `best` is a score of: another metric (a resume's) starts afresh
        self._apply()

    def _apply(self) -> None:
        ramp = min(1.0, self.count / self.warmup) if self.warmup else 1.0
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * ramp * self.scale

    def step(self) -> None:
        self.count += 1
        self._apply()

    def step_metric(self, score: float, metric: str | None = None) -> None:
        if self.metric is not None and metric != self.metric:  # (None: no evaluation yet, or an older checkpoint's)
            self.best, self.bad = None, 0
        self.metric = metric
        if self.count < self.warmup:
            return
        if self.best is None or score > self.best:
            self.best, self.bad = score, 0
            return
        self.bad += 1
        if self.bad > self.patience:
            self.scale, self.bad = self.scale * self.factor, 0
            self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("base_lrs", "count", "scale", "best", "bad", "metric")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():  # (a checkpoint of an older tunelab names no metric: the next one is its own)
            setattr(self, k, v)
        self._apply()


def l1_penalty(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.stack([p.abs().sum() for p in params]).sum()


def set_dropout(model: torch.nn.Module, p: float) -> int:
    """Set every dropout probability of `model` to `p`: each nn.Dropout, float `*dropout*` attributes of
    modules (attention implementations read e.g. `self.attention_dropout`) and the config's `*dropout*`
    fields (so the exported config says the same). Returns how many modules changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p, changed = p, changed + 1
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, p)
                changed += 1
    config = getattr(model, "config", None)
    if config is not None:
        for name, value in vars(config).items():
            if "dropout" in name and isinstance(value, float | int) and not isinstance(value, bool):
                setattr(config, name, p)
    return changed


def check_finite(acc: Any, value: torch.Tensor | float, what: str, step: int, last: Path | None,
                 reduce: bool) -> None:
    """Stop before the optimizer applies a NaN/inf; the last good checkpoint stays as it is."""
    if reduce and acc.num_processes > 1 and isinstance(value, torch.Tensor):  # a NaN anywhere stops all
        value = acc.reduce(value.detach().float(), "sum")
    v = float(value)
    if not math.isfinite(v):
        where = f"last good checkpoint: {last}" if last else "no checkpoint was saved"
        raise FloatingPointError(f"train: {what} is {v} at step {step}; {where}")
