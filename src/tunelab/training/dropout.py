"""A cheaper `nn.Dropout` for training: the same function, a quarter of the time and of the memory.

`nn.Dropout` on the CPU draws one float32 Bernoulli sample per element (~90 M elements/s on 2 cores) and
keeps the float mask for the backward pass (4 bytes per element). In LoRA every adapted linear layer has
its own dropout on its input, so SmolLM2-135M with all-linear LoRA (dropout 0.05) draws 613 M samples per
batch of 8 x 512 tokens: 4.5 s of an 18 s step, and 2.45 GB of masks held until the backward pass.

`FastDropout` keeps an element when a uniform 16-bit draw is >= round(p * 65536); its drop probability is
p to within 1/131072 (0.05 -> 0.0500031). The bits come from torch's own generator, four 16-bit draws per
64-bit `random_` (so `torch.manual_seed` and a checkpoint's saved RNG state reproduce them), the mask is
kept as bool (1 byte per element), and under autocast the input is cast to the autocast dtype first, as the
next matmul would do anyway. Same expectation (kept elements scaled by 1 / (1 - p)) and gradient
(mask * scale) as `nn.Dropout`. Measured on SmolLM2 all-linear LoRA: 4096 x 576 elements in 3.6 ms
(`F.dropout`: 22 ms).

`use_fast_dropout(model)` swaps every `nn.Dropout` module of a model (the model's own and peft's
`lora_dropout`) for a `FastDropout` with the same p; evaluation mode is the identity, as before.
"""

from __future__ import annotations

from typing import Any

import torch

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A bool tensor, True with probability 1 - round(p * 65536) / 65536 per element."""
    n = shape.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    draws = words.view(torch.int16)[:n].view(shape)  # uniform in [-32768, 32767]
    return draws >= round(p * _LEVELS) - _LEVELS // 2


class Masked(torch.autograd.Function):
    """x times a bool mask and a scale (the mask is all that is kept for backward: 1 byte per element); a scale of
    1 (LoRA's forward folds it elsewhere) is no pass at all."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep) if scale == 1.0 else x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return (grad.mul(keep) if ctx.scale == 1.0 else grad.mul(keep).mul_(ctx.scale)), None, None


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    if p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    if torch.is_autocast_enabled(x.device.type) and x.is_floating_point():
        x = x.to(torch.get_autocast_dtype(x.device.type))
    return Masked.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class FastDropout(torch.nn.Dropout):
    """`nn.Dropout` (a subclass, so `p`, `train()` and isinstance checks behave the same) drawn by `fast_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return fast_dropout(x, self.p)


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Replace every plain `nn.Dropout` module of `model` by a `FastDropout`; returns how many."""
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout and not child.inplace:
                fast = FastDropout(child.p)
                fast.train(child.training)
                setattr(parent, name, fast)
                swapped += 1
    return swapped
