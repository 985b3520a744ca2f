"""SVG building blocks for tunelab.plots: pixel axes with linear or log scales, round tick values, a frame with grid,
ticks, title and axis labels, a legend placed where it covers the fewest points, polylines, stars; text widths
estimated per character (CJK a full em) for layout, since the text is drawn by the reader's browser."""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Sequence
from html import escape

import numpy as np

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
BLUES = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
FONT = ("system-ui, -apple-system, 'Segoe UI', 'Noto Sans', 'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', "
        "'WenQuanYi Micro Hei', sans-serif")
IDS = itertools.count()
SIZE = 11  # px, tick labels; titles 12, legends and annotations 9


NARROW = set("iljtfrI.,:;'!|()[] ")


def text_width(text: str, size: float = SIZE) -> float:
    """About how wide `text` draws, in px: CJK and other wide characters a full em, capitals ~0.7, digits and
    lower case ~0.56, narrow letters and punctuation ~0.3 (the reader's font decides; this sizes margins)."""
    def em(c: str) -> float:
        if unicodedata.east_asian_width(c) in "WF":
            return 1.0
        if c in NARROW:
            return 0.32
        return 0.72 if c.isupper() or c in "mwMW@%" else 0.56
    return size * sum(em(c) for c in text)


def num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not allowed in XML: dropped from labels


def clean(s: str) -> str:
    """A user's text as SVG text or attribute: escaped, without the control characters XML does not allow."""
    return escape(CONTROL.sub("", str(s)))


def text(x: float, y: float, s: str, size: float = SIZE, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{num(x)}" y="{num(y)}" font-size="{size:g}" text-anchor="{anchor}"{extra}>{clean(s)}</text>'


def fit(s: str, width: float, size: float = SIZE) -> str:
    """`s`, cut with an ellipsis to about `width` px."""
    if text_width(s, size) <= width:
        return s
    while s and text_width(s + "…", size) > width:
        s = s[:-1]
    return s + "…"


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def tick_labels(ticks: Sequence[float], log: bool = False) -> list[str]:
    """One format for all of an axis's ticks, with the digits that tell neighbours apart: powers of ten as 10⁴ on a
    log axis; `1,000,002` for large whole steps; scientific (`6.0e-05`) for tiny or huge values; otherwise as many
    decimals as the step needs (0.25 as 0.25)."""
    if log:
        out = []
        for v in ticks:
            e = round(math.log10(v)) if v > 0 else 0
            far = v > 0 and abs(v - 10.0 ** e) <= 1e-9 * v and not -2 <= e <= 3
            out.append("10" + str(e).translate(SUPERSCRIPT) if far else f"{v:g}")
        return out
    step = min((b - a for a, b in zip(ticks, ticks[1:], strict=False)), default=0.0) or 1.0
    mag = max((abs(v) for v in ticks), default=0.0)
    if mag >= 1e6 and step >= 1 and mag < 1e12:
        return [f"{v:,.0f}" for v in ticks]
    if mag >= 1e6 or 0 < mag < 1e-3:
        digits = max(1, math.ceil(math.log10(mag / step)) + 1)
        return [f"{v:.{digits - 1}e}" if v else "0" for v in ticks]
    decimals = next((d for d in range(13) if abs(round(step, d) - step) <= 1e-9 * step), 12)
    return [f"{v:.{decimals}f}" if v else "0" for v in ticks]


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About `n` round tick values (steps of 1, 2, 2.5 or 5 × 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else [0.0]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.9)
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.ceil(lo / step - 1e-9) * step
    digits = max(0, 3 - math.floor(math.log10(step)))  # rounding relative to the step, not to 1e-12
    return [round(first + i * step, digits) for i in range(int((hi - first) / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten in [lo, hi] (every k-th when there are over 8); within one decade 1-2-5 multiples; within
    less, round linear steps."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [10.0 ** e for e in range(a, b + 1) if lo <= 10.0 ** e <= hi]
    if len(ticks) > 8:
        ticks = ticks[::math.ceil(len(ticks) / 8)]
    if len(ticks) < 2:
        ticks = [m * 10.0 ** e for e in range(a, b + 1) for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi]
    if len(ticks) < 2:
        ticks = [v for v in nice_ticks(lo, hi, 4) if v > 0]
    return ticks or [lo]


class Axes:
    """A plot area in pixels and the data ranges it shows; `x()` / `y()` map data to pixels (log scales too)."""

    def __init__(self, box: tuple[float, float, float, float], xr: tuple[float, float], yr: tuple[float, float],
                 logx: bool = False, logy: bool = False) -> None:
        self.box, self.logx, self.logy = box, logx, logy
        self.xr, self.yr = span(xr, logx), span(yr, logy)
        self.xticks: list[tuple[float, str]] = []
        self.yticks: list[tuple[float, str]] = []

    def _map(self, v: float, r: tuple[float, float], log: bool, a: float, b: float) -> float:
        f = (math.log10(v) - math.log10(r[0])) / (math.log10(r[1]) - math.log10(r[0])) if log \
            else (v - r[0]) / (r[1] - r[0])
        return a + f * (b - a)

    def x(self, v: float) -> float:
        return self._map(v, self.xr, self.logx, self.box[0], self.box[2])

    def y(self, v: float) -> float:
        return self._map(v, self.yr, self.logy, self.box[3], self.box[1])

    def inside(self, x: float, y: float) -> bool:
        ok = all(map(math.isfinite, (x, y)))
        return ok and (not self.logx or x > 0) and (not self.logy or y > 0)


def span(r: tuple[float, float], log: bool) -> tuple[float, float]:
    """A range to draw: (0, 1) / (1, 10) for one that is not finite (or not positive on a log axis), a range around
    a single value."""
    lo, hi = r
    if not (math.isfinite(lo) and math.isfinite(hi)) or (log and (lo <= 0 or hi <= 0)):
        lo, hi = (1.0, 10.0) if log else (0.0, 1.0)
    if hi <= lo:  # one value: a range around it
        lo, hi = (lo / 2, lo * 2) if log else (lo - (abs(lo) or 1) * 0.5, lo + (abs(lo) or 1) * 0.5)
    return lo, hi


def padded(r: tuple[float, float], log: bool, share: float) -> tuple[float, float]:
    """A data range widened by `share` of its span on each side (a factor on a log axis), as matplotlib's margins."""
    lo, hi = r
    if hi <= lo or not (math.isfinite(lo) and math.isfinite(hi)) or (log and lo <= 0):
        return r
    if log:
        f = (hi / lo) ** share
        return lo / f, hi * f
    return lo - (hi - lo) * share, hi + (hi - lo) * share


def make_axes(width: float, height: float, xr: tuple[float, float], yr: tuple[float, float], *, logx: bool = False,
              logy: bool = False, ylabel: str = "", bottom: float = 40, left: float = 0, integer_x: bool = False,
              integer_y: bool = False) -> Axes:
    """Axes whose margins fit their tick labels: the widest y label on the left (at least `left`), half the last x
    label on the right, `bottom` below."""
    xr, yr = span(xr, logx), span(yr, logy)
    yt = log_ticks(*yr) if logy else nice_ticks(*yr, integer=integer_y)
    xt = log_ticks(*xr) if logx else nice_ticks(*xr, integer=integer_x)
    ylabels, xlabels = tick_labels(yt, logy), tick_labels(xt, logx)
    left = max(left, 14 + max((text_width(s) for s in ylabels), default=10) + (18 if ylabel else 0))
    right = max(12.0, text_width(xlabels[-1]) / 2 + 4) if xlabels else 12.0
    ax = Axes((left, 26, width - right, height - bottom), xr, yr, logx, logy)
    ax.xticks, ax.yticks = list(zip(xt, xlabels, strict=True)), list(zip(yt, ylabels, strict=True))
    return ax


def frame(ax: Axes, title: str, xlabel: str, ylabel: str, *, xcats: Sequence[tuple[float, str]] | None = None,
          rotate: int = 0, width: float = 0) -> list[str]:
    """Grid, left and bottom axis lines, ticks and their labels (the axes', or `xcats` under categories), the title
    (cut to `width` px when given) and axis labels."""
    x0, y0, x1, y1 = ax.box
    out = []
    for v, label in ax.yticks:
        p = ax.y(v)
        out.append(f'<line x1="{num(x0)}" y1="{num(p)}" x2="{num(x1)}" y2="{num(p)}" stroke="#000" '
                   f'stroke-opacity="0.08"/>')
        out.append(text(x0 - 5, p + 4, label, anchor="end"))
    if xcats is None:
        xcats = ax.xticks
        for v, _ in xcats:
            out.append(f'<line x1="{num(ax.x(v))}" y1="{num(y0)}" x2="{num(ax.x(v))}" y2="{num(y1)}" '
                       f'stroke="#000" stroke-opacity="0.08"/>')
    for v, s in xcats:
        p = ax.x(v)
        out.append(f'<line x1="{num(p)}" y1="{num(y1)}" x2="{num(p)}" y2="{num(y1 + 4)}" stroke="#333"/>')
        extra = f' transform="rotate({-rotate} {num(p)} {num(y1 + 14)})"' if rotate else ""
        out.append(text(p, y1 + 14, s, anchor="end" if rotate else "middle", extra=extra))
    out.append(f'<path d="M{num(x0)},{num(y0)}V{num(y1)}H{num(x1)}" fill="none" stroke="#333"/>')
    middle = (x0 + x1) / 2
    room = 2 * min(middle, (width or x1 + 12) - middle) - 8
    out.append(text(middle, 16, fit(title, room, 12), 12, extra=' font-weight="600"'))
    if xlabel:
        out.append(text((x0 + x1) / 2, y1 + 30 + (rotated_height(xcats, rotate) if rotate else 0), xlabel))
    if ylabel:
        out.append(text(13, (y0 + y1) / 2, ylabel, extra=f' transform="rotate(-90 13 {num((y0 + y1) / 2)})"'))
    return out


def rotated_height(cats: Sequence[tuple[float, str]], rotate: int) -> float:
    return max((text_width(s) for _, s in cats), default=0) * math.sin(math.radians(rotate))


def legend(ax: Axes, items: Sequence[tuple[str, str, str]], avoid: Sequence[tuple[float, float]] = (),
           ) -> tuple[list[str], float]:
    """Entries (label, colour, kind: line / box / star / dash / dot) in a white box, and its right edge in px: at the
    corner of the plot that covers the fewest of the `avoid` pixel points (the upper right when none does); beside
    the plot, on its right, when every corner would cover some (the chart is then that much
    wider)."""
    if not items:
        return [], 0.0
    w = 28 + max(text_width(label, 9) for label, _, _ in items)
    h = 6 + 13 * len(items)
    x0, y0, x1, y1 = ax.box

    def corner(name: str) -> tuple[float, float]:
        if name == "outside":
            return x1 + 10, y0
        return (x1 - w - 4 if "right" in name else x0 + 4, y0 + 4 if "upper" in name else y1 - h - 4)

    def covered(name: str) -> int:
        cx, cy = corner(name)
        return sum(cx - 3 <= px <= cx + w + 3 and cy - 3 <= py <= cy + h + 3 for px, py in avoid)

    best = min(("upper right", "upper left", "lower right", "lower left"), key=covered)
    if covered(best):
        best = "outside"
    x, y = corner(best)
    out = [f'<rect x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{h}" fill="#fff" fill-opacity="0.85" '
           f'stroke="#ccc"/>']
    for i, (label, colour, kind) in enumerate(items):
        cy = y + 10 + 13 * i
        if kind == "box":
            out.append(f'<rect x="{num(x + 5)}" y="{num(cy - 4)}" width="14" height="8" fill="{colour}" '
                       f'fill-opacity="0.7"/>')
        elif kind == "star":
            out.append(star(x + 12, cy, 5, colour))
        else:
            dash = {"dash": ' stroke-dasharray="4 3"', "dot": ' stroke-dasharray="1.5 2"'}.get(kind, "")
            out.append(f'<line x1="{num(x + 4)}" y1="{num(cy)}" x2="{num(x + 20)}" y2="{num(cy)}" '
                       f'stroke="{colour}" stroke-width="1.5"{dash}/>')
        out.append(text(x + 24, cy + 3, label, 9, anchor="start"))
    return out, x + w


def along(points: Sequence[tuple[float, float]], every: float = 6.0) -> list[tuple[float, float]]:
    """Pixel points every ~`every` px along a polyline (what a legend should not cover)."""
    out = list(points[:1])
    for (ax_, ay), (bx, by) in zip(points, points[1:], strict=False):
        k = max(1, int(math.hypot(bx - ax_, by - ay) / every))
        out += [(ax_ + (bx - ax_) * i / k, ay + (by - ay) * i / k) for i in range(1, k + 1)]
    return out


def inside_rect(x: float, y: float, w: float, h: float, every: float = 6.0) -> list[tuple[float, float]]:
    """Pixel points on a grid over a rectangle (a bar)."""
    return [(x + w * i / max(1, int(w / every)), y + h * j / max(1, int(h / every)))
            for i in range(max(1, int(w / every)) + 1) for j in range(max(1, int(h / every)) + 1)]


def star(x: float, y: float, r: float, colour: str) -> str:
    pts = [(x + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
            y - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
    return f'<polygon points="{" ".join(f"{num(a)},{num(b)}" for a, b in pts)}" fill="{colour}"/>'


def svg(width: float, height: float, body: Sequence[str], key: tuple[list[str], float] | None = None) -> str:
    """The `<svg>` element of a chart: its marks, then the legend (`key`: `legend`'s parts and right edge, which
    widens the chart when the legend sits beside the plot)."""
    parts, right = key or ([], 0.0)
    width = max(width, right + 8)
    body = [*body, *parts]
    return (f'<svg class="chart" width="{num(width)}" height="{num(height)}" '
            f'viewBox="0 0 {num(width)} {num(height)}" font-family="{escape(FONT)}" fill="#222">'
            + "".join(body) + "</svg>")


def svg_document(svg: str) -> str:
    """A chart as a standalone .svg file's text."""
    tagged = svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)  # inline SVG in HTML needs none
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + tagged + "\n"


def number(v: object) -> float:
    """A value as a float; NaN for what is not a number (None, a text, a bool)."""
    return float(v) if isinstance(v, int | float | np.number) and not isinstance(v, bool) else math.nan


def finite(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    """(x, y) pairs as floats; a value that is not a number (None) becomes NaN, which breaks a line there."""
    return [(number(x), number(y)) for x, y in zip(xs, ys, strict=False)]


def thinned(seg: list[tuple[float, float]], px: float = 1.0) -> list[tuple[float, float]]:
    """A long pixel polyline cut to what shows: per `px`-wide column its first, lowest, highest and last point, in
    order (a 100,000-point curve draws the same with a few thousand)."""
    if len(seg) < 2000:
        return seg
    out: list[tuple[float, float]] = []
    for _, group in itertools.groupby(seg, key=lambda p: int(p[0] / px)):
        col = list(group)
        keep = {0, len(col) - 1, min(range(len(col)), key=lambda i: col[i][1]),
                max(range(len(col)), key=lambda i: col[i][1])}
        out += [col[i] for i in sorted(keep)]
    return out


def polyline(ax: Axes, name: str, points: Sequence[tuple[float, float]], colour: str, markers: bool,
             width: float = 1.4) -> tuple[list[str], list[tuple[float, float]]]:
    """A series as polylines (a point that cannot be drawn breaks the line; a long one `thinned`), each with
    `data-name` and `data-points` (the series' point count), a dot per point with `markers`; and pixel points along
    them (what a legend should not cover)."""
    segments: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if ax.inside(x, y):
            segments[-1].append((ax.x(x), ax.y(y)))
        elif segments[-1]:
            segments.append([])
    out: list[str] = []
    drawn: list[tuple[float, float]] = []
    for seg in map(thinned, filter(None, segments)):
        out.append(f'<polyline points="{" ".join(f"{num(a)},{num(b)}" for a, b in seg)}" fill="none" '
                   f'stroke="{colour}" stroke-width="{width:g}" data-name="{clean(name)}" '
                   f'data-points="{len(points)}"/>')
        if markers or len(seg) == 1:
            out += [f'<circle cx="{num(a)}" cy="{num(b)}" r="2.5" fill="{colour}"/>' for a, b in seg]
        drawn += along(seg if len(seg) < 400 else seg[::len(seg) // 200])
    return out, drawn


