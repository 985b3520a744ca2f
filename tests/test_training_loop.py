"""The training loop's safety and selection features on a tiny model: NaN/inf stops, early stopping
with best-checkpoint export, optimizers and schedules, L1, dropout override, and `tunelab env`."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.config.sections import TrainConfig
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError, TunelabError
from tunelab.registry import METHODS, TASKS
from tunelab.training import checkpoint as ckpt
from tunelab.training import engine
from tunelab.training.early_stopping import MetricTracker
from tunelab.training.optim import PlateauWithWarmup, set_dropout

runner = CliRunner()


def _table(rows: list[dict]) -> Table:
    return Table("mem.jsonl", [Record("mem.jsonl", i + 1, r) for i, r in enumerate(rows)])


def _setup(model_path: Path, method: str = "full", **train: object):
    cfg = build_config({"task": "classification", "model": str(model_path), "method": method,
                        "train": {"batch_size": 8, "lr": 1e-3, "log_steps": 1, **train}})
    engine.seed_everything(0)
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(_table(sentiment_rows(24)))
    model, tok = task.build_model(str(model_path), examples)
    model = METHODS.get(method)(cfg.method).apply(model, task.head_modules(model))
    return cfg, model, task.encode(examples, tok), partial(task.collate, pad_id=tok.pad_token_id)


# ------------------------------------------------------------------------ NaN / inf
def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tiny_bert: Path, tmp_path: Path) -> None:
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=10, save_steps=2)
    calls = 0

    def loss_fn(m: torch.nn.Module, batch: dict) -> torch.Tensor:
        nonlocal calls
        calls += 1
        loss = m(**batch).loss
        return loss * float("nan") if calls == 5 else loss

    with pytest.raises(FloatingPointError) as err:
        engine.train(model, feats, collate, cfg.train, 1e-3, tmp_path, loss_fn=loss_fn)
    assert str(err.value) == f"train: loss is nan at step 5; last good checkpoint: {tmp_path}/checkpoints/step-00000004"
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [2, 4]
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_nan_gradient_is_caught_when_clipping(tiny_bert: Path) -> None:
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=6, save_steps=0)
    calls = 0

    def loss_fn(m: torch.nn.Module, batch: dict) -> torch.Tensor:
        nonlocal calls
        calls += 1
        loss = m(**batch).loss
        if calls == 3:  # adds 0 to the loss, NaN to the gradient: d sqrt(x^2)/dx at 0
            w = next(p for p in m.parameters() if p.requires_grad)
            x = w.sum() - w.sum().detach()
            loss = loss + torch.sqrt(x * x)
        return loss

    with pytest.raises(FloatingPointError, match=r"^train: gradient norm is nan at step 3; no checkpoint was saved$"):
        engine.train(model, feats, collate, cfg.train, 1e-3, None, loss_fn=loss_fn)


def test_cli_nan_exits_1_with_one_line(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunelab.tasks.classification import Classification

    calls = 0

    def nan_at_3(m: torch.nn.Module, batch: dict) -> torch.Tensor:
        nonlocal calls
        calls += 1
        loss = m(**batch).loss
        return loss + float("inf") if calls == 3 else loss

    monkeypatch.setattr(Classification, "loss_fn", lambda self: nan_at_3)
    data = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40))
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--set", "task=classification", "--set", f"model={tiny_bert}",
                              "--set", f"data.train={data}", "--set", f"output_dir={out}", "--set", "train.max_steps=6",
                              "--set", "train.batch_size=8", "--set", "train.save_steps=2"])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        f"error: train: loss is inf at step 3; last good checkpoint: {out}/checkpoints/step-00000002"]
    assert not (out / "model").exists()


# ------------------------------------------------------------------------ early stopping, best model
def _scripted(values: list[float]):
    """An `evaluate` that returns the next accuracy of `values` each time it is called."""
    it = iter(values)
    return lambda m: {"accuracy": next(it), "n": 8}


@pytest.mark.parametrize("checkpoints", [True, False], ids=["best-from-checkpoint", "best-in-memory"])
def test_early_stopping_exports_the_best_step(checkpoints: bool, tiny_bert: Path, tmp_path: Path) -> None:
    cfg, model, feats, collate = _setup(
        tiny_bert, max_steps=20, eval_steps=1, save_steps=1 if checkpoints else 0, save_total_limit=1,
        early_stopping={"metric": "accuracy", "patience": 2},
    )
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    result = engine.train(model, feats, collate, cfg.train, 1e-2, tmp_path, evaluate=_scripted([0.5, 0.8, 0.7, 0.75]),
                          on_eval=lambda step, _: snapshots.__setitem__(step, ckpt.trainable_state(model)))
    assert (result.steps, result.stopped_early, result.best_step, result.selected_step) == (4, True, 2, 2)
    assert (result.best_metric, result.best_value) == ("accuracy", 0.8)
    now = ckpt.trainable_state(model)
    assert all(torch.equal(now[k], snapshots[2][k]) for k in now), "the model must hold the best step's weights"
    assert not all(torch.equal(now[k], snapshots[4][k]) for k in now)
    if checkpoints:  # the newest one (save_total_limit 1) plus the best, never pruned
        assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [2, 4]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    stop = {"metric": "accuracy", "best_step": 2, "best_value": 0.8, "bad": 2}
    assert rows[-1] == {"step": 4, "early_stopping": stop}


def test_a_resumed_run_selects_its_best_from_before_the_resume(tiny_bert: Path, tmp_path: Path) -> None:
    """The best step came before the resume and none after beats it: select_best exports that step's weights, read
    beside the resumed checkpoint — resumed into another folder, or with train.save_steps 0 (both failed at the
    very end, every step trained and no model written); a later best replaces it."""
    first = tmp_path / "a"
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=3, eval_steps=1, save_steps=1, best_metric="accuracy")
    engine.train(model, feats, collate, cfg.train, 1e-2, first, evaluate=_scripted([0.5, 0.8, 0.7]))
    best = load_file(str(first / "checkpoints" / "step-00000002" / "trainable.safetensors"))
    for out, save_steps, values, step in ((tmp_path / "b", 1, [0.6, 0.65], 2), (first, 0, [0.6, 0.65], 2),
                                          (tmp_path / "c", 1, [0.9, 0.6], 4)):
        cfg, model, feats, collate = _setup(tiny_bert, max_steps=5, eval_steps=1, save_steps=save_steps,
                                            best_metric="accuracy")
        result = engine.train(model, feats, collate, cfg.train, 1e-2, out, evaluate=_scripted(values),
                              resume_from=first / "checkpoints" / "step-00000003")
        assert (result.steps, result.selected_step) == (5, step)
        now = ckpt.trainable_state(model)
        assert all(torch.equal(now[k], best[k]) for k in now) == (step == 2)
    # the best is the resumed checkpoint itself (a run interrupted while improving), resumed with save_steps 0
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=3, eval_steps=1, save_steps=1, best_metric="accuracy")
    engine.train(model, feats, collate, cfg.train, 1e-2, tmp_path / "d", evaluate=_scripted([0.5, 0.6, 0.8]))
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=5, eval_steps=1, save_steps=0, best_metric="accuracy")
    result = engine.train(model, feats, collate, cfg.train, 1e-2, tmp_path / "d", evaluate=_scripted([0.6, 0.65]),
                          resume_from=tmp_path / "d" / "checkpoints" / "step-00000003")
    last = load_file(str(tmp_path / "d" / "checkpoints" / "step-00000003" / "trainable.safetensors"))
    now = ckpt.trainable_state(model)
    assert result.selected_step == 3 and all(torch.equal(now[k], last[k]) for k in now)


def test_an_early_stopped_run_resumed_with_more_patience_trains_on(tiny_bert: Path, tmp_path: Path) -> None:
    """Stopped early at step 2 (patience 1); resumed with patience 10 (early_stopping may change on resume), it
    trains on to max_steps instead of stopping again at once, having trained nothing."""
    stop = {"metric": "accuracy", "patience": 1}
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=6, eval_steps=1, save_steps=1, early_stopping=stop)
    result = engine.train(model, feats, collate, cfg.train, 1e-2, tmp_path, evaluate=_scripted([0.5, 0.4]))
    assert (result.steps, result.stopped_early) == (2, True)
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=4, eval_steps=1, save_steps=1,
                                        early_stopping={**stop, "patience": 10})
    result = engine.train(model, feats, collate, cfg.train, 1e-2, tmp_path, evaluate=_scripted([0.3, 0.2]),
                          resume_from=tmp_path / "checkpoints" / "step-00000002")
    assert (result.steps, result.stopped_early) == (4, False)


def test_early_stopping_and_best_metric_name_one_metric() -> None:
    """Two different metrics were one tracker silently (early_stopping.metric and its mode dropped): refused."""
    with pytest.raises(ConfigError, match=r"^config: train.early_stopping.metric: 'eval_loss' where "
                                          r"train.best_metric is 'accuracy': one metric"):
        TrainConfig(best_metric="accuracy", early_stopping={"metric": "eval_loss"})
    TrainConfig(best_metric="accuracy", early_stopping={"metric": "accuracy", "patience": 2})
    TrainConfig(best_metric="accuracy", early_stopping={"patience": 2})


def test_unknown_metric_is_a_user_error(tiny_bert: Path) -> None:
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=2, eval_steps=1, save_steps=0, best_metric="nope")
    with pytest.raises(TunelabError, match=r"metric 'nope' is not among the evaluation metrics \(accuracy, n\)"):
        engine.train(model, feats, collate, cfg.train, 1e-3, None, evaluate=_scripted([0.5]))


@pytest.mark.parametrize("train", [{"early_stopping": {"patience": 1}}, {"scheduler": "reduce_on_plateau"}])
def test_best_tracking_needs_evaluations(train: dict, tiny_bert: Path) -> None:
    """reduce_on_plateau without evaluations ran at a constant learning rate, silently."""
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=2, **train)
    with pytest.raises(TunelabError, match="needs evaluations"):
        engine.train(model, feats, collate, cfg.train, 1e-3, None)


def test_min_delta_stops_but_the_best_is_any_improvement() -> None:
    """min_delta decided the exported checkpoint too: 0.5, 0.5, 0.725 with min_delta 0.3 stopped and exported 0.5."""
    t = MetricTracker("accuracy", min_delta=0.3, patience=2)
    assert [t.update(s, {"accuracy": v}) for s, v in ((4, 0.5), (8, 0.5), (12, 0.725))] == [True, False, True]
    assert (t.best_step, t.best_value, t.should_stop) == (12, 0.725, True)


def test_a_constant_schedule_warms_up() -> None:
    """transformers' constant schedule drops train.warmup silently: here every schedule warms up first."""
    from tunelab.training.optim import make_scheduler

    def lrs(**train: object) -> list[float]:
        sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched, out = make_scheduler(TrainConfig(**train), sgd, 6), []
        for _ in range(6):
            out.append(sched.get_last_lr()[0])
            sgd.step()
            sched.step()
        return out

    assert lrs(scheduler="constant", warmup=2) == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert lrs(scheduler="constant") == [1.0] * 6


def test_metric_tracker_modes() -> None:
    t = MetricTracker("eval_loss", min_delta=0.1, patience=2)  # auto: lower is better for a loss
    # within min_delta: the best (HF's best_metric moves on any improvement) but no reset of the patience
    assert t.update(1, {"eval_loss": 1.0}) and t.update(2, {"eval_loss": 0.95}) and (t.best_step, t.bad) == (2, 1)
    assert t.update(3, {"eval_loss": 0.8}) and (t.best_step, t.bad) == (3, 0)
    assert not t.update(4, {"eval_loss": 0.9}) and not t.update(5, {"eval_loss": float("nan")}) and t.should_stop
    h = MetricTracker(None)  # the headline: the first float metric
    h.update(1, {"n": 3, "f1_micro": 0.4, "accuracy": 0.9})
    assert h.metric == "f1_micro"
    resumed = MetricTracker("eval_loss")  # resumed with another train.best_metric: its best sought afresh
    resumed.load_state_dict(h.state_dict())
    assert (resumed.metric, resumed.best_step) == ("eval_loss", None)
    same = MetricTracker(None)  # the same (or none named): the saved best goes on
    same.load_state_dict(h.state_dict())
    assert (same.metric, same.best_step, same.best_value) == ("f1_micro", 1, 0.4)
    plateau = PlateauWithWarmup(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 0, 0.5, 0)
    plateau.step_metric(0.9, "accuracy")
    plateau.step_metric(-0.4, "eval_loss")  # a resume's other metric: its own best, not accuracy's 0.9 to beat
    assert (plateau.best, plateau.scale) == (-0.4, 1.0)
    plateau.step_metric(-0.5, "eval_loss")
    assert plateau.scale == 0.5
    older = PlateauWithWarmup(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 0, 0.5, 1)
    older.load_state_dict({"base_lrs": [1.0], "count": 5, "scale": 1.0, "best": 0.9, "bad": 1})  # no metric saved
    older.step_metric(0.5, "accuracy")  # its metric: the best goes on, and the patience runs out
    assert (older.best, older.scale) == (0.9, 0.5)


def test_cli_early_stopping_exports_the_selected_checkpoint(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40, 0))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(16, 1))
    out = tmp_path / "run"
    sets = ["task=classification", f"model={tiny_bert}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={out}", "train.max_steps=10", "train.batch_size=8", "train.lr=5e-3", "train.eval_steps=2",
            "train.save_steps=2", "train.save_total_limit=1", "train.early_stopping.metric=f1_macro",
            "train.early_stopping.patience=2"]
    res = runner.invoke(app, ["train", *(x for s in sets for x in ("--set", s))])
    assert res.exit_code == 0, res.output
    best = json.loads((out / "metrics.json").read_text())["train"]["best"]
    assert best["metric"] == "f1_macro" and best["selected_step"] == best["step"]
    saved = load_file(str(out / "checkpoints" / f"step-{best['step']:08d}" / "trainable.safetensors"))
    exported = load_file(str(out / "model" / "model.safetensors"))
    assert torch.allclose(exported["classifier.weight"], saved["classifier.weight"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["eval/f1_macro"] for r in rows if "eval/f1_macro" in r}
    assert best["value"] == max(evals.values()) and evals[best["step"]] == best["value"]


# ------------------------------------------------------------------------ optimizers, schedules, regularisers
@pytest.mark.parametrize("train", [
    {"optimizer": "sgd", "momentum": 0.9, "lr": 0.05},
    {"optimizer": "adafactor"},
    {"optimizer": "adamw", "scheduler": "reduce_on_plateau", "warmup": 2},
], ids=["sgd", "adafactor", "adamw-plateau"])
def test_optimizers_train(train: dict, tiny_bert: Path) -> None:
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=4, save_steps=0, eval_steps=2, **train)
    before = ckpt.trainable_state(model)
    result = engine.train(model, feats, collate, cfg.train, cfg.train.lr, None, evaluate=_scripted([0.5, 0.4]))
    assert result.steps == 4 and result.train_loss == pytest.approx(result.train_loss)  # finite
    after = ckpt.trainable_state(model)
    assert sum(not torch.equal(before[k], after[k]) for k in before) > len(before) // 2


@pytest.mark.parametrize(("method", "train"), [("full", {}), ("full", {"sparse_embeddings": False}),
                                               ("lora", {"layer_lr_decay": 0.5})], ids=["rows", "dense", "lora-decay"])
def test_adamw_trains_with_the_configured_betas_and_epsilon(method: str, train: dict, tiny_bert: Path,
                                                            tmp_path: Path) -> None:
    """train.adam_beta1 / adam_beta2 / adam_epsilon (before: no such settings; AdamW always ran at 0.9, 0.999, 1e-8,
    and `config import` said HF's adam_* as not carried): every parameter group of the optimizer the run stepped
    with holds them — the word embedding's row path (sparse_rows.RowAdamW), dense AdamW, the groups of
    layer_lr_decay — read back from the checkpoint the run wrote."""
    cfg, model, feats, collate = _setup(tiny_bert, method, max_steps=2, save_steps=2, adam_beta1=0.8, adam_beta2=0.95,
                                        adam_epsilon=1e-6, **train)
    engine.train(model, feats, collate, cfg.train, cfg.train.lr, tmp_path)
    [(_, path)] = ckpt.list_checkpoints(tmp_path / "checkpoints")
    groups = torch.load(path / "state.pt", weights_only=True)["optimizer"]["param_groups"]
    assert len(groups) > 1 and {(tuple(g["betas"]), g["eps"]) for g in groups} == {((0.8, 0.95), 1e-6)}


def test_an_adamw_setting_out_of_range_is_one_line(tmp_path: Path) -> None:
    """A beta of 1 or more (or below 0), an epsilon of 0: one line naming the file, line and key; nothing written."""
    run = tmp_path / "run"
    for key, value, said in (("adam_beta2", 1.0, "Input should be less than 1 (got 1.0)"),
                             ("adam_beta1", -0.1, "Input should be greater than or equal to 0 (got -0.1)"),
                             ("adam_epsilon", 0, "Input should be greater than 0 (got 0)")):
        path = tmp_path / "run.yaml"
        path.write_text(f"task: classification\nmodel: minilm\noutput_dir: {run}\ntrain:\n  {key}: {value}\n",
                        encoding="utf-8")
        res = runner.invoke(app, ["train", str(path)])
        assert (res.exit_code, res.stderr) == (2, f"error: {path}:5: train.{key}: {said}\n"), res.output
        assert not run.exists()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_layer_lr_decay_steps_each_depth_at_its_rate(method: str, tiny_bert: Path) -> None:
    """AdamW's first step moves a weight by about its group's lr whatever the gradient: with decay 0.5 on the
    2-layer model the head and the top layer move by lr, layer 0 by lr / 2, the embeddings by lr / 4."""
    cfg, model, feats, collate = _setup(tiny_bert, method, max_steps=1, save_steps=0, lr=1e-2, layer_lr_decay=0.5,
                                        weight_decay=0.0, dropout=0.0)
    before = {k: v.clone() for k, v in ckpt.trainable_state(model).items()}
    engine.train(model, feats, collate, cfg.train, cfg.train.lr, None)
    moved = {k: float((v - before[k]).abs().max()) for k, v in ckpt.trainable_state(model).items()}

    def step(part: str) -> float:
        return max(v for k, v in moved.items() if part in k)

    top = 1e-2 if method == "full" else step("layer.1.")
    assert step("classifier") == pytest.approx(1e-2, rel=0.02) and step("layer.1.") == pytest.approx(top, rel=0.02)
    assert step("layer.0.") == pytest.approx(top / 2, rel=0.02)
    if method == "full":
        assert step("word_embeddings") == pytest.approx(top / 4, rel=0.02)
    from tunelab.training.optim import param_groups

    with pytest.raises(TunelabError, match="the model has no numbered layers"):
        param_groups(torch.nn.Linear(2, 2), 0.0, 1e-2, 0.5)
    virtual = torch.nn.Module()  # layers frozen, a prompt's virtual tokens train (prefix / prompt tuning)
    virtual.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2).requires_grad_(False)])
    virtual.prompt = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(TunelabError, match="no trainable parameter sits in a numbered layer"):
        param_groups(virtual, 0.0, 1e-2, 0.5)


@pytest.mark.parametrize("tied", [True, False])
def test_layer_lr_decay_a_tied_output_layer_trains_at_the_peak(tied: bool) -> None:
    """A tied output layer is the input embedding: it is the head too, so it takes the top lr; untied, the
    embedding takes the lowest and lm_head the top."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunelab.training.optim import param_groups

    model = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=3,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied))
    lr_of = {id(p): g["lr"] for g in param_groups(model, 0.01, 1.0, 0.5) for p in g["params"]}
    assert lr_of[id(model.model.embed_tokens.weight)] == (1.0 if tied else 0.125)
    assert lr_of[id(model.model.layers[0].mlp.up_proj.weight)] == 0.25
    assert lr_of[id(model.model.norm.weight)] == lr_of[id(model.lm_head.weight)] == 1.0


def test_resume_after_changing_what_the_optimizer_holds_is_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", sentiment_rows(16))
    sets = ["task=classification", f"model={tiny_bert}", f"data.train={train}", "data.validation_split=0.25",
            f"output_dir={tmp_path / 'run'}", "train.max_steps=2", "train.save_steps=1", "train.batch_size=8"]
    args = [x for s in sets for x in ("--set", s)]
    assert runner.invoke(app, ["train", *args, "--set", "train.max_steps=1"]).exit_code == 0
    res = runner.invoke(app, ["train", *args, "--resume", "--set", "train.layer_lr_decay=0.5"])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "--set train.layer_lr_decay: 0.5 where the run being resumed has None" in res.stderr, res.stderr
    saved = (tmp_path / "run" / "config.yaml").read_text(encoding="utf-8")
    (tmp_path / "run" / "config.yaml").unlink()  # a run without its config: the checkpoint's own check still holds
    res = runner.invoke(app, ["train", *args, "--resume", "--set", "train.layer_lr_decay=0.5"])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "its optimizer state does not fit this run" in res.stderr, res.stderr
    (tmp_path / "run" / "config.yaml").write_text(saved, encoding="utf-8")
    (tmp_path / "d").mkdir()  # the same data file spelled another way is the same setting
    res = runner.invoke(app, ["train", *args, "--resume", "--set", "train.max_steps=3",  # longer: allowed
                              "--set", f"data.train={tmp_path}/d/../t.jsonl"])
    assert res.exit_code == 0, res.output


def test_warmup_fraction_rounds_up_as_hf() -> None:
    from tunelab.config.sections import TrainConfig
    from tunelab.training.optim import warmup_steps

    assert [warmup_steps(TrainConfig(warmup=0.03), n) for n in (9, 100, 101)] == [1, 3, 4]
    assert warmup_steps(TrainConfig(warmup=0.0), 9) == 0 and warmup_steps(TrainConfig(warmup=5), 9) == 5


def test_plateau_with_warmup() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = PlateauWithWarmup(opt, warmup=2, factor=0.5, patience=1)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(3):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs == [0.0, 0.5, 1.0, 1.0]  # linear warmup, as transformers' schedules
    for score in (1.0, 0.5, 0.5):  # best, then two evaluations without improvement (> patience 1)
        sched.step_metric(score)
    assert sched.get_last_lr() == [0.5]
    state = sched.state_dict()
    other = PlateauWithWarmup(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 2, 0.5, 1)
    other.load_state_dict(state)
    assert other.get_last_lr() == [0.5] and other.state_dict() == state


def test_l1_adds_the_penalty_to_the_loss(tiny_bert: Path) -> None:
    losses = []
    for l1 in (0.0, 1e-3):
        cfg, model, feats, collate = _setup(tiny_bert, max_steps=1, save_steps=0, dropout=0.0, l1=l1)
        penalty = sum(float(p.detach().abs().sum()) for p in model.parameters() if p.requires_grad)
        losses.append(engine.train(model, feats, collate, cfg.train, 1e-3, None).train_loss)
    assert losses[1] - losses[0] == pytest.approx(1e-3 * penalty, rel=1e-4)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_dropout_override(arch: str, tiny_bert: Path, tiny_llama: Path) -> None:
    _, model, _, _ = _setup(tiny_bert if arch == "bert" else tiny_llama, method="lora")
    set_dropout(model, 0.3)
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(p == 0.3 for p in drops)
    fields = {k: v for k, v in vars(model.config).items() if "dropout" in k and isinstance(v, float)}
    assert fields and all(v == 0.3 for v in fields.values()), fields
    attrs = [v for m in model.modules() for k, v in vars(m).items() if "dropout" in k and isinstance(v, float)]
    assert all(v == 0.3 for v in attrs)


def test_env_command(tiny_bert: Path) -> None:
    res = runner.invoke(app, ["env", "--set", "task=classification", "--set", f"model={tiny_bert}",
                              "--set", "train.seed=7", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["seed"] == 7 and info["torch"] == torch.__version__
    assert {"python", "transformers", "peft", "accelerate", "tunelab", "cpu", "gpu", "torch_threads",
            "cpu_bf16_native", "precision_auto"} <= set(info)
    res = runner.invoke(app, ["env"])
    assert res.exit_code == 0 and "torch" in res.stdout


# ------------------------------------------------------------------------ bf16 on CPU
def test_bf16_training_then_plain_fp32_forward(tiny_bert: Path) -> None:
    """`precision: bf16` trains under autocast (any CPU runs it, natively or emulated); afterwards the model's
    forward is plain fp32 again, so evaluation and export see the precision they ask for."""
    cfg, model, feats, collate = _setup(tiny_bert, max_steps=2, precision="bf16")
    result = engine.train(model, feats, collate, cfg.train, lr=1e-3)
    assert result.precision == "bf16" and result.steps == 2 and result.train_loss == result.train_loss
    assert not hasattr(model.forward, "__wrapped__")  # accelerate's autocast wrapper is gone
    device = next(model.parameters()).device  # cuda where a GPU trained it
    batch = {k: v.to(device) for k, v in collate(feats[:4]).items() if k != "labels"}
    with torch.no_grad():
        plain = model(**batch).logits
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model(**batch).logits
    assert plain.dtype == torch.float32 and not torch.equal(plain, low.float())


def test_a_resumed_best_without_its_checkpoint_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    """The best step the resumed run will select has no checkpoint beside it: one line before anything is written
    (it was refused after the folder was started, on the main process only)."""
    step = tmp_path / "a" / "checkpoints" / "step-00000003"
    step.mkdir(parents=True)
    tracker = {"metric": "accuracy", "best_step": 2, "best_value": 0.8, "bad": 1}
    (step / "trainer_state.json").write_text(json.dumps({"step": 3, "tracker": tracker}))
    cfg = TrainConfig(best_metric="accuracy", save_steps=0)
    with pytest.raises(TunelabError, match=r"the best step so far \(2\) has no checkpoint beside it"):
        ckpt.check_resumed_best(step, cfg, tmp_path / "b", evaluates=True)
    ckpt.check_resumed_best(step, cfg, tmp_path / "b", evaluates=False)  # nothing to select: no check
    ckpt.check_resumed_best(step, TrainConfig(best_metric="f1_macro"), tmp_path / "b", evaluates=True)  # sought anew
    with pytest.raises(TunelabError, match=r"the best step so far \(2\) has no checkpoint"):  # its own folder too
        ckpt.check_resumed_best(step, TrainConfig(best_metric="accuracy"), tmp_path / "a", evaluates=True)
    (step.parent / "step-00000002").mkdir()
    (step.parent / "step-00000002" / "trainable.safetensors").write_bytes(b"")
    ckpt.check_resumed_best(step, TrainConfig(best_metric="accuracy"), tmp_path / "a", evaluates=True)
