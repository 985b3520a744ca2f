"""The public Python API: tunelab.train / tunelab.load give what the CLI gives (same rows, same metrics)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import tunelab
from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.errors import ConfigError, DataError, TunelabError
from tunelab.registry import METHODS

runner = CliRunner()


@pytest.fixture(scope="module")
def api_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tunelab.Run:
    tmp = tmp_path_factory.mktemp("api")
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(48, 0))
    val = write_jsonl(tmp / "validation.jsonl", sentiment_rows(16, 1))
    (tmp / "run.yaml").write_text(yaml.safe_dump({
        "task": "classification", "model": str(tiny_bert), "output_dir": str(tmp / "run"),
        "data": {"train": str(train), "validation": str(val)},
        "train": {"epochs": 3, "batch_size": 8, "lr": 5e-3, "save_steps": 0}}))
    return tunelab.train(tmp / "run.yaml", **{"train.epochs": 2, "method.name": "lora"})


def test_train_returns_the_run(api_run: tunelab.Run) -> None:
    assert api_run.dir.is_dir() and (api_run.model_dir / "tunelab.json").is_file()
    assert api_run.config.train.epochs == 2 and api_run.config.method.name == "lora"  # the overrides won
    assert api_run.metrics == json.loads((api_run.dir / "metrics.json").read_text())
    saved = yaml.safe_load((api_run.dir / "config.yaml").read_text())
    assert saved["train"]["lr"] == 5e-3 and saved["train"]["epochs"] == 2


def test_config_yaml_holds_the_lr_the_run_used(tiny_bert: Path, tmp_path: Path) -> None:
    """Without train.lr the method's default is what trains, and what config.yaml says (was `lr: null`)."""
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24, 0))
    run = tunelab.train({"task": "classification", "model": str(tiny_bert), "method": "lora",
                         "output_dir": str(tmp_path / "run"), "data": {"train": str(train)},
                         "train": {"max_steps": 1, "save_steps": 0}})
    lr = yaml.safe_load((run.dir / "config.yaml").read_text())["train"]["lr"]
    assert lr == METHODS.get("lora").default_lr == run.config.train.lr


def test_a_model_trained_at_fp32_is_scored_at_fp32(api_run: tunelab.Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run at fp32 records it (tunelab.json `precision`) and its loaded model keeps it where `auto` would pick
    bf16 (a CPU with native bf16): `eval` / `predict` score as the run's metrics were scored."""
    import torch

    from tunelab.models.precision import autocast_dtype

    assert json.loads((api_run.model_dir / "tunelab.json").read_text())["precision"] == "fp32"  # (tests run fp32)
    monkeypatch.delenv("TUNELAB_PRECISION")
    module = tunelab.load(api_run.dir).module
    assert autocast_dtype(torch.device("cpu"), model=module) is None
    monkeypatch.setenv("TUNELAB_PRECISION", "bf16")  # the variable still picks what `auto` means
    assert autocast_dtype(torch.device("cpu"), model=module) == torch.bfloat16


def test_load_predict_matches_the_cli(api_run: tunelab.Run, tmp_path: Path) -> None:
    model = tunelab.load(api_run.dir)  # a run directory or its model/
    assert model.task.cfg.name == "classification" and "classification" in repr(model)
    assert repr(api_run.load()) == repr(model) and api_run.load().path == api_run.model_dir
    texts = ["good great fine movie", "awful boring bad plot"]
    rows = model.predict(texts)
    assert [r["text"] for r in rows] == texts and all({"pred_label", "scores"} <= set(r) for r in rows)
    assert model.predict("good great fine") == model.predict(["good great fine"])
    assert model.predict([{"text": t} for t in texts]) == rows
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, [{"text": t} for t in texts])
    assert model.predict(inp) == rows
    res = runner.invoke(app, ["predict", str(api_run.model_dir), "--input", str(inp)])
    assert res.exit_code == 0, res.output
    assert [json.loads(line) for line in res.stdout.splitlines()] == rows


def test_load_evaluate_matches_the_cli(api_run: tunelab.Run) -> None:
    model = tunelab.load(api_run.model_dir)
    val = api_run.config.data.validation
    metrics = model.evaluate(val)
    assert metrics["accuracy"] == pytest.approx(api_run.metrics["validation"]["accuracy"])
    res = runner.invoke(app, ["eval", str(api_run.model_dir), "--data", val])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(metrics["accuracy"])
    rows = [json.loads(line) for line in Path(val).read_text().splitlines()]
    assert model.evaluate(rows)["accuracy"] == pytest.approx(metrics["accuracy"])
    assert model.evaluate(rows, limit=4)["n"] == 4


def test_errors_are_tunelab_errors(api_run: tunelab.Run, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: train\.lerning_rate: unknown key; did you mean learning_rate\? "
                                          r"tunelab.s name for it is train\.lr$"):
        tunelab.make_config(api_run.config, **{"train.lerning_rate": 1})
    with pytest.raises(ConfigError, match="config file not found"):
        tunelab.train(tmp_path / "missing.yaml")
    with pytest.raises(TunelabError, match="no such directory"):
        tunelab.load(tmp_path / "nowhere")
    with pytest.raises(TunelabError, match="not a tunelab model directory"):
        tunelab.load(tmp_path)
    model = tunelab.load(api_run.dir)
    with pytest.raises(DataError, match=r"^<input>:2: "):
        model.predict([{"text": "good"}, {"txt": "bad"}])
    with pytest.raises(TunelabError, match="empty input"):
        model.predict([])


def test_make_config_takes_every_form(api_run: tunelab.Run) -> None:
    cfg = api_run.config
    assert isinstance(cfg, tunelab.RunConfig)
    again = tunelab.make_config(cfg.model_dump(mode="json"))
    assert again == cfg
    assert tunelab.make_config(cfg, **{"train.lr": 1e-3}).train.lr == 1e-3
    assert cfg.train.lr == 5e-3  # the original is frozen and unchanged


def test_import_tunelab_is_light() -> None:
    """`import tunelab` loads neither torch nor transformers; the API names load on first use."""
    code = "import sys, tunelab; print('torch' in sys.modules, 'transformers' in sys.modules, tunelab.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"] and out[2] == tunelab.__version__
    with pytest.raises(AttributeError):
        tunelab.no_such_name  # noqa: B018
