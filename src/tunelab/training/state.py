"""What a training loop returns (`TrainResult`) and where it stands (`LoopState`, saved in every checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


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
    best_metric: str | None = None  # the tracked eval metric, its best value and step
    best_value: float | None = None
    best_step: int | None = None
    selected_step: int | None = None  # select_best: the step whose weights the model holds now
    stopped_early: bool = False
    resumed_from: str | None = None
    # fsdp / deepspeed: the full trained state (main process), to load into an unsharded model of the same build
    full_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def real_tokens_per_s(self) -> float:
        return self.real_tokens / max(self.wall_s, 1e-9)


@dataclass
class LoopState:
    """Where training stands; saved in every checkpoint so that a resume continues exactly there."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of this epoch already consumed (by this process)
    real: int = 0
    padded: int = 0
    log_loss: float = 0.0  # loss summed over the batches since the last log line, and their count
    log_n: int = 0
    all_loss: float = 0.0  # over all log lines: the run's mean training loss
    all_n: int = 0
    elapsed: float = 0.0
    lr: float = 0.0  # the learning rate the last optimizer step ran with (logged, as HF Trainer logs it)
    stopped: bool = False  # early stopping has ended the run
    evals: list[dict[str, Any]] = field(default_factory=list)
