"""Small text-similarity utilities: edit distance, token overlap, bag-of-tokens and embedding cosine.

Tokens are lowercased words for alphabetic scripts and single characters for CJK (Chinese, Japanese
kana), so every measure works on Chinese without a word segmenter. Embeddings are the mean of an
encoder's last hidden states over the real (non-padding) tokens; the model is loaded once per process.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Any

import numpy as np

# CJK ideographs (incl. extensions and compatibility forms), kana, CJK punctuation is not included
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def levenshtein(a: str, b: str, *, limit: int | None = None) -> int:
    """Character edit distance (insert, delete, substitute; each costs 1). With `limit`, the answer is
    exact up to `limit` and `limit + 1` for anything larger (banded, O(limit · len))."""
    if a == b:
        return 0
    # common prefix and suffix never change the distance
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a) if limit is None else min(len(a), limit + 1)
    if limit is not None:
        if len(a) - len(b) > limit:
            return limit + 1
        return _banded(a, b, limit)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _banded(a: str, b: str, k: int) -> int:
    """Distance if <= k, else k + 1: only cells within k of the diagonal are computed."""
    big = k + 1
    n = len(b)
    prev = [j if j <= k else big for j in range(n + 1)]
    for i in range(1, len(a) + 1):
        lo, hi = max(1, i - k), min(n, i + k)
        cur = [big] * (n + 1)
        cur[0] = i if i <= k else big
        ca = a[i - 1]
        best = cur[0]
        for j in range(lo, hi + 1):
            v = prev[j - 1] + (ca != b[j - 1])
            if prev[j] + 1 < v:
                v = prev[j] + 1
            if cur[j - 1] + 1 < v:
                v = cur[j - 1] + 1
            cur[j] = v if v < big else big
            if v < best:
                best = v
        if best > k:
            return big
        prev = cur
    return min(prev[n], big)


def normalized_levenshtein(a: str, b: str) -> float:
    """Similarity in [0, 1]: 1 - distance / length of the longer string (1.0 for two empty strings)."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def tokens(text: str) -> list[str]:
    """Lowercased words (letters, digits, underscore) for alphabetic scripts; one token per CJK
    character. Punctuation and whitespace are dropped."""
    return _TOKEN.findall(text.lower())


def cjk_share(texts: list[str]) -> float:
    """Share of CJK characters among the non-space characters of `texts` (0.0 when there are none)."""
    cjk = sum(len(_CJK_CHAR.findall(t)) for t in texts)
    total = sum(len(t) - t.count(" ") - t.count("\n") - t.count("\t") for t in texts)
    return cjk / total if total else 0.0


def jaccard(a: str, b: str) -> float:
    """|A ∩ B| / |A ∪ B| of the two token sets (1.0 when both have no tokens)."""
    sa, sb = set(tokens(a)), set(tokens(b))
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def cosine_tokens(a: str, b: str) -> float:
    """Cosine of the two token-count vectors (1.0 when both have no tokens, 0.0 when one has none)."""
    ca, cb = Counter(tokens(a)), Counter(tokens(b))
    if not ca and not cb:
        return 1.0
    dot = sum(n * cb[t] for t, n in ca.items())
    na = math.sqrt(sum(n * n for n in ca.values()))
    nb = math.sqrt(sum(n * n for n in cb.values()))
    return dot / (na * nb) if na and nb else 0.0


@lru_cache(maxsize=4)
def load_encoder(model: str) -> tuple[Any, Any, Any]:
    """(tokenizer, model, device) of an encoder named as in a config (`minilm`, a directory, a hub id);
    loaded once per process."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tunelab.models import resolve_model

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return tokenizer, encoder.to(device).eval(), device


def embed(texts: list[str], model: str = "minilm", batch_size: int = 64, max_length: int = 256) -> np.ndarray:
    """(len(texts), hidden) mean-pooled last hidden states, L2-normalised; batches sorted by length."""
    import torch

    tokenizer, encoder, device = load_encoder(model)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: np.ndarray | None = None
    with torch.inference_mode():
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
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def cosine_embedding(a: str, b: str, model: str = "minilm") -> float:
    """Cosine of the mean-pooled embeddings of `a` and `b` under `model`."""
    va, vb = embed([a, b], model)
    return float(np.clip(va @ vb, -1.0, 1.0))
