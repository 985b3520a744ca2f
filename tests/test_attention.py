"""Short-row attention: the same outputs and gradients as sdpa (causal, padded, packed, bidirectional, sliding
window), sdpa itself beyond the row limit, runtime state only (restored, never saved)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, AutoModelForCausalLM

import tunelab.training.attention as attention
from tunelab.training.attention import SHORT_ROW_ATTENTION, restore_attention, use_short_row_attention

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _float32_takes_the_matmul_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """In use only bf16 / fp16 take the matmul path; float32 here compares the two paths' math tightly."""
    monkeypatch.setattr(attention, "MATMUL_DTYPES", (torch.float32, torch.bfloat16, torch.float16))


def outputs_and_grads(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    value = out.logits if hasattr(out, "logits") else out.last_hidden_state
    weights = torch.linspace(-1, 1, value.numel()).view_as(value)  # a loss that reaches every position
    (value * weights).sum().backward()
    return [value.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]


def compare(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[float, int]:
    """(largest difference relative to the tensor's scale, tensors compared) of outputs and gradients, sdpa vs
    short-row attention."""
    model.eval()  # no dropout (BERT's would draw differently); gradients flow as in training
    reference = outputs_and_grads(model, inputs)
    assert use_short_row_attention(model, CPU) == "sdpa"
    assert model.config._attn_implementation == SHORT_ROW_ATTENTION
    mine = outputs_and_grads(model, inputs)
    restore_attention(model, "sdpa")
    assert len(mine) == len(reference) > 1
    # floor 1e-4: a key bias gets a gradient of exactly 0 in theory, float noise (~1e-11) in practice
    diffs = [float((a - b).abs().max() / b.abs().max().clamp_min(1e-4)) for a, b in zip(mine, reference, strict=True)]
    return max(diffs), len(mine)


@pytest.fixture()
def llama(tiny_llama: Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa")
    assert model.config._attn_implementation == "sdpa"
    return model


def test_causal_padded_and_packed_rows_match_sdpa(llama: torch.nn.Module) -> None:
    torch.manual_seed(0)
    ids = torch.randint(5, 40, (3, 12))
    full = torch.ones_like(ids)
    padded = full.clone()
    padded[1, 9:] = 0  # right padding
    padded[2, :4] = 0  # left padding: fully masked query rows
    packed = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]] * 3)  # three examples per row
    for inputs in ({"input_ids": ids}, {"input_ids": ids, "attention_mask": padded},
                   {"input_ids": ids, "position_ids": packed, "attention_mask": None, "use_cache": False}):
        diff, _ = compare(llama, inputs)
        assert diff < 1e-5, inputs.keys()


def test_packed_rows_are_isolated(llama: torch.nn.Module) -> None:
    """The block mask reaches the matmul path: the second example's logits do not depend on the first's tokens."""
    use_short_row_attention(llama, CPU)
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])
    a = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    b = torch.tensor([[20, 21, 22, 23, 9, 10, 11, 12]])
    with torch.no_grad():
        la, lb = (llama(input_ids=x, position_ids=pos, attention_mask=None, use_cache=False).logits for x in (a, b))
    assert torch.allclose(la[0, 4:], lb[0, 4:], atol=1e-6)
    assert not torch.allclose(la[0, :4], lb[0, :4], atol=1e-3)


def test_sliding_window_and_bidirectional_models_match_sdpa(tiny_gemma3: Path, tiny_bert: Path) -> None:
    torch.manual_seed(0)
    gemma = AutoModelForCausalLM.from_pretrained(tiny_gemma3, attn_implementation="sdpa")  # window 4 < 10 tokens
    ids = torch.randint(5, 100, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    assert compare(gemma, {"input_ids": ids, "attention_mask": mask})[0] < 1e-5
    bert = AutoModel.from_pretrained(tiny_bert, attn_implementation="sdpa")
    assert compare(bert, {"input_ids": ids % 30 + 5})[0] < 1e-5  # no mask: bidirectional, not causal
    assert compare(bert, {"input_ids": ids % 30 + 5, "attention_mask": mask})[0] < 1e-5


def test_rows_beyond_the_limit_run_sdpa_itself(llama: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    inputs = {"input_ids": torch.randint(5, 40, (2, 16))}
    llama.train()
    reference = outputs_and_grads(llama, inputs)
    use_short_row_attention(llama, CPU)
    monkeypatch.setattr(attention, "SHORT_ROWS", 8)
    assert all(torch.equal(a, b) for a, b in zip(outputs_and_grads(llama, inputs), reference, strict=True))
    monkeypatch.setattr(attention, "SHORT_ROWS", 256)
    matmul = outputs_and_grads(llama, inputs)  # the matmul path: close, but not the same float operations
    assert not all(torch.equal(a, b) for a, b in zip(matmul, reference, strict=True))


def test_bf16_takes_the_matmul_path_and_float32_runs_sdpa(llama: torch.nn.Module,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention, "MATMUL_DTYPES", (torch.bfloat16, torch.float16))
    torch.manual_seed(0)
    inputs = {"input_ids": torch.randint(5, 40, (2, 16))}
    llama.train()
    outputs = {}
    for precision in ("fp32", "bf16"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            reference = outputs_and_grads(llama, inputs)
            use_short_row_attention(llama, CPU)
            outputs[precision] = (reference, outputs_and_grads(llama, inputs))
            restore_attention(llama, "sdpa")
    reference, mine = outputs["fp32"]
    assert all(torch.equal(a, b) for a, b in zip(mine, reference, strict=True))  # sdpa itself
    reference, mine = outputs["bf16"]
    assert not all(torch.equal(a, b) for a, b in zip(mine, reference, strict=True))  # the matmul path
    torch.testing.assert_close(mine[0], reference[0], atol=0.05, rtol=0.05)  # to bf16 rounding


def test_switch_is_runtime_state_through_peft(llama: torch.nn.Module, tmp_path: Path) -> None:
    model = get_peft_model(llama, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert use_short_row_attention(model, torch.device("cuda")) is None  # GPUs keep sdpa
    previous = use_short_row_attention(model, CPU)
    assert previous == "sdpa" and llama.config._attn_implementation == SHORT_ROW_ATTENTION
    llama.save_pretrained(tmp_path)
    assert SHORT_ROW_ATTENTION not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    restore_attention(model, previous)
    assert llama.config._attn_implementation == "sdpa"
    eager = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert use_short_row_attention(eager, CPU) is None  # only sdpa models are switched


def test_training_runs_short_rows_and_restores_sdpa(tiny_llama: Path) -> None:
    from tunelab.config.run import build_config
    from tunelab.registry import TASKS
    from tunelab.training import engine

    updates, seen = {}, []
    for switch in (False, True):
        cfg = build_config({"task": "sft", "model": str(tiny_llama), "method": "full",
                            "train": {"epochs": 1, "batch_size": 4, "max_steps": 1, "optimizer": "sgd", "lr": 0.5,
                                      "save_steps": 0, "short_row_attention": switch}})
        task = TASKS.get("sft")(cfg.task, cfg.data)
        sft_loss, collate = task.loss_fn(), partial(task.collate, pad_id=0)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa")
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        feats = [{"input_ids": list(range(5, 5 + n)), "labels": [-100] * 2 + list(range(7, 5 + n))} for n in (6, 9)]

        def loss(m: torch.nn.Module, batch: dict[str, torch.Tensor], model: torch.nn.Module = model,
                 sft_loss: Callable[..., torch.Tensor] = sft_loss) -> torch.Tensor:
            seen.append(model.config._attn_implementation)
            return sft_loss(m, batch)

        engine.train(model, feats, collate, cfg.train, lr=0.5, loss_fn=loss)
        assert model.config._attn_implementation == "sdpa"  # restored after training
        updates[switch] = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    assert seen == ["sdpa", SHORT_ROW_ATTENTION]
    for name, update in updates[False].items():
        torch.testing.assert_close(updates[True][name], update, atol=1e-6, rtol=1e-4, msg=name)


def test_attention_dropout_takes_the_matmul_path_at_any_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """With dropout on, sdpa on the CPU would take its math path anyway: rows beyond SHORT_ROWS stay on the matmul
    path, and the dropped probabilities come from FastDropout's mask (seeded: the same draw twice; rate p; kept
    ones scaled by 1 / (1 - p))."""
    monkeypatch.setattr(attention, "MATMUL_DTYPES", (torch.bfloat16, torch.float16))
    monkeypatch.setattr(attention, "SHORT_ROWS", 8)

    def no_sdpa(*args: object, **kwargs: object) -> None:
        raise AssertionError("sdpa was called")

    module = torch.nn.Module()
    q = torch.zeros(2, 3, 64, 8, dtype=torch.bfloat16)  # equal scores: every probability is 1/64
    v = torch.ones(2, 3, 64, 8, dtype=torch.bfloat16)
    monkeypatch.setattr(attention, "sdpa_attention_forward", no_sdpa)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        out, _ = attention.short_row_attention(module, q, q, v, None, dropout=0.25, is_causal=False)
        outs.append(out.float())
    assert torch.equal(outs[0], outs[1])
    kept = outs[0][..., 0] * 64 * 0.75  # per query: how many of the 64 probabilities were kept
    assert torch.allclose(kept, kept.round(), atol=0.3) and 0.7 < float(kept.mean()) / 64 < 0.8
    monkeypatch.undo()
    monkeypatch.setattr(attention, "SHORT_ROWS", 8)
    called = []
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *a, **k: called.append(1) or (v, None))
    attention.short_row_attention(module, q, q, v, None, dropout=0.0, is_causal=False)
    assert called, "without dropout, long rows run sdpa"
