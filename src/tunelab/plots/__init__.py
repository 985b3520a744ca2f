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

import numpy as np

from tunelab.plots.svg import (
    BLUES,
    IDS,
    PALETTE,
    Axes,
    along,
    clean,
    finite,
    frame,
    inside_rect,
    legend,
    make_axes,
    num,
    number,
    padded,
    polyline,
    star,
    svg,
    svg_document,
    text,
    text_width,
)

__all__ = ["bars", "confusion", "curves", "histogram", "lines", "reliability", "svg_document"]

Points = list[tuple[float, float]]


def _vline(ax: Axes, at: float, colour: str, extra: str = "") -> tuple[str, Points]:
    p = ax.x(at)
    return (f'<line x1="{num(p)}" y1="{num(ax.box[1])}" x2="{num(p)}" y2="{num(ax.box[3])}" stroke="{colour}" '
            f'stroke-dasharray="4 3"{extra}/>', along([(p, ax.box[1]), (p, ax.box[3])]))


def _diagonal(ax: Axes) -> tuple[str, Points]:
    ends = [(ax.x(0), ax.y(0)), (ax.x(1), ax.y(1))]
    return (f'<line x1="{num(ends[0][0])}" y1="{num(ends[0][1])}" x2="{num(ends[1][0])}" y2="{num(ends[1][1])}" '
            f'stroke="grey" stroke-dasharray="1.5 2"/>', along(ends))


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str = "",
          markers: bool = False, vline: float | None = None, logy: bool = False, *, logx: bool = False,
          finals: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
          annotate: dict[str, Sequence[str]] | None = None, integer_x: bool = False) -> str:
    """One line per named (xs, ys) series; `finals` adds unconnected star points per name (same colour),
    `annotate` a text label at each point of a series, `vline` a dashed vertical line; `integer_x`: whole-number
    ticks (steps). Points that are not numbers, not finite or not positive on a log axis break the line."""
    names = list(dict.fromkeys([*series, *(finals or {})]))
    pts = {n: finite(*(series.get(n) or ((), ()))) for n in names}
    fin = {n: finite(*((finals or {}).get(n) or ((), ()))) for n in names}
    probe = Axes((0, 0, 1, 1), (0, 1), (0, 1), logx, logy)
    every = [p for n in names for p in (*pts[n], *fin[n]) if probe.inside(*p)]
    if vline is not None and not probe.inside(vline, 1.0):
        vline = None  # not finite, or not positive on a log axis: not drawn
    xs, ys = [p[0] for p in every] + ([vline] if vline is not None else []), [p[1] for p in every]
    xr = padded((min(xs), max(xs)) if xs else (0.0, 1.0), logx, 0.02)
    yr = padded((min(ys), max(ys)) if ys else (0.0, 1.0), logy, 0.05)
    ax = make_axes(520, 320, xr, yr, logx=logx, logy=logy, ylabel=ylabel, integer_x=integer_x)
    body = frame(ax, title, xlabel, ylabel, width=520)
    keys, drawn = [], []
    for i, n in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        marks, near = polyline(ax, n, pts[n], colour, markers or len(pts[n]) <= 20)
        body += marks
        drawn += near
        for (x, y), label in zip(pts[n], (annotate or {}).get(n, []), strict=False):
            if ax.inside(x, y):
                body.append(text(ax.x(x) + 4, ax.y(y) - 4, label, 9, anchor="start"))
                drawn += inside_rect(ax.x(x) + 4, ax.y(y) - 12, text_width(label, 9), 8)
        body += [star(ax.x(x), ax.y(y), 6, colour) for x, y in fin[n] if ax.inside(x, y)]
        drawn += [(ax.x(x), ax.y(y)) for x, y in fin[n] if ax.inside(x, y)]
        if any(ax.inside(*p) for p in pts[n]):
            keys.append((n, colour, "line"))
        elif fin[n]:
            keys.append((f"{n} (final)", colour, "star"))
    if vline is not None:
        mark, near = _vline(ax, vline, "grey")
        body.append(mark)
        drawn += near
    return svg(520, 320, body, legend(ax, keys, drawn) if len(series) > 1 or finals else None)


def histogram(values: dict[str, Sequence[float]], title: str, xlabel: str, vline: float | None = None,
              vlabel: str = "", bins: int = 40) -> str:
    """Overlaid histograms per named sample, with an optional vertical marker (e.g. max_length)."""
    kept = {n: np.asarray([v for v in map(number, vs) if math.isfinite(v)], dtype=float) for n, vs in values.items()}
    every = np.concatenate([*kept.values(), np.zeros(0)])
    edges = np.histogram_bin_edges(every if every.size else [0.0], bins=bins)
    counts = {n: np.histogram(vs, bins=edges)[0] for n, vs in kept.items()}
    top = max((int(c.max()) for c in counts.values() if c.size), default=0) or 1
    vline = vline if vline is not None and math.isfinite(vline) else None
    lo, hi = float(edges[0]), float(edges[-1])
    if vline is not None:
        lo, hi = min(lo, vline), max(hi, vline)
    ax = make_axes(520, 320, padded((lo, hi), False, 0.02), (0, top * 1.05), ylabel="rows", integer_y=True)
    body = frame(ax, title, xlabel, "rows", width=520)
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
        mark, near = _vline(ax, vline, "crimson", ' stroke-width="1.2"')
        body.append(mark)
        drawn += near
        if vlabel:
            keys.append((vlabel, "crimson", "dash"))
    return svg(520, 320, body, legend(ax, keys, drawn))


def bars(groups: dict[str, dict[str, float]], title: str, ylabel: str = "") -> str:
    """Grouped bars: one group per category, one bar per series ({series: {category: value}})."""
    cats = list(dict.fromkeys(c for g in groups.values() for c in g))
    groups = {name: {c: number(v) for c, v in g.items() if math.isfinite(number(v))}
              for name, g in groups.items()}  # a value that is not a finite number: no bar
    values = [v for g in groups.values() for v in g.values()]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    hi, lo = hi + (hi - lo) * 0.05, lo - (hi - lo) * 0.05 * (lo < 0)
    widest = max((text_width(c) for c in cats), default=0)
    rotate = 30 if len(cats) > 6 or widest > 50 * max(1, len(groups)) else 0
    width = max(400.0, min(1200.0, 50 * len(cats) * max(1, len(groups)) + 120))
    bottom = 40 + (widest * 0.5 if rotate else 0)
    first = text_width(cats[0]) * 0.87 if cats and rotate else 0  # a rotated first label reaches left of its bar
    ax = make_axes(width, 320 + bottom - 40, (-0.5, len(cats) - 0.5), (lo, hi), ylabel=ylabel, bottom=bottom,
                   left=first + 4 - 0.5 * (width - 80) / max(len(cats), 1))
    body = frame(ax, title, "", ylabel, xcats=list(enumerate(cats)), rotate=rotate, width=width)
    step = (ax.x(1) - ax.x(0)) if cats else 1.0
    w = 0.8 * step / max(1, len(groups))
    keys, drawn = [], []
    for k, (name, g) in enumerate(groups.items()):
        colour = PALETTE[k % len(PALETTE)]
        for i, c in enumerate(cats):
            if c not in g:
                continue
            v = g[c]
            x = ax.x(i) - 0.4 * step + k * w
            top, base = sorted((ax.y(v), ax.y(0)))
            body.append(f'<rect x="{num(x)}" y="{num(top)}" width="{num(w)}" height="{num(base - top)}" '
                        f'fill="{colour}"><title>{clean(f"{name} · {c}: {v:g}")}</title></rect>')
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
    """Counts (up to 20 labels; a cell as wide as its largest count), coloured by the share of each gold row, with
    a colour bar; over 20 labels colours only."""
    k = len(labels)
    counted = k <= 20
    matrix = np.nan_to_num(np.asarray(matrix, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    widest_count = max((text_width(f"{v:g}", 9) for v in matrix.flat), default=0) + 6
    # up to 20 labels a cell fits its count; more: about 560 px in all, labels as small as the rows
    cell = max(min(48.0, max(14.0, 320.0 / max(k, 1))), widest_count) if counted else max(6.0, 560.0 / k)
    size = min(11.0, cell * 0.9)
    widest = max((text_width(s, size) for s in labels), default=0)
    rotate = 45 if k > 3 or widest > cell - 4 else 0
    x0, y0 = 34 + widest, 30
    below = 44 + (widest * 0.71 if rotate else 0)
    width, height = max(x0 + k * cell + 90, text_width(title, 12) + 20), y0 + k * cell + below
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    body = [text(max(x0 + k * cell / 2, text_width(title, 12) / 2 + 6), 18, title, 12, extra=' font-weight="600"')]
    for i in range(k):
        for j in range(k):
            tip = f"<title>{clean(labels[i])} → {clean(labels[j])}: {matrix[i, j]:g}</title>" if counted else ""
            body.append(f'<rect x="{num(x0 + j * cell)}" y="{num(y0 + i * cell)}" width="{num(cell)}" '
                        f'height="{num(cell)}" fill="{_blue(share[i, j])}">{tip}</rect>')
            if counted:
                colour = "#fff" if share[i, j] > 0.6 else "#000"
                body.append(text(x0 + (j + 0.5) * cell, y0 + (i + 0.5) * cell + 3, f"{matrix[i, j]:g}", 9,
                                 extra=f' fill="{colour}"'))
        body.append(text(x0 - 5, y0 + (i + 0.5) * cell + size / 3, labels[i], size, anchor="end"))
        px, py = x0 + (i + 0.5) * cell, y0 + k * cell + 14
        extra = f' transform="rotate({-rotate} {num(px)} {num(py)})"' if rotate else ""
        body.append(text(px, py, labels[i], size, anchor="end" if rotate else "middle", extra=extra))
    body.append(text(x0 + k * cell / 2, height - 8, "predicted"))
    body.append(text(12, y0 + k * cell / 2, "gold", extra=f' transform="rotate(-90 12 {num(y0 + k * cell / 2)})"'))
    bx, bh = x0 + k * cell + 14, max(k * cell, 60.0)
    stops = "".join(f'<stop offset="{i / (len(BLUES) - 1):.3f}" stop-color="{c}"/>' for i, c in enumerate(BLUES))
    gid = f"blues-{next(IDS)}"  # ids are page-wide: one per chart
    body += [f'<defs><linearGradient id="{gid}" x1="0" y1="1" x2="0" y2="0">{stops}</linearGradient></defs>',
             f'<rect x="{num(bx)}" y="{y0}" width="12" height="{num(bh)}" fill="url(#{gid})" stroke="#999"/>',
             *(text(bx + 16, y0 + bh * (1 - t / 5) + 3, f"{t / 5:g}", 9, anchor="start") for t in range(6)),
             text(bx + 40, y0 + bh / 2, "share of gold row", 9,
                  extra=f' transform="rotate(-90 {num(bx + 40)} {num(y0 + bh / 2)})"')]
    return svg(width, height, body)


def curves(series: dict[str, tuple[np.ndarray, np.ndarray, float]], kind: str) -> str:
    """ROC (`kind="roc"`: FPR vs TPR with AUC) or precision-recall (`"pr"`: recall vs precision with AP)."""
    tag = "AUC" if kind == "roc" else "AP"
    labels = ("false positive rate", "true positive rate", "ROC") if kind == "roc" \
        else ("recall", "precision", "precision-recall")
    ax = make_axes(440, 380, (0, 1), (0, 1.02), ylabel=labels[1])
    body = frame(ax, labels[2], labels[0], labels[1], width=440)
    keys, drawn = [], []
    if kind == "roc":
        mark, drawn = _diagonal(ax)
        body.append(mark)
    for i, (name, (x, y, area)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        marks, near = polyline(ax, name, finite(x, y), colour, False, 1.3)
        body += marks
        drawn += near
        keys.append((f"{name} ({tag} {area:.3f})", colour, "line"))
    return svg(440, 380, body, legend(ax, keys, drawn))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> tuple[str, float]:
    """Reliability diagram (accuracy vs mean confidence per equal-width bin) and the expected calibration
    error ECE = sum over bins of (bin share) * |accuracy - confidence|."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    keep = np.isfinite(confidence)  # a row without a confidence is in no bin
    confidence, correct = confidence[keep], correct[keep]
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    acc, conf, count = np.zeros(bins), np.zeros(bins), np.bincount(idx, minlength=bins)
    for b in range(bins):
        if count[b]:
            acc[b], conf[b] = correct[idx == b].mean(), confidence[idx == b].mean()
    ece = float(np.sum(count / max(len(confidence), 1) * np.abs(acc - conf)))
    ax = make_axes(440, 380, (0, 1), (0, 1), ylabel="accuracy")
    body = frame(ax, f"reliability (ECE {ece:.3f})", "confidence", "accuracy", width=440)
    mark, drawn = _diagonal(ax)
    for b in range(bins):
        if count[b]:
            x0, x1, top = ax.x(edges[b]), ax.x(edges[b + 1]), ax.y(acc[b])
            body.append(f'<rect x="{num(x0)}" y="{num(top)}" width="{num(x1 - x0)}" height="{num(ax.y(0) - top)}"'
                        f' fill="{PALETTE[0]}" fill-opacity="0.7" stroke="#000" stroke-width="0.5">'
                        f"<title>{clean(f'{count[b]} rows, accuracy {acc[b]:.3f}, confidence {conf[b]:.3f}')}"
                        "</title></rect>")
            drawn += inside_rect(x0, top, x1 - x0, ax.y(0) - top)
    body.append(mark)
    keys = [("accuracy", PALETTE[0], "box"), ("perfect calibration", "grey", "dot")]
    return svg(440, 380, body, legend(ax, keys, drawn)), ece
