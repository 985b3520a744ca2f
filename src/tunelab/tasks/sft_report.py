"""The SFT part of the report: generated replies with their scores, the per-example loss histogram, samples."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tunelab import plots
from tunelab.html import chart, figs, metric_table, note, table
from tunelab.metrics import scalars

SAMPLE_SCORES = ("exact_match", "bleu", "chrf", "rouge_l", "rouge1", "rouge2", "rougeL")


def results(recs: Sequence[dict[str, Any]], metrics: dict[str, Any],
            generations: Sequence[dict[str, Any]] | None = None, shown: int = 10) -> str:
    """`generations`: RUN/predictions/<split>.generations.jsonl (replies of the first rows with per-sample
    generation scores), when the run generated them."""
    out = [metric_table(scalars(metrics))]
    if generations:
        names = [k for k in SAMPLE_SCORES if any(k in g for g in generations)]
        rows = [[i, g.get("prompt", ""), g.get("reference", ""), g.get("prediction", ""), *(g.get(k) for k in names),
                 recs[i].get("loss") if i < len(recs) else None] for i, g in enumerate(generations[:shown])]
        out.append(f"<h4>Generated replies (the first {len(rows)} of {len(generations)})</h4>"
                   + table(["#", "prompt", "reference", "generated", *names, "loss"], rows))
    losses = [r["loss"] for r in recs if r.get("loss") is not None]
    if losses:
        out.append(figs(chart(plots.histogram({"examples": losses}, "per-example loss", "mean assistant-token NLL"),
                            "per-example loss")))
    generated = any(r.get("prediction") is not None for r in recs)
    picked = list(recs[:shown])
    rows = []
    for r in picked:
        loss = r.get("loss")
        row = [r["index"], r["text"], r["gold"]]
        if generated:
            row.append(r.get("prediction") or "")
        rows.append([*row, loss, math.exp(min(loss, 700)) if loss is not None else None, r["score"]])
    headers = ["#", "prompt", "reference", *(["generated"] if generated else []), "loss", "perplexity", "score"]
    out.append(f"<h4>Samples (the first {len(picked)})</h4>" + table(headers, rows))
    out.append(note("score = 1 - min(1, loss / 10) per example (loss: mean cross-entropy of the reference's "
                    "assistant tokens)." + ("" if generated else " No generated replies: set "
                                            "task.generation.eval_generate: true to generate them.")))
    return "".join(out)


def _loss(sums: np.ndarray) -> np.ndarray:
    return sums[..., 0] / np.maximum(sums[..., 1], 1)


def paired_parts(records: list[dict[str, Any]]) -> tuple[str, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """compare's bootstrap of the loss as the metrics give it, a mean over all reply tokens: per example (loss x
    tokens, tokens), their sums' ratio over the resampled examples (lower is better)."""
    parts = [(r["loss"] * r["tokens"], r["tokens"]) for r in records]
    return "loss", np.asarray(parts, dtype=float).reshape(-1, 2), _loss
