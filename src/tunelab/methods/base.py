"""What every method provides: make the right parameters trainable, and export the result."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from tunelab.config.sections import MethodConfig

PROMPT_ADAPTER = "adapter"  # RUN/model/adapter: the prefix / prompt-tuning adapter (peft cannot merge it)


class Method:
    """`apply` prepares the model for training; `export` writes plain-transformers weights."""

    Config: ClassVar[type[MethodConfig]]
    default_lr: ClassVar[float] = 5e-5

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    def check_model(self, model: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """Refuse (ConfigError) a model this method cannot train; called right after the model loads, before the
        run writes anything."""

    def apply(self, model: torch.nn.Module, heads: list[str], new_tokens: Sequence[int] = ()) -> torch.nn.Module:
        """`heads`: names of task-head modules, which stay trainable under every method. `new_tokens`: ids the
        task added to the vocabulary (e.g. chat-template markers), whose embedding rows start untrained."""
        return model

    def export(self, model: torch.nn.Module, model_dir: Path, adapter_dir: Path) -> torch.nn.Module:
        """Save plain weights into `model_dir` (and adapters into `adapter_dir`); return the saved module."""
        model.save_pretrained(model_dir)
        return model


def warn_untrained_tokens(method: str, new_tokens: Sequence[int]) -> None:
    """For methods that leave embedding rows frozen: the added tokens keep their initial embeddings."""
    if new_tokens:
        print(f"method {method}: the {len(new_tokens)} tokens added to the vocabulary (ids {min(new_tokens)}-"
              f"{max(new_tokens)}) keep their initial embeddings; lora, dora, qlora and full train them",
              file=sys.stderr)


def count_parameters(model: torch.nn.Module) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "trainable_pct": round(100.0 * trainable / max(total, 1), 3)}
