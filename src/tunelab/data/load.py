"""`data.*` config → parsed, validated examples per split (train / validation / test)."""

from __future__ import annotations

from typing import Any

from tunelab.config import DataConfig
from tunelab.data.readers import read_table
from tunelab.data.splits import split_validation
from tunelab.errors import ConfigError


def load_splits(data: DataConfig, task: Any, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Read and validate every configured file. Without `data.validation`, a stratified, seeded
    `data.validation_split` of train is held out instead."""
    if not data.train:
        raise ConfigError("config: data.train: required key is missing")
    train = task.parse(read_table(data.train))
    task.check_train(train)
    splits: dict[str, list[dict[str, Any]]] = {}
    if data.validation:
        splits["validation"] = task.parse(read_table(data.validation))
    else:
        train, held = split_validation(train, data.validation_split, seed, task.stratify_key)
        if held:
            splits["validation"] = held
    splits = {"train": train, **splits}
    if data.test:
        splits["test"] = task.parse(read_table(data.test))
    return splits
