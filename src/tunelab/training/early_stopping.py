"""The best evaluation so far by one metric: picks the best checkpoint, drives early stopping and
reduce-on-plateau. Metric names are the keys of the task's metrics (accuracy, f1_macro, ...)."""

from __future__ import annotations

import math
from typing import Any

from tunelab.config.sections import TrainConfig, metric_mode
from tunelab.errors import TunelabError


class MetricTracker:
    """`update(step, metrics)` after each evaluation; `best_step`, `best_value` (any improvement: the checkpoint
    selected); `bad` counts the evaluations since the last improvement by more than `min_delta` over the best so far
    (early stopping's patience), as HF Trainer's best metric and EarlyStoppingCallback's threshold."""

    def __init__(self, metric: str | None, mode: str = "auto", min_delta: float = 0.0,
                 patience: int | None = None) -> None:
        self.metric, self.mode, self.min_delta, self.patience = metric, mode, min_delta, patience
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.bad = 0
        self.last_score = math.nan

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> MetricTracker:
        es = cfg.early_stopping
        metric = cfg.best_metric or (es.metric if es else None)
        same = es is not None and (es.metric is None or es.metric == metric)
        return cls(metric, es.mode if same else "auto", es.min_delta if es else 0.0, es.patience if es else None)

    def value(self, metrics: dict[str, Any]) -> float:
        if self.metric is None:  # the task's headline metric: its first scalar
            self.metric = next((k for k, v in metrics.items() if isinstance(v, float)), None)
            if self.metric is None:
                raise TunelabError("train: the evaluation has no scalar metric to select or stop on")
        value = metrics.get(self.metric)
        if not isinstance(value, int | float) or isinstance(value, bool):
            names = ", ".join(k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool))
            raise TunelabError(f"train: metric {self.metric!r} is not among the evaluation metrics ({names}); "
                               "set train.best_metric / train.early_stopping.metric to one of them")
        return float(value)

    def update(self, step: int, metrics: dict[str, Any]) -> bool:
        """Record one evaluation; True if it is the new best."""
        value = self.value(metrics)
        self.last_score = self.score(value)
        gain = math.inf if self.best_value is None else self.last_score - self.score(self.best_value)
        improved = math.isfinite(value) and gain > 0
        self.bad = 0 if improved and gain > self.min_delta else self.bad + 1
        if improved:
            self.best_step, self.best_value = step, value
        return improved

    def score(self, value: float) -> float:
        """The value turned so that higher is better."""
        return value if metric_mode(self.metric or "", self.mode) == "max" else -value

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "best_step": self.best_step, "best_value": self.best_value, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The checkpoint's best so far; resumed with another `train.best_metric`, the best is sought afresh by that
        metric (from the evaluations after the resume: the saved best was by another measure)."""
        if self.metric is not None and state["metric"] is not None and self.metric != state["metric"]:
            return
        self.metric, self.best_step, self.best_value, self.bad = (
            state["metric"], state["best_step"], state["best_value"], state["bad"])


def tracked_field(cfg: TrainConfig) -> tuple[str, str | None]:
    """The setting naming the metric that picks the best checkpoint / stops training, and its value (None: the
    task's headline metric)."""
    es = cfg.early_stopping
    if cfg.best_metric is not None or es is None:
        return "train.best_metric", cfg.best_metric
    return "train.early_stopping.metric", es.metric
