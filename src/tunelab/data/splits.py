"""Holding out a validation split: stratified by a key or kept whole by a group, reproducible by seed.

The hold-out is `round(N × fraction)` rows (at least one), shared among the classes by largest remainder, each class
keeping at least one row in train: 20 classes of 5 rows at 0.1 hold out 10 rows, one each of 10 classes (a share per
class, `round(5 × 0.1)`, would be none). Multi-label rows (a tuple key: the label set) are stratified by their rarest
label, and a held-out row whose label would then be missing from train goes back to train. Rows of one group (QA: one
context) stay on one side. A hold-out far from the size asked is said in the note returned."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import numpy as np

from tunelab.data.feature_store import RowSequence
from tunelab.errors import DataError

T = TypeVar("T")
Key = Callable[[T], Hashable | None]


def split_validation(items: Sequence[T], fraction: float, seed: int, key: Key | None = None,
                     group: Key | None = None, *, source: str = "data.train", group_name: str = "group",
                     ) -> tuple[Sequence[T], Sequence[T], str | None]:
    """Split `items` into (train, validation, note). With `key`, stratified (a tuple key: multi-label); with `group`
    (not None for the items), whole groups are held out instead. Order inside each part follows the input. Lists;
    the training part a view of `items` where it is a `RowSequence` (rows spilled as parsed). `note`: why the
    hold-out is far from the size asked, or None. Nothing to hold out without losing a class (or with one group
    only, `group_name` naming it): a one-line DataError on `source`."""
    if fraction <= 0 or len(items) < 2:
        return (items if isinstance(items, RowSequence) else list(items)), [], None
    rng = random.Random(seed)
    asked = min(max(1, round(len(items) * fraction)), len(items) - 1)
    groups = [group(it) for it in items] if group is not None else []
    if groups and all(g is not None for g in groups):
        held, why = _by_group(groups, asked, rng, source, group_name), f"each {group_name} held out whole"
    else:
        keys = [key(it) for it in items] if key is not None else [None] * len(items)
        held, why = _stratified(keys, asked, rng, source), "each class keeps a row in train"
    note = None
    if len(held) < asked / 2 or len(held) > asked * 2:
        note = (f"data.validation_split {fraction:g}: {len(held)} validation rows of the {asked} asked ({why}); "
                "give data.validation for another size")
    train, val = _parts(items, held)
    return train, val, note


def _stratified(keys: list[Hashable | None], asked: int, rng: random.Random, source: str) -> set[int]:
    multi = any(isinstance(k, tuple) for k in keys)
    strata: dict[Hashable, list[int]] = defaultdict(list)
    if multi:  # each row by its rarest label (ties: the first by name); a row without labels by ()
        counts = Counter(lab for k in keys for lab in k or ())
        for i, k in enumerate(keys):
            strata[min(k, key=lambda lab: (counts[lab], str(lab))) if k else ()].append(i)
    else:
        for i, k in enumerate(keys):
            strata[k].append(i)
    room = {s: len(m) - 1 for s, m in strata.items()}  # each class keeps a row in train
    if not sum(room.values()):
        raise DataError(source, None, "data.validation_split", f"no class has two rows to hold one out "
                        f"({len(strata)} classes of one row each): give data.validation")
    asked = min(asked, sum(room.values()))
    n = len(keys)
    quota = {s: asked * len(m) / n for s, m in strata.items()}
    take = {s: min(math.floor(q), room[s]) for s, q in quota.items()}
    order = list(strata)
    rng.shuffle(order)  # ties in the remainder broken by seed
    order.sort(key=lambda s: quota[s] - take[s], reverse=True)
    while (left := asked - sum(take.values())) > 0:  # largest remainder first; a class with no room left is passed
        for s in [s for s in order if take[s] < room[s]][:left]:
            take[s] += 1
    held = {i for s, m in strata.items() for i in rng.sample(m, take[s])}
    if multi:  # a label held out whole (not the rarest of its rows) goes back with its rows
        in_train = Counter(lab for i, k in enumerate(keys) if i not in held for lab in k or ())
        for i in sorted(held):
            if any(not in_train[lab] for lab in keys[i] or ()):
                held.discard(i)
                in_train.update(keys[i] or ())
    return held


def _by_group(groups: list[Hashable | None], asked: int, rng: random.Random, source: str, name: str) -> set[int]:
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    if len(members) < 2:
        raise DataError(source, None, "data.validation_split", f"all {len(groups)} rows share one {name}, so "
                        f"none can be held out without training on its {name}: give data.validation")
    order = list(members)
    rng.shuffle(order)
    held: list[int] = []
    for g in order:  # whole groups while they fit the size asked
        if len(held) + len(members[g]) <= asked:
            held += members[g]
    if not held:  # every group is larger than asked: the smallest one
        held = members[min(order, key=lambda g: len(members[g]))]
    return set(held)


def split_validation_legacy(items: Sequence[T], fraction: float, seed: int, key: Key | None = None,
                            ) -> tuple[Sequence[T], Sequence[T]]:
    """The hold-out of tunelab before the one above (the same seed drew other rows): each class `round(n × fraction)`
    of its rows (none of a class of one), one row of any class where that was none; no groups. Kept only so that a
    run trained then (its data_summary.json without `applied.validation_split`) reads again the rows it validated on
    (data/load.py: run_splits)."""
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
    return _parts(items, held)


def _parts(items: Sequence[T], held: set[int]) -> tuple[Sequence[T], list[T]]:
    if isinstance(items, RowSequence):  # spilled as parsed (a large file): the training part stays off the heap
        kept = np.ones(len(items), dtype=bool)
        kept[list(held)] = False
        # the held-out rows as a list: evaluation writes into them (NER's word ids, generated replies), and reads
        # them every evaluation (from the spill they would unpickle every chunk of the file each time)
        return items.take(np.flatnonzero(kept)), [items[int(i)] for i in np.flatnonzero(~kept)]
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]
