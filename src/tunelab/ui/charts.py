"""Line charts as inline SVG, drawn on the server: no JavaScript chart library, nothing fetched at install time."""

from __future__ import annotations

from html import escape

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def line_chart(series: dict[str, list[tuple[float, float]]], width: int = 640, height: int = 240,
               x_label: str = "step") -> str:
    """One SVG with a line per series (its own y scale when scales differ by > 10×, so loss and accuracy both
    show), axes with their ranges, a legend; `data-points` on each line counts its points (the UI test reads it)."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    left, right, top = 56, 12, 12
    bottom = 30 + 14 * len(series)  # the x range, then a legend row per series
    height += 14 * (len(series) - 1)
    w, h = width - left - right, height - top - bottom
    xs = [x for pts in series.values() for x, _ in pts]
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img">',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>',
             f'<text x="{left}" y="{top + h + 14}" font-size="11">{_fmt(x0)}</text>',
             f'<text x="{left + w}" y="{top + h + 14}" font-size="11" text-anchor="end">{_fmt(x1)}</text>',
             f'<text x="{left + w / 2}" y="{top + h + 14}" font-size="11" text-anchor="middle">'
             f'{escape(x_label)}</text>']
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        ys = [y for _, y in pts]
        y0, y1 = min(ys), max(ys)
        if y1 - y0 < 1e-12:
            y0, y1 = y0 - 0.5, y1 + 0.5
        coords = " ".join(f"{left + (x - x0) / (x1 - x0) * w:.1f},{top + (1 - (y - y0) / (y1 - y0)) * h:.1f}"
                          for x, y in pts)
        label = escape(name)
        parts.append(f'<polyline class="series" data-name="{label}" data-points="{len(pts)}" points="{coords}" '
                     f'fill="none" stroke="{colour}" stroke-width="1.8"/>')
        if len(pts) == 1:
            cx, cy = coords.split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
        last = pts[-1][1]
        parts.append(f'<text x="{left}" y="{top + h + 30 + 14 * i}" font-size="11" fill="{colour}">{label}: '
                     f'{_fmt(last)} (range {_fmt(y0)} – {_fmt(y1)})</text>')
    parts.append("</svg>")
    return "".join(parts)
