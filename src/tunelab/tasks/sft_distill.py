"""Distillation of `task: sft` (`distill:`), including from prompts nobody answered (`data.unlabeled`).

Token-level logit distillation: the student's and the teacher's distributions over the vocabulary at the reply
positions (only those positions' logits are computed, for both models; tasks/causal_loss.py), KL at temperature
T or JSD (tasks/losses.py soft_kl), blended with the cross-entropy on the gold reply.

Unlabelled prompts have no reply to read the distributions along, so the teacher writes one first: sequence-level
knowledge distillation (Kim & Rush 2016), as MiniLLM / GKD use for their off-policy baseline. Each prompt gets the
teacher's reply under `task.generation` (greedy by default; the same settings `tunelab predict` uses), once, before
training; the student then learns the teacher's token distributions along that reply — the soft part only, as
unlabelled rows do in every task: the hard cross-entropy reads the gold rows of the pass alone. A reply that the
teacher had not finished at `task.generation.max_new_tokens` keeps its end-of-turn token untrained (`open_end`),
so the student is not taught to stop where the teacher was cut off; one cut with nothing left to train (inside or
right after its think block, where the chat template writes no reasoning; before any text) is not trained at all
(counted on stderr by what happened to it), and where no reply is left, distill is refused (raise max_new_tokens).
A teacher that thinks (Qwen3's think block before its reply, tasks/reasoning.py) has its reply split as predict
splits it: the reasoning is the turn's `reasoning_content` where the chat template writes one (trained in its think
block, as a training row's is), else left out, the student trained on the reply alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.errors import DataError
from tunelab.tasks.base import UNLABELED, Example
from tunelab.tasks.causal_loss import trained_logits, trained_positions
from tunelab.tasks.chat_template import render, row_named
from tunelab.tasks.generation import GenerationConfig, decode_reply, generate
from tunelab.tasks.losses import soft_kl
from tunelab.tasks.reasoning import CLOSE, OPEN, REASONING, opens_think, reply_of, writes_reasoning
from tunelab.tasks.sft_truncation import TEACHER_READ, fit_prompt, prompt_share

TEACHER_BATCH = 16  # prompts per teacher generate() call (left-padded batches)
PROMPT_FIELD = {"completion": "prompt", "output": "instruction"}  # a row's prompt field, from its reply field


def teacher_prompts(examples: Sequence[Example], tokenizer: Any, max_length: int, reply: int) -> list[Example]:
    """data.truncation head+tail: each unlabelled prompt of `max_length` tokens or more (no room for the teacher's
    reply) cut as a training row's prompt is (tasks/sft_truncation.py): to its share beside a reply of `reply` tokens
    (task.generation.max_new_tokens), else only as much as leaves the reply a token; refused where even that is not
    possible. The student trains on the prompt the teacher read: training cuts the row with the teacher's reply at
    its end only (`TEACHER_READ`), never its prompt again."""
    out, cut = [], 0
    for ex in examples:
        def tokens(messages: list[dict[str, Any]], ex: Example = ex) -> int:
            with row_named(ex):
                text = render(tokenizer, messages, generation_prompt=True)
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        length = tokens(ex["messages"])
        if length < max_length:
            out.append(ex)
            continue
        share = prompt_share(length, reply, max_length)
        found = (fit_prompt(ex["messages"], lambda m, share=share: tokens(m) <= share)
                 or fit_prompt(ex["messages"], lambda m: tokens(m) < max_length))
        if found is None:
            raise DataError(ex["source"], ex["line"], PROMPT_FIELD.get(ex["field"], ex["field"]), f"the prompt is "
                            f"{length} tokens: data.max_length={max_length} leaves no room for the teacher's reply, "
                            "even with the middle of its user / system messages cut (data.truncation: head+tail)")
        out.append({**ex, "messages": found})
        cut += 1
    if cut:
        print(f"distill: {cut} of {len(out)} unlabelled prompts lost the middle of a prompt message to leave room for "
              "the teacher's reply (data.truncation: head+tail)", file=sys.stderr)
    return out


def teacher_replies(examples: Sequence[Example], prompts: Sequence[list[int]], teacher: torch.nn.Module,
                    tokenizer: Any, cfg: GenerationConfig, stop: Sequence[int], max_length: int) -> list[Example]:
    """`examples` (parsed without targets: the turns before the reply; `prompts` their token ids with the
    generation prompt) with the teacher's reply appended as the assistant turn, marked `open_end` where the reply
    reached `cfg.max_new_tokens` without an end-of-turn token; such a reply with nothing left to train
    (`teacher_turn`) is left out, counted on stderr (trained, it was the template's empty turn and its end: the
    student taught to stop at once), and a DataError where none is left. A prompt of
    `max_length` tokens or more (no room for a reply) is a DataError before anything is generated; sampling
    (`cfg.do_sample`) draws from its own seed without moving the run's random state."""
    t0 = time.perf_counter()
    for ex, ids in zip(examples, prompts, strict=True):
        if len(ids) >= max_length:
            field = PROMPT_FIELD.get(ex["field"], ex["field"])
            raise DataError(ex["source"], ex["line"], field, f"the prompt is {len(ids)} tokens: "
                            f"data.max_length={max_length} leaves no room for the teacher's reply")
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        ended = [False] * len(prompts)
        replies = generate(teacher, tokenizer, prompts, cfg, TEACHER_BATCH, stop, ended)
    out, counts, keep = [], dict.fromkeys(("cut", "thought", *EMPTY), 0), writes_reasoning(tokenizer)
    for ex, ids, stopped in zip(examples, replies, ended, strict=True):
        open_end = not stopped  # no stop id reached: cut by max_new_tokens (or by the teacher's positions)
        counts["cut"] += open_end
        turn, kind = teacher_turn(tokenizer, ids, open_end, keep)
        counts[kind] = counts.get(kind, 0) + 1
        if kind in EMPTY:
            continue
        out.append({**ex, "messages": [*ex["messages"], turn], "labelled": True, "open_end": open_end,
                    TEACHER_READ: True})  # (its prompt is not cut again in training: the student reads it too)
    note = teacher_note(counts, cfg.max_new_tokens, keep)
    if examples and not out:  # only the gold rows would train: the unlabelled prompts taught nothing
        raise DataError(examples[0]["source"], None, None, f"none of the teacher's {len(examples)} replies has "
                        f"anything to train: all were cut at task.generation.max_new_tokens={cfg.max_new_tokens} "
                        f"({empty_note(counts, keep)}); raise task.generation.max_new_tokens so that the teacher "
                        + ("gets past its think block to its reply" if counts["think_open"] + counts["think_after"]
                           else "writes its reply"))
    took = time.perf_counter() - t0
    print(f"distill: the teacher replied to {len(examples)} unlabelled prompts in {took:.1f} s{note}", file=sys.stderr)
    return out


EMPTY = ("blank", "think_open", "think_after")  # teacher replies cut before anything trainable (`teacher_turn`)


def teacher_turn(tokenizer: Any, ids: Sequence[int], open_end: bool, keep: bool) -> tuple[dict[str, Any], str]:
    """The assistant turn of the teacher's reply `ids`, and what it is: "reply" (no think block), "thought" (a think
    block split off: its reasoning the turn's reasoning_content where the template writes one, `keep`, else left
    out), or, cut (`open_end`) before anything the student could learn but the template's empty turn: "blank" (no
    text at all), "think_open" (cut inside its think block: nothing outside it, and its reasoning empty or left out
    where the template writes none) or "think_after" (cut right after the block, before a word of reply)."""
    text = decode_reply(tokenizer, ids)
    reply, reasoning = reply_of(tokenizer, text)  # (a think block split off)
    turn: dict[str, Any] = {"role": "assistant", "content": reply}
    if reasoning is not None and keep:
        turn[REASONING] = reasoning
    if not open_end or reply or turn.get(REASONING):
        return turn, "reply" if reasoning is None else "thought"
    if not (text.lstrip().startswith(OPEN) or opens_think(tokenizer)):  # (an empty block has no reasoning: the
        return turn, "blank"  # text tells whether one was opened, by the reply or by the generation prompt)
    return turn, "think_after" if CLOSE in text else "think_open"


def empty_note(counts: dict[str, int], keep: bool) -> str:
    """The replies `teacher_turn` found empty, each kind said by what happened to it ("" where none)."""
    said = {"blank": "cut before any text", "think_after": "cut right after their think block, before any reply",
            "think_open": "cut inside their think block" + (" before any reasoning" if keep else
                                                             ", which the chat template leaves out")}
    return "; ".join(f"{counts[kind]} {said[kind]}" for kind in EMPTY if counts[kind])


def teacher_note(counts: dict[str, int], max_new_tokens: int, keep: bool) -> str:
    """The teacher's stderr line past its first clause, from `teacher_turn`'s counts (and "cut": the replies that
    ended unfinished)."""
    note = (f"; {counts['cut']} ended unfinished, at task.generation.max_new_tokens={max_new_tokens} or the "
            "teacher's positions (their end is not trained)") if counts["cut"] else ""
    if counts["thought"]:
        note += (f"; {counts['thought']} began with a think block: " + (
            "its reasoning trained as the turn's reasoning_content" if keep
            else "left out (the chat template writes no reasoning_content), the reply alone trained"))
    empty = empty_note(counts, keep)
    return note + (f"; {empty}: nothing to train, left out" if empty else "")


def open_end_spans(text: str, spans: list[tuple[int, int]], reply: str,
                   reasoning: str | None = None) -> list[tuple[int, int]]:
    """The trained character spans of an `open_end` conversation: the last reply without its end-of-turn marker; a
    reply cut while it reasoned (no text after its think block: `reasoning` alone), the block's end untrained too.
    Where the template changed the reply's text so that it is not found, the span stays whole."""
    last = reply or reasoning
    if not spans or not last:
        return spans
    start, end = spans[-1]
    at = text.rfind(last, start, end)  # (the reply comes last in its turn, after any think block)
    return spans if at < 0 else [*spans[:-1], (start, at + len(last))]


def sft_distill_loss(model: torch.nn.Module, teacher: torch.nn.Module, batch: dict[str, torch.Tensor],
                     temperature: float, alpha: float, divergence: str) -> torch.Tensor:
    """`alpha · soft + (1 − alpha) · hard` over the batch's reply positions; positions of `data.unlabeled` rows
    (`batch[UNLABELED]`, the teacher's own replies) count in the soft part only; a pass without gold positions is
    `alpha · soft`."""
    logits, targets = trained_logits(model, batch)
    unlabeled = batch.get(UNLABELED)
    gold = None
    if unlabeled is not None and bool(unlabeled.any()):
        keep, _ = trained_positions(batch["labels"])
        gold = ~unlabeled.to(keep.device)[keep.nonzero()[:, 0]]
    if gold is None:
        hard = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0
    else:
        hard = F.cross_entropy(logits[gold].float(), targets[gold]) if bool(gold.any()) else None
    if alpha == 0 and hard is not None:
        return hard
    with torch.no_grad():
        target, _ = trained_logits(teacher, batch)
    soft = alpha * soft_kl(logits, target, temperature, divergence=divergence)
    return soft if hard is None else soft + (1 - alpha) * hard
