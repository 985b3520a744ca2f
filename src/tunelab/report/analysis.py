"""Error analysis: each task's own (`Task.report_errors`: for classification the most confident mistakes with
integrated-gradients attributions and the most confused label pairs), and near-duplicates between the training
and evaluation splits."""

from __future__ import annotations

import time

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
        if hits:
            out.append(table([f"{split} #", "train #", "similarity", f"{split} text", "train text"],
                             [[d["eval_index"], d["train_index"], d["similarity"], _short(d["eval_text"]),
                               _short(d["train_text"])] for d in hits[:DUPLICATES_SHOWN]]))
    return "".join(out)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
