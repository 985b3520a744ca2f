"""SFT training loss on trained positions only (tasks/causal_loss.py) and packing (tasks/packing.py):
the loss and its gradients equal the model's own `labels=` loss (plain, tied embeddings, LoRA, DoRA, prompt
tuning, a model class without mask slicing); packed rows give the unpacked loss, and do not when the
isolation is taken away; prefix / prompt tuning refuse packing; the engine counts real tokens only."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from tunelab.config.run import run_config_class
from tunelab.config.sections import DataConfig
from tunelab.errors import ConfigError
from tunelab.tasks.base import pad_batch

run_config_class()
from tunelab.tasks.causal_loss import (  # noqa: E402
    causal_lm_loss,
    causal_model,
    eval_batches,
    example_nll,
    slices_by_mask,
)
from tunelab.tasks.packing import collate_packed, pack, pack_bins  # noqa: E402
from tunelab.tasks.sft import Sft, SftConfig  # noqa: E402

LENGTHS = (7, 12, 5, 20, 9, 3, 15, 11)


def _features(vocab: int, lengths: tuple[int, ...] = LENGTHS, seed: int = 0) -> list[dict]:
    """Random token rows whose second half is trained (the first half is the 'prompt')."""
    g = torch.Generator().manual_seed(seed)
    feats = []
    for n in lengths:
        ids = torch.randint(5, vocab, (n,), generator=g).tolist()
        feats.append({"input_ids": ids, "labels": [-100] * (n // 2) + ids[n // 2:]})
    return feats


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _check_same(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """causal_lm_loss == model(input_ids, attention_mask, labels).loss, and the same gradients."""
    want = model(**batch).loss
    want.backward()
    want_g = _grads(model)
    got = causal_lm_loss(model, batch)
    got.backward()
    got_g = _grads(model)
    assert got.item() == pytest.approx(want.item(), abs=1e-5)
    assert want_g and want_g.keys() == got_g.keys()
    for name, g in want_g.items():
        torch.testing.assert_close(got_g[name], g, atol=1e-6, rtol=1e-4, msg=name)


def _llama(tiny_llama: Path, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    if not overrides:
        return AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    cfg = LlamaConfig.from_pretrained(str(tiny_llama))
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return LlamaForCausalLM(cfg)


def test_trained_positions_loss_equals_model_loss(tiny_llama: Path) -> None:
    model = _llama(tiny_llama)
    assert slices_by_mask(type(model))  # the fast path is the one under test
    batch = pad_batch(_features(model.config.vocab_size), pad_id=0)
    _check_same(model, batch)
    # per example: summed NLL and counts agree with one-row forwards
    with torch.no_grad():
        sums, counts = example_nll(model, batch)
        for r, f in enumerate(_features(model.config.vocab_size)):
            one = pad_batch([f], pad_id=0)
            assert counts[r].item() == sum(v != -100 for v in f["labels"][1:])
            assert sums[r].item() / counts[r].item() == pytest.approx(model(**one).loss.item(), abs=1e-5)


def test_tied_embeddings(tiny_llama: Path) -> None:
    model = _llama(tiny_llama, tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    _check_same(model, pad_batch(_features(model.config.vocab_size), pad_id=0))


@pytest.mark.parametrize("dora", [False, True])
def test_through_peft_lora(tiny_llama: Path, dora: bool) -> None:
    from peft import LoraConfig, get_peft_model

    model = _llama(tiny_llama)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                             use_dora=dora, init_lora_weights=False))  # non-zero B: real grads
    assert causal_model(model) is model.get_base_model()
    _check_same(model, pad_batch(_features(model.config.vocab_size), pad_id=0))


@pytest.mark.parametrize("kind", ["prompt", "prefix"])
def test_prompt_learning_falls_back_to_full_logits(tiny_llama: Path, kind: str) -> None:
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    config = (PromptTuningConfig if kind == "prompt" else PrefixTuningConfig)(task_type="CAUSAL_LM",
                                                                               num_virtual_tokens=3)
    model = get_peft_model(_llama(tiny_llama), config)
    assert causal_model(model) is None
    _check_same(model, pad_batch(_features(model.config.vocab_size), pad_id=0))


class _NoSlicing(LlamaForCausalLM):
    """A causal LM whose forward knows nothing of logits_to_keep masks (as older or remote code)."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        kwargs.pop("logits_to_keep", None)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)


def test_model_without_mask_slicing_falls_back(tiny_llama: Path) -> None:
    torch.manual_seed(0)
    model = _NoSlicing(LlamaConfig.from_pretrained(str(tiny_llama)))
    assert not slices_by_mask(_NoSlicing)
    _check_same(model, pad_batch(_features(model.config.vocab_size), pad_id=0))


def test_pack_bins_fill_rows_deterministically() -> None:
    lengths = [7, 12, 5, 20, 9, 3, 15, 11, 32, 1]
    bins = pack_bins(lengths, 32)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 32 for b in bins)
    assert len(bins) == 4  # 115 tokens: 4 rows of 32 is the least possible
    assert all(b == sorted(b) for b in bins) and pack_bins(lengths, 32) == bins
    with pytest.raises(ValueError, match="exceeds the row length"):
        pack_bins([33], 32)


def test_packed_loss_equals_unpacked_and_isolation_matters(tiny_llama: Path) -> None:
    model = _llama(tiny_llama)
    feats = _features(model.config.vocab_size)
    rows = pack(feats, 32)
    assert len(rows) < len(feats) and sum(r["examples"] for r in rows) == len(feats)
    assert all(len(r["input_ids"]) <= 32 for r in rows)
    r0 = rows[0]  # positions restart per example; each example's first token is never a target
    starts = [i for i, p in enumerate(r0["position_ids"]) if p == 0]
    assert len(starts) == r0["examples"] and all(r0["labels"][i] == -100 for i in starts)

    unpacked = causal_lm_loss(model, pad_batch(feats, pad_id=0))
    unpacked.backward()
    want_g = _grads(model)
    packed_batch = collate_packed(rows, pad_id=0)
    assert int(packed_batch["attention_mask"].sum()) == sum(len(f["input_ids"]) for f in feats)  # no filler
    packed = causal_lm_loss(model, packed_batch)
    packed.backward()
    got_g = _grads(model)
    assert packed.item() == pytest.approx(unpacked.item(), abs=1e-5)
    for name, g in want_g.items():
        torch.testing.assert_close(got_g[name], g, atol=1e-5, rtol=1e-3, msg=name)

    # the negative case: the same packed rows without position resets attend across examples
    with torch.no_grad():
        leaky = causal_lm_loss(model, collate_packed(rows, pad_id=0, isolate=False))
    assert abs(leaky.item() - unpacked.item()) > 1e-3


def test_packing_refused_for_prefix_and_prompt_tuning() -> None:
    task = Sft(SftConfig(packing=True), DataConfig(max_length=64))
    for method in ("prefix", "prompt"):
        with pytest.raises(ConfigError, match=rf"^config: task.packing: {method} tuning cannot be packed"):
            task.check_method(method)
    task.check_method("lora")
    Sft(SftConfig(), DataConfig(max_length=64)).check_method("prefix")  # unpacked: fine


def test_packed_training_counts_real_tokens(tiny_llama: Path) -> None:
    from tunelab.config.run import build_config
    from tunelab.training import engine

    cfg = build_config({"task": {"name": "sft", "packing": True}, "model": str(tiny_llama), "data": {"max_length": 32},
                        "train": {"epochs": 1, "batch_size": 2, "lr": 1e-3, "save_steps": 0}})
    task = Sft(cfg.task, cfg.data)
    model = _llama(tiny_llama)
    feats = _features(model.config.vocab_size)
    rows = task.train_features(feats)
    assert len(rows) == len(pack(feats, 32)) and task.train_features(feats) == rows
    result = engine.train(model, rows, partial(task.collate, pad_id=0), cfg.train, lr=1e-3, loss_fn=task.loss_fn())
    assert result.steps == 2 and result.real_tokens == sum(LENGTHS)
    assert result.padded_tokens > result.real_tokens  # the filler is counted apart


def test_eval_batches_bound_trained_tokens() -> None:
    trained = [900, 800, 700, 600, 3000, 10]
    assert eval_batches(list(range(6)), trained, 64, 2048) == [[0, 1], [2, 3], [4], [5]]
    assert eval_batches(list(range(6)), [1] * 6, 4, 2048) == [[0, 1, 2, 3], [4, 5]]


def test_cli_refuses_packing_with_prefix_tuning(tiny_llama: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tunelab.cli import app

    sets = ["task.name=sft", "task.packing=true", f"model={tiny_llama}", "method=prefix",
            f"data.train={tmp_path / 'absent.jsonl'}", f"output_dir={tmp_path / 'run'}"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 2, res.output
    assert "--set task.packing: prefix tuning cannot be packed" in res.output  # before any file is read


def test_cli_train_packed(tiny_llama: Path, tmp_path: Path) -> None:
    """Packing through the whole pipeline: training batches are packed rows, evaluation is per example."""
    import json
    import math

    from typer.testing import CliRunner

    from conftest import write_jsonl
    from tunelab.cli import app
    from tunelab.data.readers import read_table

    rows = [{"prompt": f"say {w}", "completion": w} for w in ("good", "bad", "nice", "movie", "plot", "story")]
    train = write_jsonl(tmp_path / "train.jsonl", rows * 2)
    out = tmp_path / "run"
    sets = ["task.name=sft", "task.packing=true", f"model={tiny_llama}", f"data.train={train}",
            f"data.validation={write_jsonl(tmp_path / 'val.jsonl', rows[:3])}", "data.max_length=32",
            f"output_dir={out}", "train.epochs=1", "train.batch_size=2", "train.save_steps=0"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    task = Sft(SftConfig(packing=True), DataConfig(max_length=32))
    examples = task.parse(read_table(train))
    _, tok = task.build_model(str(tiny_llama), examples)
    packed = task.train_features(task.encode(examples, tok))
    assert len(packed) < len(examples)
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["steps"] == math.ceil(len(packed) / 2) and m["train"]["rows"]["train"] == 12
    assert m["validation"]["tokens"] == 3 * 2  # one reply token + <|im_end|> per validation row


def test_eval_batches_bound_padded_tokens() -> None:
    """With lengths, a batch also stops before rows x its longest row passes max_tokens (the activations)."""
    lengths = [800, 790, 600, 300, 300, 300, 10]
    trained = [10] * len(lengths)
    assert eval_batches(list(range(7)), trained, 64, 2048, lengths=lengths, max_tokens=1600) == [
        [0, 1], [2, 3], [4, 5, 6]]  # 800 x 2, 600 x 2, 300 x 3 padded tokens
    assert eval_batches(list(range(7)), trained, 64, 2048) == [list(range(7))]  # no lengths: rows and trained only
    assert eval_batches([0], [10], 64, 2048, lengths=[5000], max_tokens=1600) == [[0]]  # one long row still runs
