"""`metrics.jsonl` and experiment trackers (accelerate's TensorBoard and W&B trackers; MLflow through its own client,
because accelerate's MLflowTracker logs to the process-wide active run and tracking URI, which cannot keep the store
inside the run directory): every row of `metrics.jsonl` (training log lines and
evaluations) also goes to the trackers named in `train.report_to`, each offline and inside the run directory:

    tensorboard → OUTPUT_DIR/tensorboard/   (`tensorboard --logdir OUTPUT_DIR/tensorboard`)
    mlflow      → OUTPUT_DIR/mlflow.db      (`mlflow ui --backend-store-uri sqlite:///OUTPUT_DIR/mlflow.db`;
                                             MLFLOW_TRACKING_URI, when set, wins)
    wandb       → OUTPUT_DIR/wandb/         (offline mode; `wandb sync OUTPUT_DIR/wandb/offline-run-*`)

Each is an optional extra (`pip install tunelab[track]`); a missing one is a config error (config/sections.py),
before any model is loaded. The run's resolved config (OUTPUT_DIR/config.yaml) is logged as parameters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml
from accelerate.tracking import TensorBoardTracker, WandBTracker

from tunelab.config.fields import flat_fields


class Tracker(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    """Nested config → {"train.lr": 5e-5, ...}; lists and None as text."""
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat_fields(tree).items()}


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}


class TensorBoard:
    """accelerate's TensorBoardTracker, writing OUTPUT_DIR/tensorboard; training rows under `train/`."""

    def __init__(self, out: Path, params: dict[str, Any]) -> None:
        self.tracker = TensorBoardTracker("tensorboard", out)
        self.tracker.start()
        self.tracker.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()))

    def log(self, row: dict[str, Any]) -> None:
        self.tracker.log({k if "/" in k else f"train/{k}": v for k, v in _numbers(row).items()}, step=row["step"])

    def close(self) -> None:
        self.tracker.finish()


class MLflow:
    def __init__(self, out: Path, params: dict[str, Any]) -> None:
        import mlflow

        # MLFLOW_TRACKING_URI (a server) wins; else a SQLite store in the run dir (mlflow 3 retired the file store)
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(out / 'mlflow.db').resolve()}"
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name("tunelab")
        exp_id = experiment.experiment_id if experiment else self.client.create_experiment("tunelab")
        self.run_id = self.client.create_run(exp_id, run_name=out.name).info.run_id
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:6000])

    def log(self, row: dict[str, Any]) -> None:
        for key, value in _numbers(row).items():
            self.client.log_metric(self.run_id, key, value, step=row["step"])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandB:
    """accelerate's WandBTracker, offline, writing OUTPUT_DIR/wandb (`wandb sync` uploads it later)."""

    def __init__(self, out: Path, params: dict[str, Any]) -> None:
        import wandb  # optional extra (tunelab[track])

        os.environ.setdefault("WANDB_SILENT", "true")
        self.tracker = WandBTracker("tunelab", mode="offline", dir=str(out), name=out.name, config=params,
                                    settings=wandb.Settings(console="off"))
        self.tracker.start()

    def log(self, row: dict[str, Any]) -> None:
        self.tracker.log(_numbers(row), step=row["step"])

    def close(self) -> None:
        self.tracker.finish()


BACKENDS: dict[str, type] = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


def open_trackers(names: list[str], out: Path | None) -> list[Tracker]:
    """The trackers for one run (main process only); the run config is read from OUTPUT_DIR/config.yaml."""
    if not names or out is None:
        return []
    config_file = out / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    params = _flat(config or {})
    return [BACKENDS[name](out, params) for name in dict.fromkeys(names)]


class MetricsLog:
    """`metrics.jsonl`: one JSON object per log step or evaluation, flushed as written; the same rows
    go to the `train.report_to` trackers (tracking.py)."""

    def __init__(self, path: Path | None, report_to: Sequence[str] = ()) -> None:
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("a", encoding="utf-8") if path else None
        self.trackers = open_trackers(list(report_to), path.parent if path else None)

    def write(self, row: dict[str, Any]) -> None:
        if self._f:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._f.flush()
        for tracker in self.trackers:
            tracker.log(row)

    def close(self) -> None:
        if self._f:
            self._f.close()
        for tracker in self.trackers:
            tracker.close()
