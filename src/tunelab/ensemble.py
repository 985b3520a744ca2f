"""Ensembles of tuned classification models (`tunelab predict / eval MODEL_DIR MODEL_DIR ...`).

Soft voting: each member labels the rows with its own tokenizer and data settings, and the members' class
probabilities (softmax; sigmoid for multi-label) are averaged with equal weights. Members must share the
task (classification, multi_label, threshold) and the label map (same labels in the same order); they
are loaded one at a time, so memory holds one model at once. The average is handed to the first
member's task as logits whose probabilities are that average (log p; log-odds for multi-label), so
output rows and metrics are exactly those of a single model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import TunelabError

_SAME = "ensemble members need the same task and label map"


def check_members(dirs: Sequence[Path], tasks: Sequence[Any]) -> None:
    """One-line error naming the first model directory that cannot join the first one's ensemble."""
    for d, t in zip(dirs, tasks, strict=True):
        if t.cfg.name != "classification":
            raise TunelabError(f"{d}: task {t.cfg.name}: ensembles support task classification")
    first, ref = dirs[0], tasks[0]
    for d, t in zip(dirs[1:], tasks[1:], strict=True):
        if t.cfg.multi_label != ref.cfg.multi_label:
            raise TunelabError(f"{d}: task.multi_label={str(t.cfg.multi_label).lower()} differs from {first} "
                               f"({str(ref.cfg.multi_label).lower()}); {_SAME}")
        if t.cfg.multi_label and t.cfg.threshold != ref.cfg.threshold:
            raise TunelabError(f"{d}: task.threshold={t.cfg.threshold} differs from {first} "
                               f"({ref.cfg.threshold}); {_SAME}")
        if list(t.labels) != list(ref.labels):
            raise TunelabError(f"{d}: label map [{', '.join(t.labels)}] differs from {first}'s "
                               f"[{', '.join(ref.labels)}]; {_SAME}")


def as_logits(probs: np.ndarray, multi_label: bool) -> np.ndarray:
    """Logits whose softmax (sigmoid for multi-label) is `probs`."""
    p = np.asarray(probs, dtype=np.float64)
    if multi_label:
        p = np.clip(p, 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)
    return np.log(np.clip(p, 1e-300, None))


class Ensemble:
    """Classification models whose class probabilities are averaged."""

    def __init__(self, model_dirs: Sequence[str | Path]) -> None:
        from tunelab.export import load_task

        if not model_dirs:
            raise TunelabError("ensemble: pass at least one model directory")
        self.dirs = [Path(d) for d in model_dirs]
        self.tasks = [load_task(d) for d in self.dirs]  # metadata only: mismatches fail before any weights load
        check_members(self.dirs, self.tasks)

    @property
    def task(self) -> Any:
        """The first member's task: its label map, text fields and output format are the ensemble's."""
        return self.tasks[0]

    def probabilities(self, table: Any, batch_size: int = 64, labelled: bool = False,
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """(mean class probabilities [rows × labels], the first member's examples of `table`)."""
        from tunelab.evaluate import logits_for
        from tunelab.export import load_model

        total: np.ndarray | None = None
        first: list[dict[str, Any]] = []
        for i, d in enumerate(self.dirs):
            task, model, tokenizer = load_model(d)
            examples = task.parse(table, labelled=labelled)
            probs = task.probabilities(logits_for(task, model, tokenizer, examples, batch_size))
            del model
            total = probs if total is None else total + probs
            if i == 0:
                first = examples
        assert total is not None
        return total / len(self.dirs), first

    def logits(self, table: Any, batch_size: int = 64, labelled: bool = False,
               ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The averaged probabilities as logits for `self.task` (see as_logits), and the examples."""
        probs, examples = self.probabilities(table, batch_size, labelled)
        return as_logits(probs, self.task.cfg.multi_label), examples

    def predict(self, table: Any, batch_size: int = 64) -> list[dict[str, Any]]:
        """Each row of `table` plus `label` and `scores`, as single-model predict."""
        logits, examples = self.logits(table, batch_size)
        return self.task.predictions(logits, examples)

    def evaluate(self, table: Any, batch_size: int = 64) -> dict[str, Any]:
        """The task's metrics of the averaged probabilities on a labelled table."""
        logits, examples = self.logits(table, batch_size, labelled=True)
        return self.task.metrics(logits, examples)
