"""A `tunelab tune` trial's config: the base config with the sampled dotted keys set (`trial_config`), each key and
bound of the space checked before any trial (`check_space`), the metrics the trials are scored and select by
checked too (`check_metrics`), and the searched metric's value in an evaluation (`metric_value`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tunelab.config.fields import within
from tunelab.config.run import RunConfig, apply_override, build_config
from tunelab.config.search import SearchConfig
from tunelab.errors import ConfigError
from tunelab.metrics import scalars
from tunelab.registry import TASKS
from tunelab.training.early_stopping import tracked_field

# the settings that name the metric a run selects its best checkpoint and stops early by (`tracked_field`)
TRACKING = ("train.best_metric", "train.early_stopping.metric")


def _override(tree: dict, key: str, value: Any) -> dict:
    """A copy of `tree` with the dotted `key` set, through load_config's own override rules."""
    tree = copy.deepcopy(tree)
    try:
        apply_override(tree, key.split("."), value)
    except ConfigError as exc:  # "--set a.b: a is not a section" (the API's words: "config: a.b: ...")
        raise ConfigError(f"config: search.space.{key}: {str(exc).rsplit(': ', 1)[-1]}") from None
    return tree


def base_tree(cfg: RunConfig) -> dict:
    """The resolved run config as a plain dict, without the `search` section."""
    tree = cfg.model_dump(mode="json")
    tree.pop("search", None)
    return tree


def check_space(cfg: RunConfig, search: SearchConfig) -> None:
    """Every key must be a real config path and every bound / choice a valid value: checked before any trial,
    one line naming `search.space.<key>`."""
    base = base_tree(cfg)
    for key, spec in search.space.items():
        for value in spec.values():
            try:
                build_config(_override(base, key, value))
            except ConfigError as exc:
                msg = str(exc)
                if msg.startswith("config: search.space."):
                    raise
                rest = msg.removeprefix(f"config: {key}: ") if msg.startswith(f"config: {key}: ") else \
                    msg.removeprefix("config: ")
                raise ConfigError(f"config: search.space.{key}: {rest}") from None


def trial_config(cfg: RunConfig, params: dict[str, Any], output_dir: Path | str, **fixed: Any) -> RunConfig:
    """The run config of one trial: the base with the sampled keys (and `fixed` dotted keys) set."""
    tree = base_tree(cfg)
    for key, value in {**params, **fixed}.items():
        tree = _override(tree, key, value)
    tree["output_dir"] = str(output_dir)
    return build_config(tree)


def metric_value(metrics: dict[str, Any], metric: str | None, prefix: str = "") -> tuple[str, float]:
    """(name, value) of the searched metric in one evaluation; the headline (first float) when not set."""
    values = {k[len(prefix):]: v for k, v in scalars(metrics).items() if k.startswith(prefix)}
    name = metric or next((k for k, v in values.items() if isinstance(v, float)), None)
    if name is not None and metrics.get(prefix + name, 0) is None:  # e.g. roc_auc of a split that lacks a class
        raise ConfigError(f"config: search.metric: {name!r} has no value on this validation split (null: undefined "
                          "there, as roc_auc where a class is missing); choose another search.metric")
    if name is None or name not in values:
        raise ConfigError(f"config: search.metric: {name!r} is not among the validation metrics "
                          f"({', '.join(values)})")
    return name, float(values[name])


def check_metrics(cfg: RunConfig, search: SearchConfig) -> None:
    """A misspelt search.metric, or the base config's train.best_metric / early_stopping.metric (unless the space
    samples it): refused before any trial trains (each trial's run would refuse it, after the study's storage and a
    failed trial were made). A base config the trials' values mend (e.g. a doc_stride) is the trials' to check."""
    try:
        task = TASKS.get(cfg.task.name)(cfg.task, cfg.data)
    except ConfigError:
        return
    task.check_metric("search.metric", search.metric)
    if not any(within(setting, key) for setting in TRACKING for key in search.space):  # (or a section holding it)
        task.check_metric(*tracked_field(cfg.train))
