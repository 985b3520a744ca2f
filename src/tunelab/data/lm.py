"""Language-modelling data: documents packed into fixed-size blocks, word units for whole-word masking,
and BERT-style masking (15 % of the units; of their tokens 80 % [MASK], 10 % a random token, 10 % kept).

A unit is what masking chooses: a token, or with whole-word masking a word (the tokenizer's `word_ids`),
where every CJK character counts as a word of its own (Chinese is masked character by character).
Special tokens have unit -1 and are never chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from tunelab.text import is_cjk

IGNORE = -100


def pack_blocks(n: int, size: int, tail_ok: Callable[[int], bool]) -> list[slice]:
    """Cut a stream of `n` tokens into consecutive slices of `size` (the last one may be shorter; nothing
    is dropped). When `tail_ok(start)` rejects the last slice `[start:n]` (e.g. it has nothing to predict),
    it takes tokens from the end of the one before until it passes, so every block can carry a loss."""
    cuts = list(range(0, n, size)) + [n]
    if len(cuts) > 2:
        start = cuts[-2]
        while start > cuts[-3] + 1 and not tail_ok(start):
            start -= 1
        cuts[-2] = start
    return [slice(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def pack_stream(chunks: Iterable[dict[str, list[int]]], size: int,
                tail_ok: Callable[[dict[str, list[int]], int], bool]) -> Iterator[list[dict[str, list[int]]]]:
    """`pack_blocks` over a token stream that arrives in chunks (parallel lists per key, e.g. input ids and mask
    units), yielding each chunk's finished blocks: the same blocks as packing the whole stream at once, while only
    the last two blocks (at most 2 × `size` tokens, the ones the tail rule may change) are carried to the next
    chunk. `tail_ok(carried, start)` judges the last block `[start:]` of the carried lists."""
    carry: dict[str, list[int]] = {}
    for chunk in chunks:
        for key, values in chunk.items():
            carry.setdefault(key, []).extend(values)
        n = len(next(iter(carry.values()), []))
        done = max(0, (n - size - 1) // size)  # leaves more than one block: the last two stay open
        if done:
            yield [{k: v[i * size:(i + 1) * size] for k, v in carry.items()} for i in range(done)]
            for v in carry.values():
                del v[:done * size]
    n = len(next(iter(carry.values()), []))
    if n:
        yield [{k: v[b] for k, v in carry.items()} for b in pack_blocks(n, size, lambda s: tail_ok(carry, s))]


def word_units(word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]], text: str,
               special: Sequence[bool], start: int) -> tuple[list[int], int]:
    """Unit of every token of one document for whole-word masking, numbered from `start`: tokens of one
    word (same `word_id`) share a unit, a token holding a CJK character is a unit of its own, special
    tokens get -1. Returns (units, next free unit number)."""
    units: list[int] = []
    nxt, prev_word, prev_cjk = start, object(), False
    for wid, (a, b), sp in zip(word_ids, offsets, special, strict=True):
        if sp or wid is None:
            units.append(-1)
            prev_word = object()
            continue
        cjk = any(is_cjk(c) for c in text[a:b])
        if cjk or prev_cjk or wid != prev_word:
            nxt += 1
        units.append(nxt - 1)
        prev_word, prev_cjk = wid, cjk
    return units, nxt


def token_units(special: Sequence[bool], start: int) -> tuple[list[int], int]:
    """Every non-special token is a unit of its own (plain token masking)."""
    units, nxt = [], start
    for sp in special:
        units.append(-1 if sp else nxt)
        nxt += 0 if sp else 1
    return units, nxt


def mask_block(ids: Sequence[int], units: Sequence[int], rng: np.random.Generator, probability: float,
               mask_id: int, random_ids: np.ndarray) -> tuple[list[int], list[int]]:
    """(masked input ids, labels) of one block: each unit is chosen with `probability` (at least one per
    block, so that every block carries a loss); every token of a chosen unit gets its id as label and is
    replaced by `mask_id` (80 %), a random id from `random_ids` (10 %) or kept (10 %). Other labels: -100."""
    ids_a, units_a = np.asarray(ids, dtype=np.int64), np.asarray(units, dtype=np.int64)
    present = np.unique(units_a[units_a >= 0])
    if len(present) == 0:
        return list(ids), [IGNORE] * len(ids)
    chosen_units = present[rng.random(len(present)) < probability]
    if len(chosen_units) == 0:
        chosen_units = rng.choice(present, 1)
    chosen = np.isin(units_a, chosen_units) & (units_a >= 0)
    labels = np.where(chosen, ids_a, IGNORE)
    r = rng.random(len(ids_a))
    out = ids_a.copy()
    out[chosen & (r < 0.8)] = mask_id
    swap = chosen & (r >= 0.8) & (r < 0.9)
    if swap.any():
        out[swap] = rng.choice(random_ids, int(swap.sum()))
    return out.tolist(), labels.tolist()
