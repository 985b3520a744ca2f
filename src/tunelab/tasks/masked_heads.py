"""A masked-LM model built from an encoder checkpoint (task pretrain, objective mlm): the modules the checkpoint had
no weights for (a new head), and the base model's pooler, which the masked-LM class leaves out."""

from __future__ import annotations

import torch
from transformers import AutoModel


def fresh_modules(model: torch.nn.Module, missing: set[str]) -> list[str]:
    """The outermost modules all of whose parameters were missing from the checkpoint (a new head)."""
    def fresh(name: str) -> bool:
        params = list(model.get_submodule(name).named_parameters())
        return bool(params) and all(f"{name}.{n}" in missing for n, _ in params)

    out = set()
    for key in missing:
        parts, best = key.split("."), None
        for i in range(len(parts) - 1, 0, -1):
            try:
                if not fresh(".".join(parts[:i])):
                    break
            except AttributeError:
                break
            best = ".".join(parts[:i])
        if best:
            out.add(best)
    return sorted(out)


def keep_pooler(model: torch.nn.Module, model_path: str, unexpected: set[str]) -> bool:
    """BERT-family masked LMs have no pooler, so the checkpoint's pooler would be lost on export and a
    classifier fine-tuned later would start from a random one: attach the base model's (unused, untrained)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if base is None or getattr(base, "pooler", 0) is not None or not any(".pooler." in f".{k}" for k in unexpected):
        return False
    base.pooler = AutoModel.from_pretrained(model_path).pooler
    return True
