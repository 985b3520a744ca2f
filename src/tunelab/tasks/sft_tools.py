"""Tool use in sft rows, as LLaMA-Factory's ShareGPT format writes it: `function_call` turns (the assistant's calls, a
JSON `{"name", "arguments"}` or a list of them: trained), `observation` turns (the tools' results: a `tool` message,
not trained) and a `tools` column (the tool descriptions, a JSON string, in a row of any format).

They become what transformers' chat templates take (tasks/chat_tools.py, task-neutral: serve's chat endpoint reads a
request's tools, calls and results into the same form): an assistant message with `tool_calls` ([{type: function,
function: {name, arguments}}]; its `content` keeps the turn as written, for dedup and reports), a `tool` message, and
`apply_chat_template(tools=...)` on the conversation's first message (training, predict, eval, data check). A row that
needs what its template leaves out is one line naming the field and what the template said (`TemplateRefusal`),
never rendered without it. From text rules 5 the turns must come in an order a model can be taught (`link_calls`: a
call is answered by results, a result answers a call), a call's own `id` and a result's `tool_call_id` pair them
(a result without one answers the first call not yet answered), and every call is named `call00001`, ... (Mistral's
templates require an id; serving names a request's calls so too).

A run trained by text rules before 3 read no tools column (`text.rules_version()`: its rows read again as it trained
on them); one before 5 read no ids."""

from __future__ import annotations

import json
from typing import Any

from tunelab.data.readers import Record
from tunelab.errors import DataError
from tunelab.tasks.chat_tools import TOOLS, function, given_id, tool_schemas
from tunelab.text import json_problem, rules_version

CALL = '{"name": ..., "arguments": {...}}'
TOOL_ROLES = {"function_call": "assistant", "observation": "tool"}  # LLaMA-Factory's ShareGPT roles


def parse_calls(rec: Record, field: str, i: int, value: str) -> list[dict[str, Any]]:
    """A function_call turn's value as transformers' `tool_calls` (from text rules 5 with a call's own `id`, which
    only pairs it with its results: `link_calls` renames it); one line for anything else."""
    where = f"turn {i + 1}: function_call: "
    try:
        calls = json.loads(value)
    except json.JSONDecodeError as e:
        raise DataError(rec.source, rec.line, field, f"{where}not JSON ({e.msg} at character {e.pos + 1}); expected "
                        f"{CALL} or a list of them") from None
    out, ids = [], rules_version() >= 5
    for call in calls if isinstance(calls, list) and calls else [calls]:
        if (read := function(call)) is None:
            raise DataError(rec.source, rec.line, field, f"{where}expected {CALL} or a list of them")
        if not isinstance(read["arguments"], dict):
            raise DataError(rec.source, rec.line, field, f"{where}{read['name']}: the arguments are not a JSON object")
        if ids and (problem := json_problem(read["arguments"])) is not None:  # NaN, "\ud800" in a JSON text
            raise DataError(rec.source, rec.line, field, f"{where}{read['name']}: arguments: {problem}")
        own = given_id(call.get("id")) if ids else None  # ("": none given)
        if own is not None and not isinstance(own, str):
            raise DataError(rec.source, rec.line, field, f"{where}{read['name']}: id is not a string: "
                            f"{type(own).__name__}")
        out.append({"type": "function", "function": read, **({"id": own} if own is not None else {})})
    return out


def row_tools(rec: Record) -> list[dict[str, Any]]:
    """The row's `tools` column (`tool_schemas`); one line naming it where it is not tool descriptions."""
    try:
        return tool_schemas(rec.data.get(TOOLS))
    except ValueError as e:
        raise DataError(rec.source, rec.line, TOOLS, str(e)) from None


def with_tools(rec: Record, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with the row's tools on the first one (as they are where it has none, or the run read none)."""
    tools = row_tools(rec) if rules_version() >= 3 else []
    return [{**messages[0], TOOLS: tools}, *messages[1:]] if tools and messages else messages
