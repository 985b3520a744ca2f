"""What report sections read: the `Context` of one report, gathered from a run directory and the objects passed in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab.config.sections import DataConfig
from tunelab.errors import TunelabError
from tunelab.io import read_json, read_jsonl
from tunelab.registry import TASKS
from tunelab.tasks.base import Task


@dataclass
class Context:
    """What the sections read. `records` / `metrics` are per evaluated split; `splits` the examples (train
    included for a training run); `out_dir` holds baselines.json and curve/ (the run's output_dir)."""

    title: str
    run_dir: Path | None = None
    out_dir: Path | None = None
    task: Task | None = None
    model: Any = None
    tokenizer: Any = None
    splits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    generations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    log: list[dict[str, Any]] | None = None  # RUN/metrics.jsonl (a torn last line left out); None: no such file
    task_name: str = ""
    timings: dict[str, float] = field(default_factory=dict)


Section = Callable[[Context], str | None]


def load_context(title: str, run_dir: Path | None = None, *, task: Task | None = None, model: Any = None,
                 tokenizer: Any = None, splits: dict[str, list[dict[str, Any]]] | None = None,
                 records: dict[str, list[dict[str, Any]]] | None = None, metrics: dict[str, Any] | None = None,
                 task_name: str | None = None, out_dir: Path | None = None) -> Context:
    """A Context from a run directory (when given) and the objects passed in, which take precedence."""
    ctx = Context(title=title, run_dir=run_dir, out_dir=out_dir or run_dir, task=task, model=model, tokenizer=tokenizer,
                  splits=dict(splits or {}))
    if run_dir is not None:
        cfg_path = run_dir / "config.yaml"
        ctx.config = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        ctx.metrics = read_json(run_dir / "metrics.json") or {}
        if (run_dir / "metrics.jsonl").is_file():
            ctx.log = read_jsonl(run_dir / "metrics.jsonl", torn_tail=True)
        for p in sorted((run_dir / "predictions").glob("*.jsonl")):
            if "." not in p.stem:  # <split>.jsonl; <split>.generations.jsonl: SFT replies with their scores
                ctx.records[p.stem] = read_jsonl(p)
            elif p.name.endswith(".generations.jsonl"):
                ctx.generations[p.name.removesuffix(".generations.jsonl")] = read_jsonl(p)
    if records is not None:
        ctx.records = dict(records)
    if metrics is not None:
        ctx.metrics = {**{k: v for k, v in ctx.metrics.items() if k == "train"}, **metrics}
    task_cfg = ctx.config.get("task")
    ctx.task_name = (task_name or getattr(getattr(task, "cfg", None), "name", None)
                     or (task_cfg.get("name") if isinstance(task_cfg, dict) else task_cfg) or "")
    if ctx.task is None and ctx.task_name in TASKS.names():  # the run's task, rebuilt from its config.yaml
        cls = TASKS.get(ctx.task_name)
        data = {k: v for k, v in (ctx.config.get("data") or {}).items() if k in DataConfig.model_fields}
        try:
            ctx.task = cls(cls.Config(**{**(task_cfg if isinstance(task_cfg, dict) else {}), "name": ctx.task_name}),
                           DataConfig(**data))
        except (ValueError, TunelabError):  # a config.yaml of another version: the task-specific parts go
            ctx.task = None
    return ctx
