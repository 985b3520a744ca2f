"""How many positions a model can read: `data.max_length` above it is refused where inputs would reach past it
(train before anything is written, and `tunelab data check`), instead of a RuntimeError mid-training."""

from __future__ import annotations

from typing import Any

import torch

from tunelab.errors import ConfigError


def learned_position_limit(model: torch.nn.Module) -> int | None:
    """The positions of a model with learned position embeddings (BERT, GPT-2); None for rotary or relative
    positions, which extrapolate and are not refused."""
    learned = any(isinstance(m, torch.nn.Embedding) and (n.endswith("position_embeddings") or n.endswith("wpe"))
                  for n, m in model.named_modules())
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None) if learned else None
    return limit if isinstance(limit, int) else None


def position_limit_at(model_path: str) -> int | None:
    """learned_position_limit of the model at `model_path`, built from its config on the meta device (no weights
    read); None when its config cannot be read (the error, if any, is the tokenizer's or train's to say)."""
    from transformers import AutoConfig, AutoModel

    try:
        config: Any = AutoConfig.from_pretrained(model_path)
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except (OSError, ValueError, KeyError):
        return None
    return learned_position_limit(model)


def check_positions(limit: int | None, max_length: int, longest: int) -> None:
    """One line (ConfigError) when inputs of `longest` tokens reach past the model's `limit` positions."""
    if limit is not None and longest > limit:
        raise ConfigError(f"config: data.max_length: {max_length} is above the model's {limit} positions and "
                          f"inputs of {longest} tokens reach past them; set data.max_length to at most {limit}")
