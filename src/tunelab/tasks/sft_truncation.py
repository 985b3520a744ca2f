"""SFT rows longer than data.max_length. `data.truncation: head` cuts a row at its end. `head+tail` first takes the
middle out of the prompt's longest messages, then cuts the end as head does: a row whose long context (a dolly
`input`) would push the reply past max_length then trains instead of being refused.

How much of the prompt goes is LLaMA-Factory's budget rule (`infer_seqlen`, data/processor/processor_utils.py),
applied once, to the last trained reply against everything before it: of max_length, that reply keeps all of its
tokens where it has fewer than half of them, else (where the prompt has at least half too) a share in proportion to
its length; the prompt keeps the remainder. (LLaMA-Factory applies the rule to each (prompt, reply) turn in order with
the budget left, and keeps the HEAD of each prompt.) The middle cut is tunelab's own, so that an instruction at a
message's head and a question at its tail both stay: the prompt is cut in text, not tokens, every user / system
message (never an assistant turn, a tool call or a tool's result) longer than k characters keeping its first k // 2
and its last k - k // 2, each edge moved to a word's end / start within `EDGE` characters and never inside a character
cluster (inward, or outward where inward would keep fewer than `MIN_KEEP` characters), joined with no marker
(LLaMA-Factory and TRL cut token ids and mark nothing); k is the largest, and at least `MIN_KEEP` (no message is cut
to nothing), for which the re-rendered row has at most the prompt's share plus the
reply's tokens (a binary search, tokenising the rendered row at each step: only rows over max_length pay it). So the
longest message is cut first, and another only once it is down to that one's length. Where no k reaches the share
(the template, earlier assistant turns or tool results alone fill it), the prompt loses only as much as brings as many
of the last reply's tokens inside max_length as its share allows or as k = MIN_KEEP can (a short reply kept whole as
far as it can be), and where no cut brings more of it inside than the whole prompt does it stays whole: the row is
then cut at its end, or refused, as head does. A row with a distillation teacher's reply (`TEACHER_READ`) is only cut
at its end: its prompt is the one the teacher read (tasks/sft_distill.py `teacher_prompts` cut it already)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunelab.errors import DataError

CUT_ROLES = ("user", "system")  # the messages whose middle head+tail may take out
MIN_KEEP = 16  # characters a cut message keeps at least (about its first 8 and last 8): shorter ones stay whole
EDGE = 10  # characters a cut edge may move to fall between words
ZWJ = "\u200d"
TEACHER_READ = "teacher_read"  # an example's key: its prompt is the one a teacher replied to, never cut again
Rendered = Callable[[list[dict[str, Any]]], tuple[str, list[tuple[int, int]]]]  # messages → text, trained spans


class ReplyCut(DataError):
    """A row whose assistant tokens are all past data.max_length (training refuses it); `saved`: data.truncation
    head+tail would keep it."""

    def __init__(self, *args: Any, saved: bool = False) -> None:
        super().__init__(*args)
        self.saved = saved


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


def _attached(ch: str) -> bool:
    """A character written as part of the one before it: a combining mark, a variation selector, a zero-width joiner,
    an emoji skin tone or tag."""
    return (unicodedata.category(ch) in ("Mn", "Mc", "Me") or ch == ZWJ or "\U0001f3fb" <= ch <= "\U0001f3ff"
            or "\U000e0020" <= ch <= "\U000e007f")


def _edge(text: str, at: int, step: int, room: int) -> int:
    """A cut edge near `at`: at the nearest whitespace boundary within `room` characters (moving by `step`: -1 for a
    head's end, 1 for a tail's start), else at `at`; then out of any character cluster (`_joined`)."""
    n = len(text)
    for p in range(at, at + step * (room + 1), step):
        if 0 < p < n and (text[p - 1].isspace() or text[p].isspace()):
            at = p
            break
    while 0 < at < n and _joined(text, at):
        at += step
    return at


def _joined(text: str, at: int) -> bool:
    """Whether `at` lies inside a character cluster: before an attached character, after a joiner, or between the two
    regional indicators of a flag."""
    if _attached(text[at]) or text[at - 1] == ZWJ:
        return True
    flags = 0
    while flags < at and "\U0001f1e6" <= text[at - 1 - flags] <= "\U0001f1ff":
        flags += 1
    return flags % 2 == 1 and "\U0001f1e6" <= text[at] <= "\U0001f1ff"


def _kept(text: str, keep: int) -> str:
    """The text's first keep // 2 and last keep - keep // 2 characters, each edge moved to a word's end or start where
    one lies within `EDGE` characters (and out of a character cluster); joined by the whitespace the cut took out
    where neither side has one. The edges move inward (the text keeps fewer characters), or outward where inward
    would leave fewer than `MIN_KEEP`."""
    if len(text) <= keep:
        return text
    kept = _cut(text, keep, 1)
    return kept if len(kept) >= MIN_KEEP or keep < MIN_KEEP else _cut(text, keep, -1)


def _cut(text: str, keep: int, inward: int) -> str:
    """`_kept` with its edges moved inward (1: by half an edge's characters at most) or outward (-1: by `EDGE` at
    most, every character of the plain cut kept, whitespace too)."""
    head = keep // 2
    tail = len(text) - (keep - head)
    end = _edge(text, head, -inward, min(EDGE, head // 2) if inward > 0 else EDGE)
    start = max(_edge(text, tail, inward, min(EDGE, (keep - head) // 2) if inward > 0 else EDGE), end)
    left, right = text[:end], text[start:]
    if inward > 0 and left[-1:].isspace() and right[:1].isspace():  # one run of whitespace for the middle: the tail's
        left = left.rstrip()
    elif left and right and not left[-1].isspace() and not right[0].isspace():
        gap = [c for c in (text[end], text[start - 1]) if c.isspace()]
        return left + (gap[0] if gap else "") + right
    return left + right


def middles_cut(messages: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """The messages with every user / system message over `keep` characters cut to its first and last ones."""
    return [{**m, "content": _kept(m["content"], keep)} if _cuttable(m) else m for m in messages]


def fit_prompt(messages: list[dict[str, Any]], fits: Callable[[list[dict[str, Any]]], bool],
               ) -> list[dict[str, Any]] | None:
    """`middles_cut` at the most characters (at least `MIN_KEEP`: no message is cut to nothing) for which `fits`;
    None where no message is longer than MIN_KEEP or even MIN_KEEP does not fit."""
    longest = max((len(m["content"]) for m in messages if _cuttable(m)), default=0)
    if longest <= MIN_KEEP or not fits(middles_cut(messages, MIN_KEEP)):
        return None
    low, high = MIN_KEEP, longest - 1
    while low < high:
        mid = (low + high + 1) // 2
        if fits(middles_cut(messages, mid)):
            low = mid
        else:
            high = mid - 1
    return middles_cut(messages, low)


def labelled(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int], int, int]:
    """Token ids, labels (-100 outside the trained spans), the tokens of the last span (the reply) and the index of its
    first token."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    labels = [t if any(s < e_ and e > s_ for s_, e_ in spans) and e > s else -100
              for t, (s, e) in zip(enc["input_ids"], offsets, strict=True)]
    last = spans[-1] if spans else (0, 0)
    inside = [i for i, (s, e) in enumerate(offsets) if s < last[1] and e > last[0]]
    return enc["input_ids"], labels, len(inside), inside[0] if inside else len(offsets)


@dataclass
class Cuts:
    """Rows of one `encode` fitted into `limit` tokens by `mode` (data.truncation), and how many were cut."""

    limit: int
    mode: str
    rows: int = 0  # over the limit
    middles: int = 0  # of those, the ones whose prompt lost a middle (head+tail)
    ends: int = 0  # of those, the ones cut at the end

    def fit(self, tokenizer: Any, example: dict[str, Any], rendered: Rendered) -> dict[str, list[int]]:
        """The example's features within the limit; a `ReplyCut` naming its row where no reply token is left (its
        `saved`: whether head+tail would have kept it)."""
        messages = example["messages"]
        ids, labels, reply, start = labelled(tokenizer, *rendered(messages))
        if len(ids) <= self.limit:
            return {"input_ids": ids, "labels": labels}
        self.rows += 1
        share = prompt_share(len(ids) - reply, reply, self.limit)
        if self.mode == "head+tail" and reply and share < len(ids) - reply and not example.get(TEACHER_READ):
            cut = self._middles(tokenizer, messages, rendered, share, reply, max(min(reply, self.limit - start), 0))
            if cut is not None:
                self.middles += 1
                ids, labels, _, _ = labelled(tokenizer, *rendered(cut))
        if len(ids) > self.limit:
            self.ends += 1
            ids, labels = ids[: self.limit], labels[: self.limit]
        if all(v == -100 for v in labels):
            saved = self.mode == "head" and Cuts(self.limit, "head+tail").saves(tokenizer, example, rendered)
            how = (" even with the middle of its user / system messages cut (data.truncation: head+tail); raise "
                   "data.max_length or shorten the rest of the prompt" if self.mode == "head+tail" else
                   "; raise data.max_length, shorten the prompt, or set data.truncation: head+tail (cuts the middle "
                   "of the prompt's longest message instead)" if saved else
                   "; raise data.max_length or shorten the prompt (data.truncation: head+tail would not save it: "
                   "what it does not cut, the template, earlier replies and tool results, is too long)")
            raise ReplyCut(example["source"], example["line"], example["field"],
                           f"the assistant reply starts after data.max_length={self.limit} tokens{how}", saved=saved)
        return {"input_ids": ids, "labels": labels}

    def _middles(self, tokenizer: Any, messages: list[dict[str, Any]], rendered: Rendered, share: int, reply: int,
                 kept: int) -> list[dict[str, Any]] | None:
        """The messages cut to the prompt's `share` beside the `reply` (`fit_prompt`); where no cut reaches it, cut to
        keep as many of the reply's tokens inside the limit as its share allows (the limit less `share`) or as cutting
        to `MIN_KEEP` can, and no more; None where that keeps no more of it than the uncut row (`kept` tokens) does
        (the row is then cut at its end as by head)."""
        def trained(cut: list[dict[str, Any]]) -> int:  # the reply's tokens inside the limit
            _, _, tokens, first = labelled(tokenizer, *rendered(cut))
            return max(min(tokens, self.limit - first), 0)

        found = fit_prompt(messages, lambda cut: len(labelled(tokenizer, *rendered(cut))[0]) <= share + reply)
        if found is None:
            most = min(self.limit - share, trained(middles_cut(messages, MIN_KEEP)))
            found = fit_prompt(messages, lambda cut: trained(cut) >= most) if most > kept else None
        return found

    def saves(self, tokenizer: Any, example: dict[str, Any], rendered: Rendered) -> bool:
        """Whether this fit keeps some of the example's reply (head+tail: whether cutting its prompt saves it)."""
        try:
            self.fit(tokenizer, example, rendered)
        except ReplyCut:
            return False
        return True

    def add(self, other: Cuts) -> None:
        """Count `other`'s rows too (the training split encoded part by part: one line for them all)."""
        self.rows, self.middles, self.ends = (self.rows + other.rows, self.middles + other.middles,
                                              self.ends + other.ends)

    def note(self, examples: int) -> str:
        """The stderr line on the rows cut (`rows` above 0): `Sft.cut_note` (evaluation names the split after `sft`)."""
        said = f"sft: {self.rows} of {examples} examples cut at data.max_length={self.limit} tokens"
        if self.mode != "head+tail":
            return said + " (their tail is left out of the loss)"
        return (f"{said}: {self.middles} lost the middle of a prompt message (data.truncation: head+tail), "
                f"{self.ends} cut at the end (their tail is left out of the loss)")


def reply_cuts(tokenizer: Any, examples: list[dict[str, Any]], limit: int, mode: str,
               rendered: Callable[[dict[str, Any], list[dict[str, Any]]], tuple[str, list[tuple[int, int]]]],
               ) -> list[tuple[int, bool, bool]]:
    """data check: each example as training fits it: (its trained tokens, -1 where training refuses it; whether its
    prompt lost a middle; whether head+tail would keep a row that head refuses)."""
    cuts, out = Cuts(limit, mode), []
    for ex in examples:
        before = cuts.middles
        try:
            fitted = cuts.fit(tokenizer, ex, lambda msgs, ex=ex: rendered(ex, msgs))
        except ReplyCut as e:
            out.append((-1, False, e.saved))
            continue
        out.append((sum(v != -100 for v in fitted["labels"]), cuts.middles > before, False))
    return out
