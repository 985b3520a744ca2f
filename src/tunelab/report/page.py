"""One self-contained HTML report: inline CSS, PNGs as base64 data URIs, no scripts, every user text escaped.

`build_report` gathers what a run left behind (config.yaml, metrics.json(l), data_summary.json,
predictions/<split>.jsonl, OUTPUT_DIR/baselines.json, OUTPUT_DIR/curve/curve.json) plus, when given, the
in-memory task, model, tokenizer and examples (token lengths, attributions, near-duplicates), and writes
the report atomically. A section that cannot be built shows a one-line note; the others still appear.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunelab.html import esc
from tunelab.io import write_text_atomic
from tunelab.progress import Steps
from tunelab.report.analysis import errors_section
from tunelab.report.context import Context, Section, load_context
from tunelab.report.results import results_section
from tunelab.report.sections import (
    baselines_section,
    curves_section,
    data_section,
    learning_curve_section,
    summary_section,
)
from tunelab.report.templates import render_template


def render(ctx: Context, sections: Sequence[tuple[str, str, Section]]) -> str:
    """The document (templates/report.html.j2): title, a table of contents, then each section that has content."""
    built = []
    with Steps("report", len(sections), "sections") as progress:
        for key, title, build in sections:
            t0 = time.perf_counter()
            try:
                body = build(ctx)
            except Exception as e:  # noqa: BLE001 - one broken section must not cost the whole report
                body = f'<p class="warn">This section could not be built: {esc(type(e).__name__)}: {esc(e)}</p>'
            ctx.timings[key] = round(time.perf_counter() - t0, 3)
            if body:
                built.append((key, title, body))
            progress.advance()
    return render_template("report.html.j2", title=ctx.title, stamp=time.strftime("%Y-%m-%d %H:%M:%S"),
                           sections=built)


def build_report(path: Path | str, run_dir: Path | str | None = None, *, title: str | None = None,
                 **objects: Any) -> Path:
    """Write the report for a run directory and/or in-memory objects (see `load_context`) to `path`."""
    run = Path(run_dir) if run_dir is not None else None
    ctx = load_context(title or f"tunelab report: {run.name if run else Path(path).stem}", run, **objects)
    sections: list[tuple[str, str, Section]] = [
        ("summary", "Run summary", summary_section),
        ("data", "Data", data_section),
        ("training", "Training curves", curves_section),
        ("results", "Results", results_section),
        ("errors", "Error analysis", errors_section),
        ("baselines", "Baselines", baselines_section),
        ("learning-curve", "Learning curve", learning_curve_section),
    ]
    return write_text_atomic(path, render(ctx, sections))
