"""The training forward of peft's LoRA linear layers (tunelab.training.lora_forward): peft's outputs and gradients,
peft's own forward wherever a layer is not plain LoRA, and the whole training loop with it on and off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tunelab.training.dropout import use_fast_dropout
from tunelab.training.lora_forward import restore_lora, use_fast_lora


def lora_model(tiny_llama: Path, **settings: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    cfg = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}
    model = get_peft_model(model, LoraConfig(**{**cfg, **settings}))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: the adapter would add nothing to compare
            torch.nn.init.normal_(param, std=0.1)
    use_fast_dropout(model)
    return model.train()


def fused(model: torch.nn.Module, ids: torch.Tensor, autocast: bool = True, **kwargs: object) -> list[bool]:
    """Per adapted layer: did its output come from this forward's addmm (else peft's own forward ran)?"""
    seen: list[bool] = []

    def hook(module: torch.nn.Module, args: object, out: torch.Tensor) -> None:
        fn = out.grad_fn
        seen.append(fn is not None and fn.name() == "ViewBackward0"
                    and fn.next_functions[0][0].name() == "AddmmBackward0")

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ == "Linear"
               and hasattr(m, "lora_A")]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(input_ids=ids, **kwargs)
    for h in handles:
        h.remove()
    return seen


def step(model: torch.nn.Module, autocast: bool, seed: int = 5) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and the trainable parameters' gradients of one forward + backward under a fixed dropout draw."""
    model.zero_grad()
    ids = torch.arange(24).remainder(20).view(2, 12) + 3
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids).logits
    if logits.requires_grad:  # a merged adapter is not in the graph
        logits.float().square().mean().backward()
    return logits.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_same_outputs_and_gradients_as_peft(tiny_llama: Path) -> None:
    model = lora_model(tiny_llama)
    ref_logits, ref_grads = step(model, False)
    peft_bf16 = step(model, True)
    ids = torch.arange(12).view(1, 12) + 3
    assert fused(model, ids) == [False] * 14
    layers = use_fast_lora(model)
    assert len(layers) == 2 * 7  # every adapted projection of the two layers
    assert fused(model, ids) == [True] * 14
    logits, grads = step(model, False)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) == 2 * 2 * 7
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    # under bf16 autocast both round (other intermediates): each within bf16 error of float32, ours as close as peft's
    fast_bf16 = step(model, True)
    errors = {"ours": 0.0, "peft": 0.0}
    for ours, theirs, ref in ((fast_bf16[0], peft_bf16[0], ref_logits),
                              *((fast_bf16[1][n], peft_bf16[1][n], ref_grads[n]) for n in ref_grads)):
        assert (ours - ref).norm() <= 0.05 * ref.norm() and (theirs - ref).norm() <= 0.05 * ref.norm()
        errors["ours"] += ((ours - ref).norm() / ref.norm()).item()
        errors["peft"] += ((theirs - ref).norm() / ref.norm()).item()
    assert errors["ours"] <= 1.2 * errors["peft"]
    restore_lora(layers)
    assert all("forward" not in layer.__dict__ for layer in layers)
    again, _ = step(model, True)
    torch.testing.assert_close(again, peft_bf16[0], rtol=0, atol=0)  # peft's forward back, the same draw


@pytest.mark.parametrize("shape", [(7, 32), (2, 5, 32), (32,)])
def test_layer_output_dtype_and_shape_as_peft(tiny_llama: Path, shape: tuple[int, ...]) -> None:
    model = lora_model(tiny_llama).eval()
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    x = torch.randn(shape)
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.no_grad():
            ref = layer(x)
            use_fast_lora(model)
            got = layer(x)
            restore_lora([layer])
        assert got.dtype == ref.dtype and got.shape == ref.shape
        torch.testing.assert_close(got.float(), ref.float(), rtol=2e-2 if autocast else 1e-5, atol=2e-2 if autocast
                                   else 1e-6)


def test_dropout_is_drawn_and_off_in_eval(tiny_llama: Path) -> None:
    model = lora_model(tiny_llama)
    use_fast_lora(model)
    a, _ = step(model, False, seed=1)
    b, _ = step(model, False, seed=2)
    assert not torch.allclose(a, b)  # other seed, other dropout masks
    model.eval()
    ids = torch.arange(12).view(1, 12) + 3
    with torch.no_grad():
        fast = model(input_ids=ids).logits
        restore_lora([m for m in model.modules() if "forward" in m.__dict__])
        torch.testing.assert_close(model(input_ids=ids).logits, fast, rtol=1e-5, atol=1e-6)


def set_up(model: torch.nn.Module, case: str) -> dict[str, object]:
    """Put `model` in the state `case` names; returns the forward's extra arguments."""
    if case == "merged":
        model.merge_adapter()
    if case == "two_adapters":
        model.add_adapter("second", LoraConfig(r=2, lora_dropout=0.2, target_modules="all-linear",
                                               task_type="CAUSAL_LM"))
        for name, param in model.named_parameters():
            if "lora_B.second" in name:
                torch.nn.init.normal_(param, std=0.1)
        use_fast_dropout(model)
        model.base_model.set_adapter(["default", "second"])
    if case == "plain_dropout":  # train.fast_dropout off: torch's own dropout, which peft draws in float32
        for module in model.modules():
            if type(module).__name__ == "FastDropout":
                module.__class__ = torch.nn.Dropout
    if case == "bf16_base":  # no autocast, base weights in bf16, adapters in float32
        for name, param in model.named_parameters():
            if "lora_" not in name:
                param.data = param.data.to(torch.bfloat16)
    if case == "adapter_names":
        model.eval()
        return {"adapter_names": ["default"]}
    return {}


@pytest.mark.parametrize("case", ["dora", "merged", "two_adapters", "plain_dropout", "disabled", "bias", "bf16_base",
                                  "adapter_names"])
def test_layers_it_does_not_cover_keep_peft(tiny_llama: Path, case: str) -> None:
    model = lora_model(tiny_llama, use_dora=case == "dora", lora_bias=case == "bias")
    ids = torch.arange(12).view(1, 12) + 3
    kwargs = set_up(model, case)
    if case == "disabled":
        with model.disable_adapter():
            ref, _ = step(model, False)
            use_fast_lora(model)
            assert not any(fused(model, ids))
            got, _ = step(model, False)
    elif case == "adapter_names":
        with torch.no_grad():
            ref = model(input_ids=ids, **kwargs).logits
            use_fast_lora(model)
            assert not any(fused(model, ids, **kwargs))
            got = model(input_ids=ids, **kwargs).logits
    else:
        ref, _ = step(model, False)
        use_fast_lora(model)
        assert not any(fused(model, ids, autocast=case != "bf16_base")), case
        got, _ = step(model, False)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def write_chat(path: Path, n: int) -> Path:
    words = ["alpha", "beta", "gamma", "delta", "red", "blue", "one", "two"]
    rows = [{"messages": [{"role": "user", "content": f"say {words[i % 8]} {words[(i * 3) % 8]}"},
                          {"role": "assistant", "content": f"{words[(i + 1) % 8]} {words[(i * 5) % 8]}"}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_training_loop_with_and_without(tiny_llama: Path, tmp_path: Path) -> None:
    from tunelab.config.run import build_config
    from tunelab.pipeline import run

    data = write_chat(tmp_path / "chat.jsonl", 32)
    losses = {}
    for fast in (True, False):
        cfg = build_config({
            "task": "sft", "model": str(tiny_llama), "output_dir": str(tmp_path / f"run-{fast}"),
            "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.1},
            "data": {"train": str(data), "validation_split": 0.0, "max_length": 32},
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "save_steps": 0, "seed": 3, "precision": "fp32",
                      "fast_lora": fast, "report": False},
        })
        losses[fast] = run(cfg)["train"]["loss"]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)  # the same draws, the same sums
