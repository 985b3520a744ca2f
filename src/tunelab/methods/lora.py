"""LoRA with peft. The task head stays fully trainable (`modules_to_save`) and is saved with the
adapter — forgetting this is a known peft pitfall that leaves a random head in the exported model.

Export: the adapter goes to `RUN/adapter/` and the merged weights to `RUN/model/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from tunelab.config import MethodConfig
from tunelab.methods import METHODS
from tunelab.methods.base import Method


class LoraConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear (every Linear except the head)."
    )


@METHODS.register("lora")
class Lora(Method):
    Config = LoraConfig
    default_lr = 2e-4
    cfg: LoraConfig
    use_dora = False

    def apply(self, model: torch.nn.Module, heads: list[str]) -> torch.nn.Module:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        peft_cfg = PeftLoraConfig(
            r=self.cfg.r, lora_alpha=self.cfg.alpha, lora_dropout=self.cfg.dropout,
            target_modules=self.cfg.target_modules, modules_to_save=heads or None,
            exclude_modules=heads or None, use_dora=self.use_dora,
        )
        return get_peft_model(model, peft_cfg)

    def export(self, model: torch.nn.Module, model_dir: Path, adapter_dir: Path) -> torch.nn.Module:
        model.save_pretrained(adapter_dir)
        merged = model.merge_and_unload()
        merged.save_pretrained(model_dir)
        return merged
