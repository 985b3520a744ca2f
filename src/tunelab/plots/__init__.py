"""Charts for reports and study pages as inline SVG: lines, histograms, grouped bars, a confusion matrix, ROC / PR
curves and a reliability diagram, each returned as one `<svg>` element (`svg_document` makes it a file).

Drawn here rather than by matplotlib, for three measured reasons: a run's report draws about eight charts, which took
matplotlib 0.06-0.09 s each on a 2-core CPU (plus ~0.8 s to import it), 0.5-1.5 s a run and the largest single cost
of the test suite, where these take a few milliseconds; the text is the browser's, so Chinese labels draw with the
reader's CJK font (matplotlib drew boxes unless one was installed where the report was made); and the page stays
one self-contained file, a fraction of the size of base64 PNGs. Colours are matplotlib's `tab10` and `Blues`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

from tunelab.plots.svg import (
    BLUES,
    IDS,
    PALETTE,
    Axes,
    along,
    box,
    finite,
    frame,
    inside_rect,
    legend,
    log_ticks,
    nice_ticks,
    num,
    padded,
    polyline,
    span,
    star,
    svg,
    svg_document,
    text,
    text_width,
    tick_label,
)

__all__ = ["bars", "confusion", "curves", "histogram", "lines", "reliability", "svg_document"]


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str = "",
          markers: bool = False, vline: float | None = None, logy: bool = False, *, logx: bool = False,
          finals: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
          annotate: dict[str, Sequence[str]] | None = None, integer_x: bool = False) -> str:
    """One line per named (xs, ys) series; `finals` adds unconnected star points per name (same colour),
    `annotate` a text label at each point of a series, `vline` a dashed vertical line; `integer_x`: whole-number
    ticks (steps). Points that are not finite (or not positive on a log axis) break the line."""
    names = list(dict.fromkeys([*series, *(finals or {})]))
    pts = {n: finite(*(series.get(n) or ((), ()))) for n in names}
    fin = {n: finite(*((finals or {}).get(n) or ((), ()))) for n in names}
    probe = Axes((0, 0, 1, 1), (0, 1), (0, 1), logx, logy)
    every = [p for n in names for p in (*pts[n], *fin[n]) if probe.inside(*p)]
    xs, ys = [p[0] for p in every] + ([vline] if vline is not None else []), [p[1] for p in every]
    xr = padded((min(xs), max(xs)) if xs else (0.0, 1.0), logx, 0.02)
    yr = padded((min(ys), max(ys)) if ys else (0.0, 1.0), logy, 0.05)
    yt = nice_ticks(*span(yr, False)) if not logy else log_ticks(*span(yr, True))
    ax = Axes(box(520, 320, [f"{v:g}" for v in yt], ylabel), xr, yr, logx, logy)
    body = frame(ax, title, xlabel, ylabel, integer_x=integer_x)
    keys, drawn = [], []
    for i, n in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        body += polyline(ax, n, pts[n], colour, markers or len(pts[n]) <= 20)
        drawn += along([(ax.x(x), ax.y(y)) for x, y in pts[n] if ax.inside(x, y)])
        for (x, y), label in zip(pts[n], (annotate or {}).get(n, []), strict=False):
            if ax.inside(x, y):
                body.append(text(ax.x(x) + 4, ax.y(y) - 4, label, 9, anchor="start"))
                drawn += inside_rect(ax.x(x) + 4, ax.y(y) - 12, text_width(label, 9), 8)
        body += [star(ax.x(x), ax.y(y), 6, colour) for x, y in fin[n] if ax.inside(x, y)]
        drawn += [(ax.x(x), ax.y(y)) for x, y in fin[n] if ax.inside(x, y)]
        if pts[n]:
            keys.append((n, colour, "line"))
        elif fin[n]:
            keys.append((f"{n} (final)", colour, "star"))
    if vline is not None and ax.inside(vline, ax.yr[0]):
        p = ax.x(vline)
        body.append(f'<line x1="{num(p)}" y1="{num(ax.box[1])}" x2="{num(p)}" y2="{num(ax.box[3])}" '
                    f'stroke="grey" stroke-dasharray="4 3"/>')
    return svg(520, 320, body, legend(ax, keys, drawn) if len(series) > 1 or finals else None)


def histogram(values: dict[str, Sequence[float]], title: str, xlabel: str, vline: float | None = None,
              vlabel: str = "", bins: int = 40) -> str:
    """Overlaid histograms per named sample, with an optional vertical marker (e.g. max_length)."""
    clean = {n: np.asarray([v for v in vs if math.isfinite(v)], dtype=float) for n, vs in values.items()}
    every = np.concatenate([*clean.values(), np.zeros(0)])
    edges = np.histogram_bin_edges(every if every.size else [0.0], bins=bins)
    counts = {n: np.histogram(vs, bins=edges)[0] for n, vs in clean.items()}
    top = max((int(c.max()) for c in counts.values() if c.size), default=0) or 1
    lo, hi = float(edges[0]), float(edges[-1])
    if vline is not None:
        lo, hi = min(lo, vline), max(hi, vline)
    ax = Axes(box(520, 320, [str(top)], "rows"), (lo, hi), (0, top * 1.05))
    body = frame(ax, title, xlabel, "rows", integer_y=True)
    keys, drawn = [], []
    for i, (n, c) in enumerate(counts.items()):
        colour = PALETTE[i % len(PALETTE)]
        for k, count in enumerate(c):
            if count:
                x0, x1 = ax.x(edges[k]), ax.x(edges[k + 1])
                body.append(f'<rect x="{num(x0)}" y="{num(ax.y(count))}" width="{num(max(x1 - x0, 0.5))}" '
                            f'height="{num(ax.y(0) - ax.y(count))}" fill="{colour}" fill-opacity="0.55"/>')
                drawn += inside_rect(x0, ax.y(count), x1 - x0, ax.y(0) - ax.y(count))
        keys.append((n, colour, "box"))
    if vline is not None:
        p = ax.x(vline)
        body.append(f'<line x1="{num(p)}" y1="{num(ax.box[1])}" x2="{num(p)}" y2="{num(ax.box[3])}" '
                    f'stroke="crimson" stroke-width="1.2" stroke-dasharray="4 3"/>')
        drawn += along([(p, ax.box[1]), (p, ax.box[3])])
        if vlabel:
            keys.append((vlabel, "crimson", "dash"))
    return svg(520, 320, body, legend(ax, keys, drawn))


def bars(groups: dict[str, dict[str, float]], title: str, ylabel: str = "") -> str:
    """Grouped bars: one group per category, one bar per series ({series: {category: value}})."""
    cats = list(dict.fromkeys(c for g in groups.values() for c in g))
    values = [float(v) for g in groups.values() for v in g.values() if math.isfinite(v)]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    hi, lo = hi + (hi - lo) * 0.05, lo - (hi - lo) * 0.05 * (lo < 0)
    rotate = 30 if len(cats) > 6 else 0
    width = max(400.0, min(1200.0, 50 * len(cats) * max(1, len(groups)) + 120))
    bottom = 40 + (max((text_width(c) for c in cats), default=0) * 0.5 if rotate else 0)
    ax = Axes(box(width, 320 + bottom - 40, [tick_label(v, 0.01) for v in nice_ticks(lo, hi)], ylabel, bottom),
              (-0.5, len(cats) - 0.5), (lo, hi))
    body = frame(ax, title, "", ylabel, xcats=list(enumerate(cats)), rotate=rotate)
    step = (ax.x(1) - ax.x(0)) if cats else 1.0
    w = 0.8 * step / max(1, len(groups))
    keys, drawn = [], []
    for k, (name, g) in enumerate(groups.items()):
        colour = PALETTE[k % len(PALETTE)]
        for i, c in enumerate(cats):
            v = float(g.get(c, 0))
            if not math.isfinite(v):
                continue
            x = ax.x(i) - 0.4 * step + k * w
            top, base = sorted((ax.y(v), ax.y(0)))
            body.append(f'<rect x="{num(x)}" y="{num(top)}" width="{num(w)}" height="{num(base - top)}" '
                        f'fill="{colour}"><title>{escape(f"{name} · {c}: {v:g}")}</title></rect>')
            drawn += inside_rect(x, top, w, base - top)
        keys.append((name, colour, "box"))
    return svg(width, 320 + bottom - 40, body, legend(ax, keys, drawn) if len(groups) > 1 else None)


def _blue(share: float) -> str:
    """matplotlib's `Blues` colour map at `share` in [0, 1], linear between its nine stops."""
    f = min(max(share, 0.0), 1.0) * (len(BLUES) - 1)
    i = min(int(f), len(BLUES) - 2)
    a, b = (tuple(int(c[j:j + 2], 16) for j in (1, 3, 5)) for c in (BLUES[i], BLUES[i + 1]))
    return "#" + "".join(f"{round(p + (q - p) * (f - i)):02x}" for p, q in zip(a, b, strict=True))


def confusion(matrix: np.ndarray, labels: Sequence[str], title: str = "confusion matrix") -> str:
    """Counts, coloured by the share of each gold row (a colour bar beside it)."""
    k = len(labels)
    cell = min(48.0, max(14.0, 320.0 / max(k, 1)))
    rotate = 45 if k > 3 else 0
    left = 34 + max((text_width(s) for s in labels), default=0)
    below = 44 + (max((text_width(s) for s in labels), default=0) * 0.7 if rotate else 0)
    x0, y0 = left, 30
    width, height = x0 + k * cell + 90, y0 + k * cell + below
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    body = [text(x0 + k * cell / 2, 18, title, 12, extra=' font-weight="600"')]
    for i in range(k):
        for j in range(k):
            body.append(f'<rect x="{num(x0 + j * cell)}" y="{num(y0 + i * cell)}" width="{num(cell)}" '
                        f'height="{num(cell)}" fill="{_blue(share[i, j])}"><title>{escape(labels[i])} → '
                        f'{escape(labels[j])}: {int(matrix[i, j])}</title></rect>')
            if k <= 20:
                colour = "#fff" if share[i, j] > 0.6 else "#000"
                body.append(text(x0 + (j + 0.5) * cell, y0 + (i + 0.5) * cell + 3, str(int(matrix[i, j])),
                                  min(9.0, cell * 0.45), extra=f' fill="{colour}"'))
        body.append(text(x0 - 5, y0 + (i + 0.5) * cell + 4, labels[i], anchor="end"))
        px, py = x0 + (i + 0.5) * cell, y0 + k * cell + 14
        extra = f' transform="rotate({-rotate} {num(px)} {num(py)})"' if rotate else ""
        body.append(text(px, py, labels[i], anchor="end" if rotate else "middle", extra=extra))
    body.append(text(x0 + k * cell / 2, height - 8, "predicted"))
    body.append(text(12, y0 + k * cell / 2, "gold", extra=f' transform="rotate(-90 12 {num(y0 + k * cell / 2)})"'))
    bx, bh = x0 + k * cell + 14, k * cell
    stops = "".join(f'<stop offset="{i / (len(BLUES) - 1):.3f}" stop-color="{c}"/>' for i, c in enumerate(BLUES))
    gid = f"blues-{next(IDS)}"  # ids are page-wide: one per chart
    body += [f'<defs><linearGradient id="{gid}" x1="0" y1="1" x2="0" y2="0">{stops}</linearGradient></defs>',
             f'<rect x="{num(bx)}" y="{y0}" width="12" height="{num(bh)}" fill="url(#{gid})" stroke="#999"/>',
             text(bx + 16, y0 + 8, "1", 9, anchor="start"), text(bx + 16, y0 + bh, "0", 9, anchor="start"),
             text(bx + 36, y0 + bh / 2, "share of gold row", 9,
                   extra=f' transform="rotate(-90 {num(bx + 36)} {num(y0 + bh / 2)})"')]
    return svg(width, height, body)


def curves(series: dict[str, tuple[np.ndarray, np.ndarray, float]], kind: str) -> str:
    """ROC (`kind="roc"`: FPR vs TPR with AUC) or precision-recall (`"pr"`: recall vs precision with AP)."""
    tag = "AUC" if kind == "roc" else "AP"
    ax = Axes(box(440, 380, ["0.8"], "y"), (0, 1), (0, 1.02))
    labels = ("false positive rate", "true positive rate", "ROC") if kind == "roc" \
        else ("recall", "precision", "precision-recall")
    body = frame(ax, labels[2], labels[0], labels[1])
    keys, drawn = [], []
    if kind == "roc":
        body.append(f'<line x1="{num(ax.x(0))}" y1="{num(ax.y(0))}" x2="{num(ax.x(1))}" y2="{num(ax.y(1))}" '
                    f'stroke="grey" stroke-dasharray="1.5 2"/>')
    for i, (name, (x, y, area)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        body += polyline(ax, name, finite(x, y), colour, False, 1.3)
        drawn += along([(ax.x(a), ax.y(b)) for a, b in finite(x, y) if ax.inside(a, b)])
        keys.append((f"{name} ({tag} {area:.3f})", colour, "line"))
    return svg(440, 380, body, legend(ax, keys, drawn))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> tuple[str, float]:
    """Reliability diagram (accuracy vs mean confidence per equal-width bin) and the expected calibration
    error ECE = sum over bins of (bin share) * |accuracy - confidence|."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    acc, conf, count = np.zeros(bins), np.zeros(bins), np.bincount(idx, minlength=bins)
    for b in range(bins):
        if count[b]:
            acc[b], conf[b] = correct[idx == b].mean(), confidence[idx == b].mean()
    ece = float(np.sum(count / max(len(confidence), 1) * np.abs(acc - conf)))
    ax = Axes(box(440, 380, ["0.8"], "accuracy"), (0, 1), (0, 1))
    body = frame(ax, f"reliability (ECE {ece:.3f})", "confidence", "accuracy")
    drawn = along([(ax.x(0), ax.y(0)), (ax.x(1), ax.y(1))])
    for b in range(bins):
        if count[b]:
            x0, x1, top = ax.x(edges[b]), ax.x(edges[b + 1]), ax.y(acc[b])
            body.append(f'<rect x="{num(x0)}" y="{num(top)}" width="{num(x1 - x0)}" height="{num(ax.y(0) - top)}"'
                        f' fill="{PALETTE[0]}" fill-opacity="0.7" stroke="#000" stroke-width="0.5">'
                        f"<title>{escape(f'{count[b]} rows, accuracy {acc[b]:.3f}, confidence {conf[b]:.3f}')}"
                        "</title></rect>")
            drawn += inside_rect(x0, top, x1 - x0, ax.y(0) - top)
    body.append(f'<line x1="{num(ax.x(0))}" y1="{num(ax.y(0))}" x2="{num(ax.x(1))}" y2="{num(ax.y(1))}" '
                f'stroke="grey" stroke-dasharray="1.5 2"/>')
    keys = [("accuracy", PALETTE[0], "box"), ("perfect calibration", "grey", "dot")]
    return svg(440, 380, body, legend(ax, keys, drawn)), ece
