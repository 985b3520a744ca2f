"""Error analysis: each task's own (`Task.report_errors`: for classification the most confident mistakes with
integrated-gradients attributions and the most confused label pairs), and near-duplicates between the training
and evaluation splits, with the split's records scored apart on the rows that have one and the rows that do not: a
model is right more often on rows it has nearly seen, so the unseen rows' score is the closer estimate of held-out
data (SST-2's validation split: 2,864 of its 6,735 rows have a training near-duplicate)."""

from __future__ import annotations

import time
from typing import Any

from tunelab.data.leakage import near_duplicates
from tunelab.html import esc, note, table
from tunelab.report.context import Context

DUPLICATES_SHOWN = 20


def errors_section(ctx: Context) -> str | None:
    out = []
    for split, recs in ctx.records.items():
        body = ctx.task.report_errors(recs, ctx.splits.get(split), ctx.model, ctx.tokenizer) \
            if ctx.task is not None and recs else None
        if body:
            out.append(f"<h3>{esc(split)}</h3>{body}")
    out.append(_near_duplicates(ctx))
    return "".join(out) or None


def _near_duplicates(ctx: Context) -> str:
    head = "<h3>Near-duplicates between train and evaluation</h3>"
    train = ctx.splits.get("train")
    if not train:
        return head + note("Skipped: the training split is not available (evaluation-only report).")
    if ctx.task is None:
        return head + note(f"Skipped: task {ctx.task_name!r} is not known to this tunelab version.")
    train_texts = [ctx.task.example_text(ex) for ex in train]
    out = [head]
    for split, examples in ctx.splits.items():
        if split == "train":
            continue
        t0 = time.perf_counter()
        found = near_duplicates(train_texts, [ctx.task.example_text(ex) for ex in examples],
                                        threshold=0.9, top_k=1)
        hits = sorted(found, key=lambda d: -d["similarity"])
        share = len({d["eval_index"] for d in hits}) / max(len(examples), 1)
        out.append(note(f"{split}: {len({d['eval_index'] for d in hits})} of {len(examples):,} rows "
                        f"({100 * share:.1f} %) have a training row with similarity >= 0.9 "
                        f"(full splits, {time.perf_counter() - t0:.1f} s)."))
        seen = _seen_unseen(ctx.records.get(split), {d["eval_index"] for d in hits})
        if seen:
            out.append(seen)
        if hits:
            out.append(table([f"{split} #", "train #", "similarity", f"{split} text", "train text"],
                             [[d["eval_index"], d["train_index"], d["similarity"], _short(d["eval_text"]),
                               _short(d["train_text"])] for d in hits[:DUPLICATES_SHOWN]]))
    return "".join(out)


def seen_unseen_scores(records: list[dict[str, Any]] | None, seen: set[int]) -> dict[str, dict[str, float]]:
    """The records' share `correct` and mean `score` (tunelab.evaluation.records: accuracy / exact match and the
    row's quality in [0, 1], whatever the task) over all rows, the rows whose `index` is in `seen` (they have a
    training near-duplicate) and the others; a group without rows is left out."""
    groups: dict[str, list[dict[str, Any]]] = {"all": list(records or [])}
    groups["seen"] = [r for r in groups["all"] if r.get("index") in seen]
    groups["unseen"] = [r for r in groups["all"] if r.get("index") not in seen]
    return {name: {"rows": len(rows), "correct": sum(bool(r.get("correct")) for r in rows) / len(rows),
                   "score": sum(float(r.get("score") or 0.0) for r in rows) / len(rows)}
            for name, rows in groups.items() if rows and all("index" in r for r in rows)}


def _seen_unseen(records: list[dict[str, Any]] | None, seen: set[int]) -> str | None:
    scores = seen_unseen_scores(records, seen)
    if "seen" not in scores or "unseen" not in scores:
        return None
    what = {"all": "all rows", "seen": "rows with a training near-duplicate",
            "unseen": "rows without one (the closer estimate for held-out data)"}
    return table(["rows", "count", "correct %", "mean score"],
                 [[what[k], v["rows"], round(100 * v["correct"], 2), round(v["score"], 4)] for k, v in scores.items()])


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
