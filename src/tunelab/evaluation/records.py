"""Per-example evaluation records: `RUN/predictions/<split>.jsonl`, one JSON line per example.

Every line has `index` (the example's position in the split), `text` (the main input: the text (and
text pair), NER tokens joined, QA question + context, the SFT prompt; at most 1000 characters), `gold`,
`prediction`, `correct` (bool) and `score`, the example's quality in [0, 1]:

| task | gold / prediction | score | correct |
|---|---|---|---|
| classification | label (multi-label: sorted list) | 1 or 0 | prediction == gold (multi-label: same set) |
| ner | BIO tags per token | sentence entity F1 (1.0 when neither has entities) | same entity set |
| qa | answer texts / answer | SQuAD token F1 (CMRC character F1 for Chinese), max over golds | exact match |
| sft | reference / generated reply (or null) | 1 - min(1, loss / 10); loss: mean assistant-token NLL | score >= 0.5 |

Tasks add fields of their own: classification `probs` (in label order) and, on the first line only,
`labels` (the label names); NER `tokens`; QA `question`; SFT `loss` and `tokens`.
Tasks provide the rows through `Task.records(logits, examples)`; a task without it writes no records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tunelab.evaluation.evaluate import logits_for
from tunelab.io import write_jsonl_atomic
from tunelab.tasks.base import Task

TEXT_LIMIT = 1000


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """`text` cut to at most `limit` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_records(task: Task, logits: Any, examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The task's records with `index` first and `text` clipped; None when the task has none."""
    try:
        rows = task.records(logits, examples)
    except NotImplementedError:
        return None
    out = []
    for i, row in enumerate(rows):
        rec = {"index": i, **row}
        rec["text"] = clip(str(rec.get("text", "")))
        out.append(rec)
    return out


def write_records(task: Task, logits: Any, examples: Sequence[dict[str, Any]], path: Path | str) -> Path | None:
    """Write the task's per-example records as JSONL atomically (temp file, then rename); returns the
    path, or None (nothing written) when the task provides no records."""
    rows = build_records(task, logits, examples)
    if rows is None:
        return None
    return write_jsonl_atomic(path, rows)


def evaluate_and_record(task: Task, model: torch.nn.Module, tokenizer: Any, examples: Sequence[dict[str, Any]],
                        batch_size: int, path: Path | str, features: list[dict[str, Any]] | None = None,
                        ) -> dict[str, Any]:
    """Metrics of one split (as `evaluate.evaluate`), and its records written to `path` from the same logits."""
    logits = logits_for(task, model, tokenizer, list(examples), batch_size, features)
    write_records(task, logits, examples, path)
    return task.metrics(logits, examples)
