"""How many positions a model can read: `data.max_length` above it is refused where inputs would reach past it
(train before anything is written, and `tunelab data check`), instead of a RuntimeError mid-training."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import ConfigError


def learned_position_limit(model: torch.nn.Module) -> int | None:
    """The positions of a model with learned position embeddings (BERT, GPT-2); None for rotary or relative
    positions, which extrapolate and are not refused."""
    tables = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)
              and n.endswith(("position_embeddings", "wpe", "embed_positions"))]  # BERT, GPT-2, OPT
    if not tables:
        return None
    pad = tables[0].padding_idx  # RoBERTa / XLM-R count positions from padding_idx + 1: 514 rows hold 512
    offset = getattr(tables[0], "offset", 0)  # OPT's table starts at row 2: 2050 rows hold 2048
    return tables[0].num_embeddings - (pad + 1 if pad is not None else 0) - (offset if isinstance(offset, int) else 0)


def positions_at(model_path: str) -> tuple[int | None, bool]:
    """`_positions_at`, remembered per model folder (and its config.json's mtime): loading a model, an ensemble or a
    group of LoRA runs asks again for the same folder."""
    try:
        stamp = (Path(model_path) / "config.json").stat().st_mtime_ns
    except OSError:
        stamp = None
    return _positions_at(model_path, stamp)


@functools.lru_cache(maxsize=64)
def _positions_at(model_path: str, _stamp: int | None) -> tuple[int | None, bool]:
    """(the positions of the model at `model_path`, whether they are learned), built from its config on the meta
    device (no weights read); (None, False) when its config cannot be read or built (what is wrong, if anything, is
    the tokenizer's or train's to say)."""
    from transformers import AutoConfig, AutoModel

    try:
        config: Any = AutoConfig.from_pretrained(model_path)
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except Exception:  # noqa: BLE001 - a best-effort probe: any config transformers cannot build
        return None, False
    learned = learned_position_limit(model)
    if learned is not None:
        return learned, True
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text, "max_position_embeddings", None)
    return (limit if isinstance(limit, int) else None), False


def cut_to_positions(data: Any, model_path: str) -> Any:
    """The data settings `data` with `max_length` cut to the learned positions of the model at `model_path` where it
    was above them (a run trained on rows shorter than its positions), and a sliding window's stride to half of
    that: longer inputs are then cut, not an index error in the position embeddings. Validated anew."""
    limit, learned = positions_at(model_path)
    if not learned or limit is None or data.max_length <= limit:
        return data
    update: dict[str, Any] = {"max_length": limit}
    if data.window_stride > limit // 2:
        update["window_stride"] = limit // 2
    cut = type(data).model_validate({**data.model_dump(), **update})
    cut._cut_from = data.max_length  # (a task's own settings that depend on it fit themselves: qa's doc_stride)
    return cut


def check_positions(limit: int | None, max_length: int, longest: int) -> None:
    """One line (ConfigError) when inputs of `longest` tokens reach past the model's `limit` positions."""
    if limit is not None and longest > limit:
        raise ConfigError(f"config: data.max_length: {max_length} is above the model's {limit} positions and "
                          f"inputs of {longest} tokens reach past them; set data.max_length to at most {limit}")
