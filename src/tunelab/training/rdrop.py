"""R-Drop (`train.rdrop`; Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks"): every training
row runs through the model twice, so dropout samples two sub-models, and the loss adds the symmetric KL divergence
between the two output distributions to the task's loss of both copies:

    loss = ½ (L₁ + L₂) + ¼ α (KL(P₁ ‖ P₂) + KL(P₂ ‖ P₁))

— the paper's objective (its eq. 3) halved, so `α` is the paper's α and the task's part keeps the scale of a plain
run. The two copies go through one forward pass of the batch stacked on itself (larger matrix products than two
passes); a step costs about twice a plain one. The divergence is the task's distillation hook
(`Task.soft_target_loss` at temperature 1: per class, per tagged token, per start/end position), with gradients
through both copies. Not hand-written elsewhere: neither transformers nor peft ships it."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from tunelab.errors import ConfigError
from tunelab.tasks.base import Task


def check_rdrop(task: Task, alpha: float, distill: bool) -> None:
    """Refuse (ConfigError) `train.rdrop` where it cannot apply; checked before anything is written."""
    if not alpha:
        return
    if distill:
        raise ConfigError("config: train.rdrop: R-Drop and distill cannot be combined; set train.rdrop: 0")
    if type(task).soft_target_loss is Task.soft_target_loss:
        raise ConfigError(f"config: train.rdrop: task {task.cfg.name} has no output divergence for R-Drop "
                          "(classification, ner and qa have)")


class RDropLoss:
    """`loss(model, batch)` for the engine: the task's loss (`hard(model, batch)` or the model's own) of the
    batch stacked on itself, plus `alpha` × the symmetric divergence of the two copies' outputs. `copies`: the
    engine halves its passes (`train.micro_batch_tokens`) so that a pass, stacked, stays within the limit."""

    copies = 2

    def __init__(self, task: Task, hard: Callable[..., torch.Tensor] | None, alpha: float) -> None:
        self.task, self.hard, self.alpha = task, hard, alpha

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = len(batch["input_ids"])
        twice = {k: torch.cat([v, v]) if torch.is_tensor(v) and v.dim() > 0 and len(v) == rows else v
                 for k, v in batch.items()}
        seen: list[Any] = []

        def forward(**inputs: torch.Tensor) -> Any:  # the custom loss calls this: its outputs are kept
            seen.append(model(**inputs))
            return seen[-1]

        if self.hard is not None:
            hard_loss = self.hard(forward, twice)
            out = seen[-1]
        else:
            out = model(**twice)
            hard_loss = out.loss
        first, second = halves(out, rows)
        soft = self.task.soft_target_loss(first, second, batch, 1.0) + self.task.soft_target_loss(
            second, first, batch, 1.0)
        return hard_loss + 0.25 * self.alpha * soft


def halves(out: Any, rows: int) -> tuple[SimpleNamespace, SimpleNamespace]:
    """The outputs of the first and the second copy of a batch stacked on itself (each tensor with 2 × rows
    rows cut in two; the loss and anything else dropped)."""
    split = {k: v for k, v in out.items() if torch.is_tensor(v) and v.dim() > 0 and len(v) == 2 * rows}
    return (SimpleNamespace(**{k: v[:rows] for k, v in split.items()}),
            SimpleNamespace(**{k: v[rows:] for k, v in split.items()}))


def rdrop_loss(task: Task, alpha: float) -> RDropLoss | None:
    """The training loss of a run with `train.rdrop` > 0 (None without it)."""
    return RDropLoss(task, task.loss_fn(), alpha) if alpha else None
