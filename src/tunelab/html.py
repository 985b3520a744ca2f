"""HTML building blocks for reports and study pages: escaped text, formatted tables, notes, inline SVG charts.
Every user text is escaped; numbers are formatted for reading."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any


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


def chart(svg: str, alt: str) -> str:
    """A chart (tunelab.plots: one `<svg>` element) inline, named for screen readers and as its tooltip."""
    head, rest = svg.split(">", 1)
    return f'{head} role="img" aria-label="{esc(alt)}"><title>{esc(alt)}</title>{rest}'


def figs(*images: str) -> str:
    return '<div class="figs">' + "".join(images) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def metric_table(values: dict[str, Any]) -> str:
    """A two-column metric / value table ("" when there is nothing to show); pass `metrics.scalars(...)`."""
    return table(["metric", "value"], list(values.items())) if values else ""
