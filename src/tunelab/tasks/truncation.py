"""Classification inputs longer than data.max_length: which tokens a head / tail / head+tail cut keeps, and how
the logits of a row's sliding windows are combined into one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tunelab.errors import ConfigError


def _share(a: int, b: int, budget: int) -> tuple[int, int]:
    """Tokens kept of a text pair of a and b tokens: the longer text is cut first (as longest_first)."""
    if a + b <= budget:
        return a, b
    if a >= b:
        keep_a = budget - min(b, budget // 2)
        return keep_a, budget - keep_a
    keep_b = budget - min(a, budget // 2)
    return budget - keep_b, keep_b


def _pick(positions: list[int], k: int, mode: str) -> list[int]:
    if k >= len(positions):
        return positions
    if mode == "head":
        return positions[:k]
    if mode == "tail":
        return positions[len(positions) - k:] if k else []
    head = k // 2  # head+tail: the head gets the smaller half of an odd budget
    return positions[:head] + positions[len(positions) - (k - head):]


def cut_tokens(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int, mode: str,
               ) -> dict[str, Any]:
    """Tokenise whole, then keep `max_length` tokens: every special token, and of each text its first
    (head), last (tail) or first-half-and-last-half (head+tail) tokens of its share of the budget. `cut`: how many
    rows were longer."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"config: data.truncation: {mode} needs a fast tokenizer")
    enc = tokenizer(texts, pairs, truncation=False)
    out: dict[str, list[list[int]]] = {key: [] for key in ("input_ids", "token_type_ids") if key in enc}
    cut = 0
    for i, ids in enumerate(enc["input_ids"]):
        keep = range(len(ids))
        if len(ids) > max_length:
            cut += 1
            seq = enc.sequence_ids(i)
            special = [p for p, s in enumerate(seq) if s is None]
            first, second = ([p for p, s in enumerate(seq) if s == k] for k in (0, 1))
            k0, k1 = _share(len(first), len(second), max(max_length - len(special), 0))
            keep = sorted(special + _pick(first, k0, mode) + _pick(second, k1, mode))
        for key, rows in out.items():
            rows.append([enc[key][i][p] for p in keep])
    return {**out, "cut": cut}


def rows_cut(enc: Any, max_length: int) -> int:
    """Rows of a batch the tokenizer truncated at `max_length`: those with tokens left over (a fast tokenizer's
    `overflowing`), else (a slow one) those that reach it."""
    encodings = getattr(enc, "encodings", None)
    if encodings:
        return sum(bool(e.overflowing) for e in encodings)
    return sum(len(ids) >= max_length for ids in enc["input_ids"])


KEPT = {"head": "first", "tail": "last", "head+tail": "first and last"}


def cut_note(rows: int, max_length: int, mode: str) -> str | None:
    """The line eval and predict say about rows cut at data.max_length (sliding windows cut none), or None."""
    if not rows:
        return None
    return (f"classification: {rows} row{'s' * (rows > 1)} longer than data.max_length ({max_length} tokens): only "
            f"{'their' if rows > 1 else 'its'} {KEPT.get(mode, mode)} tokens read (data.truncation: {mode}; "
            "sliding_window reads all of a text)")


def aggregate_windows(logits: np.ndarray, owners: Sequence[int], how: str) -> np.ndarray:
    """One row of logits per example: the mean or the maximum over its windows (`owners[j]`: the example
    of window j; every example has at least one window)."""
    idx = np.asarray(owners)
    n = int(idx.max()) + 1
    if how == "max":
        out = np.full((n, *logits.shape[1:]), -np.inf, dtype=logits.dtype)
        np.maximum.at(out, idx, logits)
        return out
    out = np.zeros((n, *logits.shape[1:]), dtype=logits.dtype)
    np.add.at(out, idx, logits)
    return out / np.bincount(idx, minlength=n).reshape(-1, *([1] * (logits.ndim - 1))).astype(logits.dtype)
