"""k-fold cross-validation (`tunelab cv`): each fold is a normal run on fold files.

    data.train ─► load_splits (read, clean, dedup; no validation hold-out) ─► K folds, seeded by train.seed
                  classification: StratifiedKFold on the label; multi-label and NER: KFold;
                  QA: GroupKFold on the context, a context's questions in one fold
    OUTPUT_DIR/cv/fold-k/{train,validation}.jsonl   the fold's rows, each the original row with all its fields
    OUTPUT_DIR/cv/fold-k/                           pipeline.run with data.train / data.validation pointing there
    OUTPUT_DIR/cv/cv.json                           mean and sample std (ddof=1) of every numeric metric

One process per cv folder (OUTPUT_DIR/cv/.tunelab-study.lock, taken before anything is written). Run again, a fold
that finished with the same config on the same rows is kept, one that did not finish goes on from its newest
checkpoint where that trained on the rows and data files it reads now (`resumable`), else trains from its start; one
of another config, or other rows, is refused in one line before anything is written (`overwrite` replaces it, and
starts an unfinished fold over, once all it removes is known removable: run_dir.check_removable). A cv continued (one
begun by an older tunelab) reads its rows by the text rules of its first fold that is kept or resumed (`study_rules`).

The folds are files rather than examples passed in memory: a fold is then an ordinary, reproducible run
(`tunelab train OUTPUT_DIR/cv/fold-1/config.yaml --set output_dir=NEW_DIR` repeats it), and the split can be
inspected. Sampling, augmentation and the loss set-up apply to each fold's training part only. `data.validation` and
`data.validation_split` are not used (each fold validates on its held-out part); `data.test`, when given,
is scored by every fold.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
from collections.abc import Callable
from contextlib import redirect_stderr
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from rich.table import Table as RichTable

from tunelab.config.run import RunConfig, build_config
from tunelab.data.load import load_splits
from tunelab.data.records import changes_unsaid
from tunelab.data.report import SUMMARY_FILE, read_summary, summary_rules
from tunelab.errors import ConfigError, StudyInterrupted, TunelabError, overwrite_option
from tunelab.io import json_line, make_dirs, read_json, write_json_atomic, write_text_atomic
from tunelab.metrics import scalars
from tunelab.pipeline import run
from tunelab.progress import table_console
from tunelab.registry import TASKS
from tunelab.studies.folds import fold_indices
from tunelab.studies.records import (
    INPUTS,
    STARTED,
    hashes_cached,
    input_hashes,
    resume_candidates,
    started_record,
    unfinished,
)
from tunelab.text import rules_version, text_rules
from tunelab.training.checkpoint import Verified, read_trainer_state, verify
from tunelab.training.layout import REPLACED, RUN_FILES, STUDY_LOCK
from tunelab.training.run_checks import config_changes, resolved
from tunelab.training.run_dir import RunDirLock, check_removable, refuse_if_in_use


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rows_text(examples: list[dict[str, Any]]) -> str:
    """The examples' original rows (all their fields) as JSONL."""
    return "".join(json_line(ex["row"]) for ex in examples)


FINISHED, TO_RUN = "finished", "to run"


# what a study's runs (tune's trials, cv's folds, curve's points) may change when it is continued (beside the keys a
# search space varies): how they report, the feature cache, the size of their passes and recomputed layers (memory),
# checkpoints: not what a run computes
STUDY_MAY_CHANGE = ("output_dir", "search", "data.cache", "data.cache_limit_gb", "train.save_steps",
                    "train.save_total_limit", "train.log_steps", "train.eval_batch_size", "train.micro_batch_tokens",
                    "train.gradient_checkpointing", "train.report", "train.report_to")


def sub_run_state(out: Path, cfg: RunConfig, files: dict[str, str]) -> str:
    """What a study's sub-run folder (a cv fold, a curve point) holds against the run about to go there, `cfg` on the
    rows `files` ({name: JSONL text}): FINISHED (that run, finished: kept), TO_RUN (nothing, or that run unfinished),
    or else what differs (another study's run: refused without --overwrite)."""
    if not out.is_dir():
        return TO_RUN if not out.exists() else "a file, not a folder"
    for name, text in files.items():
        path = out / name
        if path.exists() and (not path.is_file() or path.read_bytes() != text.encode("utf-8")):
            return f"{name} holds other rows"
    if not (out / "config.yaml").is_file():
        return TO_RUN  # its rows only (stopped before its run began), or nothing of a run that can be resumed
    changes = config_changes(out, resolved(cfg), STUDY_MAY_CHANGE)
    if changes is None:
        return "a config.yaml that does not read"
    if changes:
        return "config.yaml: " + ", ".join(f"{k} {old!r} (now {new!r})" for k, new, old in changes[:3]) + \
            (", ..." if len(changes) > 3 else "")
    finished = (out / "metrics.json").is_file() and all((out / n).is_file() for n in files)
    # ...with the data files it read as they are now (a validation / test file changed in place: run again)
    return FINISHED if finished and read_json(out / INPUTS) == input_hashes(cfg) else TO_RUN


def resumable(out: Path, cfg: RunConfig, label: str, overwrite: bool = False) -> Verified | None:
    """The checkpoint (the newest intact one of `resume_candidates`) a sub-run that `sub_run_state` found TO_RUN
    continues from (verified: its run does not hash it again); None: it trains from its start (`label: its unfinished
    run is not resumed (why)` said where it holds one: other rows or data files, no intact checkpoint, or `overwrite`,
    which starts it over as train's does)."""
    if not unfinished(out):
        return None
    found, why = ([], overwrite_option()) if overwrite else resume_candidates(out, cfg)
    for path in found:
        problem = verify(path)
        if problem is None:
            return Verified(path)
        _say(f"resume: skipped {path}: {problem}")
    _say(f"{label}: its unfinished run is not resumed ({why or 'no checkpoint of it is intact'}); it trains again "
         "from its start")
    return None


def replaced_paths(out: Path, files: dict[str, str]) -> list[Path]:
    """What running a sub-run in `out` again from its start removes or replaces there (`check_removable` first): a
    run's files, an older replaced run, its rows `files`, INPUTS, STARTED."""
    return [out / name for name in sorted({*RUN_FILES, REPLACED, INPUTS, STARTED, *files})]


def run_sub(config: RunConfig, out: Path, files: dict[str, str], resume: Verified | None = None, label: str = "",
            ) -> dict[str, Any]:
    """Run a study's sub-run (a cv fold, a curve point) in `out` on its rows `files` ({name: JSONL text}), from the
    checkpoint `resume` (`resumable`; `label: resumed from step N` said), else from step 0 (STARTED says on what,
    and what the checkpoints there trained on); once it returns, INPUTS records the data files it read
    (`sub_run_state` keeps it while they stay the same)."""
    refuse_if_in_use(out)  # (its rows are not rewritten under a run that holds it)
    make_dirs(out, "output_dir")
    (out / INPUTS).unlink(missing_ok=True)
    for name, text in files.items():
        write_text_atomic(out / name, text)
    inputs = input_hashes(config)  # (as they were when it started)
    # the checkpoints there until the run claims the folder: each with what it trained on (a rerun stopped before
    # then resumes them where that is what it reads); those the run writes trained on `inputs`
    write_json_atomic(out / STARTED, started_record(out, inputs))
    if resume is not None:
        step = read_trainer_state(resume.path)["step"]
        _say(f"{label}: resumed from step {step} of its unfinished run ({resume.path})")
    # the study owns its sub-run directories
    with changes_unsaid():  # (the study's own read said what reading its rows changed: counted here, not said again)
        metrics = run(config, resume=resume, overwrite=True)
    write_json_atomic(out / INPUTS, inputs)
    return metrics


def refuse_another(root: Path, study: str, other: list[tuple[str, str]]) -> None:
    """One line: `root` holds a study (cv, curve) of another config or other rows, where `other` ((folder, what))."""
    if other:
        name, what = other[0]
        more = f" and {len(other) - 1} more" if len(other) > 1 else ""
        raise TunelabError(f"output_dir: {root} holds a {study} of another config or other rows ({name}: {what}"
                           f"{more}); pass {overwrite_option()} to replace it, or choose another output_dir")


def kept_line(done: list[str], root: Path, what: str) -> str:
    """What an interrupted study keeps: its finished sub-runs (`done`, folder names) in `root`."""
    return f"its finished {what} ({', '.join(done)}) are kept in {root}" if done else f"no {what[:-1]} had finished"


P = TypeVar("P")


def study_rules(subs: list[tuple[Path, RunConfig]], make_plan: Callable[[], P],
                files: Callable[[P, Path], dict[str, str] | None], overwrite: bool) -> tuple[int, P]:
    """The text rules a continued study (cv, curve) reads its rows by, with its plan (`make_plan()`: its rows read and
    split by the rules in force; what it says is held until the rules are chosen): those a sub-run of `subs` ((folder,
    config), in order) of this config read its rows by (its data_summary.json's: a study begun by an older tunelab)
    where, its rows read so (`files(plan, folder)`: its rows' files; None: not the study's now), it is kept — finished
    on these rows and data files — or resumed (unfinished, its checkpoints trained on them; not under `overwrite`), so
    that new folds / points split and train on the rows it did; never the rules of one this run replaces (another
    --folds, fractions or data), else the rules in force."""
    plans: dict[int, tuple[P, str] | None] = {}
    for out, config in subs:
        if not (out / SUMMARY_FILE).is_file() or config_changes(out, resolved(config), STUDY_MAY_CHANGE) != []:
            continue
        rules = summary_rules(read_summary(out))
        if rules not in plans:
            with text_rules(rules), redirect_stderr(io.StringIO()) as said:
                try:
                    plans[rules] = (make_plan(), said.getvalue())
                except TunelabError:  # (by today's rules, said below)
                    plans[rules] = None
        made = plans[rules]
        rows = None if made is None else files(made[0], out)
        try:
            state = None if rows is None else sub_run_state(out, config, rows)
            kept = state == FINISHED or state == TO_RUN and not overwrite and bool(resume_candidates(out, config)[0])
        except TunelabError:  # a damaged file of its: neither kept nor resumed
            kept = False
        if made is not None and kept:
            sys.stderr.write(made[1])
            return rules, made[0]
    today = plans.get(rules_version())
    if today is None:
        with text_rules(rules_version()):
            return rules_version(), make_plan()
    sys.stderr.write(today[1])
    return rules_version(), today[0]


def sub_run_config(cfg: RunConfig, output_dir: Path, **data: str) -> RunConfig:
    """`cfg` as a run in `output_dir` with `data.*` keys replaced and no `search` section (cv folds, curve points)."""
    tree = cfg.model_dump(mode="json")
    tree.pop("search", None)
    return build_config({**tree, "output_dir": str(output_dir), "data": {**tree["data"], **data}})


def _summary(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "values": [float(v) for v in arr]}


def run_cv(cfg: RunConfig, folds: int, overwrite: bool = False) -> dict[str, Any]:
    """Train `folds` runs (a fold that finished with this config on the same rows is kept); returns (and writes to
    OUTPUT_DIR/cv/cv.json) per-fold and mean ± std metrics. `overwrite`: replace the folds of another cv."""
    if folds < 2:
        raise ConfigError(f"cv: --folds must be at least 2, got {folds}")
    root = make_dirs(Path(cfg.output_dir) / "cv", "output_dir")  # a place that takes no files: said at once
    # one cv per folder: a second is refused with the pid before it writes; then (under the lock) a cv continued reads
    # its rows, and splits them into folds, by the rules its folds kept or resumed read them by
    with RunDirLock(root, STUDY_LOCK), hashes_cached():  # (a data file hashed once)
        folders = [(fold_dir(root, k), fold_config(cfg, root, k)) for k in range(1, folds + 1)]
        rules, plan = study_rules(folders, partial(_plan, cfg, folds, root), _Plan.files, overwrite)
        with text_rules(rules):
            return _run_cv(cfg, plan, root, overwrite)


def fold_dir(root: Path, k: int) -> Path:
    return root / f"fold-{k}"


def fold_config(cfg: RunConfig, root: Path, k: int) -> RunConfig:
    """Fold `k`'s run: `cfg` on its folder's train.jsonl and validation.jsonl."""
    out = fold_dir(root, k)
    return sub_run_config(cfg, out, train=str(out / "train.jsonl"), validation=str(out / "validation.jsonl"))


class _Plan(NamedTuple):
    rows: int
    how: str  # fold_indices': stratified, grouped, random
    folds: list[tuple[int, Path, dict[str, str], RunConfig, dict[str, int]]]  # (k, folder, rows' files, config, counts)

    def files(self, out: Path) -> dict[str, str] | None:
        return next((files for _, folder, files, *_ in self.folds if folder == out), None)


def _plan(cfg: RunConfig, folds: int, root: Path) -> _Plan:
    """The cv's rows read (by the text rules in force) and split into folds."""
    if cfg.data.validation:
        _say(f"cv: data.validation ({cfg.data.validation}) is ignored: each fold validates on its held-out part")
    # the rows a normal run would train on, with nothing held out: read, clean, dedup (also against data.test)
    data = cfg.data.model_copy(update={"validation": None, "validation_split": 0.0})
    task = TASKS.get(cfg.task.name)(cfg.task, data)
    rows = load_splits(data, task, cfg.train.seed, training=True)["train"]  # (data.unlabeled checked as train does)
    if folds > len(rows):
        raise ConfigError(f"cv: --folds {folds} is more than the {len(rows)} training rows")
    splits, how = fold_indices(rows, task, folds, cfg.train.seed)
    said = {"stratified": "stratified by label", "grouped": f"each {task.grouped_by} in one fold"}
    _say(f"cv: {len(rows)} rows, {folds} folds ({said.get(how, 'not stratified')}), seed {cfg.train.seed} → {root}")
    repeated = 0 if data.dedup or how == "grouped" else len(rows) - len({task.dedup_keys(ex)[1] for ex in rows})
    if repeated:  # (data.dedup drops them in load_splits; a group's rows share a fold)
        _say(f"cv: {repeated} rows repeat another row's text (data.dedup is off): a copy can train in a fold that "
             "validates on the other, an optimistic score; data.dedup: true drops them")
    plan = []
    for k, (train_idx, held_idx) in enumerate(splits, start=1):
        texts = {"train.jsonl": rows_text([rows[i] for i in train_idx]),
                 "validation.jsonl": rows_text([rows[i] for i in held_idx])}
        plan.append((k, fold_dir(root, k), texts, fold_config(cfg, root, k),
                     {"train": len(train_idx), "validation": len(held_idx)}))
    return _Plan(len(rows), how, plan)


def _run_cv(cfg: RunConfig, plan: _Plan, root: Path, overwrite: bool) -> dict[str, Any]:
    selected = cfg.train.tracks_best()
    if selected:
        _say("cv: each fold picks its checkpoint (best_metric / early_stopping / select_best) on the rows it is "
             "scored on: the mean is optimistic (cv.json: selected_on_validation)")
    per_fold = _folds(plan.folds, root, overwrite)
    summary: dict[str, dict[str, Any]] = {}
    for split in (s for s in per_fold[0] if s not in ("fold", "output_dir", "rows")):
        names = [n for n in per_fold[0][split] if all(n in f[split] for f in per_fold)]
        summary[split] = {n: _summary([f[split][n] for f in per_fold]) for n in names}
    result = {"folds": len(plan.folds), "rows": plan.rows, "stratified": plan.how == "stratified",
              "grouped": plan.how == "grouped", "seed": cfg.train.seed, "selected_on_validation": selected,
              "std": "sample standard deviation over folds (ddof=1)", "metrics": summary, "per_fold": per_fold}
    write_json_atomic(root / "cv.json", result)
    return result


def _folds(plan: list[tuple[int, Path, dict[str, str], RunConfig, dict[str, int]]], root: Path, overwrite: bool,
           ) -> list[dict[str, Any]]:
    """Each fold run (or kept, where it finished with this config on these rows), after every fold folder is checked:
    one of another cv is refused before anything is written, unless `overwrite`."""
    states = [sub_run_state(out, fold, texts) for _, out, texts, fold, _ in plan]
    for _, out, _, _, _ in plan:  # a run writing a fold (`tunelab train` on it): refused before anything changes
        refuse_if_in_use(out)
    stale = sorted(p for p in root.iterdir()
                   if (m := re.fullmatch(r"fold-(\d+)", p.name)) and int(m.group(1)) > len(plan))
    if not overwrite:
        refuse_another(root, "cv", [(f"fold-{k}", state) for (k, *_), state in zip(plan, states, strict=True)
                                    if state not in (FINISHED, TO_RUN)]
                       + [(p.name, f"a fold of a cv of more than {len(plan)} folds") for p in stale])
    # an unfinished fold of this cv on these rows goes on from its checkpoint (not under --overwrite); what the others
    # replace, and the folds of the cv this one replaces, can all be removed (else one line, before anything is)
    resumes = [resumable(out, fold, f"cv: fold {k}", overwrite) if state == TO_RUN else None
               for (k, out, _, fold, _), state in zip(plan, states, strict=True)]
    check_removable([*stale, *(p for (_, out, texts, *_), state, resume in zip(plan, states, resumes, strict=True)
                               if state != FINISHED and resume is None for p in replaced_paths(out, texts))])
    per_fold, done = [], []
    try:
        for (k, out, texts, fold, counts), state, resume in zip(plan, states, resumes, strict=True):
            if state == FINISHED:
                _say(f"cv: fold {k}: finished, kept ({out})")
                metrics = read_json(out / "metrics.json")
            else:
                _say(f"cv: fold {k}/{len(plan)}: {counts['train']} training rows, {counts['validation']} validation "
                     f"rows → {out}")
                metrics = run_sub(fold, out, texts, resume, f"cv: fold {k}")
            done.append(out.name)
            per_fold.append({"fold": k, "output_dir": str(out), "rows": counts,
                             **{split: scalars(m) for split, m in metrics.items() if split != "train"}})
    except KeyboardInterrupt:
        raise StudyInterrupted(kept_line(done, root, "folds")) from None
    for path in stale:  # (overwrite: the folds of the cv this one replaced)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return per_fold


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
