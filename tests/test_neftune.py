"""NEFTune (`train.neftune_alpha`, training/neftune.py): HF's noise on the input embeddings in training forwards
only, and nothing of it left on the model that is evaluated, saved and reloaded."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import WORDS, say_rows, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError
from tunelab.registry import METHODS, TASKS
from tunelab.training import engine
from tunelab.training.neftune import noise_bound, noisy_embeddings


def _llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2))


def _hooked(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if m._forward_hooks]


def test_the_noise_is_hfs_in_training_and_none_in_evaluation() -> None:
    """The same draws as transformers' own `neftune_post_forward_hook` on the same output and seed (uniform in
    ±alpha / sqrt(L·d), L the padded batch's length); evaluation mode, alpha 0 / None and the end of the block leave
    the embedding as it was; under peft the hook is on the module HF's `activate_neftune` hooks."""
    import peft
    from transformers.integrations.neftune import activate_neftune, neftune_post_forward_hook

    model = _llama().train().requires_grad_(False)
    emb = model.get_input_embeddings()
    ids = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    clean = emb(ids)
    with noisy_embeddings(model, 5.0):
        torch.manual_seed(2)
        ours = emb(ids)
        emb.eval()
        assert torch.equal(emb(ids), clean)  # evaluation: no noise
        emb.train()
    assert not _hooked(model)
    emb.neftune_noise_alpha = 5.0
    handle = emb.register_forward_hook(neftune_post_forward_hook)
    torch.manual_seed(2)
    theirs = emb(ids)
    handle.remove()
    del emb.neftune_noise_alpha
    assert torch.equal(ours, theirs)
    bound = 5.0 / (7 * 32) ** 0.5
    assert noise_bound(clean, 5.0) == pytest.approx(bound, rel=1e-6)
    noise = (ours - clean).abs()
    assert bound >= float(noise.max()) > 0.95 * bound and float(noise.mean()) == pytest.approx(bound / 2, rel=0.1)
    for alpha in (0.0, None):
        with noisy_embeddings(model, alpha):
            assert not _hooked(model) and torch.equal(emb(ids), clean)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules="all-linear"))
    with noisy_embeddings(lora, 5.0):
        ours_on = _hooked(lora)
    handle = activate_neftune(lora, 5.0)
    assert ours_on == _hooked(lora) == [emb]
    handle.remove()
    with pytest.raises(ConfigError, match=r"^config: train.neftune_alpha: Linear names no input embedding"), \
            noisy_embeddings(torch.nn.Linear(2, 2), 5.0):
        pass


def _engine_run(model_path: Path, **train: object) -> tuple[torch.nn.Module, object, list[int]]:
    """A tiny classification run in this process; the forward hooks its embedding held at each evaluation."""
    cfg = build_config({"task": "classification", "model": str(model_path),
                        "train": {"batch_size": 8, "lr": 3e-3, "max_steps": 4, "eval_steps": 2, "precision": "fp32",
                                  "save_steps": 0, **train}})
    engine.seed_everything(0)
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(Table("m.jsonl", [Record("m.jsonl", i + 1, r) for i, r in enumerate(sentiment_rows(32))]))
    model, tok = task.build_model(str(model_path), examples)
    model = METHODS.get("full")(cfg.method).apply(model, task.head_modules(model))
    held: list[int] = []

    def score(m: torch.nn.Module) -> dict:
        held.append(len(m.get_input_embeddings()._forward_hooks))
        return {"accuracy": 1.0}

    result = engine.train(model, task.encode(examples, tok), partial(task.collate, pad_id=tok.pad_token_id),
                          cfg.train, 3e-3, evaluate=score)
    return model, result, held


def test_the_hook_lives_while_training_only(tiny_bert: Path) -> None:
    """On while the loop trains (its evaluation sees it, in eval mode), gone from the model the run hands on to be
    scored and saved."""
    model, result, held = _engine_run(tiny_bert, neftune_alpha=5.0)
    assert result.steps == 4 and held == [1] and not _hooked(model)


def _sft_run(tiny_llama: Path, tmp: Path, name: str, *sets: str) -> Path:
    train = write_jsonl(tmp / "train.jsonl", say_rows(WORDS[:12]))
    val = write_jsonl(tmp / "val.jsonl", say_rows(WORDS[12:18]))
    args = ["task=sft", f"model={tiny_llama}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={tmp / name}", "train.max_steps=4", "train.lr=5e-3", "train.batch_size=4", "train.log_steps=1",
            "train.save_steps=0", "train.precision=fp32", "train.report=false", "train.best_metric=loss", *sets]
    res = CliRunner().invoke(app, ["train", *[a for s in args for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return tmp / name


def test_sft_trains_with_the_noise_and_scores_without(tiny_llama: Path, tmp_path: Path) -> None:
    """alpha 5: training losses other than alpha 0's; the last step's evaluation (in the loop, the hook on), the
    final one and `tunelab.load(RUN/model).evaluate` of the saved model give one validation loss; the reloaded
    model holds no hook."""
    import tunelab

    run = _sft_run(tiny_llama, tmp_path, "noisy", "train.neftune_alpha=5")
    plain = _sft_run(tiny_llama, tmp_path, "plain")

    def rows(out: Path) -> list[dict]:
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]

    losses = [[r["loss"] for r in rows(out) if "lr" in r] for out in (run, plain)]
    assert len(losses[0]) == 4 and all(a != b for a, b in zip(*losses, strict=True))
    in_loop = next(r["eval/loss"] for r in rows(run) if r.get("step") == 4 and "eval/loss" in r)
    final = json.loads((run / "metrics.json").read_text())["validation"]["loss"]
    loaded = tunelab.load(run / "model")
    again = loaded.evaluate(tmp_path / "val.jsonl", generate=False)["loss"]
    assert in_loop == pytest.approx(final, abs=1e-6) and again == pytest.approx(final, abs=1e-6)
    assert not _hooked(loaded.module)


def test_a_bad_alpha_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "--set", "task=sft", "--set", "model=x", "--set", "train.neftune_alpha=-1"])
    assert (res.exit_code, res.stderr) == (2, "error: --set train.neftune_alpha: Input should be greater than or "
                                              "equal to 0 (got -1)\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("task: sft\nmodel: x\ntrain:\n  neftune_alpha: five\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["train", str(cfg)])
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {cfg}:4: train.neftune_alpha: ")
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.output
