"""`train.gradient_checkpointing`: the same run as without it — per-step losses and final weights, with dropout on
and tunelab's own kernels (FastDropout, LoRA's fast forward, the short-row attention, the [CLS]-only last layer, row
gradients of the word embedding, R-Drop, packing) — with the layers' activations recomputed instead of kept; what
cannot be recomputed refused in one line before anything is written; a resume may turn it on or off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import WORDS, _tokenizer, say_rows, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config

REL = 1e-5


def _chat(tmp: Path) -> Path:
    words = [f"{a} {b}" for a, b in zip(WORDS[:16], WORDS[8:24], strict=True)]
    return write_jsonl(tmp / "chat.jsonl", say_rows(words))


def _ner(tmp: Path) -> Path:
    rows = [{"tokens": ["the", "actor", "is", "good"], "tags": ["O", "B-PER", "O", "O"]},
            {"tokens": ["a", "film", "story", "was", "bad"], "tags": ["O", "B-LOC", "I-LOC", "O", "O"]}]
    return write_jsonl(tmp / "ner.jsonl", rows * 8)


# task, model fixture, method, data file, more train settings
CASES = {
    # bf16: the short-row attention (its dropout mask FastDropout's); full: the word embedding's row gradients
    "classification-full-bf16": ("classification", "tiny_bert", "full", None, {"precision": "bf16"}),
    "classification-rdrop": ("classification", "tiny_bert", "full", None, {"rdrop": 0.5}),
    "sft-lora-fast": ("sft", "tiny_llama", {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.1}, _chat, {}),
    "sft-full-packed": ({"name": "sft", "packing": True}, "tiny_llama", "full", _chat, {}),
    "ner-full": ("ner", "tiny_bert", "full", _ner, {}),
}


def _run(request: pytest.FixtureRequest, tmp: Path, case: str, on: bool) -> tuple[list[float], Path, int]:
    """The case trained 4 steps with dropout; its logged per-step losses, its run folder, and the bytes autograd
    kept for backward outside checkpointed layers (what is held between forward and backward)."""
    from tunelab.pipeline import run

    task, model, method, data, train = CASES[case]
    rows = data(tmp) if data else write_jsonl(tmp / "train.jsonl", sentiment_rows(32))
    out = tmp / f"run-{on}"
    cfg = build_config({
        "task": task, "model": str(request.getfixturevalue(model)), "method": method, "output_dir": str(out),
        "data": {"train": str(rows), "validation_split": 0.0, "max_length": 32},
        "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-2, "save_steps": 0, "seed": 3, "precision": "fp32",
                  "dropout": 0.1, "log_steps": 1, "report": False, "gradient_checkpointing": on, **train}})
    kept: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        run(cfg)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["loss"] for r in lines if "lr" in r], out, sum(kept)


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_losses_and_weights(case: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    plain_losses, plain, plain_kept = _run(request, tmp_path, case, False)
    losses, out, kept = _run(request, tmp_path, case, True)
    assert len(losses) == 4 and losses == pytest.approx(plain_losses, rel=REL)
    want, got = (load_file(str(d / "model" / "model.safetensors")) for d in (plain, out))
    assert got.keys() == want.keys()
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=REL, atol=REL * float(w.abs().max()), msg=name)
    assert kept < 0.3 * plain_kept  # the layers' activations were recomputed, not kept
    if case.startswith("sft-lora"):  # every layer's adapter trained (layer 0's too: no input needs grad)
        adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
        b = {k: v for k, v in adapter.items() if "lora_B" in k}
        assert len(b) == 2 * 7 and all(bool(v.abs().max() > 0) for v in b.values())  # (peft starts B at zero)


def test_layers_run_twice_lora_adapters_get_gradients_and_all_is_put_back(tiny_llama: Path) -> None:
    """Non-reentrant checkpointing: a frozen-embedding LoRA model's adapters get gradients with no hook making the
    input require grad (`activation_checkpointing_enable` adds one; taken off), every layer's inside runs again in
    backward; `restore_recompute` puts the model back (layers run once, its config's use_cache)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.training.recompute import restore_recompute, use_recompute

    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).train()
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # (so that lora_A gets a gradient too)
    calls = []
    for layer in base.model.layers:  # (a pre-hook: the recomputation stops once it has what backward needs)
        layer.mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    ids = torch.arange(24).remainder(20).view(2, 12) + 3

    def step() -> dict[str, torch.Tensor]:
        calls.clear()
        model.zero_grad()
        torch.manual_seed(0)
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = step()
    assert len(calls) == 2
    state = use_recompute(model)
    assert not hasattr(base, "_require_grads_hook") and base.config.use_cache is False
    grads = step()
    assert len(calls) == 4  # each layer's MLP: forward, and again in backward
    assert grads.keys() == plain.keys() and len(grads) == 2 * 2 * 7
    for name, grad in grads.items():
        assert bool(grad.abs().max() > 0), name
        torch.testing.assert_close(grad, plain[name], rtol=1e-5, atol=1e-7, msg=name)
    restore_recompute(state)
    assert base.config.use_cache is True and not base.is_activation_checkpointing
    step()
    assert len(calls) == 2


def test_the_cls_only_last_layer_is_recomputed_too(tiny_bert: Path) -> None:
    """The classifier's last layer computes [CLS] only (models/first_token.py replaces its forward); under
    checkpointing it keeps no more than the class's own forward keeps (before: its activations were all kept — the
    replaced forward stepped around transformers' checkpointing wrapper)."""
    from transformers import AutoModelForSequenceClassification

    from tunelab.models.first_token import first_token_only
    from tunelab.training.recompute import use_recompute

    ids = torch.arange(48).remainder(30).view(4, 12) + 5

    def kept(patched: bool) -> tuple[int, torch.Tensor]:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(  # (no dropout: the first token draws fewer)
            str(tiny_bert), num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        assert first_token_only(model) if patched else True
        use_recompute(model)
        sizes: list[int] = []
        torch.manual_seed(1)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            loss = model.train()(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss
        loss.backward()
        return sum(sizes), model.classifier.weight.grad

    (patched, grad), (plain, want) = kept(True), kept(False)
    assert patched <= plain
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-6)


def _albert(path: Path) -> Path:
    from transformers import AlbertConfig, AlbertForPreTraining

    tok = _tokenizer(WORDS, bert=True)
    AlbertForPreTraining(AlbertConfig(vocab_size=len(tok), embedding_size=8, hidden_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                                      pad_token_id=tok.pad_token_id)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_what_cannot_be_recomputed_is_one_line(tiny_llama: Path, tmp_path: Path) -> None:
    """A model class transformers does not checkpoint (ALBERT), and prefix tuning (its keys and values reach the
    layers as a cache a recomputed layer is not given): exit 2, one line naming the setting where it was given (the
    config file's line, or --set), nothing written."""
    out = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(f"task: classification\nmodel: {_albert(tmp_path / 'albert')}\noutput_dir: {out}\n"
                      f"data:\n  train: {write_jsonl(tmp_path / 't.jsonl', sentiment_rows(16))}\n"
                      "train:\n  max_steps: 2\n  gradient_checkpointing: true\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["train", str(config)])
    assert (res.exit_code, res.stderr) == (2, (
        f"error: {config}:8: train.gradient_checkpointing: AlbertForSequenceClassification does not support gradient "
        "checkpointing (its transformers class has no supports_gradient_checkpointing); set it to false, and lower "
        "train.batch_size or data.max_length to fit memory\n")), res.output
    assert not out.exists()
    sets = ["task=sft", f"model={tiny_llama}", "method=prefix", f"data.train={_chat(tmp_path)}", f"output_dir={out}",
            "train.max_steps=2", "train.gradient_checkpointing=true"]
    res = CliRunner().invoke(app, ["train", *(x for s in sets for x in ("--set", s))])
    assert (res.exit_code, res.stderr) == (2, (
        "error: --set train.gradient_checkpointing: method prefix gives every layer its learnt keys and values as a "
        "cache, which a recomputed layer is not given (peft refuses the pair too); use method prompt or lora, or set "
        "it to false\n")), res.output
    assert not out.exists()


def test_a_prefix_adapter_is_refused_by_the_loop_too(tiny_llama: Path) -> None:
    """A caller of the training loop other than `tunelab train` (whose config refuses method prefix): the adapter."""
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.errors import ConfigError
    from tunelab.training.recompute import check_recompute

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    check_recompute(model)
    model = get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM"))
    with pytest.raises(ConfigError, match="^config: train.gradient_checkpointing: a peft prefix_tuning adapter gives "
                       "every layer its learnt keys and values as a cache"):
        check_recompute(model)


def test_a_resume_may_turn_it_on(tiny_bert: Path, tmp_path: Path) -> None:
    """No new state: a run resumed from another's checkpoint (written without checkpointing) with it on trains the
    steps left as the run without it did (a memory setting a resume may change, as train.micro_batch_tokens)."""
    from tunelab.pipeline import run

    rows = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48))

    def config(out: str, on: bool) -> object:
        return build_config({"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / out),
                             "data": {"train": str(rows), "validation_split": 0.0},
                             "train": {"max_steps": 6, "batch_size": 8, "save_steps": 3, "lr": 1e-2, "dropout": 0.1,
                                       "precision": "fp32", "log_steps": 1, "report": False,
                                       "gradient_checkpointing": on}})

    run(config("plain", False))
    run(config("resumed", True), resume=str(tmp_path / "plain" / "checkpoints" / "step-00000003"))
    want, got = (load_file(str(tmp_path / d / "model" / "model.safetensors")) for d in ("plain", "resumed"))
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=REL, atol=REL * float(w.abs().max()), msg=name)
    losses = {d: [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
              for d in ("plain", "resumed")}
    resumed = {r["step"]: r["loss"] for r in losses["resumed"] if "lr" in r}
    assert sorted(resumed) == [4, 5, 6]
    assert [resumed[s] for s in (4, 5, 6)] == pytest.approx([r["loss"] for r in losses["plain"] if "lr" in r][3:],
                                                            rel=REL)
