"""Charts for reports and study pages: matplotlib figures (no pyplot state) returned as PNG bytes, and PNGs as
base64 data URIs. Chinese labels use an installed CJK font."""

from __future__ import annotations

import base64
import io
import re
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans SC", "Source Han Sans SC",
             "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback", "AR PL UMing CN",
             "AR PL UKai CN", "AR PL UMing TW", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC")


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The first installed font family able to draw Chinese, or None."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = next((name for name in CJK_FONTS if name in installed), None)
    if found is None:  # matplotlib's font cache predates the font's installation: look at the files
        pattern = re.compile(r"wqy|cjk|droidsansfallback|uming|ukai|notosans(sc|tc)|sourcehansans", re.I)
        for path in font_manager.findSystemFonts():
            if pattern.search(Path(path).name):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        installed = {f.name for f in font_manager.fontManager.ttflist}
        found = next((name for name in CJK_FONTS if name in installed), None)
    return found


@contextmanager
def _style() -> Any:
    """A CJK font first in the fallback list when one exists, and no missing-glyph warnings
    (without a CJK font Chinese characters draw as boxes)."""
    families = [f for f in (cjk_font(), "DejaVu Sans") if f]
    with matplotlib.rc_context({"font.family": "sans-serif", "font.sans-serif": families, "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100}), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        warnings.filterwarnings("ignore", message=r".*findfont.*")
        yield _Figures()


class _Figures:
    """`subplots(figsize=...)` -> (figure, axes) on the Agg canvas, without pyplot's global state."""

    @staticmethod
    def subplots(figsize: tuple[float, float]) -> tuple[Any, Any]:
        fig = Figure(figsize=figsize)
        return fig, fig.subplots()


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str = "",
          markers: bool = False, vline: float | None = None, logy: bool = False, *, logx: bool = False,
          finals: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
          annotate: dict[str, Sequence[str]] | None = None, integer_x: bool = False) -> bytes:
    """One line per named (xs, ys) series; `finals` adds unconnected star points per name (same colour),
    `annotate` a text label at each point of a series, `vline` a dashed vertical line; `integer_x`: whole-number
    ticks (steps)."""
    with _style() as plt:
        fig, ax = plt.subplots(figsize=(5.2, 3.2))
        for i, name in enumerate(dict.fromkeys([*series, *(finals or {})])):
            colour = f"C{i % 10}"
            x, y = series.get(name) or ((), ())
            if len(x):
                ax.plot(x, y, marker="o" if markers or len(x) <= 20 else None, ms=3, lw=1.4, label=name, color=colour)
                for px, py, text in zip(x, y, (annotate or {}).get(name, []), strict=False):
                    ax.annotate(text, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
            fx, fy = (finals or {}).get(name) or ((), ())
            if len(fx):
                ax.scatter(fx, fy, marker="*", s=80, color=colour, label=None if len(x) else f"{name} (final)")
        if vline is not None:
            ax.axvline(vline, color="grey", ls="--", lw=1)
        if logx:
            ax.set_xscale("log")
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if logy:
            ax.set_yscale("log")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if len(series) > 1 or finals:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        return _png(fig)


def data_uri(png: bytes) -> str:
    """A PNG as an `<img src=...>` value that needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def histogram(values: dict[str, Sequence[float]], title: str, xlabel: str, vline: float | None = None,
              vlabel: str = "", bins: int = 40) -> bytes:
    """Overlaid histograms per named sample, with an optional vertical marker (e.g. max_length)."""
    with _style() as plt:
        fig, ax = plt.subplots(figsize=(5.2, 3.2))
        every = [v for vs in values.values() for v in vs]
        edges = np.histogram_bin_edges(every or [0], bins=bins)
        for name, vs in values.items():
            ax.hist(vs, bins=edges, alpha=0.55, label=name)
        if vline is not None:
            ax.axvline(vline, color="crimson", ls="--", lw=1.2, label=vlabel or None)
        ax.set(title=title, xlabel=xlabel, ylabel="rows")
        ax.legend(fontsize=7)
        return _png(fig)


def bars(groups: dict[str, dict[str, float]], title: str, ylabel: str = "") -> bytes:
    """Grouped bars: one group per category, one bar per series ({series: {category: value}})."""
    with _style() as plt:
        cats = list(dict.fromkeys(c for g in groups.values() for c in g))
        fig, ax = plt.subplots(figsize=(max(4.0, min(12.0, 0.5 * len(cats) * max(1, len(groups)) + 2)), 3.2))
        width = 0.8 / max(1, len(groups))
        x = np.arange(len(cats))
        for k, (name, g) in enumerate(groups.items()):
            ax.bar(x + k * width - 0.4 + width / 2, [g.get(c, 0) for c in cats], width, label=name)
        ax.set_xticks(x, cats, rotation=30 if len(cats) > 6 else 0, ha="right" if len(cats) > 6 else "center")
        ax.set(title=title, ylabel=ylabel)
        if len(groups) > 1:
            ax.legend(fontsize=7)
        return _png(fig)


def confusion(matrix: np.ndarray, labels: Sequence[str], title: str = "confusion matrix") -> bytes:
    """Counts, coloured by the share of each gold row."""
    with _style() as plt:
        k = len(labels)
        size = min(9.0, 2.5 + 0.45 * k)
        fig, ax = plt.subplots(figsize=(size + 0.8, size))
        share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), labels, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
        ax.set_yticks(range(k), labels)
        ax.set(xlabel="predicted", ylabel="gold", title=title)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.6 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
        return _png(fig)


def curves(series: dict[str, tuple[np.ndarray, np.ndarray, float]], kind: str) -> bytes:
    """ROC (`kind="roc"`: FPR vs TPR with AUC) or precision-recall (`"pr"`: recall vs precision with AP)."""
    with _style() as plt:
        fig, ax = plt.subplots(figsize=(4.4, 3.8))
        tag = "AUC" if kind == "roc" else "AP"
        for name, (x, y, area) in series.items():
            ax.plot(x, y, lw=1.3, label=f"{name} ({tag} {area:.3f})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        else:
            ax.set(xlabel="recall", ylabel="precision", title="precision-recall")
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=6, loc="lower right" if kind == "roc" else "lower left")
        return _png(fig)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> tuple[bytes, float]:
    """Reliability diagram (accuracy vs mean confidence per equal-width bin) and the expected calibration
    error ECE = sum over bins of (bin share) * |accuracy - confidence|."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    acc, conf, count = np.zeros(bins), np.zeros(bins), np.bincount(idx, minlength=bins)
    for b in range(bins):
        if count[b]:
            acc[b], conf[b] = correct[idx == b].mean(), confidence[idx == b].mean()
    ece = float(np.sum(count / max(len(confidence), 1) * np.abs(acc - conf)))
    with _style() as plt:
        fig, ax = plt.subplots(figsize=(4.4, 3.8))
        mids = (edges[:-1] + edges[1:]) / 2
        used = count > 0
        ax.bar(mids[used], acc[used], width=1 / bins, edgecolor="black", lw=0.5, alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"reliability (ECE {ece:.3f})")
        ax.legend(fontsize=7, loc="upper left")
        return _png(fig), ece
