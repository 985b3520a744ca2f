"""Conversation rows of the sft task: the formats it reads (`messages`, ShareGPT `conversations`, Alpaca
`instruction` / `input` / `output` with LLaMA-Factory's `history`, `prompt` / `completion`; a `system` column in any of
them), as messages, each problem one line naming the row.

A turn of `messages` or `conversations` may be written either way — `{role, content}` (OpenAI) or `{from, value}`
(ShareGPT), with either's role names — as LLaMA-Factory reads a dataset that declares them; LLaMA-Factory's tool
use (`function_call` / `observation` turns, a `tools` column; OpenAI's `tool` role is an observation) is
tasks/sft_tools.py; from text rules 5 a tool turn out of order (a result with no call before it, a call with no
result after it, a `tool_call_id` no call has) is one line, and calls and results carry ids (`link_calls`). An
assistant turn with Axolotl's `"weight": 0` stays in the conversation but is not trained (its message keeps
`"weight": 0`; `render` drops the key, `assistant_spans` skips the turn). From text rules 6 an assistant turn's
`reasoning_content` (Qwen3's) is kept, trained in the think block its template writes (refused in one line by a
template that leaves it out: tasks/reasoning.py).

Rows of a run trained by text rules before 3 (`text.rules_version()`: resume, report, export read its rows again by
them) are read as that run read them: a template row without its system / history turns, OpenAI's `tool_calls` not
looked at (and the tools column not read: tasks/sft_tools.py `with_tools`)."""

from __future__ import annotations

from typing import Any

from tunelab.data.prompt_template import template_fields, template_messages
from tunelab.data.readers import Record, row_has
from tunelab.errors import DataError
from tunelab.tasks.chat_tools import empty, given_id, link_calls
from tunelab.tasks.reasoning import REASONING
from tunelab.tasks.sft_tools import CALL, TOOL_ROLES, parse_calls
from tunelab.text import rules_version

ROLES = ("system", "user", "assistant", "tool")  # OpenAI's (its `tool`: LLaMA-Factory's observation)
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", **TOOL_ROLES}
ROLE_NAMES = {**{r: r for r in ROLES}, **SHAREGPT_ROLES}  # either style's names, in either container
TURN = "{role, content} or {from, value}"
DETECT = (("messages", "messages"), ("conversations", "sharegpt"), ("instruction", "alpaca"),
           ("prompt", "prompt_completion"))


def _key(rec: Record, field: str, i: int, turn: dict[str, Any], keys: tuple[str, str], what: str) -> str:
    """Which of `keys` (OpenAI's, ShareGPT's) the turn names its `what` with; one line for neither or both."""
    found = [k for k in keys if turn.get(k) is not None]  # (a null one is absent: Arrow / HF exports fill them in)
    if len(found) != 1:
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: " + (f"both {keys[0]} and {keys[1]}; keep one"
                        if found else f"no {what} (expected {TURN})"))
    return found[0]


def _message(rec: Record, field: str, i: int, turn: Any) -> dict[str, Any]:
    if not isinstance(turn, dict):
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: expected {TURN}")
    # OpenAI's calls are not read: refused rather than trained without them (none, `[]`, null: a plain turn)
    if not empty(turn.get("tool_calls")) and rules_version() >= 3:
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: tool_calls: not read; write each call as a "
                        f"function_call turn (value {CALL}), as LLaMA-Factory's ShareGPT rows do")
    role_key = _key(rec, field, i, turn, ("role", "from"), "role")
    role, content = turn[role_key], turn[_key(rec, field, i, turn, ("content", "value"), "content")]
    if not isinstance(role, str) or role not in ROLE_NAMES:
        names = (*ROLES, *(r for r in ROLE_NAMES if r not in ROLES))  # each taken in either key style
        if role_key == "from":  # ShareGPT's own names first
            names = (*SHAREGPT_ROLES, *(r for r in ROLES if r not in SHAREGPT_ROLES))
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: unknown role {role!r} "
                        f"(expected {', '.join(names)})")
    if not isinstance(content, str):
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: content is not a string: {type(content).__name__}")
    msg: dict[str, Any] = {"role": ROLE_NAMES[role], "content": content}
    if role == "function_call":  # the assistant's tool calls: what the template writes (content: the turn as written)
        msg["tool_calls"] = parse_calls(rec, field, i, content)
    if given_id(turn.get("tool_call_id")) is not None and rules_version() >= 5:  # the call a result answers (null,
        # "": none given, as exports of one schema for every turn write it)
        msg["tool_call_id"] = _answers(rec, field, i, msg["role"], turn["tool_call_id"])
    if turn.get("weight") is not None:  # Axolotl's per-turn training switch (null: not given, as Arrow writes it)
        _weight(rec, field, i, msg, turn["weight"])
    if turn.get(REASONING) is not None and rules_version() >= 6:  # Qwen3's: trained as its template writes it
        msg[REASONING] = _reasoning(rec, field, i, msg["role"], turn[REASONING])
    return msg


def _weight(rec: Record, field: str, i: int, msg: dict[str, Any], weight: Any) -> None:
    """A turn's `weight`: 0 or 1, 1 on an assistant turn only; an assistant turn of 0 keeps it (not trained)."""
    if not isinstance(weight, int | float) or weight not in (0, 1):
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: weight must be 0 (not trained) or 1, not "
                        f"{weight!r}")
    if weight == 1 and msg["role"] != "assistant":
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: weight 1 on a {msg['role']} turn: only "
                        "assistant turns are trained (leave the weight out, or 0)")
    if weight == 0 and msg["role"] == "assistant":
        msg["weight"] = 0


def _reasoning(rec: Record, field: str, i: int, role: str, given: Any) -> str:
    """A turn's `reasoning_content`: a string, on an assistant turn; one line for anything else."""
    if role != "assistant" or not isinstance(given, str):
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: {REASONING}: " + (
            "only on an assistant turn" if role != "assistant" else f"not a string: {type(given).__name__}"))
    return given


def _answers(rec: Record, field: str, i: int, role: str, given: Any) -> str:
    """A turn's `tool_call_id`: a string, on a tool result; one line for anything else."""
    if role != "tool" or not isinstance(given, str):
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: tool_call_id: " + (
            "only on a tool (observation) turn" if role != "tool" else f"not a string: {type(given).__name__}"))
    return given


def trained(m: dict[str, Any]) -> bool:
    """Whether the message is an assistant turn that trains (not one of weight 0)."""
    return m["role"] == "assistant" and m.get("weight", 1) != 0


def _system(rec: Record) -> list[dict[str, str]]:
    """The row's `system` column (LLaMA-Factory's) as the first message; none where it is missing or empty."""
    value = row_text(rec, "system", required=False)
    return [{"role": "system", "content": value}] if value and value.strip() else []


def _history(rec: Record, labelled: bool) -> list[dict[str, str]]:
    """LLaMA-Factory's alpaca `history`, [[user, assistant], ...]: the turns before the instruction."""
    value = rec.data.get("history")
    if value is None or value == "":  # (an empty cell of a table)
        return []
    if not isinstance(value, list):
        raise DataError(rec.source, rec.line, "history", "expected a list of [user, assistant] pairs of strings, not "
                        f"{type(value).__name__}")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            got = f"a list of {len(pair)}" if isinstance(pair, list) else type(pair).__name__
            raise DataError(rec.source, rec.line, "history", f"pair {i + 1}: expected [user, assistant] (two strings), "
                            f"not {got}")
        for role, text in zip(("user", "assistant"), pair, strict=True):
            if not isinstance(text, str):
                raise DataError(rec.source, rec.line, "history", f"pair {i + 1}: the {role} turn is not a string: "
                                f"{type(text).__name__}")
            out.append({"role": role, "content": text})
        if labelled and not pair[1].strip():
            raise DataError(rec.source, rec.line, "history", f"pair {i + 1}: an empty assistant reply (it would teach "
                            "the model to end its turn at once)")
    return out


def row_text(rec: Record, field: str, *, required: bool = True) -> str | None:
    if field not in rec.data or rec.data[field] is None:
        if required:
            raise DataError(rec.source, rec.line, field, "missing field" if field in rec.data
                            else f"missing field ({row_has(rec.data)})")
        return None
    value = rec.data[field]
    if not isinstance(value, str):
        raise DataError(rec.source, rec.line, field, f"is not a string: {type(value).__name__}")
    return value


def check_replies(rec: Record, field: str, msgs: list[dict[str, str]], labelled: bool,
                   turns: bool = True) -> list[dict[str, str]]:
    """`msgs`; a labelled row (one that trains) refused in one line where training it would teach what it does not
    say: a conversation whose first turn is the assistant's (the template's own opening — BOS, its header tokens —
    trained as its reply), an empty reply (its only target the end-of-turn token: end at once). A turn of weight 0
    is not trained, so neither applies to it."""
    if not labelled:
        return msgs
    if trained(msgs[0]):
        raise DataError(rec.source, rec.line, field, "turn 1: an assistant turn first; a conversation starts with the "
                        "user (or a system message)")
    empty = next((i for i, m in enumerate(msgs) if trained(m) and not m["content"].strip()), None)
    if empty is not None:
        raise DataError(rec.source, rec.line, field, (f"turn {empty + 1}: " if turns else "") + "an empty assistant "
                        "reply (it would teach the model to end its turn at once)")
    return msgs


def template_row(rec: Record, template: str, response_field: str, labelled: bool,
                 text_field: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(field, messages) of a row read through `task.prompt_template`: the filled user turn and the reply, after the
    row's `system` column (a system message) and alpaca `history` pairs (the turns before it), as LLaMA-Factory reads
    them; a template that names `{system}` (or `{history}`) puts that column in the user turn instead. A run of text
    rules before 3 read neither: its rows read again as it trained on them."""
    field, msgs = template_messages(rec, template, response_field, labelled, text_field)
    used = template_fields(template) if rules_version() >= 3 else ["system", "history"]
    before = ([] if "system" in used else _system(rec)) + ([] if "history" in used else _history(rec, labelled))
    return field, check_replies(rec, field, [*before, *msgs], labelled, turns=False)


def _turns(rec: Record, field: str, turns: list[Any]) -> list[dict[str, Any]]:
    """A conversation's turns as messages; from text rules 5 its tool turns in order (one line naming the first out of
    it), calls and results with their ids (tasks/chat_tools.py `link_calls`)."""
    msgs = [_message(rec, field, i, t) for i, t in enumerate(turns)]
    if rules_version() >= 5 and (wrong := link_calls(msgs, lambda j: f"turn {j + 1}")) is not None:
        raise DataError(rec.source, rec.line, field, f"turn {wrong[0] + 1}: {wrong[1]}")
    return msgs


def row_messages(rec: Record, fmt: str, labelled: bool) -> tuple[str, list[dict[str, Any]]]:
    """(field, messages) of one row; unlabelled rows may lack the final assistant turn. A `system` column opens the
    conversation with a system message (LLaMA-Factory's); an alpaca row's `history` pairs come before its
    instruction, their replies trained as every assistant turn is."""
    if fmt == "auto":
        fmt = next((f for key, f in DETECT if key in rec.data), "")
        if not fmt:
            raise DataError(rec.source, rec.line, None, "no messages, conversations, instruction or prompt field")
    system = _system(rec)
    if fmt != "alpaca" and rec.data.get("history"):
        raise DataError(rec.source, rec.line, "history", "read with alpaca rows (instruction / input / output) only; "
                        "write the earlier turns into the conversation")
    if fmt in ("messages", "sharegpt"):
        field = "messages" if fmt == "messages" else "conversations"
        turns = rec.data.get(field)
        if field not in rec.data:
            raise DataError(rec.source, rec.line, field, f"missing field ({row_has(rec.data)})")
        if not isinstance(turns, list) or not turns:
            raise DataError(rec.source, rec.line, field, "expected a non-empty list of turns")
        msgs = _turns(rec, field, turns)
        if system and any(m["role"] == "system" for m in msgs):
            if any(m["role"] == "system" and m["content"] == system[0]["content"] for m in msgs):
                system = []  # the same prompt in both places: once
            else:
                raise DataError(rec.source, rec.line, "system", f"the {field} have a system turn of their own (and "
                                "another text); keep one")
        if labelled and not any(m["role"] == "assistant" for m in msgs):
            raise DataError(rec.source, rec.line, field, "no assistant turn")
        if labelled and not any(trained(m) for m in msgs):
            raise DataError(rec.source, rec.line, field, "every assistant turn has weight 0: nothing to train")
        return field, system + check_replies(rec, field, msgs, labelled)  # turns numbered as the row has them
    if fmt == "alpaca":
        instruction = row_text(rec, "instruction")
        extra = row_text(rec, "input", required=False)
        output = row_text(rec, "output", required=labelled)
        user = instruction + ("\n\n" + extra if extra else "")
        msgs = [*system, *_history(rec, labelled), {"role": "user", "content": user}]
        return "output", check_replies(rec, "output", msgs + ([{"role": "assistant", "content": output}]
                                                                if output is not None else []), labelled, turns=False)
    prompt = row_text(rec, "prompt")
    completion = row_text(rec, "completion", required=labelled)
    msgs = [*system, {"role": "user", "content": prompt}]
    return "completion", check_replies(rec, "completion", msgs + ([{"role": "assistant", "content": completion}]
                                                                    if completion is not None else []), labelled,
                                        turns=False)
