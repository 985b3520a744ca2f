"""FastDropout: nn.Dropout's function (drop rate, scaling, gradient), a bool mask, torch's seeded RNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tunelab.training.dropout import FastDropout, fast_dropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_drop_rate_and_scale(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1_000_003)  # not a multiple of 4: the last 64-bit draw is partly used
    y = fast_dropout(x, p)
    dropped = (y == 0).double().mean().item()
    assert dropped == pytest.approx(p, abs=4 * (p * (1 - p) / x.numel()) ** 0.5)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)


def test_every_16_bit_lane_is_uniform() -> None:
    torch.manual_seed(1)
    keep = keep_mask(torch.Size([400_000, 4]), 0.5, torch.device("cpu"))
    for lane in range(4):  # a plain int64 random_() leaves the top lane's sign bit 0 and would keep ~all
        assert keep[:, lane].double().mean().item() == pytest.approx(0.5, abs=0.005)


def test_gradient_is_mask_times_scale_and_only_a_bool_mask_is_kept() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 32, requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = FastDropout(0.2).train()(x)
    assert [t.dtype for t in saved] == [torch.bool]  # nn.Dropout keeps a float32 mask (4 bytes per element)
    y.sum().backward()
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad, kept.float() / 0.8)


def test_seeded_eval_identity_and_autocast_dtype() -> None:
    x = torch.randn(8, 16)
    torch.manual_seed(3)
    a = fast_dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(a, fast_dropout(x, 0.3))
    assert FastDropout(0.3).eval()(x) is x and FastDropout(0.0).train()(x) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast_dropout(x, 0.3).dtype == torch.bfloat16  # cast first, as the next matmul would


def test_swaps_lora_and_model_dropout(tiny_llama: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    model = get_peft_model(model, LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear", task_type="CAUSAL_LM"))
    lora = sum(isinstance(m, torch.nn.Dropout) for n, m in model.named_modules() if "lora_dropout" in n)
    assert lora > 0
    model.train()
    assert use_fast_dropout(model) == lora
    fast = [m for n, m in model.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
    assert len(fast) == lora and all(type(m) is FastDropout and m.p == 0.1 and m.training for m in fast)
    batch = {"input_ids": torch.randint(5, 50, (2, 9))}
    model(**batch, labels=batch["input_ids"]).loss.backward()  # trains through the swapped modules
    assert use_fast_dropout(model) == 0  # already swapped
