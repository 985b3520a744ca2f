"""Tool calls in chat templates, task-neutral: what every caller that renders a conversation with tools shares — the
sft task's rows (tasks/sft_tools.py reads LLaMA-Factory's function_call / observation turns and tools column into
them), `tunelab serve`'s chat endpoint (serve/tools.py reads OpenAI's tools, tool_calls and tool messages into them)
and the renderer (tasks/chat_template.py). A call is transformers' `{type: function, function: {name, arguments},
id}` on an assistant message (`tool_calls`), a result a `tool` message with the `tool_call_id` of the call it
answers, the tools `apply_chat_template(tools=...)`'s, kept on the conversation's first message (`TOOLS`), so that
every rendering of it has them.

`link_calls` checks that the turns come in an order a model can be taught and names every call `call00001`,
`call00002`, ... through the conversation — whatever ids a row or a request gave, which only pair results with
calls — so that a template that writes ids (Mistral's) writes in serving what it wrote in training. `tool_support`
probes once per template what it writes, with and without tools; `template_form` refuses a conversation that needs
what its template leaves out (`TemplateRefusal`), never rendering it without."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from typing import Any

from tunelab.data.jsonl import BAD_JSON

TOOLS = "tools"  # the first message's key for the row's tool descriptions
SAID = "said"  # an assistant message's own text beside its calls (serve's requests; a row's function_call turn has
# none: its `content` is the calls as written, which the template does not write again)


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
        with contextlib.suppress(*BAD_JSON):  # (not JSON; nested past ~1000 levels, an int of 4300+ digits)
            args = json.loads(args)
    return {"name": call["name"], "arguments": args}


def call_id(n: int) -> str:
    """The id of a conversation's `n`th tool call (from 1), whatever id a row or a request gave it: 9 letters and
    digits, as Mistral's templates require ("Tool call IDs should be alphanumeric strings with length 9!"; other
    templates leave ids out), the same for the same turn of the same row (dedup, resume) and for the same turn served
    (a client's own ids, OpenAI's `call_...`, never reach the template), and one a model can learn to write."""
    return f"call{n:05d}"[-9:]


def given_id(value: Any) -> Any:
    """A call's `id` or a result's `tool_call_id` as given; None where none is ("" as null: exports of one schema for
    every turn fill it in so, and OpenAI's clients send it so)."""
    return None if value is None or value == "" else value


def link_calls(messages: list[dict[str, Any]], name: Callable[[int], str]) -> tuple[int, str] | None:
    """Each tool call named `call_id(n)`, and each tool result's `tool_call_id` the new id of the call it answers: the
    call whose own id it gives (a row's, a client's), else the first of its turn not yet answered; in place. (index,
    why) for the first message out of order, `name(j)` naming message j: a result with no call before it, more
    results in a row than the calls they answer, a `tool_call_id` none of the turn's calls has, a second result for a
    call, two calls of a turn with one id, a call followed by anything but a result (two function_call turns in a
    row). A call may end the conversation (the reply trained), and one result may answer a turn's several calls
    (LLaMA-Factory's single observation). An id "" is none (`given_id`)."""
    new: list[str] = []  # the new ids of the calls of the turn being answered
    own: dict[Any, str] = {}  # their own ids -> their new ones
    done: set[str] = set()  # the new ids answered
    turn, answered, made, first = None, 0, 0, 0  # its index, the results after it so far, the calls so far, where
    # the first call not yet answered may be (it only moves on: a turn of n calls answered without ids is O(n))
    for i, m in enumerate(messages):
        if m["role"] == "tool":
            if turn is None:
                return i, "a tool result (observation) with no tool call (function_call turn) before it"
            given = given_id(m.get("tool_call_id"))
            if given is None and len(done) == len(new):
                return i, (f"{answered + 1} tool results (observations) in a row for the {len(new)} call"
                           f"{'s' if len(new) > 1 else ''} of {name(turn)}")
            if given is not None and given not in own:
                return i, f"tool_call_id {str(given)[:40]!r} is none of the call ids of {name(turn)}"
            if given is not None and own[given] in done:
                return i, f"a second tool result for the call {str(given)[:40]!r} of {name(turn)}"
            if given is None:
                while new[first] in done:  # (one is not: fewer answered than calls)
                    first += 1
            m["tool_call_id"] = own[given] if given is not None else new[first]
            done.add(m["tool_call_id"])
            answered += 1
            continue
        if turn is not None and not answered:
            return i, f"{name(turn)}'s tool call has no result (an observation / tool turn must come next)"
        turn = None
        if m.get("tool_calls"):
            done, turn, answered, first = set(), i, 0, 0
            new, own, twice = _name_calls(m["tool_calls"], made)
            made += len(new)
            if twice is not None:
                return i, f"two tool calls with the id {str(twice)[:40]!r}"
    return None


def _name_calls(calls: list[dict[str, Any]], made: int) -> tuple[list[str], dict[Any, str], Any]:
    """(the calls' new ids, their own ids -> their new ones, an own id two of them have or None); each call named
    `call_id(n)` from `made + 1`, in place."""
    new: list[str] = []
    own: dict[Any, str] = {}
    for call in calls:
        new.append(call_id(made + len(new) + 1))
        if (given := given_id(call.get("id"))) is not None:
            if given in own:
                return new, own, given
            own[given] = new[-1]
        call["id"] = new[-1]
    return new, own, None


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


_PROBE_TOOL = {"type": "function", "function": {"name": "tunelab_probe_tool", "description": "d",
                                                "parameters": {"type": "object", "properties": {}}}}
PROBE = {"name": "tunelab_probe_call", "arguments": {"tunelab_probe_argument": 1}}  # the call the probes make
_PROBE_CALL = {"role": "assistant", "content": "", "tool_calls": [  # with an id as `link_calls` gives (Mistral's)
    {"type": "function", "function": PROBE, "id": call_id(1)}]}
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


def call_turn(tokenizer: Any) -> str:
    """What the chat template writes for an assistant turn of one call (`PROBE`, given tools, as training renders a
    function_call turn): the text after the generation prompt, the end of the turn with it (the whole conversation
    where it does not start with the prompt); "" where the template cannot write it. What a model tuned on tool
    rows learned to write for a call (serve/tool_formats.py reads its replies by it)."""
    user, tools = [{"role": "user", "content": "x"}], {"tools": [_PROBE_TOOL]}
    try:
        prefix = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True, **tools)
        turn = tokenizer.apply_chat_template([*user, _PROBE_CALL], tokenize=False, **tools)
    except Exception:  # noqa: BLE001 - a template that cannot write it (tool_support says why, where it matters)
        return ""
    return turn[len(prefix):] if turn.startswith(prefix) else turn


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
