"""The SFT part of the report: generated replies with their scores, the per-example loss histogram, samples."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tunelab import plots
from tunelab.html import chart, figs, metric_table, note, table
from tunelab.metrics import scalars
from tunelab.tasks.chat_template import reply_index, split_reply

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


def sft_records(logits: np.ndarray, examples: Sequence[dict[str, Any]], tokenizer: Any = None) -> list[dict[str, Any]]:
    """SFT rows from the per-example [assistant-token NLL sum, token count]: the prompt (the turns before
    the reply scored — the last trained assistant turn, chat_template.reply_index — as `role: content` lines), that
    reference reply (`split_reply`'s: a tool-call turn's as the template writes it), no prediction (a generated
    reply is added as `prediction` when the task generates one: `ex["generated"]`), `loss` (mean NLL per
    assistant token), score 1 - min(1, loss / 10), correct: score >= 0.5."""
    out = []
    for lg, ex in zip(logits, examples, strict=True):
        msgs = ex["messages"]
        last = reply_index(msgs)
        last = len(msgs) if last is None else last
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in msgs[:last])
        tokens = int(lg[1])
        loss = float(lg[0]) / max(tokens, 1)
        s = 1.0 - min(1.0, loss / 10.0)
        out.append({"text": prompt, "gold": split_reply(msgs, tokenizer)[1] if last < len(msgs) else "",
                    "prediction": ex.get("generated"), "correct": s >= 0.5, "score": s,
                    "loss": round(loss, 6), "tokens": tokens})
    return out
