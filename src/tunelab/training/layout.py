"""The names in a run directory that the stages and the web UI read without loading a model: the lock file, the
files a run and the studies write, checkpoint folders `step-N` and what one holds. No torch here, so `tunelab ui`
lists runs without importing it."""

from __future__ import annotations

import re
from pathlib import Path

from tunelab.io import Read

LOCK = ".tunelab.lock"
STUDY_LOCK = ".tunelab-study.lock"  # a study's folder (tune, cv, curve), held by its one process (UI: no run)
# what a training run writes into its output_dir (and --overwrite removes), with what export / compress make of its
# model (merged/, exports/): they are that run's, so a new run in the directory moves them aside with the rest (an
# export left behind would be the old model, and `tunelab serve RUN` prefers an export to RUN/model)
# (distill.json: what `tunelab distill` writes beside its student run, of that student)
RUN_FILES = frozenset({"config.yaml", "metrics.json", "metrics.jsonl", "data_summary.json", "removed.jsonl",
                       "checkpoints", "model", "adapter", "merged", "exports", "predictions", "report.html",
                       "tensorboard", "mlflow.db", "wandb", "distill.json"})
EXPORTED = frozenset({"merged", "exports"})  # of RUN_FILES, what export / compress made: work of its own
# what other commands write into a run's output_dir (baseline, curve, tune, cv, eval --report ...): kept
# (eval.json: `tunelab eval RUN/model > RUN/eval.json`, as `make demo` writes it); hidden files (the lock) are skipped
STUDY_FILES = frozenset({"baselines.json", "curve", "tune", "cv", "eval.json"})
# of predictions/, what training writes (each evaluated split's records, replies, the untrained model's replies) and
# the report and compare read again; eval's replies files (eval-*.generations.jsonl) are each eval's own, replaced
EVAL_SPLITS = ("validation", "test")
PREDICTIONS = frozenset(f"predictions/{prefix}{split}{suffix}" for split in EVAL_SPLITS
                        for prefix, suffix in (("", ".jsonl"), ("", ".generations.jsonl"),
                                               ("baseline-", ".generations.jsonl")))
REPLACED = ".replaced"  # the finished run a new run replaces, until the new one finishes (training/run_dir.py)
# beside its config.yaml, any of these says a folder is a run directory (what training writes first, and what it keeps)
# what only a tunelab run writes (beside its config.yaml): not `checkpoints/` or `metrics.json`, which other tools'
# project folders (Hydra, Lightning) have too
RUN_MARKERS = ("data_summary.json", LOCK, REPLACED, "model/tunelab.json")
STEP_DIR = re.compile(r"step-(\d+)")
FILES = ("trainable.safetensors", "state.pt", "trainer_state.json")


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Checkpoint directories `step-N` under `root`, oldest first (temp dirs of an interrupted save are never
    listed; whether one is complete and intact is `verify`'s question)."""
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.fullmatch(p.name)) and p.is_dir())


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a run directory: its config.yaml and one of RUN_MARKERS (a copy of a run without its lock
    too; a user's folder with a config.yaml alone is not)."""
    try:
        return (path / "config.yaml").is_file() and any((path / m).exists() for m in RUN_MARKERS)
    except OSError:
        return False


def run_of(path: Path) -> Path | None:
    """RUN of RUN/model, RUN/merged or RUN/exports/NAME as `path` spells it (None where it does not name it: `model`
    alone, a model of no run). A run directory that is itself named `exports` holds its model/ too."""
    if path.parent.name == "exports" and len(path.parts) > 2 and is_run_dir(path.parents[1]):
        return path.parents[1]
    return path.parent if len(path.parts) > 1 and is_run_dir(path.parent) else None


def owning_runs(model_dir: Path) -> list[Path]:
    """The run directories a model directory belongs to: RUN for RUN/model and RUN/merged, and for an export or a
    compressed model in RUN/exports/NAME; [] for a model of no run. As spelled where the path names the run
    (`runs/a` for `runs/a/model`), else resolved (`.`, `../onnx-int8`, a link to RUN/model); both where they are two
    folders (`runB/model` a link to `runA/model`: runB as named, and runA whose model it is)."""
    resolved, spelled = run_of(model_dir.resolve()), run_of(model_dir)
    if spelled is not None and resolved is not None and spelled.resolve() == resolved:
        return [spelled]
    return [run for run in (spelled, resolved) if run is not None]


def run_own_files(run: Path) -> frozenset[str]:
    """What no output may replace in the run directory `run`, even with --overwrite, as paths below it (an entry
    guards all it holds): what training and the studies wrote there and read again (RUN_FILES, STUDY_FILES) — of
    predictions/, the records and replies it writes of each split (PREDICTIONS; not eval's replies files, which each
    eval replaces, nor a file of one's own), and of exports/, each export's folder (not a file of one's own beside
    them)."""
    exports = run / "exports"
    try:
        folders = {f"exports/{p.name}" for p in exports.iterdir() if p.is_dir()} if exports.is_dir() else set()
    except OSError:  # not readable: all of it
        folders = {"exports"}
    return (RUN_FILES | STUDY_FILES) - {"predictions", "exports"} | PREDICTIONS | folders


def run_read(run: Path) -> Read:
    """A run directory a command reads (compare, eval --report; eval and predict of its model), for
    `io.check_outputs`: its own files (`run_own_files`) are never replaced; other files in it are like any other."""
    return Read("the run directory", run, run_own_files(run))


def model_reads(model_dir: Path) -> list[Read]:
    """A model directory a command reads (eval, predict; `Model.evaluate`), for `io.check_outputs`: its files, and
    the own files of the runs it belongs to (`owning_runs`: RUN/model's, RUN/merged's, RUN/exports/NAME's run:
    metrics.json, report.html, another export's model.onnx), which an output never replaces, --overwrite or not."""
    from tunelab.models.aliases import model_dir_of

    model_dir = model_dir_of(model_dir)  # a run's directory names its model/
    return [Read("the model directory", model_dir), *map(run_read, owning_runs(model_dir))]
