"""Tools in `tunelab serve`'s chat endpoint, read as training reads a row's (tasks/chat_tools.py, the task-neutral
helpers training's rows are read by too): OpenAI's `tools` become `apply_chat_template(tools=...)`, an assistant
message's `tool_calls` the calls the template writes (their `arguments`, OpenAI's JSON text, parsed) and a `role:
tool` message a tool result; the messages must come in the order training takes (`link_calls`: a 422 naming the
message), each result is paired with its call by `tool_call_id`, and every call is named as training names a row's
(`call00001`, ...: a client's own ids, OpenAI's `call_...`, never reach the template, so Mistral's takes them and the
prompt is training's); a template that cannot write them is a 400 naming the field (`refusal`), never a prompt
without them.

`tool_choice` {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [...]}} gives the model only the
tools it names (`offered`); "required", a named function, allowed_tools in mode "required" and a custom tool are a
400 saying why (`forced_calls`).

The reply: where the request gave tools (and `tool_choice` is not "none") and the model's template writes calls in a
format serve/tool_formats.py reads (Hermes' and Qwen2.5's `<tool_call>` tags, Llama 3.1's JSON, Mistral's
`[TOOL_CALLS]`), the calls the model writes are returned as OpenAI's `tool_calls` (`reply_format`; finish_reason
"tool_calls"); any other format is the reply's text. The format's tags are kept in the reply's text where the
tokenizer has them as special tokens (`reply_tags`), as vLLM's parsers decode them, where the calls are read (not
with `tool_choice: "none"`: the text without them)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException

from tunelab.http_errors import invalid
from tunelab.serve.tool_formats import CallFormat, call_format
from tunelab.tasks.chat_tools import SAID, TOOLS, TemplateRefusal, function, link_calls, tool_schemas
from tunelab.tasks.reasoning import REASONING
from tunelab.text import json_problem, rules_version


def request_messages(body: Any, reasoning: bool = False) -> list[dict[str, Any]]:
    """A ChatRequest's messages as training has a conversation's (role, content; calls, results and their ids; an
    assistant message's `reasoning_content` where `reasoning`: the model's template writes it, else left out as it
    would be), the tools on the first; a 422 naming what is wrong. Read by the text rules in force: the model's
    (`model_rules`)."""
    out, ids = [], rules_version() >= 5  # (a model trained by text rules before 5 had no ids: given none)
    reasoning = reasoning and rules_version() >= 6  # (before 6 training dropped a row's reasoning: dropped so here)
    for i, m in enumerate(body.messages):
        msg: dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.tool_calls:
            calls = []
            for k, call in enumerate(m.tool_calls):
                read = function(call.function.model_dump())
                if read is None or not isinstance(read["arguments"], dict):
                    raise invalid(f"messages[{i}].tool_calls[{k}].function", "expected a name and arguments that are "
                                  "a JSON object (or the JSON text of one)")
                if (problem := json_problem(read["arguments"])) is not None:  # parsed: "\\ud800", NaN in the text
                    raise invalid(f"messages[{i}].tool_calls[{k}].function.arguments", problem)
                calls.append({"type": "function", "function": read, **({"id": call.id} if call.id and ids else {})})
            msg.update(tool_calls=calls, **{SAID: msg["content"]})
        if m.tool_call_id and ids:
            msg["tool_call_id"] = m.tool_call_id
        if m.reasoning_content is not None and reasoning:  # (the openai client sends a reply's back with it)
            msg[REASONING] = m.reasoning_content
        out.append(msg)
    # (a model trained by text rules before 5 read its tool turns without ids and in any order: read so here too)
    if ids and (wrong := link_calls(out, lambda j: f"messages[{j}]")) is not None:
        raise invalid(f"messages[{wrong[0]}]", wrong[1])
    tools = offered(body)
    return [{**out[0], TOOLS: tools}, *out[1:]] if tools else out


def offered(body: Any) -> list[dict[str, Any]]:
    """The tools the model is given (transformers' tool schemas): the request's `tools`, or with `tool_choice`
    `{"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [...]}}` those of them it names (what OpenAI
    means by it: the model may call only those); a 422 naming the field where one is not a tool or a name allowed is
    not among them."""
    try:
        tools = tool_schemas(body.tools)
    except ValueError as e:
        raise invalid("tools", str(e)) from None
    choice = body.tool_choice
    if not isinstance(choice, dict) or choice["type"] != "allowed_tools":
        return tools
    names = [tool["function"]["name"] for tool in choice["allowed_tools"]["tools"]]
    given = {tool["function"]["name"] for tool in tools}
    if missing := [name for name in names if name not in given]:
        raise invalid("tool_choice", f"allowed_tools names {json.dumps(missing[0][:80], ensure_ascii=False)}, which "
                      "is not one of the request's tools")
    return [tool for tool in tools if tool["function"]["name"] in names]


def refusal(exc: TemplateRefusal, messages: list[dict[str, Any]]) -> HTTPException:
    """A 400 naming the field whose tools, calls or results the model's chat template cannot write."""
    calls = next((i for i, m in enumerate(messages) if "tool_calls" in m), 0)
    result = next((i for i, m in enumerate(messages) if m["role"] == "tool"), 0)
    loc, what = {"tools": (["tools"], "does not write tools (apply_chat_template(tools=...) leaves them out)"),
                 "tool_calls": (["messages", calls, "tool_calls"], "does not write an assistant message's tool calls"),
                 }.get(exc.part, (["messages", result, "role"], "has no tool role"))
    said = f" (it raised: {exc.why})" if exc.why else ""
    return HTTPException(400, [{"loc": ["body", *loc], "type": "value_error",
                                "msg": f"the model's chat template {what}{said}; this model cannot take them"}])


def forced_calls(body: Any) -> HTTPException | None:
    """A 400 naming `tool_choice` where it asks for calls the model must make — "required", a named function,
    allowed_tools in mode "required" — which vLLM forces by constrained decoding and this server cannot (it samples
    the model's own tokens: a call it forced could still come out malformed, and "required" promises one), or for a
    custom tool (OpenAI's tools of free-form text: this server takes function tools only); None for "auto", "none",
    allowed_tools in mode "auto" (`offered`) and none given."""
    choice = body.tool_choice
    kind = choice["type"] if isinstance(choice, dict) else choice
    name = json.dumps(choice[kind]["name"][:80], ensure_ascii=False) if kind in ("function", "custom") else ""
    if kind == "custom":
        return _bad_choice(f"a custom tool ({name}) is not supported: this server takes function tools only "
                           "({\"type\": \"function\", ...}); send \"auto\" or leave tool_choice out")
    if kind == "allowed_tools" and choice["allowed_tools"]["mode"] == "required":
        what = 'allowed_tools with mode "required" is'
    elif kind in ("required", "function"):
        what = '"required" is' if kind == "required" else f"a named function ({name}) is"
    else:
        return None
    return _bad_choice(f"{what} not supported: this server cannot make the model call a tool (it has no constrained "
                       "decoding); send \"auto\" (the model's own choice, its calls returned as tool_calls) or leave "
                       "tool_choice out")


def _bad_choice(message: str) -> HTTPException:
    return HTTPException(400, [{"loc": ["body", "tool_choice"], "type": "value_error", "msg": message}])


def reply_format(tokenizer: Any, body: Any) -> CallFormat | None:
    """The format the reply's calls are read in: tools given (`offered`: allowed_tools may leave none), not
    `tool_choice: "none"`, and a template that writes calls in one (serve/tool_formats.py); None else (the reply is
    its text)."""
    return call_format(tokenizer) if offered(body) and body.tool_choice != "none" else None


def reply_tags(tokenizer: Any, calls: CallFormat | None) -> frozenset[int]:
    """The ids of the call format's tags (`reply_format`) that the tokenizer has as special tokens: kept in the reply's
    text, which leaves special tokens out (vLLM keeps special tokens so: only given tools and a tool_choice not
    "none"); none else (a reply with `tool_choice: "none"` is its text without them)."""
    if calls is None:
        return frozenset()
    found = ((tag, tokenizer.convert_tokens_to_ids(tag)) for tag in calls.tags)  # (an unknown one: unk or None)
    return frozenset(i for tag, i in found if i is not None and tokenizer.convert_ids_to_tokens(i) == tag)
