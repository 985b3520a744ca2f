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
from tunelab.evaluation.evaluate import logits_for
from tunelab.export.save import load_model, load_task
from tunelab.registry import TASKS
from tunelab.tasks.base import Task
from tunelab.tasks.model_rows import model_examples

_SAME = "ensemble members need the same task and label map"


def check_members(dirs: Sequence[Path], tasks: Sequence[Task]) -> None:
    """One-line error naming the first model directory that cannot join the first one's ensemble."""
    for d, t in zip(dirs, tasks, strict=True):
        if not t.ensembles:
            able = ", ".join(TASKS.names(lambda cls: cls.ensembles))
            raise TunelabError(f"{d}: task {t.cfg.name}: ensembles support task {able}")
    first, ref = dirs[0], tasks[0]
    for d, t in zip(dirs[1:], tasks[1:], strict=True):
        if t.cfg.name != ref.cfg.name:
            raise TunelabError(f"{d}: task {t.cfg.name} differs from {first} ({ref.cfg.name}); {_SAME}")
        why = ref.ensemble_mismatch(t, str(first))
        if why is not None:
            raise TunelabError(f"{d}: {why}; {_SAME}")


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
        if not model_dirs:
            raise TunelabError("ensemble: pass at least one model directory")
        self.dirs = [Path(d) for d in model_dirs]
        self.tasks = [load_task(d) for d in self.dirs]  # metadata only: mismatches fail before any weights load
        check_members(self.dirs, self.tasks)

    @property
    def task(self) -> Task:
        """The first member's task: its label map, text fields and output format are the ensemble's."""
        return self.tasks[0]

    def probabilities(self, table: Any, batch_size: int = 64, labelled: bool = False,
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """(mean class probabilities [rows × labels], the first member's examples of `table`)."""
        total: np.ndarray | None = None
        first: list[dict[str, Any]] = []
        for i, d in enumerate(self.dirs):
            task, model, tokenizer = load_model(d)
            examples = model_examples(task, table, labelled=labelled)
            probs = task.probabilities(logits_for(task, model, tokenizer, examples, batch_size, say_cut=i == 0))
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
        """Each row of `table` plus the prediction (`pred_label`, `scores`), as single-model predict."""
        logits, examples = self.logits(table, batch_size)
        return self.task.predictions(logits, examples)

    def evaluate(self, table: Any, batch_size: int = 64) -> dict[str, Any]:
        """The task's metrics of the averaged probabilities on a labelled table."""
        logits, examples = self.logits(table, batch_size, labelled=True)
        return self.task.metrics(logits, examples)
