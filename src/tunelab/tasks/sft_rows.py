"""Conversation rows of the sft task: the formats it reads (`messages`, ShareGPT `conversations`, Alpaca
`instruction` / `input` / `output`, `prompt` / `completion`), as messages, each problem one line naming the row."""

from __future__ import annotations

from typing import Any

from tunelab.data.readers import Record
from tunelab.errors import DataError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
DETECT = (("messages", "messages"), ("conversations", "sharegpt"), ("instruction", "alpaca"),
           ("prompt", "prompt_completion"))


def _message(rec: Record, field: str, i: int, role: Any, content: Any, roles: dict[str, str]) -> dict[str, str]:
    if role not in roles:
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: unknown role {role!r} "
                        f"(expected {', '.join(roles)})")
    if not isinstance(content, str):
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: content is not a string: {type(content).__name__}")
    return {"role": roles[role], "content": content}


def row_text(rec: Record, field: str, *, required: bool = True) -> str | None:
    if field not in rec.data or rec.data[field] is None:
        if required:
            raise DataError(rec.source, rec.line, field, "missing field")
        return None
    value = rec.data[field]
    if not isinstance(value, str):
        raise DataError(rec.source, rec.line, field, f"is not a string: {type(value).__name__}")
    return value


def check_replies(rec: Record, field: str, msgs: list[dict[str, str]], labelled: bool,
                   turns: bool = True) -> list[dict[str, str]]:
    """`msgs`; a labelled row (one that trains) refused in one line where training it would teach what it does not
    say: a conversation whose first turn is the assistant's (the template's own opening — BOS, its header tokens —
    trained as its reply), an empty reply (its only target the end-of-turn token: end at once)."""
    if not labelled:
        return msgs
    if msgs[0]["role"] == "assistant":
        raise DataError(rec.source, rec.line, field, "turn 1: an assistant turn first; a conversation starts with the "
                        "user (or a system message)")
    empty = next((i for i, m in enumerate(msgs) if m["role"] == "assistant" and not m["content"].strip()), None)
    if empty is not None:
        raise DataError(rec.source, rec.line, field, (f"turn {empty + 1}: " if turns else "") + "an empty assistant "
                        "reply (it would teach the model to end its turn at once)")
    return msgs


def row_messages(rec: Record, fmt: str, labelled: bool) -> tuple[str, list[dict[str, str]]]:
    """(field, messages) of one row; unlabelled rows may lack the final assistant turn."""
    if fmt == "auto":
        fmt = next((f for key, f in DETECT if key in rec.data), "")
        if not fmt:
            raise DataError(rec.source, rec.line, None, "no messages, conversations, instruction or prompt field")
    if fmt in ("messages", "sharegpt"):
        field = "messages" if fmt == "messages" else "conversations"
        turns = rec.data.get(field)
        if field not in rec.data:
            raise DataError(rec.source, rec.line, field, "missing field")
        if not isinstance(turns, list) or not turns:
            raise DataError(rec.source, rec.line, field, "expected a non-empty list of turns")
        role_key, content_key = ("role", "content") if fmt == "messages" else ("from", "value")
        roles = {r: r for r in ROLES} if fmt == "messages" else SHAREGPT_ROLES
        msgs = []
        for i, t in enumerate(turns):
            if not isinstance(t, dict):
                raise DataError(rec.source, rec.line, field, f"turn {i + 1}: expected {{{role_key}, {content_key}}}")
            msgs.append(_message(rec, field, i, t.get(role_key), t.get(content_key), roles))
        if labelled and not any(m["role"] == "assistant" for m in msgs):
            raise DataError(rec.source, rec.line, field, "no assistant turn")
        return field, check_replies(rec, field, msgs, labelled)
    if fmt == "alpaca":
        instruction = row_text(rec, "instruction")
        extra = row_text(rec, "input", required=False)
        output = row_text(rec, "output", required=labelled)
        user = instruction + ("\n\n" + extra if extra else "")
        msgs = [{"role": "user", "content": user}]
        return "output", check_replies(rec, "output", msgs + ([{"role": "assistant", "content": output}]
                                                                if output is not None else []), labelled, turns=False)
    prompt = row_text(rec, "prompt")
    completion = row_text(rec, "completion", required=labelled)
    msgs = [{"role": "user", "content": prompt}]
    return "completion", check_replies(rec, "completion", msgs + ([{"role": "assistant", "content": completion}]
                                                                    if completion is not None else []), labelled,
                                        turns=False)
