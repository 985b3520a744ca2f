"""Learning curves (`tunelab curve`): the same run trained on growing, seeded fractions of data.train.

    data.* ─► load_splits (read, clean, dedup; the normal run's validation hold-out, same seed)
    validation fixed: data.validation, or the held-out rows written ONCE to OUTPUT_DIR/curve/validation.jsonl
    OUTPUT_DIR/curve/frac-F/train.jsonl   a seeded subset of the remaining training rows (stratified by label
                                          for single-label classification; smaller fractions are subsets of
                                          larger ones), each row the original row with all its fields
    OUTPUT_DIR/curve/frac-F/              pipeline.run with data.train (and data.validation) pointing there
    OUTPUT_DIR/curve/curve.json           {"metric", "points": [{"fraction", "rows", "value", "run_dir"}]}
    OUTPUT_DIR/curve/curve.svg            validation headline metric against training rows

Validation rows never reach a fraction's training file: they are held out before any subsampling. One process per
curve folder (OUTPUT_DIR/curve/.tunelab-study.lock, taken before anything is written). Run again, a point that
finished with the same config on the same rows is kept, one that did not finish goes on from its newest checkpoint
where that trained on the rows and data files it reads now (else from its start); one of another config, or other
rows (validation.jsonl too), is refused in one line before anything is written (`overwrite` replaces it, and starts
an unfinished point over, once all it removes is known removable); rows are read by the text rules of the first
point kept or resumed (cv.study_rules).
The `frac-F` folders of fractions not asked for (an earlier curve's) are never read into curve.json / curve.svg, and
each run says what becomes of them: kept; those of another config or other rows removed under `overwrite` (they are
the curve it replaces, as is its old curve.json / curve.svg), else kept.
"""

from __future__ import annotations

import random
import shutil
import sys
from collections import defaultdict
from collections.abc import Hashable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from rich.table import Table as RichTable

from tunelab.config.run import RunConfig
from tunelab.data.load import load_splits
from tunelab.errors import ConfigError, StudyInterrupted, TunelabError
from tunelab.io import make_dirs, read_json, write_json_atomic, write_text_atomic
from tunelab.plots import lines, svg_document
from tunelab.progress import table_console
from tunelab.registry import TASKS
from tunelab.studies.cv import (
    FINISHED,
    TO_RUN,
    kept_line,
    refuse_another,
    replaced_paths,
    resumable,
    rows_text,
    run_sub,
    study_rules,
    sub_run_config,
    sub_run_state,
)
from tunelab.studies.records import hashes_cached
from tunelab.studies.trials import metric_value
from tunelab.text import text_rules
from tunelab.training.layout import STUDY_LOCK
from tunelab.training.run_dir import RunDirLock, check_removable, refuse_if_in_use


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_fractions(text: str) -> list[float]:
    """`0.1,0.3,1` → [0.1, 0.3, 1.0]: each in (0, 1], sorted, duplicates removed."""
    out = set()
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"curve: --fractions: {part!r} is not a number") from None
        if not 0 < value <= 1:
            raise ConfigError(f"curve: --fractions: {part} is not in (0, 1]")
        same = next((f for f in out if f != value and f"{f:g}" == f"{value:g}"), None)
        if same is not None:  # one folder, frac-F, would hold both points
            raise ConfigError(f"curve: --fractions: {same!r} and {part} are one fraction to 6 digits (frac-{value:g}); "
                              "give one of them")
        out.add(value)
    if not out:
        raise ConfigError("curve: --fractions: give at least one fraction, e.g. 0.1,0.3,1")
    return sorted(out)


def nested_subsets(keys: list[Hashable | None], fractions: list[float], seed: int) -> dict[float, list[int]]:
    """Indices kept per fraction, in input order. Rows are grouped by key (one group when keys are None),
    each group is shuffled once (seeded) and keeps its first round(fraction · size) rows, at least one, so
    every class stays present and a smaller fraction's rows are a subset of a larger one's."""
    groups: dict[Hashable | None, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    rng = random.Random(seed)
    orders = {k: rng.sample(members, len(members)) for k, members in groups.items()}
    return {f: sorted(i for order in orders.values() for i in order[:max(1, round(f * len(order)))])
            for f in fractions}


def _headline(metrics: dict[str, Any]) -> tuple[str, float]:
    return metric_value(metrics, None)


def run_curve(cfg: RunConfig, fractions: list[float], overwrite: bool = False) -> dict[str, Any]:
    """Train one run per fraction (a point that finished with this config on the same rows is kept); returns (and
    writes to OUTPUT_DIR/curve/curve.json, with curve.svg) the validation headline metric at each fraction.
    `overwrite`: replace the points (and validation.jsonl) of another curve."""
    root = make_dirs(Path(cfg.output_dir) / "curve", "output_dir")
    # one curve per folder: a second is refused with the pid before it writes (a data file hashed once in it)
    with RunDirLock(root, STUDY_LOCK), hashes_cached():
        # a curve continued reads its rows (its validation hold-out too) by the rules its points kept or resumed read
        # them by
        validation = cfg.data.validation or str(root / "validation.jsonl")
        unasked = _unasked_points(root, fractions)
        points = [(out, _point_config(cfg, out, validation))
                  for out in (root / f"frac-{f:g}" for f in sorted({*fractions, *unasked}))]
        rules, plan = study_rules(points, partial(_plan, cfg, [*fractions, *unasked], root), _Plan.files, overwrite)
        with text_rules(rules):
            return _run_curve(cfg, fractions, plan, root, overwrite)


def _point_config(cfg: RunConfig, out: Path, validation: str) -> RunConfig:
    return sub_run_config(cfg, out, train=str(out / "train.jsonl"), validation=validation)


class _Plan(NamedTuple):
    rows: list[dict[str, Any]]  # the training rows
    validation_rows: int
    held: dict[str, str]  # {"validation.jsonl": the held-out rows}, written once in root; {} with data.validation
    validation: str  # the file each point validates on
    stratified: bool
    points: dict[float, tuple[Path, dict[str, str], int]]  # fraction → its folder, rows' files, rows (unasked too)
    new_rows: bool  # validation.jsonl holds other rows: every point there validated on them

    def files(self, out: Path) -> dict[str, str] | None:
        return None if self.new_rows else next((files for o, files, _ in self.points.values() if o == out), None)


def _plan(cfg: RunConfig, fractions: list[float], root: Path) -> _Plan:
    """The curve's rows read (by the text rules in force), its validation rows held out, and each fraction's subset
    (`fractions`: those asked for and those of the points not asked for)."""
    task = TASKS.get(cfg.task.name)(cfg.task, cfg.data)
    splits = load_splits(cfg.data, task, cfg.train.seed, training=True)  # a normal run's hold-out, its checks
    if "validation" not in splits:
        raise ConfigError("curve: needs a validation split: set data.validation or data.validation_split > 0")
    validation = cfg.data.validation
    held = {} if validation else {"validation.jsonl": rows_text(splits["validation"])}  # written once, in root
    if not validation:
        validation = str(root / "validation.jsonl")
    rows = splits["train"]
    keys = [task.stratify_key(ex) for ex in rows]
    stratified = all(k is not None and not isinstance(k, tuple) for k in keys)  # tuple: multi-label
    subsets = nested_subsets(keys if stratified else [None] * len(rows), fractions, cfg.train.seed)
    shared = root / "validation.jsonl"  # the held-out rows every point of the curve validated on
    new_rows = bool(held) and shared.exists() and (not shared.is_file()
                                                   or shared.read_bytes() != held[shared.name].encode())
    points = {f: (root / f"frac-{f:g}", {"train.jsonl": rows_text([rows[i] for i in subsets[f]])}, len(subsets[f]))
              for f in fractions}
    return _Plan(rows, len(splits["validation"]), held, validation, stratified, points, new_rows)


def _run_curve(cfg: RunConfig, fractions: list[float], made: _Plan, root: Path, overwrite: bool) -> dict[str, Any]:
    rows, validation, held, new_rows = made.rows, made.validation, made.held, made.new_rows
    _say(f"curve: {len(rows)} training rows, {made.validation_rows} validation rows ({validation}), "
         f"fractions {', '.join(f'{f:g}' for f in fractions)} "
         f"({'stratified by label' if made.stratified else 'not stratified'}), seed {cfg.train.seed} → {root}")
    plan = [(f, *made.points[f][:2]) for f in fractions]
    configs = [_point_config(cfg, out, validation) for _, out, _ in plan]
    states = [sub_run_state(out, c, texts) for (_, out, texts), c in zip(plan, configs, strict=True)]
    for _, out, _ in plan:  # a run writing a point (`tunelab train` on it): refused before anything here changes
        refuse_if_in_use(out)
    other = [(out.name, state) for (_, out, _), state in zip(plan, states, strict=True)
             if state not in (FINISHED, TO_RUN)]
    if new_rows:  # every point there validated on other rows
        other.insert(0, ("validation.jsonl", "other rows"))
    if not overwrite:
        refuse_another(root, "curve", other)
    # an unfinished point of this curve on these rows goes on from its checkpoint (not under --overwrite); what the
    # others replace can all be removed
    resumes = [resumable(out, c, f"curve: fraction {f:g}", overwrite) if state == TO_RUN else None
               for (f, out, _), c, state in zip(plan, configs, states, strict=True)]
    replaced = [p for (_, out, texts), state, resume in zip(plan, states, resumes, strict=True)
                if state != FINISHED and resume is None for p in replaced_paths(out, texts)]
    stale = _sort_unasked(cfg, root, [f for f in made.points if f not in fractions], made, overwrite, replaced)
    if overwrite and (other or stale):  # the summary of the curve replaced
        for name in ("curve.json", "curve.svg"):
            (root / name).unlink(missing_ok=True)
    for name, text in held.items():
        write_text_atomic(root / name, text)
    points, done, metric = [], [], None
    try:
        for (f, out, texts), config, state, resume in zip(plan, configs, states, resumes, strict=True):
            if state == FINISHED:
                _say(f"curve: fraction {f:g}: finished, kept ({out})")
                metrics = read_json(out / "metrics.json")
            else:
                _say(f"curve: fraction {f:g}: {made.points[f][2]} training rows → {out}")
                metrics = run_sub(config, out, texts, resume, f"curve: fraction {f:g}")
            metric, value = _headline(metrics["validation"])
            done.append(out.name)
            points.append({"fraction": f, "rows": made.points[f][2], "value": value, "run_dir": str(out)})
    except KeyboardInterrupt:
        raise StudyInterrupted(kept_line(done, root, "points")) from None
    result = {"metric": metric, "split": "validation", "seed": cfg.train.seed, "train_rows": len(rows),
              "validation_rows": made.validation_rows, "stratified": made.stratified, "points": points}
    write_json_atomic(root / "curve.json", result)
    plot_curve(result, root / "curve.svg")
    return result


def _unasked_points(root: Path, fractions: list[float]) -> list[float]:
    """The fractions of the `frac-F` folders in `root` that `fractions` leaves out (an earlier curve's)."""
    found = []
    for path in root.glob("frac-*"):
        try:
            f = float(path.name.removeprefix("frac-"))
        except ValueError:
            continue
        if 0 < f <= 1 and path.name == f"frac-{f:g}" and f not in fractions and path.is_dir() \
                and not path.is_symlink():
            found.append(f)
    return sorted(found)


def _sort_unasked(cfg: RunConfig, root: Path, unasked: list[float], plan: _Plan, overwrite: bool,
                  replaced: list[Path]) -> list[str]:
    """Say what becomes of the points of fractions not asked for (never read into curve.json): those of this config
    on the same rows are kept; those of another config or other rows (`plan`: their rows, the file the points validate
    on, whether validation.jsonl now holds other rows) are removed under `overwrite` (returned), else kept — once
    they, what the asked points' runs replace (`replaced`) and the replaced curve's summary are known removable."""
    ours, others = [], []
    for f in unasked:
        out = root / f"frac-{f:g}"
        config = _point_config(cfg, out, plan.validation)
        try:
            state = sub_run_state(out, config, plan.points[f][1])
        except TunelabError:  # a damaged file in a point not asked for: no reason to stop the curve
            state = "a file that does not read"
        (ours if state in (FINISHED, TO_RUN) and not plan.new_rows else others).append(out.name)
    if ours:
        _say(f"curve: {', '.join(ours)} (not in --fractions): kept, not read into curve.json")
    gone = others if overwrite else []
    for name in gone:  # all checked before any goes: a run writing one (`tunelab train` on it) keeps it whole
        refuse_if_in_use(root / name)
    summary = [root / "curve.json", root / "curve.svg"] if overwrite else []
    check_removable([*(root / name for name in gone), *replaced, *summary])
    if gone:
        for name in gone:
            shutil.rmtree(root / name)
        _say(f"curve: {', '.join(others)} (not in --fractions; another config or other rows): removed (--overwrite)")
    elif others:
        _say(f"curve: {', '.join(others)} (not in --fractions; another config or other rows): kept, not read into "
             "curve.json (--overwrite removes them)")
    return others if overwrite else []


def plot_curve(result: dict[str, Any], path: Path) -> None:
    """curve.svg: the metric against training rows, each point labelled with its fraction."""
    rows = [p["rows"] for p in result["points"]]
    svg = lines({result["metric"]: (rows, [p["value"] for p in result["points"]])},
                f"learning curve: validation {result['metric']}", "training rows", result["metric"], markers=True,
                logx=min(rows) * 10 <= max(rows),
                annotate={result["metric"]: [f"{p['fraction']:g}" for p in result["points"]]})
    write_text_atomic(path, svg_document(svg))


def print_curve(result: dict[str, Any]) -> None:
    table = RichTable(title=f"learning curve: validation {result['metric']}")
    for col in ("fraction", "rows", result["metric"], "run"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for p in result["points"]:
        table.add_row(f"{p['fraction']:g}", str(p["rows"]), f"{p['value']:.4f}", p["run_dir"])
    table_console(width=140).print(table)
