"""Generation prompts of `task: sft` fitted to the run's limits (`tunelab predict`, `tunelab eval`'s replies, train's
eval_generate, `Model.predict`), as training fits a row and as LLaMA-Factory's predict cuts a prompt to `cutoff_len`.
Not a live conversation's: serve's chat and completions routes check a prompt against the model's positions and refuse
one too long (422) without cutting it (serve/completion.py), and `tunelab chat` leaves its oldest exchanges out
(cli/chat.py).

A prompt (the conversation rendered with the generation prompt: the assistant's turn opened) holds at most
`data.max_length` tokens, and, where the model's positions (`max_position_embeddings`, less prompt / prefix tuning's
virtual tokens) are the tighter limit, those positions less `task.generation.max_new_tokens`: room for the reply. A
longer one loses the middle of its longest user / system messages (tasks/sft_truncation.py `fit_prompt`: each keeps
its head and its tail, the instruction and the question), under `data.truncation: head` as under `head+tail`: cutting
a prompt's end, as head cuts a training row, would cut off the assistant header the reply is generated after. A
prompt that no such cut fits (the template, earlier replies, tool calls and results alone are longer) is one
DataError naming its row. One stderr line counts the prompts cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from tunelab.errors import DataError
from tunelab.models.generate import virtual_tokens
from tunelab.progress import say
from tunelab.tasks.chat_template import prompt_ids, row_named
from tunelab.tasks.sft_distill import PROMPT_FIELD
from tunelab.tasks.sft_truncation import fit_prompt

_EVEN_CUT = ("even with the middle of its user / system messages cut (the template, earlier replies and tool turns are "
             "longer)")
Prompt = tuple[dict[str, Any], list[dict[str, Any]], list[int] | None]  # (example, turns before the reply, their ids)


class Room(NamedTuple):
    """How many tokens a prompt may hold (`limit`), what sets it as the stderr line says it (`why`), and the end of a
    refusal of a prompt that no cut fits (`over`: what it is more than, and what to change)."""

    limit: int
    why: str
    over: str


def max_length_room(max_length: int) -> Room:
    """data.max_length as the limit."""
    return Room(max_length, f"data.max_length={max_length} tokens", f"more than data.max_length={max_length} tokens "
                f"{_EVEN_CUT}: shorten the conversation")


def prompt_room(model: Any, max_length: int, max_new_tokens: int) -> Room:
    """The most tokens a prompt may hold, and what sets it: data.max_length, or the model's positions less the reply's
    max_new_tokens (less one, for one new token, where max_new_tokens fills them)."""
    given = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(given, int) or given <= 0:
        return max_length_room(max_length)
    positions = given - virtual_tokens(model)
    room = positions - max_new_tokens if positions > max_new_tokens else positions - 1
    if room >= max_length:
        return max_length_room(max_length)
    room = max(room, 1)
    tokens = f"{room} token{'s' if room != 1 else ''}"
    return Room(room, f"{tokens} (the model's {positions} positions less task.generation.max_new_tokens="
                f"{max_new_tokens}; data.max_length={max_length})",
                f"more than the {tokens} that the model's {positions} positions leave beside "
                f"task.generation.max_new_tokens={max_new_tokens} {_EVEN_CUT}: shorten the conversation or lower "
                "--max-new-tokens / task.generation.max_new_tokens")


def fitted_prompts(tokenizer: Any, prompts: Sequence[Prompt], room: Room, who: str | None) -> list[list[int]]:
    """The token ids of each prompt (example, messages, their ids or None) within `room.limit` tokens (`prompt_room`):
    the over-long ones with the middle of their user / system messages cut; a DataError naming the row of one no cut
    fits. `who` (the command): the stderr line on how many were cut; None: not said."""
    (limit, why, over), out, cut = room, [], 0
    for ex, messages, ids in prompts:
        def tokens(msgs: list[dict[str, Any]], ex: dict[str, Any] = ex) -> list[int]:
            with row_named(ex):
                return prompt_ids(tokenizer, msgs)

        ids = tokens(messages) if ids is None else ids
        if len(ids) > limit:
            found = fit_prompt(messages, lambda m: len(tokens(m)) <= limit)
            if found is None:
                raise DataError(ex["source"], ex["line"], PROMPT_FIELD.get(ex["field"], ex["field"]),
                                f"the prompt is {len(ids)} tokens, {over}")
            ids, cut = tokens(found), cut + 1
        out.append(list(ids))
    if cut and who:
        say(f"{who}: {cut} of {len(out)} prompts cut to fit {why}: the middle of their longest user / system "
            "messages taken out")
    return out
