"""Small line charts as PNG bytes (matplotlib, no pyplot state), and PNGs as base64 data URIs for HTML."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path

Series = dict[str, Sequence[tuple[float, float]]]


def line_chart(series: Series, title: str, xlabel: str, ylabel: str, *, logx: bool = False,
               markers: Series | None = None, annotate: dict[str, Sequence[str]] | None = None) -> bytes:
    """One PNG with a line per named series of (x, y) points; `markers` adds unconnected points per name
    (same colour), `annotate` a text label at each point of a series."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    for i, (name, points) in enumerate(series.items()):
        colour = f"C{i % 10}"
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=name)
            for (x, y), text in zip(points, (annotate or {}).get(name, []), strict=False):
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        extra = (markers or {}).get(name) or []
        if extra:
            mx, my = zip(*extra, strict=True)
            ax.scatter(mx, my, marker="*", s=80, color=colour, label=f"{name} (final)" if not points else None)
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """A PNG as an `<img src=...>` value that needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temp file next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
