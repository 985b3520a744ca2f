"""tunelab.plots: every chart is well-formed SVG whatever the numbers and labels (NaN, inf, None, zeros on a log
axis, huge and tiny magnitudes, control characters, markup), with tick labels that tell neighbours apart; long
series are thinned; a legend that would cover data sits beside the plot."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import numpy as np
import pytest

from tunelab import plots
from tunelab.html import chart

NAN, INF = float("nan"), float("inf")
NUMERIC = re.compile(r'(?:x|y|x1|y1|x2|y2|cx|cy|width|height|points)="([^"]*)"')


def _parsed(svg: str) -> ElementTree.Element:
    root = ElementTree.fromstring(svg)
    for values in NUMERIC.findall(svg):  # no NaN or inf ever reaches a coordinate
        assert not re.search(r"nan|inf", values, re.I), values
    return root


def _ticks(root: ElementTree.Element, anchor: str = "end") -> list[str]:
    return [t.text for t in root.iter("text") if t.get("text-anchor") == anchor and t.get("font-size") == "11"]


HOSTILE = {
    "nan inf none": lambda: plots.lines({"a": ([1, 2, 3, 4, None, 6, 7, 8], [1, 2, NAN, 4, 5, 6, INF, 8])}, "t", "x"),
    "log zeros": lambda: plots.lines({"a": ([1, 2, 3], [0, 0, 0])}, "t", "x", logy=True),
    "log empty": lambda: plots.lines({}, "t", "x", logx=True),
    "log vline negative": lambda: plots.lines({"a": ([1, 10], [1, 2])}, "t", "x", logx=True, vline=-1),
    "vline inf": lambda: plots.lines({"a": ([1, 10, 100], [1, 2, 3])}, "t", "x", vline=INF),
    "histogram vline nan": lambda: plots.histogram({"a": [1, 2, NAN, None]}, "t", "x", vline=NAN),
    "histogram empty": lambda: plots.histogram({}, "t", "x"),
    "bars none inf": lambda: plots.bars({"a": {"x": None, "y": INF, "z": 1}}, "t"),
    "bars zeros": lambda: plots.bars({"a": {"x": 0, "y": 0}}, "t"),
    "confusion nan": lambda: plots.confusion(np.array([[NAN, 1], [2, 3]]), ["a", "b"]),
    "confusion empty": lambda: plots.confusion(np.zeros((0, 0)), []),
    "curves empty": lambda: plots.curves({"a": (np.array([]), np.array([]), NAN)}, "roc"),
    "reliability nan": lambda: plots.reliability(np.array([0.2, NAN, 0.9]), np.array([1, 0, 1])),
    "markup and control characters": lambda: plots.bars(
        {"<script>alert(1)</script>": {"a&b\x1b": 1, '"q"': 2, "x]]>": 3}, "b": {"a&b\x1b": 2}}, "<t>&\x00"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_numbers_and_labels_give_well_formed_svg(name: str) -> None:
    out = HOSTILE[name]()
    svg = out[0] if isinstance(out, tuple) else out
    root = _parsed(svg)
    if name == "markup and control characters":
        texts = {t.text for t in root.iter("text")}
        assert "<t>&" in texts and "a&b" in texts and "<script>alert(1)</script>" in texts
    if name == "nan inf none":  # a point that cannot be drawn breaks the line: 1-2, 4, 6, 8
        assert [len(p.get("points").split()) for p in root.findall("polyline")] == [2, 1, 1, 1]
    # inlined with its alt text, still one well-formed element
    assert ElementTree.fromstring(chart(svg, 'the "alt" <x>')).find("title").text == 'the "alt" <x>'


@pytest.mark.parametrize(("ys", "want"), [
    ([1e6, 1e6 + 5, 1e6 + 10], "1,000,000"),  # a large offset: whole numbers with separators
    ([1e-13, 2e-13, 3e-13], "1.0e-13"),  # tiny: scientific, not all zero
    ([0.5, 0.5000002, 0.5000004], "0.5000000"),  # a small step: as many decimals as it needs
])
def test_tick_labels_tell_neighbours_apart(ys: list[float], want: str) -> None:
    labels = _ticks(_parsed(plots.lines({"a": ([1, 2, 3], ys)}, "t", "x")))
    assert len(labels) >= 3 and len(set(labels)) == len(labels) and want in labels, labels


def test_one_format_per_axis() -> None:
    from tunelab.plots.svg import tick_labels

    assert tick_labels([0, 0.25, 0.5, 0.75, 1.0]) == ["0", "0.25", "0.50", "0.75", "1.00"]
    assert tick_labels([6e-05, 8e-05, 1e-04]) == ["6.0e-05", "8.0e-05", "1.0e-04"]  # not 0.00010 beside 8e-05


def test_log_axis_ticks_are_powers_of_ten_and_thinned() -> None:
    labels = _ticks(_parsed(plots.lines({"a": ([1, 2], [1e-30, 1e30])}, "t", "x", logy=True)))
    assert 2 <= len(labels) <= 9 and all(label.startswith("10") for label in labels), labels


def test_a_long_series_is_thinned_and_still_counted() -> None:
    xs = np.arange(100_000)
    root = _parsed(plots.lines({"a": (xs, np.sin(xs / 500))}, "t", "x"))
    (line,) = root.findall("polyline")
    assert int(line.get("data-points")) == 100_000 and len(line.get("points").split()) < 4_000


def test_a_legend_that_would_cover_data_sits_beside_the_plot() -> None:
    xs = list(range(50))
    series = {f"s{k}": (xs, [(i * (k + 3)) % 7 for i in xs]) for k in range(4)}  # data in every corner
    root = _parsed(plots.lines(series, "t", "x"))
    plot_right = max(float(p) for line in root.findall("polyline") for p in line.get("points").replace(",", " ")
                     .split()[::2])
    (box,) = [r for r in root.findall("rect") if r.get("fill") == "#fff"]  # the legend's white box
    assert float(box.get("x")) > plot_right
    assert float(root.get("width")) > 520  # the chart widened for it
