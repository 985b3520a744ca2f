"""The report's Results section: each task renders its own part from the per-example records
(`Task.report_results`: classification metrics and curves, NER spans, QA buckets, SFT samples)."""

from __future__ import annotations

from tunelab.html import esc, note
from tunelab.report.context import Context


def results_section(ctx: Context) -> str | None:
    if not ctx.records:
        return note("No per-example records (RUN/predictions/*.jsonl) for this task.")
    parts = []
    for split, recs in ctx.records.items():
        if not recs:
            continue
        body = ctx.task.report_results(recs, ctx.metrics.get(split) or {}, ctx.generations.get(split)) \
            if ctx.task is not None else None
        if body is None:
            return note(f"No task-specific results for task {ctx.task_name!r}.")
        parts.append(f"<h3>{esc(split)} ({len(recs):,} rows)</h3>" + body)
    return "".join(parts)
