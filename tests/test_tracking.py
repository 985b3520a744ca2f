"""`train.report_to`: the metrics.jsonl rows reach TensorBoard, MLflow and W&B (all offline, in the run
directory; one run reports to the three at once); a tracker whose package is missing is a config error."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import load_config
from tunelab.config.sections import TRACKER_PACKAGES
from tunelab.errors import ConfigError


def _train(tiny_bert: Path, tmp_path: Path, trackers: str) -> tuple[Path, list[dict]]:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(8, 1))
    out = tmp_path / "run"
    sets = [f"model={tiny_bert}", "task=classification", f"data.train={train}", f"data.validation={val}",
            f"output_dir={out}", "train.max_steps=4", "train.batch_size=8", "train.log_steps=1",
            "train.eval_steps=2", "train.save_steps=0", "train.lr=1e-3", f"train.report_to={trackers}"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, rows


@pytest.fixture(scope="module")
def tracked(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict]]]:
    """One run reporting to every installed tracker at once, in a folder in memory where the machine has one
    (/dev/shm): MLflow's SQLite store commits each of its ~70 schema migrations to disk as the run opens it (3-6 s of
    waiting on the disk, under 1 s in memory)."""
    installed = [name for name, package in TRACKER_PACKAGES.items() if importlib.util.find_spec(package)]
    if not installed:
        pytest.skip("no tracker installed (make install has all three)")
    shm = Path("/dev/shm")
    tmp = Path(tempfile.mkdtemp(prefix="tunelab-tracking-", dir=shm)) if os.access(shm, os.W_OK) else \
        tmp_path_factory.mktemp("tracking")
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("WANDB_MODE", "offline")
            env.delenv("MLFLOW_TRACKING_URI", raising=False)
            yield _train(tiny_bert, tmp, f"[{','.join(installed)}]")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("backend", ["tensorboard", "mlflow", "wandb"])
def test_tracker_receives_the_metrics(backend: str, tracked: tuple[Path, list[dict]],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip(TRACKER_PACKAGES[backend])  # each is an optional extra; `make install` has all three
    out, rows = tracked
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r and "final" not in r}
    evals = {r["step"]: r["eval/accuracy"] for r in rows if "eval/accuracy" in r and "final" not in r}
    assert sorted(losses) == [1, 2, 3, 4] and sorted(evals) == [2]
    if backend == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(out / "tensorboard"))
        acc.Reload()
        got = {e.step: e.value for e in acc.Scalars("train/loss")}
        assert got == pytest.approx(losses, rel=1e-6)
        assert {e.step: e.value for e in acc.Scalars("eval/accuracy")} == pytest.approx(evals)
    elif backend == "mlflow":
        import mlflow

        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
        (run,) = client.search_runs([client.get_experiment_by_name("tunelab").experiment_id])
        assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")} == pytest.approx(losses)
        assert run.data.params["train.max_steps"] == "4" and run.info.status == "FINISHED"
    else:
        (log,) = (out / "wandb").glob("offline-run-*/run-*.wandb")  # protobuf records; values as JSON text
        data = log.read_bytes()
        assert data.count(b"eval/accuracy") >= 1 and b"train.max_steps" in data
        assert all(json.dumps(v).encode() in data for v in losses.values())


def test_missing_or_unknown_tracker_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["task=classification", "model=/tmp"]
    with pytest.raises(ConfigError, match=r"^--set train.report_to.0: "):
        load_config(None, [*base, "train.report_to=[comet]"])
    monkeypatch.setitem(TRACKER_PACKAGES, "wandb", "no_such_package_tunelab")
    with pytest.raises(ConfigError, match=r"wandb is not installed; pip install 'tunelab\[track\]'"):
        load_config(None, [*base, "train.report_to=wandb"])
    assert load_config(None, [*base, "train.report_to=tensorboard"]).train.report_to == ["tensorboard"]
