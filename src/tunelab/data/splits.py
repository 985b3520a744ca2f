"""Holding out a validation split: stratified by a key, reproducible by seed."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import numpy as np

from tunelab.data.feature_store import RowSequence

T = TypeVar("T")


def split_validation(
    items: Sequence[T], fraction: float, seed: int, key: Callable[[T], Hashable] | None = None
) -> tuple[Sequence[T], Sequence[T]]:
    """Split `items` into (train, validation). With `key`, each group keeps its share (stratified);
    groups too small to share keep their rows in train. Order inside each part follows the input. Lists; the
    training part a view of `items` where it is a `RowSequence` (rows spilled as parsed)."""
    if fraction <= 0 or len(items) < 2:
        return (items if isinstance(items, RowSequence) else list(items)), []
    rng = random.Random(seed)
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[key(item) if key else 0].append(i)
    held: set[int] = set()
    for members in groups.values():
        take = round(len(members) * fraction) if len(members) > 1 else 0
        held.update(rng.sample(members, take))
    if not held:  # tiny data: still hold out one row
        held.add(rng.randrange(len(items)))
    if isinstance(items, RowSequence):  # spilled as parsed (a large file): the training part stays off the heap
        kept = np.ones(len(items), dtype=bool)
        kept[list(held)] = False
        # the held-out rows as a list: evaluation writes into them (NER's word ids, generated replies), and reads
        # them every evaluation (from the spill they would unpickle every chunk of the file each time)
        return items.take(np.flatnonzero(kept)), [items[int(i)] for i in np.flatnonzero(~kept)]
    train = [it for i, it in enumerate(items) if i not in held]
    val = [it for i, it in enumerate(items) if i in held]
    return train, val
