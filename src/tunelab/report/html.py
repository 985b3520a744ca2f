"""One self-contained HTML report: inline CSS, PNGs as base64 data URIs, no scripts, every user text escaped.

`build_report` gathers what a run left behind (config.yaml, metrics.json(l), data_summary.json,
predictions/<split>.jsonl, OUTPUT_DIR/baselines.json, OUTPUT_DIR/curve/curve.json) plus, when given, the
in-memory task, model, tokenizer and examples (token lengths, attributions, near-duplicates), and writes
the report atomically. A section that cannot be built shows a one-line note; the others still appear.
"""

from __future__ import annotations

import base64
import html
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def esc(value: Any) -> str:
    """Any value as escaped HTML text."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers rounded for tables (ints as they are); other values as text."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):  # scores in [0, 1] keep `digits`; times, rates and counts fewer
        if abs(value) >= 1e6:
            return f"{value:.3g}"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.{digits if abs(value) < 1 else 2}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], raw_columns: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped (numbers formatted) unless their column is in `raw_columns`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for j, v in enumerate(row):
            if j in raw_columns:
                cells.append(f"<td>{v}</td>")
            elif isinstance(v, int | float) and not isinstance(v, bool):
                cells.append(f'<td class="num">{esc(fmt(v))}</td>')
            else:
                cells.append(f"<td>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def img(png: bytes, alt: str) -> str:
    """A PNG embedded as a data URI."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{esc(alt)}">'


def figs(*images: str) -> str:
    return '<div class="figs">' + "".join(images) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


@dataclass
class Context:
    """What the sections read. `records` / `metrics` are per evaluated split; `splits` the examples (train
    included for a training run); `out_dir` holds baselines.json and curve/ (the run's output_dir)."""

    title: str
    run_dir: Path | None = None
    out_dir: Path | None = None
    task: Any = None
    model: Any = None
    tokenizer: Any = None
    splits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    generations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    task_name: str = ""
    timings: dict[str, float] = field(default_factory=dict)


Section = Callable[[Context], str | None]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_context(title: str, run_dir: Path | None = None, *, task: Any = None, model: Any = None,
                 tokenizer: Any = None, splits: dict[str, list[dict[str, Any]]] | None = None,
                 records: dict[str, list[dict[str, Any]]] | None = None, metrics: dict[str, Any] | None = None,
                 task_name: str | None = None, out_dir: Path | None = None) -> Context:
    """A Context from a run directory (when given) and the objects passed in, which take precedence."""
    import yaml

    from tunelab.records import read_records

    ctx = Context(title=title, run_dir=run_dir, out_dir=out_dir or run_dir, task=task, model=model, tokenizer=tokenizer,
                  splits=dict(splits or {}))
    if run_dir is not None:
        cfg_path = run_dir / "config.yaml"
        ctx.config = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        ctx.metrics = _read_json(run_dir / "metrics.json") or {}
        for p in sorted((run_dir / "predictions").glob("*.jsonl")):
            if "." not in p.stem:  # <split>.jsonl; <split>.generations.jsonl: SFT replies with their scores
                ctx.records[p.stem] = read_records(p)
            elif p.name.endswith(".generations.jsonl"):
                ctx.generations[p.name.removesuffix(".generations.jsonl")] = read_records(p)
    if records is not None:
        ctx.records = dict(records)
    if metrics is not None:
        ctx.metrics = {**{k: v for k, v in ctx.metrics.items() if k == "train"}, **metrics}
    task_cfg = ctx.config.get("task")
    ctx.task_name = (task_name or getattr(getattr(task, "cfg", None), "name", None)
                     or (task_cfg.get("name") if isinstance(task_cfg, dict) else task_cfg) or "")
    return ctx


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


def write_html(path: Path, text: str) -> Path:
    """Atomic write (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def build_report(path: Path | str, run_dir: Path | str | None = None, *, title: str | None = None,
                 **objects: Any) -> Path:
    """Write the report for a run directory and/or in-memory objects (see `load_context`) to `path`."""
    from tunelab.report.analysis import errors_section
    from tunelab.report.results import results_section
    from tunelab.report.sections import (
        baselines_section,
        curves_section,
        data_section,
        learning_curve_section,
        summary_section,
    )

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
    return write_html(Path(path), render(ctx, sections))
