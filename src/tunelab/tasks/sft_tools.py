"""Tool use in sft rows, as LLaMA-Factory's ShareGPT format writes it: `function_call` turns (the assistant's calls, a
JSON `{"name", "arguments"}` or a list of them: trained), `observation` turns (the tools' results: a `tool` message,
not trained) and a `tools` column (the tool descriptions, a JSON string, in a row of any format).

They become what transformers' chat templates take: an assistant message with `tool_calls` ([{type: function,
function: {name, arguments}}]; its `content` keeps the turn as written, for dedup and reports), a `tool` message, and
`apply_chat_template(tools=...)` — kept on the conversation's first message (`TOOLS`), so that every rendering of it
(training, predict, eval, data check) has them. Whether a model's template writes each of them is probed once per
template, with and without tools (`tool_support`: a template may write calls only given tools, as the `tool_use` one
of Hermes' named templates does); a row that needs what its template leaves out is one line naming the field and
what the template said (`TemplateRefusal`), never rendered without it. From text rules 5 the turns must come in an
order a model can be taught (`link_calls`: a call is answered by results, a result answers a call), and each call
and result carries an id (Mistral's templates require one); serve's chat endpoint reads a request's tools and calls
by the same helpers.

A run trained by text rules before 3 read no tools column (`text.rules_version()`: its rows read again as it trained
on them)."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from typing import Any

from tunelab.data.readers import Record
from tunelab.errors import DataError
from tunelab.text import rules_version

TOOLS = "tools"  # the first message's key for the row's tool descriptions
SAID = "said"  # an assistant message's own text beside its calls (serve's requests; a row's function_call turn has
# none: its `content` is the calls as written, which the template does not write again)
CALL = '{"name": ..., "arguments": {...}}'
TOOL_ROLES = {"function_call": "assistant", "observation": "tool"}  # LLaMA-Factory's ShareGPT roles


class TemplateRefusal(ValueError):
    """A conversation the model's chat template cannot write; `field`: the row's field to name (None: the row's
    conversation field); `part`: what it leaves out ("tools", "tool_calls", "tool"), `why`: what it raised ("" for
    nothing)."""

    def __init__(self, field: str | None, message: str, part: str = "", why: str = "") -> None:
        super().__init__(message)
        self.field, self.part, self.why = field, part, why


def empty(value: Any) -> bool:
    """A cell that holds nothing: missing, null, NaN (a table's empty cell), "" / "[]", [] or {}."""
    if isinstance(value, str):
        return value.strip() in ("", "[]", "null")
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, list | dict)
                                                                                  and not value)


def function(call: Any) -> dict[str, Any] | None:
    """A call as a chat template takes it, `{name, arguments}` (arguments given as a JSON text — OpenAI writes them so
    — parsed); None for anything else. Training's function_call turns, serve's requests and replies read calls by it."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"].strip() \
            or "arguments" not in call:
        return None
    args = call["arguments"]
    if isinstance(args, str):
        with contextlib.suppress(json.JSONDecodeError):
            args = json.loads(args)
    return {"name": call["name"], "arguments": args}


def parse_calls(rec: Record, field: str, i: int, value: str) -> list[dict[str, Any]]:
    """A function_call turn's value as transformers' `tool_calls`; one line for anything else."""
    where = f"turn {i + 1}: function_call: "
    try:
        calls = json.loads(value)
    except json.JSONDecodeError as e:
        raise DataError(rec.source, rec.line, field, f"{where}not JSON ({e.msg} at character {e.pos + 1}); expected "
                        f"{CALL} or a list of them") from None
    out = []
    for call in calls if isinstance(calls, list) and calls else [calls]:
        if (read := function(call)) is None:
            raise DataError(rec.source, rec.line, field, f"{where}expected {CALL} or a list of them")
        if not isinstance(read["arguments"], dict):
            raise DataError(rec.source, rec.line, field, f"{where}{read['name']}: the arguments are not a JSON object")
        out.append({"type": "function", "function": read})
    return out


def call_id(n: int) -> str:
    """The id of a conversation's `n`th tool call (from 1) where it has none: 9 letters and digits, as Mistral's
    templates require ("Tool call IDs should be alphanumeric strings with length 9!"; other templates leave ids out),
    the same for the same turn of the same row (dedup, resume), and one a model can learn to write: `call00001`."""
    return f"call{n:05d}"[-9:]


def link_calls(messages: list[dict[str, Any]], name: Callable[[int], str]) -> tuple[int, str] | None:
    """Each tool call without an id given one (`call_id`), each tool result without a `tool_call_id` the id of the
    call it answers (in order), in place; (index, why) for the first message out of order, `name(j)` naming message j:
    a result with no call before it, more results in a row than the calls they answer, a call followed by anything
    but a result (two function_call turns in a row). A call may end the conversation (the reply trained), and one
    result may answer a turn's several calls (LLaMA-Factory's single observation)."""
    ids: list[str] = []  # the calls of the turn being answered
    turn, answered, made = None, 0, 0  # its index, the results after it so far, the calls so far
    for i, m in enumerate(messages):
        if m["role"] == "tool":
            if turn is None:
                return i, "a tool result (observation) with no tool call (function_call turn) before it"
            if answered == len(ids):
                return i, (f"{answered + 1} tool results (observations) in a row for the {len(ids)} call"
                           f"{'s' if len(ids) > 1 else ''} of {name(turn)}")
            given = m.get("tool_call_id")
            if given is not None and given not in ids:
                return i, f"tool_call_id {str(given)[:40]!r} is none of the call ids of {name(turn)}"
            m.setdefault("tool_call_id", ids[answered])
            answered += 1
            continue
        if turn is not None and not answered:
            return i, f"{name(turn)}'s tool call has no result (an observation / tool turn must come next)"
        turn = None
        if m.get("tool_calls"):
            for call in m["tool_calls"]:
                made += 1
                call.setdefault("id", call_id(made))
            ids, turn, answered = [c["id"] for c in m["tool_calls"]], i, 0
    return None


def tool_schemas(value: Any) -> list[dict[str, Any]]:
    """Tool descriptions (a JSON string, a list of them or one) as transformers' tool schemas ({type: function,
    function: {name, description, parameters}}); [] where `empty`; a ValueError saying what is wrong."""
    if empty(value):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON ({e.msg} at character {e.pos + 1}); expected a list of tool descriptions"
                             ) from None
    value = [value] if isinstance(value, dict) else value
    if not isinstance(value, list):
        raise ValueError(f"expected a list of tool descriptions, not {type(value).__name__}")
    out = []
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else tool
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise ValueError(f"tool {i + 1}: expected {{name, description, parameters}} (or {{type: function, "
                             "function: {...}})")
        out.append({"type": "function", "function": function})
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


_PROBE_TOOL = {"type": "function", "function": {"name": "tunelab_probe_tool", "description": "d",
                                                "parameters": {"type": "object", "properties": {}}}}
_PROBE_CALL = {"role": "assistant", "content": "", "tool_calls": [  # with an id as `link_calls` gives (Mistral's)
    {"type": "function", "function": {"name": "tunelab_probe_call", "arguments": {"tunelab_probe_argument": 1}},
     "id": call_id(1)}]}
_PROBES = {  # what the template must write of each, given what; tools are given to the first always
    "tools": ([{"role": "user", "content": "x"}], ("tunelab_probe_tool",)),
    "tool_calls": ([{"role": "user", "content": "x"}, _PROBE_CALL], ("tunelab_probe_call", "tunelab_probe_argument")),
    "tool": ([{"role": "user", "content": "x"}, _PROBE_CALL, {"role": "tool", "content": "tunelab_probe_result",
                                                                 "tool_call_id": call_id(1)}],
             ("tunelab_probe_result",)),
}
_SUPPORT: dict[tuple[str, ...], dict[str, str | None]] = {}
_REFUSED = {
    "tools": (TOOLS, "the model's chat template does not write tools (apply_chat_template(tools=...) leaves them out)",
              "use a model whose template takes them (Qwen2.5, Llama 3.1, ...), or leave the column out"),
    "tool_calls": (None, "function_call turns: the model's chat template does not write an assistant turn's tool "
                   "calls", "use a model whose template does (Qwen2.5, Llama 3.1, ...)"),
    "tool": (None, "observation turns: the model's chat template has no tool role",
             "use a model whose template has (Qwen2.5, Llama 3.1, ...)"),
}


def _probed(tokenizer: Any, with_tools: bool) -> dict[str, str | None]:
    """Each probe's outcome for the tokenizer's chat template, given tools or not: None where the template writes it,
    else why not — the template's own error in one line (Mistral v0.3's "Tool call IDs should be alphanumeric
    strings with length 9!"), or "" where it leaves it out. Once per template."""
    key = (str(tokenizer.chat_template), str(tokenizer.bos_token), str(tokenizer.eos_token), str(with_tools))
    if key not in _SUPPORT:
        out: dict[str, str | None] = {}
        for part, (messages, marks) in _PROBES.items():
            tools = {"tools": [_PROBE_TOOL]} if with_tools or part == "tools" else {}
            try:
                text = tokenizer.apply_chat_template(messages, tokenize=False, **tools)
            except Exception as e:  # noqa: BLE001 - a template that cannot write it (raise_exception, a type error)
                out[part] = " ".join(str(e).split())[:200] or type(e).__name__
                continue
            out[part] = None if all(mark in text for mark in marks) else ""
        _SUPPORT[key] = out
    return _SUPPORT[key]


def tool_support(tokenizer: Any, with_tools: bool = False) -> frozenset[str]:
    """Which of "tools", "tool_calls" and "tool" (results) the tokenizer's chat template writes, given tools or not
    (a named template, {"default": ..., "tool_use": ...}, is picked by transformers by whether tools are given)."""
    return frozenset(part for part, why in _probed(tokenizer, with_tools).items() if why is None)


def _refusal(tokenizer: Any, part: str, with_tools: bool) -> TemplateRefusal:
    field, what, instead = _REFUSED[part]
    why = _probed(tokenizer, with_tools)[part]
    if not with_tools and part in tool_support(tokenizer, True):  # Hermes' tool_use template, picked given tools
        instead = "it writes them only given tools: give the row a tools column"
    return TemplateRefusal(field, what + (f" (it raised: {why})" if why else "") + f"; {instead}", part, why or "")


def template_form(tokenizer: Any, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """(the messages as the chat template takes them, the tools): a turn's `weight` and the first message's tools
    left out of the messages, a tool-call turn's content empty (its calls are what the template writes; a request's
    own text beside them, `SAID`, kept). A template
    that would leave out what the conversation has is a `TemplateRefusal`."""
    tools = messages[0].get(TOOLS) or [] if messages else []
    needs = ["tools"] if tools else []
    needs += ["tool_calls"] if any("tool_calls" in m for m in messages) else []
    needs += ["tool"] if any(m["role"] == "tool" for m in messages) else []
    if needs and (missing := [n for n in needs if n not in tool_support(tokenizer, bool(tools))]):
        raise _refusal(tokenizer, missing[0], bool(tools))
    plain = [m if len(m) == 2 else {**{k: v for k, v in m.items() if k not in ("weight", TOOLS, SAID)},
                                    **({"content": m.get(SAID, "")} if "tool_calls" in m else {})} for m in messages]
    return plain, tools
