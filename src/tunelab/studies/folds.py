"""How `tunelab cv` splits its rows into folds: stratified by label (single-label classification), grouped (a task's
`group_key`: QA's context, a group's rows in one fold), or at random (multi-label, NER: each held-out row's labels
known to its fold's training part)."""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from typing import Any

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from tunelab.errors import ConfigError
from tunelab.tasks.base import Task


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fold_indices(examples: list[dict[str, Any]], task: Task, folds: int, seed: int) -> tuple[list[Any], str]:
    """[(train_idx, held_idx)] per fold, and how they were made: "stratified" (single-label classes), "grouped" (the
    task's `group_key`: a group's rows all in one fold, as scikit-learn's GroupKFold) or "random"."""
    index = np.arange(len(examples))
    groups = [task.group_key(ex) for ex in examples]
    if groups and all(g is not None for g in groups):
        names = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        if len(names) < folds:
            raise ConfigError(f"cv: --folds {folds} is more than the {len(names)} {task.grouped_by} groups of the "
                              f"training rows (the rows of one stay in one fold)")
        return _group_folds(np.asarray([names[g] for g in groups]), folds, seed), "grouped"
    keys = [task.stratify_key(ex) for ex in examples]
    stratified = all(k is not None and not isinstance(k, tuple) for k in keys)  # tuple: multi-label
    if not stratified:
        return _labels_in_train(list(KFold(folds, shuffle=True, random_state=seed).split(index)), examples,
                                task), "random"
    counts = Counter(keys)
    largest, most = max(counts.items(), key=lambda kv: kv[1])
    if 1 < most < folds:  # (stratified, no fold could hold a row of every class; one-row classes: below)
        raise ConfigError(f"cv: --folds {folds} is more than the rows of the largest class ({largest}: {most}); "
                          f"stratified folds need at most {most}")
    small = {k: n for k, n in counts.items() if 1 < n < folds}
    if small:
        _say(f"cv: classes with fewer rows than folds ({', '.join(f'{k}: {n}' for k, n in small.items())}); "
             "some folds validate without them")
    # a class of one row trains in every fold (held out, its fold's model would not know the label: the fold failed)
    alone = np.asarray([counts[k] == 1 for k in keys])
    if alone.all():
        raise ConfigError(f"cv: --folds {folds}: every class has one row; nothing to validate a class on")
    if alone.any():
        _say(f"cv: classes of one row ({', '.join(str(k) for k in keys if counts[k] == 1)}) train in every fold "
             "and are validated in none")
    rest = index[~alone]
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # said in the line above
        try:
            made = list(splitter.split(rest, [str(keys[i]) for i in rest]))
        except ValueError as exc:  # every class has fewer rows than folds
            raise ConfigError(f"cv: --folds {folds}: {exc}") from None
    return [(np.sort(np.concatenate([rest[t], index[alone]])), rest[h]) for t, h in made], "stratified"


def _labels_in_train(folds: list[Any], examples: list[dict[str, Any]], task: Task) -> list[Any]:
    """Each fold's held-out rows whose labels (multi-label) or entity types (NER) its training part lacks, moved into
    that training part: validated there, the fold's model would not know them (the cv failed on its fold)."""
    labels = [set(task.label_counts([ex])) for ex in examples]
    out, moved = [], 0
    for train, held in folds:
        known = set().union(*(labels[i] for i in train))
        stay = np.asarray([labels[i] <= known for i in held], dtype=bool)
        moved += int((~stay).sum())
        out.append((np.sort(np.concatenate([train, held[~stay]])), held[stay]))
    if any(not len(held) for _, held in out):
        raise ConfigError(f"cv: --folds {len(folds)}: a fold would validate on no row (each of its held-out rows "
                          "holds a label no other row of the fold has); fewer folds, or more rows of the rare labels")
    if moved:
        _say(f"cv: {moved} held-out rows hold a label their fold's training part lacks (a label of one or two rows): "
             "they train in that fold instead")
    return out


def _group_folds(groups: np.ndarray, folds: int, seed: int) -> list[Any]:
    """GroupKFold with its groups in a seeded order (scikit-learn's `shuffle` needs 1.6): largest group first (ties
    in that order), each into the fold with the fewest rows so far."""
    sizes = np.bincount(groups)
    order = np.random.default_rng(seed).permutation(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of, rows = np.empty(len(sizes), dtype=np.int64), np.zeros(folds, dtype=np.int64)
    for g in order:
        fold_of[g] = int(np.argmin(rows))
        rows[fold_of[g]] += sizes[g]
    index = np.arange(len(groups))
    return [(index[fold_of[groups] != k], index[fold_of[groups] == k]) for k in range(folds)]
