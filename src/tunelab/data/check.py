"""`tunelab data check`: what a data file holds before you train on it."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import numpy as np

from tunelab.config import DataConfig, apply_override, format_validation_error, parse_overrides
from tunelab.data.readers import read_table
from tunelab.errors import ConfigError


def _configs(task_name: str, overrides: list[str]) -> tuple[Any, DataConfig]:
    from pydantic import ValidationError

    from tunelab.config import run_config_class
    from tunelab.tasks import TASKS

    run_config_class()
    tree: dict[str, Any] = {}
    for keys, value in parse_overrides(overrides):
        apply_override(tree, keys, value)
    unknown = set(tree) - {"data", "task"}
    if unknown:
        raise ConfigError(f"config: {sorted(unknown)[0]}: data check takes only data.* and task.* keys")
    cls = TASKS.get(task_name)
    try:
        task_cfg = cls.Config(**{**tree.get("task", {}), "name": task_name})
        data_cfg = DataConfig(**tree.get("data", {}))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, set())) from None
    return cls(task_cfg, data_cfg), data_cfg


def _key(ex: dict[str, Any]) -> str:
    if "context" in ex:  # extractive QA
        return ex["question"] + "\t" + ex["context"]
    return ex["text"] + ("\t" + ex["text_pair"] if "text_pair" in ex else "")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def check_files(files: list[str], task_name: str, model: str, overrides: list[str]) -> dict[str, Any]:
    """Validate every file (first error raises) and summarise each, plus pairwise overlap."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tunelab.models import resolve_model

    task, data = _configs(task_name, overrides)
    hf_logging.set_verbosity_error()  # "sequence longer than the model" is what we measure, not a warning
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    report: dict[str, Any] = {"model": model, "max_length": data.max_length, "files": {}, "overlap": []}
    keys: dict[str, set[str]] = {}
    for path in files:
        examples = task.parse(read_table(path))
        if "messages" in examples[0]:
            raise ConfigError(f"data check: task {task_name} is not supported yet")
        if "context" in examples[0]:  # extractive QA: over max_length = the context needs several windows
            texts, pairs = [ex["question"] for ex in examples], [ex["context"] for ex in examples]
            labels = Counter("answerable" if ex["answers"] else "unanswerable" for ex in examples)
        else:
            texts = [ex["text"] for ex in examples]
            pairs = [ex["text_pair"] for ex in examples] if data.text_pair_field else None
            labels = Counter(
                lab for ex in examples if "label" in ex  # pretrain documents have none
                for lab in (ex["label"] if isinstance(ex["label"], list) else [ex["label"]])
            )
        lengths = np.asarray([len(ids) for ids in tokenizer(texts, pairs, truncation=False)["input_ids"]])
        exact = Counter(_key(ex) for ex in examples)
        normal = Counter(_norm(_key(ex)) for ex in examples)
        keys[path] = set(normal)
        report["files"][path] = {
            "rows": len(examples),
            "labels": dict(labels.most_common()),
            "token_length": {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)}
            | {"max": int(lengths.max())},
            "over_max_length": int((lengths > data.max_length).sum()),
            "truncation_rate": round(float((lengths > data.max_length).mean()), 4),
            "duplicates_exact": sum(c - 1 for c in exact.values()),
            "duplicates_normalised": sum(c - 1 for c in normal.values()),
        }
    for i, a in enumerate(files):
        for b in files[i + 1 :]:
            report["overlap"].append({"a": a, "b": b, "shared_texts": len(keys[a] & keys[b])})
    return report


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    for path, r in report["files"].items():
        t = Table(title=f"{path}  ({report['model']}, max_length {report['max_length']})", show_header=False)
        t.add_row("rows", str(r["rows"]))
        t.add_row("labels", ", ".join(f"{k}: {v} ({100 * v / r['rows']:.1f}%)" for k, v in r["labels"].items()))
        t.add_row("token length", "  ".join(f"{k} {v}" for k, v in r["token_length"].items()))
        t.add_row("over max_length", f"{r['over_max_length']} ({100 * r['truncation_rate']:.2f}% truncated)")
        t.add_row("duplicates",
                  f"{r['duplicates_exact']} exact, {r['duplicates_normalised']} after case/space normalisation")
        console.print(t)
    for o in report["overlap"]:
        console.print(f"overlap {o['a']} ↔ {o['b']}: {o['shared_texts']} shared texts (normalised)")
