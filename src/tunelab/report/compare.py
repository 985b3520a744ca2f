"""The `tunelab compare` HTML page: one file, no external assets (charts are base64 PNGs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunelab.evaluation.evaluate import format_value
from tunelab.html import table
from tunelab.plots import lines
from tunelab.report.templates import render_template

TRAIN_KEYS = ("steps", "loss", "wall_s")  # the training summary shown beside the metrics


def eval_series(runs: Sequence[Any], metric: str) -> tuple[dict[str, list[tuple[float, float]]],
                                                         dict[str, list[tuple[float, float]]]]:
    """Per run: (step, eval/<metric>) of the evaluations during training, and the final validation score."""
    steps, finals = {}, {}
    for r in runs:
        key = f"eval/{metric}"
        steps[r.name] = [(row["step"], row[key]) for row in r.log if isinstance(row.get(key), int | float)]
        finals[r.name] = [(row["step"], row[metric]) for row in r.log
                          if row.get("final") == "validation" and isinstance(row.get(metric), int | float)]
    return steps, finals


def loss_series(runs: Sequence[Any]) -> dict[str, list[tuple[float, float]]]:
    """Per run: (step, training loss) of the log steps."""
    return {r.name: [(row["step"], row["loss"]) for row in r.log
                     if "lr" in row and "final" not in row and isinstance(row.get("loss"), int | float)]
            for r in runs}


def _xy(series: dict[str, list[tuple[float, float]]]) -> dict[str, tuple[Sequence[float], Sequence[float]]]:
    """{name: [(x, y), ...]} as {name: (xs, ys)}, the form plots.lines takes."""
    return {name: (tuple(p[0] for p in pts), tuple(p[1] for p in pts)) for name, pts in series.items()}


def charts(result: dict[str, Any], runs: Sequence[Any]) -> list[tuple[str, str]]:
    """(caption, SVG chart) of the overlaid curves that have any points."""
    out = []
    metric = result["metric"]
    if metric:
        steps, finals = eval_series(runs, metric)
        if any(steps.values()) or any(finals.values()):
            out.append((f"validation {metric} by step", lines(
                _xy(steps), f"validation {metric} during training (★ final model)", "step", metric,
                finals=_xy(finals), integer_x=True)))
    losses = loss_series(runs)
    if any(losses.values()):
        out.append(("training loss by step", lines(_xy(losses), "training loss", "step", "loss", integer_x=True)))
    return out


def render_html(result: dict[str, Any], runs: Sequence[Any]) -> str:
    """The whole page: runs, metric table, significance table with how it was tested, curves."""
    names = [r["name"] for r in result["runs"]]
    head, rows = significance_rows(result)
    if mcnemar(result):
        how = ("McNemar's exact test on paired correctness: a two-sided binomial test (p = 1/2) on the examples "
               "exactly one of the two runs labels correctly.")
    else:
        c = result["comparisons"][0]
        how = (f"Paired bootstrap of the mean per-example score difference (run − baseline): {c['resamples']} "
               f"resamples of the examples, seed {c['seed']}, percentile 95 % interval.")
    return render_template("compare.html.j2", result=result, names=names, how=how, charts=charts(result, runs),
                           metric_table=table(["metric", *names], [[n, *cells] for n, cells in metric_rows(result)]),
                           significance_table=table(head, rows))


def mcnemar(result: dict[str, Any]) -> bool:
    """Whether the runs were tested by McNemar (hard decisions) rather than a paired bootstrap."""
    return bool(result["comparisons"]) and result["comparisons"][0]["test"] == "mcnemar_exact"


def metric_rows(result: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(metric, one formatted cell per run): the split's scalar metrics, then the training summary."""
    names = list(dict.fromkeys(k for r in result["runs"] for k in r["metrics"]))
    rows = [(n, [format_value(r["metrics"].get(n)) for r in result["runs"]]) for n in names]
    rows += [(f"train {k}", [format_value(r["train"].get(k)) for r in result["runs"]]) for k in TRAIN_KEYS]
    return rows


def significance_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per compared run."""
    if mcnemar(result):
        head = ["run", "vs", "test", "only baseline right", "only run right", "accuracy diff", "p-value", "p < 0.05"]
        rows = [[c["name"], c["baseline"], "McNemar exact", str(c["first_only_correct"]),
                 str(c["other_only_correct"]), f"{c['accuracy_difference']:+.4f}", f"{c['p_value']:.4g}",
                 "yes" if c["significant"] else "no"] for c in result["comparisons"]]
        return head, rows
    head = ["run", "vs", "test", "difference", "95% CI", "CI excludes 0"]
    rows = [[c["name"], c["baseline"], f"paired bootstrap ({c['resamples']})",
             f"{c.get('statistic', 'mean score')} {c.get('difference', c.get('mean_difference', 0.0)):+.4f}",
             f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", "yes" if c["significant"] else "no"]
            for c in result["comparisons"]]
    return head, rows
