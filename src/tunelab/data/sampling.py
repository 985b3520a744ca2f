"""Class distributions and seeded random over- / undersampling of the training split (`data.sampling`)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Literal

import numpy as np

from tunelab.data.feature_store import RowSequence
from tunelab.data.report import DataReport


def label_counts(examples: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Rows per label: a list label counts once per label (multi-label), a `{label: probability}`
    label adds its probabilities (soft labels), so counts may be fractional."""
    counts: Counter[str] = Counter()
    for ex in examples:
        label = ex.get("label")
        if isinstance(label, dict):
            for name, p in label.items():
                counts[name] += p
        elif isinstance(label, list):
            counts.update(label)
        elif label is not None:
            counts[label] += 1
    return {name: round(n, 6) if isinstance(n, float) else n for name, n in sorted(counts.items())}


def resample(examples: Sequence[dict[str, Any]], how: Literal["oversample", "undersample"], seed: int,
             key: Callable[[dict[str, Any]], Hashable | None], report: DataReport | None = None,
             ) -> Sequence[dict[str, Any]]:
    """Balance the groups of `key` (the class; the label set for multi-label rows).

    oversample: every group grows to the largest one — whole copies, then a seeded sample without
    replacement for the remainder; undersample: every group shrinks to the smallest by a seeded sample.
    Originals keep their order; oversampled copies follow them. Rows spilled to disk (a `RowSequence`) come back as
    an index view of the same rows, 8 bytes a row, never read into memory (the rows chosen are the same). `report`
    gets each row undersampling drops (reason `undersampled`, with its class) and the number oversampling adds."""
    if not len(examples):
        return examples
    codes: dict[Hashable, int] = {}
    group = np.fromiter((codes.setdefault(key(ex), len(codes)) for ex in examples), dtype=np.int32,
                        count=len(examples))
    rng = random.Random(f"sampling:{seed}")
    sizes = np.bincount(group, minlength=len(codes))
    # each group's rows in order, the groups in order of first appearance
    members = np.split(np.argsort(group, kind="stable"), np.cumsum(sizes)[:-1])
    # `rng.sample(range(len(m)), k)` picks the positions `rng.sample(list_of_m, k)` would: the same rows, without a
    # Python list of each group's indices (36 bytes a row)
    if how == "undersample":
        keep = [m[rng.sample(range(len(m)), int(sizes.min()))] for m in members]
        order = np.sort(np.concatenate(keep))
        if report is not None:
            dropped = np.setdiff1d(np.arange(len(examples)), order, assume_unique=True)
            spilled = isinstance(examples, RowSequence)  # (a file too large to hold: its rows by file and line)
            rows = examples.take(dropped) if spilled else [examples[i] for i in dropped]
            for ex in rows:
                report.remove("train", ex, "undersampled", with_row=not spilled,
                              **{"class": key(ex), "rows_per_class": int(sizes.min())})
    else:
        picks = [np.concatenate([np.tile(m, (sizes.max() - len(m)) // len(m)),
                                 m[rng.sample(range(len(m)), (sizes.max() - len(m)) % len(m))]]) for m in members]
        order = np.concatenate([np.arange(len(examples)), *picks])
        if report is not None:
            report.add("train", "oversampled", len(order) - len(examples))
    if isinstance(examples, RowSequence):
        return examples.take(order)
    return [examples[i] for i in order.tolist()]
