"""Freezing: the task head and the top-k transformer layers train; embeddings and lower layers are
frozen. k=0 is a linear probe (head only, plus the pooler/final norm that feeds it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from tunelab.config.sections import MethodConfig
from tunelab.errors import ConfigError
from tunelab.methods.base import Method, warn_untrained_tokens
from tunelab.registry import METHODS


class FreezeConfig(MethodConfig):
    name: Literal["freeze"] = "freeze"
    k: int = Field(2, ge=0, description="Number of top transformer layers that train (0 = head only).")


def layer_stack(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's main stack of transformer blocks: its longest ModuleList."""
    best: tuple[str, torch.nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        raise ConfigError("config: method.k: this model has no stack of layers to freeze")
    return best


def shared_layers(model: torch.nn.Module, n: int) -> str:
    """`the model's N layers`; where its config counts more layers than it holds weights for (ALBERT runs one layer's
    weights num_hidden_layers times), that they share them and what k then trains."""
    runs = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    held = f"the model's {n} layer{'s' * (n != 1)}"
    if not isinstance(runs, int) or runs <= n:
        return held
    return (f"{held} of weights: its {runs} layers share them ({type(model).__name__}), so k={n} trains them all and "
            f"k=0 the head only")


@METHODS.register("freeze")
class Freeze(Method):
    Config = FreezeConfig
    default_lr = 1e-4
    cfg: FreezeConfig

    def apply(self, model: torch.nn.Module, heads: list[str], new_tokens: Sequence[int] = ()) -> torch.nn.Module:
        stack_name, stack = layer_stack(model)
        if self.cfg.k > len(stack):
            raise ConfigError(f"config: method.k: {self.cfg.k} is more than {shared_layers(model, len(stack))}")
        top = {f"{stack_name}.{i}." for i in range(len(stack) - self.cfg.k, len(stack))}
        # embeddings by module, not by name only: GPT-2's `wte` / `wpe` hold no "embed"
        tables = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
        for name, p in model.named_parameters():
            in_stack = name.startswith(stack_name + ".")
            trainable = (
                any(name.startswith(h + ".") for h in heads)
                or any(name.startswith(t) for t in top)
                # after the stack and before the head: BERT's pooler, a decoder's final norm
                or (not in_stack and "embed" not in name and id(p) not in tables)
            )
            p.requires_grad_(trainable)
        warn_untrained_tokens("freeze", new_tokens)
        return model
