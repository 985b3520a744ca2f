"""A shorter forward for peft's LoRA linear layers while training: the same function, fewer passes over the rows.

peft's `lora.Linear.forward` computes `result + lora_B(lora_A(dropout(x))) * scaling`. On a CPU under bf16 autocast
that is, per adapted layer and pass: `x` cast to the autocast dtype by the base matmul and, separately, to float32
(the adapter's dtype) and back to bf16 by the adapter's matmul; the dropout mask applied and then scaled by
1 / (1 - p); the adapter's output (tokens x out_features) multiplied by `scaling` and then added to the base output:
element-wise passes over the activations, each with its backward. Here `x` is cast once, for the base layer and
the adapter; FastDropout's bool mask is applied once, its 1 / (1 - p) folded with `scaling` into one multiply of the
rank-r intermediate (tokens x r); and the adapter's second matmul adds into the base output (`addmm`). The sum is
the same; only bf16 rounding of intermediates differs (the input's two gradients are also summed in bf16).

Measured (2-core Intel Xeon with AMX, bf16): three SmolLM2-sized adapted layers (576 -> 576, 576 -> 1536,
1536 -> 576) over 1,024 tokens, forward + backward, 21-27 ms against peft's 28-35 ms; the SFT benchmark
(benchmarks/sft.py, SmolLM2-135M all-linear LoRA) 83.0 s against 91.4 s with peft's forward (docs/benchmarks.md).
Any layer this does not cover keeps peft's forward: DoRA and other variants, several active adapters, merged or
disabled adapters, biased adapters, quantised (QLoRA) or non-`nn.Linear` base layers, extra forward arguments
(`adapter_names`), torch's own dropout (`train.fast_dropout: false`: peft draws it in float32), and, outside
autocast, an input, base weight and adapter of different dtypes. Hooks on `lora_B` and on the dropout module do not
run (their weights are used directly), so only one process or DDP: FSDP / DeepSpeed keep peft's forward."""

from __future__ import annotations

import types
from typing import Any

import torch

from tunelab.training.dropout import FastDropout, Masked, keep_mask


def _covered(layer: Any, kwargs: dict[str, Any]) -> str | None:
    """The single active adapter when `layer` is plain LoRA this forward computes exactly, else None."""
    if kwargs or layer.merged or layer.disable_adapters or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    if layer.lora_A[name].bias is not None or layer.lora_B[name].bias is not None:
        return None
    dropout = layer.lora_dropout[name]
    if dropout.training and isinstance(dropout, torch.nn.Dropout) and not isinstance(dropout, FastDropout):
        return None
    return name


def lora_linear_forward(layer: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = None if args else _covered(layer, kwargs)
    if name is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    lora_a, lora_b, dropout = layer.lora_A[name], layer.lora_B[name], layer.lora_dropout[name]
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    dtype = torch.get_autocast_dtype(device) if autocast else lora_a.weight.dtype
    if not autocast and not (x.dtype == dtype == lora_b.weight.dtype == layer.base_layer.weight.dtype):
        return type(layer).forward(layer, x, *args, **kwargs)
    x = x.to(dtype)  # once for both matmuls (autocast would cast a float32 input for each)
    result = layer.base_layer(x)
    scale = layer.scaling[name]
    if isinstance(dropout, FastDropout) and dropout.training and 0.0 < dropout.p < 1.0:
        x = Masked.apply(x, keep_mask(x.shape, dropout.p, x.device), 1.0)
        scale = scale / (1.0 - dropout.p)
    else:  # Identity, eval mode, p 0 or 1
        x = dropout(x)
    low = lora_a(x) * scale  # tokens x r: the cheap place for the scalars
    out = result.shape[-1]
    summed = torch.addmm(result.reshape(-1, out), low.reshape(-1, low.shape[-1]), lora_b.weight.t())
    return summed.view(result.shape)


def use_fast_lora(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Give every peft `lora.Linear` of `model` (over an `nn.Linear`, without a forward of its own set by someone
    else) this forward; returns the layers changed."""
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:  # peft not installed: no LoRA layers
        return []
    changed = []
    for module in model.modules():
        if type(module) is Linear and type(module.base_layer) is torch.nn.Linear and "forward" not in vars(module):
            module.forward = types.MethodType(lora_linear_forward, module)
            changed.append(module)
    return changed


def restore_lora(layers: list[torch.nn.Module]) -> None:
    for layer in layers:
        layer.__dict__.pop("forward", None)
