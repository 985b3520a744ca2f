"""Scoring a model on examples, and printing metrics for people."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table as RichTable

from tunelab.errors import TunelabError
from tunelab.metrics import scalars
from tunelab.progress import table_console
from tunelab.tasks.base import Task
from tunelab.tasks.feature_cache import say_cut_note
from tunelab.tasks.model_rows import with_row


def logits_for(task: Task, model: torch.nn.Module, tokenizer: Any, examples: list[dict[str, Any]],
               batch_size: int = 64, features: list[dict[str, Any]] | None = None, say_cut: bool = True,
               nan_ok: bool = False) -> np.ndarray:
    """One entry of logits per example. A tuned model read from its directory whose outputs hold a NaN or an
    infinity (`not_finite_rows`) is one error for them all, unless `nan_ok` (`predictions_by_row` answers such rows
    one by one)."""
    # inputs cut at data.max_length said (eval, predict, serve; an ensemble's first member only)
    feats = features if features is not None else encoded(task, examples, tokenizer, say_cut)
    logits = task.logits(model, feats, partial(task.collate, pad_id=tokenizer.pad_token_id), batch_size)
    where = getattr(model, "tunelab_dir", None)  # set by load_model: a tuned model read from its directory
    if where is None or nan_ok:  # a model in training: NaN metrics are the loop's to handle (early stopping, a NaN
        return logits  # loss)
    if bad := sum(not_finite_rows(logits)):
        raise TunelabError(f"{not_finite_error(where, bad, len(logits))}; it cannot be scored")
    return logits


def encoded(task: Task, examples: list[dict[str, Any]], tokenizer: Any, say_cut: bool = True,
            split: str | None = None) -> list[dict[str, Any]]:
    """`task.encode(examples)`, and the task's line on the inputs it cut at data.max_length (`Task.cut_note`) said once
    (`say_cut`): where the features are encoded, so that a split scored twice (the untrained model, then the trained:
    train.baseline_eval) is encoded, and said, once. `split`: the split it is, named in the line after the task's
    name (`classification (validation): ...`): train says one line per split."""
    feats = task.encode(examples, tokenizer)
    if say_cut:
        say_cut_note(task.cut_note(), split)
    return feats


def not_finite_error(where: Any, bad: int, total: int) -> str:
    """What eval / predict and serve say of outputs that are NaN or infinite."""
    return (f"{where}: the model's outputs are NaN or infinite for {bad} of {total} examples (NaN weights, or values "
            "beyond its precision)")


def not_finite_rows(logits: Any) -> list[bool]:
    """Per example, whether its logits hold a NaN or an infinity: the one check of eval, predict and serve."""
    if isinstance(logits, np.ndarray) and logits.dtype.kind == "f" and len(logits):
        return [bool(b) for b in ~np.isfinite(logits.reshape(len(logits), -1)).all(axis=1)]
    return [_not_finite(row) for row in logits] if isinstance(logits, np.ndarray | list | tuple) else []


def _not_finite(value: Any, depth: int = 0) -> bool:
    """Whether one example's logits (an array, or a tuple / list of arrays: QA windows, NER words) hold a NaN or an
    infinity. Three levels of lists at most, ints and strings skipped: QA's token offsets are not walked one by one."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return any(_not_finite(v, depth + 1) for v in value)
        return value.dtype.kind == "f" and not bool(np.isfinite(value).all())
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and not bool(torch.isfinite(value).all())
    if isinstance(value, list | tuple) and depth < 3:
        return any(_not_finite(v, depth + 1) for v in value if not isinstance(v, int | str))
    return isinstance(value, float) and not math.isfinite(value)


NOT_FINITE = ("the model's outputs for this input are NaN or infinite (NaN weights, or values beyond its precision): "
              "no prediction")


class FailedRow(dict):  # type: ignore[type-arg]
    """An output row of `predictions_by_row` answered with `error` instead of a prediction (a dict as any row: the
    class tells serve which rows failed, whatever the row's own fields are named)."""


def predictions_by_row(task: Task, logits: Any, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`task.predictions`, except that an example whose logits are NaN or infinite (one input a model cannot take)
    answers its row with `error` (NOT_FINITE; a `FailedRow`) instead of a prediction; the other rows are predicted as
    usual (`tunelab serve`: one such input does not fail the rows, or the requests, batched with it)."""
    bad = not_finite_rows(logits)
    if not any(bad):
        return task.predictions(logits, examples)
    keep = [i for i, b in enumerate(bad) if not b]
    kept = logits[keep] if isinstance(logits, np.ndarray) else [logits[i] for i in keep]
    good = iter(task.predictions(kept, [examples[i] for i in keep]) if keep else [])
    return [FailedRow(with_row(ex["row"], {"error": NOT_FINITE})) if b else next(good)
            for ex, b in zip(examples, bad, strict=True)]


def evaluate(task: Task, model: torch.nn.Module, tokenizer: Any, examples: list[dict[str, Any]],
             batch_size: int = 64, features: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return task.metrics(logits_for(task, model, tokenizer, examples, batch_size, features), examples)


def print_metrics(results: dict[str, dict[str, Any]], console: Console | None = None) -> None:
    """A human table of the scalar metrics of each split, on stderr."""
    console = console or table_console()
    table = RichTable(title="metrics")
    names = sorted({k for m in results.values() for k in scalars(m)})
    table.add_column("metric")
    for split in results:
        table.add_column(split, justify="right")
    for name in names:
        table.add_row(name, *[format_value(scalars(m).get(name)) for m in results.values()])
    console.print(table)


def format_value(v: Any) -> str:
    """A metric for a plain table: floats to 4 decimals, None as -."""
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)
