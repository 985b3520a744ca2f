"""The names in a run directory that the stages and the web UI read without loading a model: the lock file, the
files a run and the studies write, checkpoint folders `step-N` and what one holds. No torch here, so `tunelab ui`
lists runs without importing it."""

from __future__ import annotations

import re
from pathlib import Path

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


def owning_run(model_dir: Path) -> Path | None:
    """The run directory a model directory belongs to: RUN for RUN/model and RUN/merged, and for an export or a
    compressed model in RUN/exports/NAME; None for a model of no run. As spelled where the path names the run
    (`runs/a` for `runs/a/model`), else resolved (`.`, `../onnx-int8`, a link to RUN/model)."""
    here = model_dir.resolve()
    up = 2 if here.parent.name == "exports" else 1
    run = here.parents[up - 1] if len(here.parents) >= up else None
    if run is None or not is_run_dir(run):
        return None
    spelled = model_dir.parents[up - 1] if len(model_dir.parts) > up else None
    return spelled if spelled is not None and is_run_dir(spelled) else run
