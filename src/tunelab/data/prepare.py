"""The training split after loading: a vocabulary check, sampling → augmentation → loss set-up, each step recorded
in the `DataReport` (class distribution before and after sampling, what was applied, warnings)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from tunelab.config.run import RunConfig
from tunelab.data.advice import look_alike_labels, unknown_tokens
from tunelab.data.augment import augment_examples
from tunelab.data.dedup import CopyDuplicates
from tunelab.data.load import RowTask
from tunelab.data.report import DataReport
from tunelab.data.sampling import label_counts, resample
from tunelab.data.synonyms import synonym_source
from tunelab.errors import ConfigError
from tunelab.progress import say


def prepare_training(train: Sequence[dict[str, Any]], cfg: RunConfig, task: RowTask, tokenizer: Any,
                     model: torch.nn.Module, report: DataReport,
                     others: dict[str, Sequence[dict[str, Any]]] | None = None) -> Sequence[dict[str, Any]]:
    """Apply `data.sampling` and `data.augment` to the training examples (seeded by train.seed), then
    set up the task's loss from `train.class_weights / focal_gamma / label_smoothing` on the result. With
    `data.dedup`, a copy that repeats a row of `others` (the validation and test splits), a training row or another
    copy is dropped (reason `augmented_duplicate`)."""
    data, seed = cfg.data, cfg.train.seed
    # the warning `tunelab data check` gives, given at training too: an English vocabulary on Chinese text trains a
    # model that sees mostly [UNK]
    unknown = unknown_tokens(tokenizer, train, task.example_text, cfg.model)
    report.applied["vocabulary_warning"] = unknown
    if unknown:
        say(f"warning: {unknown}")
    report.distribution["before_sampling"] = label_counts(train)
    alike = look_alike_labels(report.distribution["before_sampling"])  # as `tunelab data check` warns
    report.applied["label_warning"] = alike
    if alike:
        say(f"warning: {alike}")
    report.applied["sampling"] = None
    if data.sampling:
        if task.stratify_key(train[0]) is None:
            raise ConfigError(f"config: data.sampling: task {cfg.task.name} has no classes to balance")
        before = len(train)
        train = resample(train, data.sampling, seed, task.stratify_key, report)
        report.applied["sampling"] = {"method": data.sampling, "rows_before": before, "rows_after": len(train)}
        report.distribution["after_sampling"] = label_counts(train)
    report.applied["augment"] = None
    if data.augment is not None:
        lookup, source = synonym_source(data.augment.synonyms, data.augment.neighbours, tokenizer, model)
        before, originals, tests = len(train), train, []

        def fresh() -> Callable[[dict[str, Any]], bool]:  # for each attempt at the copies: the last one's drops count
            tests[:] = [CopyDuplicates(originals, others or {}, task.dedup_keys)]  # (an earlier attempt's freed)
            return tests[-1].keep

        train, stats = augment_examples(train, data.augment, seed, lookup, data.text_field, data.cache is not False,
                                        keep=fresh if data.dedup else None)
        for copy, detail in tests[-1].dropped if tests else ():
            report.remove("train", copy, "augmented_duplicate", **detail)
        report.add("train", "augmented", stats["copies_added"] + stats.get("duplicates_dropped", 0))
        report.applied["augment"] = {**data.augment.model_dump(), "synonym_source": source,
                                     "rows_before": before, **stats}
        report.distribution["after_augment"] = label_counts(train)
    report.applied["loss"] = task.configure_loss(cfg.train, train)
    return train
