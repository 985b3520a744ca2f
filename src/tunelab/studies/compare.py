"""Comparing finished runs (`tunelab compare RUN_DIR RUN_DIR ...`) on the same evaluation split.

Reads each run's `metrics.json` (final metrics), `metrics.jsonl` (training curves) and
`predictions/<split>.jsonl` (per-example records, tunelab.evaluation.records). The runs must have scored the same
examples (same count, and the same text and gold label at every index). Each run after the first is
tested against the first, on the paired per-example records:

- classification: McNemar's exact test — a two-sided binomial test on the discordant pairs (examples
  exactly one of the two runs gets right), p = 1 when there are none;
- other tasks: a paired bootstrap (seeded) of the difference in the task's headline over the resampled examples
  (`Task.paired_parts`: NER's corpus entity F1, sft's token-weighted loss; else the mean per-example `score`), with
  its percentile 95 % confidence interval; significant when the interval excludes 0. (A mean of per-sentence F1
  weighed a one-entity sentence as a ten-entity one and could disagree in sign with the F1 the table shows.)

Writes a plain-text report and a self-contained HTML page (report/compare.py); returns the same as JSON.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.table import Table as RichTable
from scipy.stats import binomtest

from tunelab.errors import ConfigError, TunelabError, first_line
from tunelab.io import read_json, read_jsonl, write_bytes_atomic
from tunelab.metrics import scalars
from tunelab.progress import table_console
from tunelab.registry import TASKS
from tunelab.report.compare import TRAIN_KEYS, metric_rows, render_html, significance_rows

_SAME = "runs must be scored on the same examples"


@dataclass
class Run:
    """One finished run directory, as compare reads it."""

    path: Path
    task: str
    metrics: dict[str, Any]  # metrics.json
    records: list[dict[str, Any]]  # predictions/<split>.jsonl
    log: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    name: str = ""


def _task_name(path: Path) -> str:
    cfg_path = path / "config.yaml"
    if cfg_path.is_file():
        try:
            tree = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except (ValueError, yaml.YAMLError) as exc:  # (not UTF-8: a ValueError)
            raise TunelabError(f"{cfg_path}: not a readable config ({first_line(exc)}); tunelab train writes it") \
                from None
        task = tree.get("task") if isinstance(tree, dict) else None
        name = task.get("name") if isinstance(task, dict) else task
        if isinstance(name, str):
            return name
    return "unknown"


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def load_run(path: Path, split: str) -> Run:
    """The run's final metrics, training log and `split` records; a one-line error naming the run when
    something is missing."""
    if not path.is_dir():
        raise TunelabError(f"{path}: not a directory")
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        raise TunelabError(f"{path}: not a finished run directory (no metrics.json)")
    metrics = read_json(metrics_path)  # not JSON: BrokenFileError, one line
    if not isinstance(metrics, dict):
        raise TunelabError(f"{metrics_path}: not a JSON object of splits but {_shown(metrics)}; tunelab train "
                           "writes it")
    if split not in metrics:
        have = ", ".join(k for k in metrics if k != "train") or "none"
        raise TunelabError(f"{path}: no {split} split in metrics.json (splits: {have})")
    for key, value in metrics.items():  # each split (and train): its metrics by name
        if not isinstance(value, dict):
            raise TunelabError(f"{metrics_path}: {key}: not a JSON object of metrics but {_shown(value)}; "
                               "tunelab train writes it")
    rec_path = path / "predictions" / f"{split}.jsonl"
    if not rec_path.is_file():
        raise TunelabError(f"{path}: no predictions/{split}.jsonl (per-example records); "
                           "train the run again with this tunelab version")
    records = read_jsonl(rec_path)
    for i, record in enumerate(records, start=1):  # what `significance` and the tables read of each
        if not isinstance(record, dict) or not {"correct", "score"} <= record.keys():
            raise TunelabError(f"{rec_path}:{i}: not an evaluation record (an object with correct and score: "
                               f"{_shown(record)}); tunelab train writes them")
    log = read_jsonl(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
    return Run(path, _task_name(path), metrics, records, log)


def check_same_examples(runs: list[Run], split: str) -> None:
    """Every run must have the first run's task and its examples: count, then text and gold per index."""
    first = runs[0]
    for run in runs[1:]:
        if run.task != first.task:
            raise TunelabError(f"{run.path}: task {run.task} differs from {first.path} (task {first.task})")
        if len(run.records) != len(first.records):
            raise TunelabError(f"{run.path}: {len(run.records)} {split} examples, {first.path} has "
                               f"{len(first.records)}; {_SAME}")
        for i, (a, b) in enumerate(zip(first.records, run.records, strict=True)):
            if a.get("text") != b.get("text") or a.get("gold") != b.get("gold"):
                raise TunelabError(f"{run.path}: {split} example {i} (text or gold) differs from {first.path}'s; "
                                   f"{_SAME}")


def mcnemar(first: list[bool], other: list[bool]) -> dict[str, Any]:
    """McNemar's exact test on paired correctness: binomial test of the discordant pairs against 1/2."""
    a, b = np.asarray(first, dtype=bool), np.asarray(other, dtype=bool)
    only_first, only_other = int((a & ~b).sum()), int((~a & b).sum())
    n = only_first + only_other
    p = 1.0 if n == 0 else float(binomtest(min(only_first, only_other), n, 0.5).pvalue)
    return {"test": "mcnemar_exact", "first_only_correct": only_first, "other_only_correct": only_other,
            "accuracy_difference": float(b.mean() - a.mean()) if len(a) else 0.0,
            "p_value": min(1.0, p), "significant": p < 0.05}


def _mean(sums: np.ndarray) -> np.ndarray:
    return sums[..., 0] / sums[..., 1]


def paired_bootstrap(first: Any, other: Any, resamples: int = 2000, seed: int = 0,
                     statistic: Callable[[np.ndarray], np.ndarray] | None = None, name: str = "mean score",
                     ) -> dict[str, Any]:
    """statistic(other) - statistic(first) with a percentile 95 % CI over seeded resamples of the examples (the same
    resampled examples for both runs). `first`, `other`: per-example scores [n] (the statistic: their mean), or
    per-example parts [n, c] whose column sums `statistic` turns into the task's headline."""
    a, b = np.asarray(first, dtype=float), np.asarray(other, dtype=float)
    if not len(a):
        raise TunelabError("compare: no examples to compare")
    if a.ndim == 1:
        a, b, statistic = np.stack([a, np.ones_like(a)], 1), np.stack([b, np.ones_like(b)], 1), _mean
    assert statistic is not None
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    chunk = max(1, 2_000_000 // a.size)  # bounded memory for large splits
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        idx = rng.integers(0, len(a), size=(k, len(a)))
        diffs[start:start + k] = statistic(b[idx].sum(axis=1)) - statistic(a[idx].sum(axis=1))
    lo, hi = (float(v) for v in np.percentile(diffs, [2.5, 97.5]))
    return {"test": "paired_bootstrap", "statistic": name, "difference": float(statistic(b.sum(0)) - statistic(
        a.sum(0))), "ci95": [lo, hi], "resamples": resamples, "seed": seed, "significant": not lo <= 0 <= hi}


def significance(first: Run, other: Run, resamples: int, seed: int) -> dict[str, Any]:
    """McNemar on paired correctness where the task's records are hard decisions (`Task.paired_test`), else a
    paired bootstrap of the per-example scores."""
    known = first.task in TASKS.names()
    hard = (TASKS.get(first.task).paired_test == "mcnemar" if known
            else bool(first.records) and "probs" in first.records[0])
    if hard:
        return mcnemar([r["correct"] for r in first.records], [r["correct"] for r in other.records])
    parts = TASKS.get(first.task).paired_parts if known else None
    if parts is None:
        return paired_bootstrap([r["score"] for r in first.records], [r["score"] for r in other.records],
                                resamples, seed)
    name, a, statistic = parts(first.records)
    return paired_bootstrap(a, parts(other.records)[1], resamples, seed, statistic, name)


def _names(paths: list[Path]) -> list[str]:
    """Directory names when they are unique, else the paths as given."""
    names = [p.name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def check_request(run_dirs: list[Path], resamples: int) -> None:
    """The arguments of a comparison, before anything is read."""
    if len(run_dirs) < 2:
        raise ConfigError("compare: pass at least two run directories")
    seen: dict[Path, Path] = {}
    for path in run_dirs:  # (each run tested against the first: one run twice is no comparison)
        if (first := seen.setdefault(path.resolve(), path)) is not path:
            raise ConfigError(f"compare: {first} and {path} are one run; compare different runs")
    if resamples < 100:
        raise ConfigError(f"compare: --resamples must be at least 100, got {resamples}")


def compare_runs(run_dirs: list[Path], split: str = "validation", resamples: int = 2000,
                 seed: int = 0) -> tuple[dict[str, Any], list[Run]]:
    """The comparison as a JSON-ready dict, and the runs read."""
    check_request(run_dirs, resamples)
    runs = [load_run(Path(d), split) for d in run_dirs]
    for run, name in zip(runs, _names([r.path for r in runs]), strict=True):
        run.name = name
    check_same_examples(runs, split)
    values = [scalars(r.metrics[split]) for r in runs]
    headline = next((k for k, v in values[0].items() if isinstance(v, float)), None)
    result = {
        "split": split, "examples": len(runs[0].records), "task": runs[0].task, "metric": headline,
        "baseline": str(runs[0].path),
        "runs": [{"name": r.name, "run_dir": str(r.path), "metrics": s,
                  "train": {k: r.metrics.get("train", {}).get(k) for k in TRAIN_KEYS}}
                 for r, s in zip(runs, values, strict=True)],
        "comparisons": [{"name": r.name, "run_dir": str(r.path), "baseline": runs[0].name,
                         **significance(runs[0], r, resamples, seed)} for r in runs[1:]],
    }
    return result, runs


def print_tables(result: dict[str, Any], file: Any = None, width: int = 140) -> None:
    """The metric table and the significance table (rich), on stderr by default."""
    console = table_console(file, width)
    table = RichTable(title=f"{result['split']}: {result['examples']} examples")
    table.add_column("metric")
    for r in result["runs"]:
        table.add_column(r["name"], justify="right")
    for name, cells in metric_rows(result):
        table.add_row(name, *cells)
    console.print(table)
    head, rows = significance_rows(result)
    sig = RichTable(title=f"significance vs {result['runs'][0]['name']}")
    for h in head:
        sig.add_column(h)
    for row in rows:
        sig.add_row(*row)
    console.print(sig)


def text_report(result: dict[str, Any]) -> str:
    """The tables as plain text (the .txt next to the HTML)."""
    buf = io.StringIO()
    buf.write(f"tunelab compare: {result['split']} split, {result['examples']} examples, task {result['task']}\n")
    for r in result["runs"]:
        buf.write(f"  {r['name']}: {r['run_dir']}\n")
    print_tables(result, file=buf, width=160)
    return buf.getvalue()


def output_paths(output: Path) -> tuple[Path, Path]:
    """`--output OUTPUT.html` and the OUTPUT.txt written beside it."""
    if output.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"compare: --output: expected an .html path, got {output}")
    return output, output.with_suffix(".txt")


def write_outputs(result: dict[str, Any], runs: list[Run], output: Path) -> dict[str, str]:
    """OUTPUT.html (self-contained) and OUTPUT.txt, each written atomically; returns their paths."""
    output, text_path = output_paths(output)
    write_bytes_atomic(output, render_html(result, runs).encode("utf-8"))
    write_bytes_atomic(text_path, text_report(result).encode("utf-8"))
    return {"html": str(output), "text": str(text_path)}
