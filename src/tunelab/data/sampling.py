"""Class distributions and seeded random over- / undersampling of the training split (`data.sampling`)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from typing import Any, Literal


def label_counts(examples: list[dict[str, Any]]) -> dict[str, float]:
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


def resample(examples: list[dict[str, Any]], how: Literal["oversample", "undersample"], seed: int,
             key: Callable[[dict[str, Any]], Hashable | None]) -> list[dict[str, Any]]:
    """Balance the groups of `key` (the class; the label set for multi-label rows).

    oversample: every group grows to the largest one — whole copies, then a seeded sample without
    replacement for the remainder; undersample: every group shrinks to the smallest by a seeded sample.
    Originals keep their order; oversampled copies follow them."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[key(ex)].append(i)
    rng = random.Random(f"sampling:{seed}")
    sizes = [len(g) for g in groups.values()]
    if how == "undersample":
        keep: set[int] = set()
        for members in groups.values():
            keep.update(rng.sample(members, min(sizes)))
        return [ex for i, ex in enumerate(examples) if i in keep]
    out = list(examples)
    for members in groups.values():
        extra = max(sizes) - len(members)
        picks = members * (extra // len(members)) + rng.sample(members, extra % len(members))
        out += [examples[i] for i in picks]
    return out
