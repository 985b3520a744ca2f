"""k-fold cross-validation (`tunelab cv`): each fold is a normal run on fold files.

    data.train ─► load_splits (read, clean, dedup; no validation hold-out) ─► K folds, seeded by train.seed
                  classification: StratifiedKFold on the label; multi-label and NER: KFold;
                  QA: GroupKFold on the context, a context's questions in one fold
    OUTPUT_DIR/cv/fold-k/{train,validation}.jsonl   the fold's rows, each the original row with all its fields
    OUTPUT_DIR/cv/fold-k/                           pipeline.run with data.train / data.validation pointing there
    OUTPUT_DIR/cv/cv.json                           mean and sample std (ddof=1) of every numeric metric

The folds are files rather than examples passed in memory: a fold is then an ordinary, reproducible run
(`tunelab train OUTPUT_DIR/cv/fold-1/config.yaml` repeats it), and the split can be inspected. Sampling,
augmentation and the loss set-up apply to each fold's training part only. `data.validation` and
`data.validation_split` are not used (each fold validates on its held-out part); `data.test`, when given,
is scored by every fold.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table as RichTable
from sklearn.model_selection import KFold, StratifiedKFold

from tunelab.config.run import RunConfig, build_config
from tunelab.data.load import load_splits
from tunelab.errors import ConfigError
from tunelab.io import make_dirs, write_json_atomic, write_jsonl_atomic
from tunelab.metrics import scalars
from tunelab.pipeline import run
from tunelab.progress import table_console
from tunelab.registry import TASKS
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


def write_rows(path: Path, examples: list[dict[str, Any]]) -> None:
    """The examples' original rows (all their fields) as JSONL."""
    write_jsonl_atomic(path, [ex["row"] for ex in examples])


def sub_run_config(cfg: RunConfig, output_dir: Path, **data: str) -> RunConfig:
    """`cfg` as a run in `output_dir` with `data.*` keys replaced and no `search` section (cv folds, curve points)."""
    tree = cfg.model_dump(mode="json")
    tree.pop("search", None)
    return build_config({**tree, "output_dir": str(output_dir), "data": {**tree["data"], **data}})


def _summary(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "values": [float(v) for v in arr]}


def run_cv(cfg: RunConfig, folds: int) -> dict[str, Any]:
    """Train `folds` runs; returns (and writes to OUTPUT_DIR/cv/cv.json) per-fold and mean ± std metrics."""
    if folds < 2:
        raise ConfigError(f"cv: --folds must be at least 2, got {folds}")
    root = make_dirs(Path(cfg.output_dir) / "cv", "output_dir")  # a place that takes no files: said at once
    if cfg.data.validation:
        _say(f"cv: data.validation ({cfg.data.validation}) is ignored: each fold validates on its held-out part")
    # the rows a normal run would train on, with nothing held out: read, clean, dedup (also against data.test)
    data = cfg.data.model_copy(update={"validation": None, "validation_split": 0.0})
    task = TASKS.get(cfg.task.name)(cfg.task, data)
    rows = load_splits(data, task, cfg.train.seed)["train"]
    if folds > len(rows):
        raise ConfigError(f"cv: --folds {folds} is more than the {len(rows)} training rows")
    splits, how = fold_indices(rows, task, folds, cfg.train.seed)
    said = {"stratified": "stratified by label", "grouped": f"each {task.grouped_by} in one fold"}
    _say(f"cv: {len(rows)} rows, {folds} folds ({said.get(how, 'not stratified')}), seed {cfg.train.seed} → {root}")
    repeated = 0 if data.dedup or how == "grouped" else len(rows) - len({task.dedup_keys(ex)[1] for ex in rows})
    if repeated:  # (data.dedup drops them in load_splits; a group's rows share a fold)
        _say(f"cv: {repeated} rows repeat another row's text (data.dedup is off): a copy can train in a fold that "
             "validates on the other, an optimistic score; data.dedup: true drops them")
    selected = cfg.train.tracks_best()
    if selected:
        _say("cv: each fold picks its checkpoint (best_metric / early_stopping / select_best) on the rows it is "
             "scored on: the mean is optimistic (cv.json: selected_on_validation)")
    per_fold = []
    for k, (train_idx, held_idx) in enumerate(splits, start=1):
        out = make_dirs(root / f"fold-{k}", "output_dir")
        write_rows(out / "train.jsonl", [rows[i] for i in train_idx])
        write_rows(out / "validation.jsonl", [rows[i] for i in held_idx])
        files = {"train": str(out / "train.jsonl"), "validation": str(out / "validation.jsonl")}
        _say(f"cv: fold {k}/{folds}: {len(train_idx)} training rows, {len(held_idx)} validation rows → {out}")
        metrics = run(sub_run_config(cfg, out, **files), overwrite=True)  # the study owns its fold directories
        per_fold.append({
            "fold": k, "output_dir": str(out), "rows": {"train": len(train_idx), "validation": len(held_idx)},
            **{split: scalars(m) for split, m in metrics.items() if split != "train"},
        })
    summary: dict[str, dict[str, Any]] = {}
    for split in (s for s in per_fold[0] if s not in ("fold", "output_dir", "rows")):
        names = [n for n in per_fold[0][split] if all(n in f[split] for f in per_fold)]
        summary[split] = {n: _summary([f[split][n] for f in per_fold]) for n in names}
    result = {"folds": folds, "rows": len(rows), "stratified": how == "stratified",
              "grouped": how == "grouped", "seed": cfg.train.seed, "selected_on_validation": selected,
              "std": "sample standard deviation over folds (ddof=1)", "metrics": summary, "per_fold": per_fold}
    write_json_atomic(root / "cv.json", result)
    return result


def print_cv(result: dict[str, Any]) -> None:
    table = RichTable(title=f"cv: {result['folds']} folds, mean ± sample std")
    table.add_column("metric")
    for split in result["metrics"]:
        table.add_column(split, justify="right")
    names = list(dict.fromkeys(n for m in result["metrics"].values() for n in m))
    for name in names:
        cells = []
        for m in result["metrics"].values():
            s = m.get(name)
            cells.append("-" if s is None else f"{s['mean']:.4f} ± {s['std']:.4f}")
        table.add_row(name, *cells)
    table_console(width=120).print(table)
