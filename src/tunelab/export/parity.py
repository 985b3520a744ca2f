"""What an exported or compressed model is measured on before it is written, beside the model it came from: size
on disk, parameters, latency p50 / p95 and throughput at batch 1 and 32, the task metric on labelled rows and label
agreement with the original; and the parity gate that refuses an artifact that no longer does the job."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.errors import ParityError, TunelabError, flag  # noqa: F401 - ParityError re-exported (its old home)
from tunelab.methods.base import count_parameters
from tunelab.models.inference import TARGETS
from tunelab.models.precision import autocast_dtype, precision_scope
from tunelab.progress import table_console
from tunelab.tasks.base import Task

LATENCY_ROWS = 64  # batch-1 calls timed (the first rows of the split)
LATENCY_BATCHES = 8  # batch-32 calls timed


@dataclass(frozen=True)
class Gate:
    min_agreement: float | None = None  # share of predictions equal to the original's; None: the format's default
    max_drop: float = 0.5  # points (0-100 scale) an accuracy-like metric may fall; % a loss may rise


def gate_of(min_agreement: float | None, max_drop: float) -> Gate:
    """The gate of `--min-agreement` (a percentage: 98 → 0.98; None: the format's default) and `--max-drop`. A
    percentage in (0, 1] is refused: written as other tools take it, a fraction (0.98 for 98 %), it was read as
    0.98 % and the gate was as good as off."""
    if min_agreement is not None and 0 < min_agreement <= 1:
        raise TunelabError(f"{flag('min_agreement', float(min_agreement))}: a percentage; write "
                           f"{min_agreement * 100:g} for {min_agreement * 100:g} % (0 turns the check off)")
    return Gate(None if min_agreement is None else min_agreement / 100, max_drop)


def timed_calls(module: torch.nn.Module, batches: Sequence[dict[str, torch.Tensor]], precision: str) -> list[float]:
    """Seconds per forward call (one untimed warm-up call first), under the autocast `tunelab eval` uses."""
    dtype = autocast_dtype(torch.device("cpu"), precision)
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        for i, batch in enumerate([batches[0], *batches]):
            start = time.perf_counter()
            module(**batch)
            if i:
                out.append(time.perf_counter() - start)
    return out


def speed(task: Task, module: torch.nn.Module, tokenizer: Any, features: list[dict[str, Any]],
          precision: str = "auto") -> dict[str, Any]:
    """Latency p50 / p95 (ms), throughput (rows/s) and the number of timed calls at batch 1 (`LATENCY_ROWS` calls)
    and batch 32 (`LATENCY_BATCHES` calls), rows in the split's order. Every call is a full batch: a split of fewer
    rows is repeated from its first row to fill them (a last partial batch, timed beside full ones, made p50 / p95
    a mix of two batch sizes)."""
    collate = partial(task.collate, pad_id=tokenizer.pad_token_id)
    out: dict[str, Any] = {}
    if not features:
        return out
    for size, calls in ((1, LATENCY_ROWS), (32, LATENCY_BATCHES)):
        rows = [features[i % len(features)] for i in range(size * calls)]
        batches = [{k: v for k, v in collate(rows[s : s + size]).items() if k not in TARGETS}
                   for s in range(0, len(rows), size)]
        seconds = timed_calls(module, batches, precision)
        out[f"batch{size}"] = {"p50_ms": round(1000 * float(np.percentile(seconds, 50)), 3),
                               "p95_ms": round(1000 * float(np.percentile(seconds, 95)), 3),
                               "rows_per_s": round(len(rows) / sum(seconds), 1), "calls": len(batches)}
    return out


def score(task: Task, module: torch.nn.Module, tokenizer: Any, examples: list[dict[str, Any]],
          features: list[dict[str, Any]], batch_size: int) -> tuple[dict[str, Any], list[Any]]:
    """(metrics, each row's prediction as the task's records give it; None where they give none, as for sft)."""
    logits = task.logits(module, features, partial(task.collate, pad_id=tokenizer.pad_token_id), batch_size)
    return task.metrics(logits, examples), [r.get("prediction") for r in task.records(logits, examples)]


def headline(metrics: dict[str, Any]) -> tuple[str, float]:
    """The task's headline metric: its first scalar."""
    for name, value in metrics.items():
        if isinstance(value, float | int) and not isinstance(value, bool) and name != "n":
            return name, float(value)
    raise TunelabError("export: the task reported no scalar metric")


def agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / max(len(a), 1)


def least_agreement(gate: Gate, loss: bool = False) -> float | None:
    """The label agreement the gate asks for: `--min-agreement`, else 99 % (none for a loss: see `check`)."""
    return gate.min_agreement if gate.min_agreement is not None else (None if loss else 0.99)


def check(original: dict[str, Any], artifact: dict[str, Any], gate: Gate, loss: bool = False) -> str | None:
    """Why the artifact fails the gate, or None. `loss`: the headline metric is a loss (lower is better; its rise is
    measured in % of the original's) and agreement is over greedy next tokens, gated only when asked for
    (`gate.min_agreement`): thousands of near-tie positions flip under any rounding (q8_0 on SmolLM2: 1.6 % of reply
    tokens at +0.02 % loss), while a wrong export moves the loss by far more than the tolerance."""
    name = original["metric_name"]
    least = least_agreement(gate, loss)
    if least is not None and artifact["agreement"] < least:
        return (f"label agreement with the original {100 * artifact['agreement']:.2f}% < {100 * least:g}% "
                f"({flag('min_agreement')})")
    if loss:
        rise = 100 * (artifact["metric"] - original["metric"]) / max(abs(original["metric"]), 1e-12)
        if rise > gate.max_drop:
            return (f"{name} {artifact['metric']:.4f} is {rise:.2f}% over the original's {original['metric']:.4f} "
                    f"({flag('max_drop', float(gate.max_drop))})")
        return None
    drop = 100 * (original["metric"] - artifact["metric"])
    if drop > gate.max_drop:
        return (f"{name} {artifact['metric']:.4f} is {drop:.2f} points under the original's {original['metric']:.4f} "
                f"({flag('max_drop', float(gate.max_drop))})")
    return None


def measure(name: str, task: Task, module: torch.nn.Module, tokenizer: Any, examples: list[dict[str, Any]],
            features: list[dict[str, Any]], *, size_bytes: int, parameters: int, precision: str,
            batch_size: int, reference: list[Any] | None = None) -> tuple[dict[str, Any], list[Any]]:
    """One row of the report (and the row's predictions, the reference of the next rows)."""
    with precision_scope(precision):
        metrics, predictions = score(task, module, tokenizer, examples, features, batch_size)
    metric_name, value = headline(metrics)
    row = {"name": name, "precision": precision, "size_bytes": size_bytes, "parameters": parameters,
           "metric_name": metric_name, "metric": value,
           "agreement": agreement(reference, predictions) if reference is not None else 1.0,
           "rows": len(examples), **speed(task, module, tokenizer, features, precision)}
    return row, predictions


# the files that hold a model's weights, the only ones `size_bytes` counts on either side of a report: the tokenizer,
# config.json, tunelab.json and the model card are the same few hundred KB beside any of them (and would make an int8
# MiniLM 3.80× smaller than its original instead of the 3.69× its weights are)
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "model.onnx", "model.onnx.data", "model.gguf", "model.pt")


def weights_bytes(directory: Path) -> int:
    """Size on disk of the model's weight files in `directory` (`WEIGHT_FILES`, a prompt adapter's in its folder)."""
    files = {f for pattern in WEIGHT_FILES for f in Path(directory).rglob(pattern) if f.is_file()}
    return sum(f.stat().st_size for f in files)


def measure_fp32(name: str, task: Task, module: torch.nn.Module, tokenizer: Any, examples: list[dict[str, Any]],
                 features: list[dict[str, Any]], directory: Path, batch_size: int,
                 reference: list[Any] | None = None) -> tuple[dict[str, Any], list[Any]]:
    """`measure` for a PyTorch model saved in `directory` (its weight files' size), in fp32, with its parameter
    count."""
    return measure(name, task, module, tokenizer, examples, features, size_bytes=weights_bytes(directory),
                   parameters=count_parameters(module)["total"], precision="fp32", batch_size=batch_size,
                   reference=reference)


def print_rows(rows: Sequence[dict[str, Any]], title: str) -> None:
    """The report's rows as a table on stderr."""

    from rich.table import Table

    metric = rows[0]["metric_name"] if rows else "metric"
    table = Table(title=f"{title} (latency ms, throughput rows/s)")
    for col in ("model", "MB", metric, "agree %", "b1 p50", "b1 p95", "b1 /s", "b32 p50", "b32 p95", "b32 /s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        cells = []
        for size in (1, 32):
            b = r.get(f"batch{size}")
            cells += [f"{b['p50_ms']:.2f}", f"{b['p95_ms']:.2f}", f"{b['rows_per_s']:.0f}"] if b else ["-"] * 3
        table.add_row(f"{r['name']} {r['precision']}", f"{r['size_bytes'] / 1e6:.1f}", f"{r['metric']:.4f}",
                      f"{100 * r['agreement']:.2f}", *cells)
    table_console(width=max(table_console().width, 110)).print(table)
