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

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","WenQuanYi Micro Hei",sans-serif;
 margin:0 auto;max-width:1180px;padding:1rem 2rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}h3{margin-top:1.4rem}
nav a{margin-right:1rem}table{border-collapse:collapse;margin:.6rem 0;font-size:.86rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs img{max-width:100%;border:1px solid #eee}
.note{color:#666;font-size:.85rem}.warn{color:#a40}.text{max-width:46rem;white-space:pre-wrap;word-break:break-word}
mark{padding:0 .15rem;border-radius:.2rem}mark.gold{background:#c8f0c8}mark.pred{background:#ffd8a8}
mark.match{background:#b8dcff}mark .etype{font-size:.65rem;color:#555;margin-left:.15rem}
.tok{padding:0 .1rem;border-radius:.15rem}.legend span{padding:0 .4rem;margin-right:.4rem}
"""


def render(ctx: Context, sections: Sequence[tuple[str, str, Section]]) -> str:
    """The document: title, a table of contents, then each section that has content."""
    parts, toc = [], []
    for key, title, build in sections:
        t0 = time.perf_counter()
        try:
            body = build(ctx)
        except Exception as e:  # noqa: BLE001 - one broken section must not cost the whole report
            body = f'<p class="warn">This section could not be built: {esc(type(e).__name__)}: {esc(e)}</p>'
        ctx.timings[key] = round(time.perf_counter() - t0, 3)
        if body:
            toc.append(f'<a href="#{key}">{esc(title)}</a>')
            parts.append(f'<section id="{key}"><h2>{esc(title)}</h2>{body}</section>')
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(ctx.title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(ctx.title)}</h1><p class=\"note\">tunelab report, {esc(stamp)}</p>"
            f"<nav>{''.join(toc)}</nav>{''.join(parts)}</body></html>\n")


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
