"""`data.*` config → parsed, validated, cleaned and deduplicated examples per split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

from tunelab.config.sections import DataConfig, TaskConfig
from tunelab.data.hygiene import clean_split, dedup_across, dedup_within
from tunelab.data.readers import Table, read_table
from tunelab.data.report import DataReport
from tunelab.data.splits import split_validation
from tunelab.errors import ConfigError, DataError


class RowTask(Protocol):
    """What the data stage asks of a task (tunelab.tasks.base.Task provides it; data sits below tasks)."""

    cfg: TaskConfig
    data: DataConfig

    def parse(self, table: Table, *, labelled: bool = True) -> list[dict[str, Any]]: ...

    def check_unlabeled(self) -> None: ...

    def stratify_key(self, example: dict[str, Any]) -> Hashable | None: ...

    def check_train(self, examples: list[dict[str, Any]]) -> None: ...

    def configure_loss(self, train: Any, examples: list[dict[str, Any]]) -> dict[str, Any]: ...

    def encode(self, examples: Sequence[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]: ...

    # what `data check` asks too
    generates_replies: bool

    def load_tokenizer(self, model_path: str) -> Any: ...

    def token_lengths(self, tokenizer: Any, examples: Sequence[dict[str, Any]]) -> list[int] | None: ...

    def label_counts(self, examples: Sequence[dict[str, Any]] = ()) -> Counter[str]: ...

    def dedup_keys(self, example: dict[str, Any]) -> tuple[str, str]: ...

    def example_text(self, example: dict[str, Any]) -> str: ...

    def length_cap(self) -> int: ...


def _read(path: str, split: str, data: DataConfig, task: RowTask, report: DataReport) -> list[dict[str, Any]]:
    """Parse one file, then clean it and drop its duplicates (before any validation hold-out)."""
    examples = task.parse(read_table(path))
    report.read(split, len(examples))
    if data.clean is not None:
        examples = clean_split(examples, data.clean, split, report, filter_length=split == "train")
    if data.dedup:
        examples = dedup_within(examples, split, report)
    _check_left(examples, path, split, report)
    return examples


def _check_left(examples: list[dict[str, Any]], path: str, split: str, report: DataReport) -> None:
    if not examples:
        why = ", ".join(f"{reason}: {n}" for reason, n in report.removed_counts().get(split, {}).items())
        raise DataError(path, None, None, f"no rows left after data.clean / data.dedup ({why})")


def load_splits(data: DataConfig, task: RowTask, seed: int, report: DataReport | None = None,
                ) -> dict[str, list[dict[str, Any]]]:
    """Read and validate every configured file. Without `data.validation`, a stratified, seeded
    `data.validation_split` of train is held out instead. `data.clean` / `data.dedup` drop rows into
    `report` (see data/report.py)."""
    report = report if report is not None else DataReport()
    report.applied["clean"] = data.clean.model_dump() if data.clean is not None else None
    report.applied["dedup"] = data.dedup
    if not data.train:
        raise ConfigError("config: data.train: required key is missing")
    if data.unlabeled is not None:  # refused before any file is read
        task.check_unlabeled()
    train = _read(data.train, "train", data, task, report)
    task.check_train(train)
    splits: dict[str, list[dict[str, Any]]] = {}
    if data.validation:
        splits["validation"] = _read(data.validation, "validation", data, task, report)
    else:
        train, held = split_validation(train, data.validation_split, seed, task.stratify_key)
        if held:
            splits["validation"] = held
    splits = {"train": train, **splits}
    if data.test:
        splits["test"] = _read(data.test, "test", data, task, report)
    if data.dedup:
        splits = dedup_across(splits, report)
        for split, rows in splits.items():
            _check_left(rows, getattr(data, split) or data.train, split, report)
        task.check_train(splits["train"])
    return splits


def load_unlabeled(data: DataConfig, task: RowTask, report: DataReport) -> list[dict[str, Any]]:
    """`data.unlabeled`: rows with the task's input fields only (distillation's soft targets), cleaned by
    `data.clean` as the other splits are (what it drops is in `report`)."""
    if data.unlabeled is None:
        return []
    examples = task.parse(read_table(data.unlabeled), labelled=False)
    report.read("unlabeled", len(examples))
    if data.clean is not None:
        examples = clean_split(examples, data.clean, "unlabeled", report, filter_length=False)
    _check_left(examples, data.unlabeled, "unlabeled", report)
    return examples
