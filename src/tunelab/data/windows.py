"""`data.truncation: sliding_window` with a `text_pair`: windows slide over `text` and the pair repeats in each, so a
row to be cut needs its pair to leave a window more text tokens than `data.window_stride` (the tokenizer panics
otherwise: "`stride` must be strictly less than `max_len`", or "Sequence to truncate too short"). Checked where
training encodes and where `tunelab data check` counts lengths, one line naming the row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunelab.errors import DataError

CHARS_PER_TOKEN = 16  # no tokenizer makes a token of more characters than this on real text (tasks.base imports it)


def check_window_room(tokenizer: Any, examples: Sequence[dict[str, Any]], max_length: int, stride: int,
                      pair_field: str) -> None:
    """A DataError `file:line: <pair_field>: N tokens leave M for text; ...` for the first row whose text and pair
    exceed `max_length` tokens (specials included) while the pair leaves a window at most `stride` text tokens. Rows
    without a `text_pair` pass."""
    rows = [ex for ex in examples if "text_pair" in ex]
    if not rows:
        return
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    cap = CHARS_PER_TOKEN * max_length  # a pair's head of this many characters already fills a window
    pairs = tokenizer([ex["text_pair"][:cap] for ex in rows], add_special_tokens=False)["input_ids"]
    tight = [(ex, len(p)) for ex, p in zip(rows, pairs, strict=True) if max_length - len(p) - specials <= stride]
    if not tight:
        return
    texts = tokenizer([ex["text"][:cap] for ex, _ in tight], add_special_tokens=False)["input_ids"]
    for (ex, n), text in zip(tight, texts, strict=True):
        if len(text) + n + specials > max_length:
            more = "+" if len(ex["text_pair"]) > cap else ""
            raise DataError(ex.get("source") or "<input>", ex.get("line"), pair_field,
                            f"{n}{more} tokens leave {max(max_length - n - specials, 0)} for text; window_stride "
                            f"{stride} needs more: shorten the pair or lower data.window_stride")
