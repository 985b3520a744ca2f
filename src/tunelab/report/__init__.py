"""The HTML evaluation report (`RUN/report.html`, `tunelab eval --report`): see report/page.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from tunelab.data.readers import read_table
from tunelab.evaluation.records import evaluate_and_record
from tunelab.io import read_jsonl
from tunelab.report.page import build_report
from tunelab.tasks.base import Task
from tunelab.tasks.model_rows import model_examples

__all__ = ["build_report", "evaluation_report", "records_path", "write_run_report"]


def write_run_report(out_dir: Path, **objects: Any) -> Path | None:
    """`OUTPUT_DIR/report.html` for a finished run; a failure is one warning line on stderr, never an error
    (the trained model is already saved)."""
    try:
        return build_report(out_dir / "report.html", out_dir, **objects)
    except Exception as e:  # noqa: BLE001 - the report is a by-product of training
        print(f"report: {out_dir / 'report.html'} not written: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def records_path(report: Path) -> Path:
    """Where `tunelab eval --report PATH` writes the per-example records: `<PATH stem>.predictions.jsonl` beside it."""
    return report.with_name(f"{report.stem}.predictions.jsonl")


def evaluation_report(task: Task, model: torch.nn.Module, tokenizer: Any, model_dir: Path, data: Path, path: Path,
                      batch_size: int = 64) -> dict[str, Any]:
    """`tunelab eval MODEL_DIR --data F --report PATH`: score F, write its records next to the report
    (`<PATH stem>.predictions.jsonl`) and the report itself; returns the metrics. The training run's
    summary and curves are included when MODEL_DIR sits in a run directory."""
    examples = model_examples(task, read_table(data, task.txt_as_conll), labelled=True)
    records_file = records_path(path)
    split = data.stem
    metrics = evaluate_and_record(task, model, tokenizer, examples, batch_size, records_file)
    run_dir = model_dir.parent if (model_dir.parent / "config.yaml").is_file() else None
    records = {split: read_jsonl(records_file)} if records_file.is_file() else {}
    build_report(path, run_dir, title=f"tunelab evaluation: {model_dir} on {data.name}", task=task, model=model,
                 tokenizer=tokenizer, splits={split: examples}, records=records, metrics={split: metrics})
    return metrics
