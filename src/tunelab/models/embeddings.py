"""Sentence embeddings from an encoder: the mean of its last hidden states over the real (non-padding) tokens,
L2-normalised; the model is loaded once per process (zero-shot baselines, embedding similarity)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from tunelab.models.aliases import resolve_model
from tunelab.progress import Steps


@lru_cache(maxsize=4)
def load_encoder(model: str) -> tuple[Any, Any, Any]:
    """(tokenizer, model, device) of an encoder named as in a config (`minilm`, a directory, a hub id);
    loaded once per process."""
    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return tokenizer, encoder.to(device).eval(), device


def embed(texts: list[str], model: str = "minilm", batch_size: int = 64, max_length: int = 256) -> np.ndarray:
    """(len(texts), hidden) mean-pooled last hidden states, L2-normalised; batches sorted by length."""
    tokenizer, encoder, device = load_encoder(model)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: np.ndarray | None = None
    with torch.inference_mode(), Steps("embed", len(texts), "texts") as progress:
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
            hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
            progress.advance(len(idx))
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)
