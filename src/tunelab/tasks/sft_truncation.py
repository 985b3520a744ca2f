"""SFT rows longer than data.max_length. `data.truncation: head` cuts a row at its end. `head+tail` first takes the
middle out of the prompt's longest messages, then cuts the end as head does: a row whose long context (a dolly
`input`) would push the reply past max_length then trains instead of being refused.

How much of the prompt goes is LLaMA-Factory's rule (`infer_seqlen`, data/processor/processor_utils.py): of
max_length, the last trained reply keeps all of its tokens where it has fewer than half of them, else (where the rest
of the row, the prompt, has at least half too) a share in proportion to its length; the prompt keeps the remainder.
The prompt is cut in text, not tokens: every user / system message (never an assistant turn, a tool call or a tool's
result) longer than k characters keeps its first k // 2 and its last k - k // 2, joined with no marker (LLaMA-Factory
and TRL cut token ids and mark nothing); k is the largest for which the re-rendered row has at most the prompt's share
plus the reply's tokens (a binary search, tokenising the rendered row at each step: only rows over max_length pay
it). So the longest message is cut first, and another only once it is down to that one's length."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunelab.errors import DataError
from tunelab.tasks.chat_template import render

CUT_ROLES = ("user", "system")  # the messages whose middle head+tail may take out
Rendered = Callable[[list[dict[str, Any]]], tuple[str, list[tuple[int, int]]]]  # messages → text, trained spans


class ReplyCut(DataError):
    """A row whose assistant tokens are all past data.max_length (training refuses it)."""


def prompt_share(prompt: int, reply: int, limit: int) -> int:
    """Tokens the prompt keeps of `limit` beside a reply of `reply` tokens (LLaMA-Factory's infer_seqlen)."""
    if reply * 2 < limit:
        most = limit
    elif prompt * 2 < limit:
        most = limit - prompt
    else:
        most = int(limit * reply / (prompt + reply))
    return min(max(limit - min(most, reply), 0), prompt)


def _cuttable(message: dict[str, Any]) -> bool:
    return message["role"] in CUT_ROLES and isinstance(message.get("content"), str) and not message.get("tool_calls")


def _kept(text: str, keep: int) -> str:
    if len(text) <= keep:
        return text
    head = keep // 2
    return text[:head] + text[len(text) - (keep - head):]


def middles_cut(messages: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """The messages with every user / system message over `keep` characters cut to its first and last ones."""
    return [{**m, "content": _kept(m["content"], keep)} if _cuttable(m) else m for m in messages]


def fit_prompt(tokenizer: Any, messages: list[dict[str, Any]], goal: int) -> list[dict[str, Any]] | None:
    """`middles_cut` at the most characters whose rendering has at most `goal` tokens (none: every such message
    emptied); None where no message can be cut."""
    longest = max((len(m["content"]) for m in messages if _cuttable(m)), default=0)
    if not longest:
        return None
    low, high = 0, longest - 1
    while low < high:
        mid = (low + high + 1) // 2
        text = render(tokenizer, middles_cut(messages, mid))
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= goal:
            low = mid
        else:
            high = mid - 1
    return middles_cut(messages, low)


def labelled(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int], int]:
    """Token ids, labels (-100 outside the trained spans) and the tokens of the last span (the reply)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [t if any(s < e_ and e > s_ for s_, e_ in spans) and e > s else -100
              for t, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]
    last = spans[-1] if spans else (0, 0)
    reply = sum(s < last[1] and e > last[0] for s, e in enc["offset_mapping"])
    return enc["input_ids"], labels, reply


@dataclass
class Cuts:
    """Rows of one `encode` fitted into `limit` tokens by `mode` (data.truncation), and how many were cut."""

    limit: int
    mode: str
    rows: int = 0  # over the limit
    middles: int = 0  # of those, the ones whose prompt lost a middle (head+tail)
    ends: int = 0  # of those, the ones cut at the end

    def fit(self, tokenizer: Any, example: dict[str, Any], rendered: Rendered) -> dict[str, list[int]]:
        """The example's features within the limit; a `ReplyCut` naming its row where no reply token is left."""
        messages = example["messages"]
        ids, labels, reply = labelled(tokenizer, *rendered(messages))
        if len(ids) <= self.limit:
            return {"input_ids": ids, "labels": labels}
        self.rows += 1
        share = prompt_share(len(ids) - reply, reply, self.limit)
        if self.mode == "head+tail" and reply and share < len(ids) - reply:
            cut = fit_prompt(tokenizer, messages, share + reply)
            if cut is not None:
                self.middles += 1
                ids, labels, _ = labelled(tokenizer, *rendered(cut))
        if len(ids) > self.limit:
            self.ends += 1
            ids, labels = ids[: self.limit], labels[: self.limit]
        if all(v == -100 for v in labels):
            how = (" even with the middle of its user / system messages cut (data.truncation: head+tail); raise "
                   "data.max_length or shorten the rest of the prompt" if self.mode == "head+tail" else
                   "; raise data.max_length, shorten the prompt, or set data.truncation: head+tail (cuts the middle "
                   "of the prompt's longest message instead)")
            raise ReplyCut(example["source"], example["line"], example["field"],
                           f"the assistant reply starts after data.max_length={self.limit} tokens{how}")
        return {"input_ids": ids, "labels": labels}

    def note(self, examples: int) -> str:
        """The stderr line on the rows cut (`rows` above 0)."""
        said = f"sft: {self.rows} of {examples} examples cut at data.max_length={self.limit} tokens"
        if self.mode != "head+tail":
            return said + " (their tail is not trained)"
        return (f"{said}: {self.middles} lost the middle of a prompt message (data.truncation: head+tail), "
                f"{self.ends} cut at the end (their tail is not trained)")


def reply_cuts(tokenizer: Any, examples: list[dict[str, Any]], limit: int, mode: str,
               rendered: Callable[[dict[str, Any], list[dict[str, Any]]], tuple[str, list[tuple[int, int]]]],
               ) -> list[tuple[int, bool]]:
    """data check: each example as training fits it: (its trained tokens, -1 where training refuses it; whether its
    prompt lost a middle)."""
    cuts, out = Cuts(limit, mode), []
    for ex in examples:
        before = cuts.middles
        try:
            kept = sum(v != -100 for v in cuts.fit(tokenizer, ex, lambda msgs, ex=ex: rendered(ex, msgs))["labels"])
        except ReplyCut:
            kept = -1
        out.append((kept, cuts.middles > before))
    return out
