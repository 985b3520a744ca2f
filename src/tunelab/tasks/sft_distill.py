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
so the student is not taught to stop where the teacher was cut off; one cut inside its think block, where the
chat template writes no reasoning, is empty and not trained at all (counted on stderr). A teacher that thinks
(Qwen3's think block before its reply, tasks/reasoning.py) has its reply split as predict splits it: the reasoning
is the turn's `reasoning_content` where the chat template writes one (trained in its think block, as a training row's
is), else left out, the student trained on the reply alone.
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
from tunelab.tasks.reasoning import REASONING, reply_of, writes_reasoning
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
    reached `cfg.max_new_tokens` without an end-of-turn token; such a reply with nothing left to train (cut inside its
    think block, which a chat template that writes no reasoning_content leaves out) is left out, counted on stderr
    (trained, it was the template's empty turn and its end: the student taught to stop at once). A prompt of
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
    out, cut, thought, empty, keep = [], 0, 0, 0, writes_reasoning(tokenizer)
    for ex, ids, stopped in zip(examples, replies, ended, strict=True):
        open_end = not stopped  # no stop id reached: cut by max_new_tokens (or by the teacher's positions)
        cut += open_end
        reply, reasoning = reply_of(tokenizer, decode_reply(tokenizer, ids))  # (a think block split off)
        turn = {"role": "assistant", "content": reply}
        if reasoning is not None:
            thought += 1
            turn.update({REASONING: reasoning} if keep else {})
        if open_end and not (reply or turn.get(REASONING)):  # nothing left to learn but the template's empty turn
            empty += 1
            continue
        out.append({**ex, "messages": [*ex["messages"], turn], "labelled": True, "open_end": open_end,
                    TEACHER_READ: True})  # (its prompt is not cut again in training: the student reads it too)
    note = (f"; {cut} ended unfinished, at task.generation.max_new_tokens={cfg.max_new_tokens} or the teacher's "
            "positions (their end is not trained)") if cut else ""
    if thought:
        note += (f"; {thought} began with a think block: " + ("its reasoning trained as the turn's reasoning_content"
                 if keep else "left out (the chat template writes no reasoning_content), the reply alone trained"))
    if empty:
        note += f"; {empty} empty once their think block is left out (cut inside it): not trained"
    took = time.perf_counter() - t0
    print(f"distill: the teacher replied to {len(examples)} unlabelled prompts in {took:.1f} s{note}", file=sys.stderr)
    return out


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
