"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from tunelab.config.sections import MethodConfig
from tunelab.methods.base import Method
from tunelab.registry import METHODS


class FullConfig(MethodConfig):
    name: Literal["full"] = "full"


@METHODS.register("full")
class Full(Method):
    Config = FullConfig
    default_lr = 5e-5

    def apply(self, model: torch.nn.Module, heads: list[str], new_tokens: Sequence[int] = ()) -> torch.nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
