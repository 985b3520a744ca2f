"""The UI's curves, drawn on the server with tunelab.plots (no JavaScript chart library): charts side by side, one per
scale, so a loss, the metrics in [0, 1] and any other quantity (a perplexity) each keep a readable axis; each chart
is titled with its series' latest values when they fit."""

from __future__ import annotations

from collections.abc import Callable

from tunelab.plots import lines
from tunelab.plots.svg import text_width

Series = dict[str, list[tuple[float, float]]]


def _groups(series: Series) -> dict[str, Series]:
    """{title: series}: losses, metrics whose values all lie in [0, 1], then every other metric in a chart of its
    own; a row count (`eval/n`) is not a curve. A series is named by its metric (`eval/accuracy`), or on the compare
    page by its run and metric (`run-a eval/accuracy`): the same metric of two runs shares a chart."""
    def metric(name: str) -> str:
        return name.rsplit(" ", 1)[-1]  # run names may hold spaces; metric names do not

    unit = {metric(n) for n in series} - {metric(n) for n, pts in series.items()
                                           if any(not 0.0 <= y <= 1.0 for _, y in pts)}
    out: dict[str, Series] = {"loss": {}, "evaluation": {}}
    for name, pts in series.items():
        key = metric(name)
        if not pts or key.rsplit("/", 1)[-1] == "n":
            continue
        title = "loss" if key.endswith("loss") else "evaluation" if key in unit else key
        out.setdefault(title, {})[name] = pts
    return {title: group for title, group in out.items() if group}


def line_chart(series: Series, t: Callable[[str], str] = str) -> str:
    """The charts of `_groups`, their words in the page's language (`t`: ui.i18n's translator; a metric's own name is
    kept); `data-name` / `data-points` on each line name the series and count its points (the UI test reads them)."""
    out = []
    for title, group in _groups(series).items():
        shown = t(title) if title in ("loss", "evaluation") else title
        latest = f"{shown} ({t('latest')}: " + ", ".join(f"{k} {pts[-1][1]:.4g}" for k, pts in group.items()) + ")"
        out.append(lines({k: ([x for x, _ in pts], [y for _, y in pts]) for k, pts in group.items()},
                         latest if text_width(latest, 12) < 480 else shown, t("step"), integer_x=True))
    return '<div class="charts">' + "".join(out) + "</div>" if out else ""
