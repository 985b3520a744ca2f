"""A smaller student cut from a tuned teacher: `model: layers:0,2,4` keeps those transformer layers (in that order)
and everything else — embeddings, task head, tokenizer — as the teacher has them, the initialisation DistilBERT and
most layer-dropping work start from (every other layer of the teacher)."""

from __future__ import annotations

from typing import Any

import torch

from tunelab.errors import ConfigError

STUDENT_LAYERS = "layers:"


def parse_layers(spec: str) -> list[int]:
    """`layers:0,2,4` → [0, 2, 4]; a one-line ConfigError otherwise."""
    body = spec[len(STUDENT_LAYERS):]
    try:
        keep = [int(x) for x in body.split(",") if x.strip()]
    except ValueError:
        keep = []
    if not keep or any(i < 0 for i in keep) or len(set(keep)) != len(keep):
        raise ConfigError(f"config: model: {spec!r}: expected layers:<i>,<j>,... (distinct layer indices from 0), "
                          "e.g. layers:0,2,4")
    return keep


def layer_list(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of transformer layers (encoders: `encoder.layer`; decoders: `layers`)."""
    base = getattr(model, "base_model", model)
    for path in ("encoder.layer", "layers", "transformer.h", "encoder.layers"):
        obj: Any = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ConfigError(f"config: model: layers:...: cannot find the layer stack of {type(model).__name__}")


def keep_layers(model: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    """`model` with only the layers `keep` (in place); the config says the new depth."""
    layers = layer_list(model)
    if max(keep) >= len(layers):
        raise ConfigError(f"config: model: layers:{','.join(map(str, keep))}: the teacher has {len(layers)} layers "
                          f"(0-{len(layers) - 1})")
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    for new, layer in enumerate(kept):
        for module in layer.modules():  # decoders number their layers for the KV cache
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    parent = getattr(model, "base_model", model)
    owner = next(m for m in parent.modules() if any(c is layers for c in m.children()))
    name = next(n for n, c in owner.named_children() if c is layers)
    setattr(owner, name, kept)
    config = model.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    return model
