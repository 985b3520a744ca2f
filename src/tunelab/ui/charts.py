"""The UI's curves, drawn on the server with tunelab.plots (no JavaScript chart library): the training loss and the
evaluation metrics as two charts side by side, since their scales differ, each titled with its latest values."""

from __future__ import annotations

from tunelab.plots import lines
from tunelab.plots.svg import text_width


def line_chart(series: dict[str, list[tuple[float, float]]], x_label: str = "step") -> str:
    """Loss series (names ending in `loss`) in one chart, the others in a second; `data-name` / `data-points` on
    each line name the series and count its points (the UI test reads them)."""
    series = {k: v for k, v in series.items() if v}
    groups = {"loss": {k: v for k, v in series.items() if k.endswith("loss")},
              "evaluation": {k: v for k, v in series.items() if not k.endswith("loss")}}
    out = []
    for title, group in groups.items():
        if group:
            latest = f"{title} (latest: " + ", ".join(f"{k} {pts[-1][1]:.4g}" for k, pts in group.items()) + ")"
            out.append(lines({k: ([x for x, _ in pts], [y for _, y in pts]) for k, pts in group.items()},
                             latest if text_width(latest, 12) < 480 else title, x_label, integer_x=True))
    return '<div class="charts">' + "".join(out) + "</div>" if out else ""
