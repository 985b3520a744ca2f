"""Learning curves (`tunelab curve`): the same run trained on growing, seeded fractions of data.train.

    data.* ─► load_splits (read, clean, dedup; the normal run's validation hold-out, same seed)
    validation fixed: data.validation, or the held-out rows written ONCE to OUTPUT_DIR/curve/validation.jsonl
    OUTPUT_DIR/curve/frac-F/train.jsonl   a seeded subset of the remaining training rows (stratified by label
                                          for single-label classification; smaller fractions are subsets of
                                          larger ones), each row the original row with all its fields
    OUTPUT_DIR/curve/frac-F/              pipeline.run with data.train (and data.validation) pointing there
    OUTPUT_DIR/curve/curve.json           {"metric", "points": [{"fraction", "rows", "value", "run_dir"}]}
    OUTPUT_DIR/curve/curve.svg            validation headline metric against training rows

Validation rows never reach a fraction's training file: they are held out before any subsampling.
"""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from rich.table import Table as RichTable

from tunelab.config.run import RunConfig
from tunelab.data.load import load_splits
from tunelab.errors import ConfigError
from tunelab.io import make_dirs, write_json_atomic, write_text_atomic
from tunelab.pipeline import run
from tunelab.plots import lines, svg_document
from tunelab.progress import table_console
from tunelab.registry import TASKS
from tunelab.studies.cv import sub_run_config, write_rows
from tunelab.studies.tune import metric_value


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_fractions(text: str) -> list[float]:
    """`0.1,0.3,1` → [0.1, 0.3, 1.0]: each in (0, 1], sorted, duplicates removed."""
    out = set()
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"curve: --fractions: {part!r} is not a number") from None
        if not 0 < value <= 1:
            raise ConfigError(f"curve: --fractions: {part} is not in (0, 1]")
        out.add(value)
    if not out:
        raise ConfigError("curve: --fractions: give at least one fraction, e.g. 0.1,0.3,1")
    return sorted(out)


def nested_subsets(keys: list[Hashable | None], fractions: list[float], seed: int) -> dict[float, list[int]]:
    """Indices kept per fraction, in input order. Rows are grouped by key (one group when keys are None),
    each group is shuffled once (seeded) and keeps its first round(fraction · size) rows, at least one, so
    every class stays present and a smaller fraction's rows are a subset of a larger one's."""
    groups: dict[Hashable | None, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    rng = random.Random(seed)
    orders = {k: rng.sample(members, len(members)) for k, members in groups.items()}
    return {f: sorted(i for order in orders.values() for i in order[:max(1, round(f * len(order)))])
            for f in fractions}


def _headline(metrics: dict[str, Any]) -> tuple[str, float]:
    return metric_value(metrics, None)


def run_curve(cfg: RunConfig, fractions: list[float]) -> dict[str, Any]:
    """Train one run per fraction; returns (and writes to OUTPUT_DIR/curve/curve.json, with curve.svg) the
    validation headline metric at each fraction."""
    root = make_dirs(Path(cfg.output_dir) / "curve", "output_dir")
    task = TASKS.get(cfg.task.name)(cfg.task, cfg.data)
    splits = load_splits(cfg.data, task, cfg.train.seed)  # the hold-out a normal run with this seed makes
    if "validation" not in splits:
        raise ConfigError("curve: needs a validation split: set data.validation or data.validation_split > 0")
    validation = cfg.data.validation
    if not validation:
        validation = str(root / "validation.jsonl")
        write_rows(Path(validation), splits["validation"])
    rows = splits["train"]
    keys = [task.stratify_key(ex) for ex in rows]
    stratified = all(k is not None and not isinstance(k, tuple) for k in keys)  # tuple: multi-label
    subsets = nested_subsets(keys if stratified else [None] * len(rows), fractions, cfg.train.seed)
    _say(f"curve: {len(rows)} training rows, {len(splits['validation'])} validation rows ({validation}), "
         f"fractions {', '.join(f'{f:g}' for f in fractions)} "
         f"({'stratified by label' if stratified else 'not stratified'}), seed {cfg.train.seed} → {root}")
    points, metric = [], None
    for f in fractions:
        out = make_dirs(root / f"frac-{f:g}", "output_dir")
        write_rows(out / "train.jsonl", [rows[i] for i in subsets[f]])
        _say(f"curve: fraction {f:g}: {len(subsets[f])} training rows → {out}")
        metrics = run(sub_run_config(cfg, out, train=str(out / "train.jsonl"), validation=validation),
                      overwrite=True)  # the study owns its sub-run directories
        metric, value = _headline(metrics["validation"])
        points.append({"fraction": f, "rows": len(subsets[f]), "value": value, "run_dir": str(out)})
    result = {"metric": metric, "split": "validation", "seed": cfg.train.seed, "train_rows": len(rows),
              "validation_rows": len(splits["validation"]), "stratified": stratified, "points": points}
    write_json_atomic(root / "curve.json", result)
    plot_curve(result, root / "curve.svg")
    return result


def plot_curve(result: dict[str, Any], path: Path) -> None:
    """curve.svg: the metric against training rows, each point labelled with its fraction."""
    rows = [p["rows"] for p in result["points"]]
    svg = lines({result["metric"]: (rows, [p["value"] for p in result["points"]])},
                f"learning curve: validation {result['metric']}", "training rows", result["metric"], markers=True,
                logx=min(rows) * 10 <= max(rows),
                annotate={result["metric"]: [f"{p['fraction']:g}" for p in result["points"]]})
    write_text_atomic(path, svg_document(svg))


def print_curve(result: dict[str, Any]) -> None:
    table = RichTable(title=f"learning curve: validation {result['metric']}")
    for col in ("fraction", "rows", result["metric"], "run"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for p in result["points"]:
        table.add_row(f"{p['fraction']:g}", str(p["rows"]), f"{p['value']:.4f}", p["run_dir"])
    table_console(width=140).print(table)
