"""The format a model writes its tool calls in, and a reply read back in it as OpenAI's `tool_calls`.

The format is told from the model's chat template — how it writes an assistant turn of one call (tasks/chat_tools.py
`call_turn`), which is what training taught the model to write for a function_call turn:

- `hermes` (Hermes, Qwen2.5): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, a block a call; the text
  around the blocks is the reply's `content`.
- `json` (Llama 3.1 / 3.2): a bare JSON object, `{"name": ..., "parameters": {...}}` ("arguments" is taken too), the
  reply's whole text, or after `<|python_tag|>`; several separated by `;` (as vLLM's llama3_json parser reads them).
- `mistral` (Mistral v0.3, Nemo): `[TOOL_CALLS]` and a JSON list of calls, `[{"name": ..., "arguments": {...}, "id":
  ...}]`; the text before `[TOOL_CALLS]` is the `content`.
- `mistral_args` (newer Mistral templates): `[TOOL_CALLS]name[ARGS]{...}`, one a call (`[TOOL_CALLS]name[CALL_ID]id
  [ARGS]{...}` in those that write ids: the id left out, as OpenAI's `call_...` ids are given); the text before is
  `content`.

A template that writes calls in none of them (or none at all) has no format: its replies are text. A reply's calls
begin at its format's tag (`CallFormat.begins`; `json`'s bare `{` only as the reply's first text, as vLLM's stream
reads it) and run to its end; they are read only where each is a call — a name and arguments that are a JSON object —
and nothing but whitespace is left over (`hermes`: nothing but text outside the blocks): a call cut off by
max_tokens, text after the calls, JSON that is not a call's — or that Python's decoder refuses (nested past ~1000
levels, an int of 4300+ digits), or a name or arguments with a lone surrogate (`"\\ud83d"`), which no answer can
carry — leave the reply its text, whole. The tags are kept in the
reply's text where the tokenizer has them as special tokens (serve/tools.py `reply_tags`), as vLLM keeps them for
its parsers."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunelab.data.jsonl import BAD_JSON
from tunelab.tasks.chat_tools import PROBE, call_turn, function
from tunelab.text import json_problem

OPEN, CLOSE = "<tool_call>", "</tool_call>"  # Hermes' and Qwen2.5's call tags
PYTHON_TAG = "<|python_tag|>"  # Llama 3.1's: what may open a call
TOOL_CALLS, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"  # Mistral's
_CALL = re.compile(re.escape(OPEN) + "(.*?)" + re.escape(CLOSE), re.S)
_SPACE = re.compile(r"\s*")
_JSON = json.JSONDecoder()

# (the text outside the calls, the calls as the model wrote them: each read by chat_tools.function) or None: not calls
Reader = Callable[[str], tuple[str, list[Any]] | None]


@dataclass(frozen=True)
class CallFormat:
    """One way of writing calls: `tags[0]` opens them anywhere in the reply (`first` only as the reply's first text),
    `tags` are kept in the reply's text where they are special tokens, `read` reads the text from where they begin."""

    name: str
    tags: tuple[str, ...]
    read: Reader
    first: str = ""

    def begins(self, text: str, said: bool) -> int:
        """Where the calls begin in `text`, the reply's text not yet sent (`said`: some text before it was), or -1."""
        at = text.find(self.tags[0])
        body = text.lstrip()
        if self.first and not said and body.startswith(self.first):
            lead = len(text) - len(body)
            at = lead if at < 0 else min(at, lead)
        return at

    def calls(self, text: str) -> tuple[str, list[dict[str, Any]]] | None:
        """(the text outside the calls, the calls as OpenAI's `tool_calls`) of `text`, the reply from where its calls
        begin; None where it is not calls (the reply is its text)."""
        read = self.read(text)
        if read is None or not read[1]:
            return None
        calls = []
        for written in read[1]:
            call = function(written)
            if call is None or not isinstance(call["arguments"], dict) or any(
                    json_problem(part) is not None for part in (call["name"], call["arguments"])):
                return None  # (a lone surrogate, `"\\ud83d"` in the JSON: no answer can carry it; NaN)
            arguments = json.dumps(call["arguments"], ensure_ascii=False)  # OpenAI's: the JSON text
            calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                          "function": {"name": call["name"], "arguments": arguments}})
        return read[0].strip(), calls


def _values(text: str, sep: str = "") -> list[Any] | None:
    """The JSON values `text` holds one after another (`sep` between them, one may end them), nothing else but
    whitespace; None for anything else."""
    out: list[Any] = []
    at = _SPACE.match(text).end()  # type: ignore[union-attr]  # (\s* always matches)
    while at < len(text):
        try:
            value, at = _JSON.raw_decode(text, at)
        except BAD_JSON:  # (not JSON; nested past ~1000 levels, an int of 4300+ digits)
            return None
        out.append(value)
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        if at < len(text):
            if not sep or text[at] != sep:
                return None
            at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    return out


def _hermes(text: str) -> tuple[str, list[Any]] | None:
    found, rest = _CALL.findall(text), _CALL.sub("", text)
    if OPEN in rest or CLOSE in rest:  # a block left open
        return None
    try:
        return rest, [json.loads(inside) for inside in found]
    except BAD_JSON:
        return None


def _json(text: str) -> tuple[str, list[Any]] | None:
    values = _values(text.strip().removeprefix(PYTHON_TAG), sep=";")
    if values is None or not all(isinstance(v, dict) and ("parameters" in v) != ("arguments" in v) for v in values):
        return None  # (not objects, or with neither or both of parameters and arguments)
    return "", [{"name": v.get("name"), "arguments": v["parameters" if "parameters" in v else "arguments"]}
                for v in values]


def _mistral(text: str) -> tuple[str, list[Any]] | None:
    values = _values(text.removeprefix(TOOL_CALLS))
    return ("", values[0]) if values is not None and len(values) == 1 and isinstance(values[0], list) else None


def _mistral_args(text: str) -> tuple[str, list[Any]] | None:
    calls = []
    for piece in text.split(TOOL_CALLS)[1:]:  # (the text starts with the tag)
        name, tag, args = piece.partition(ARGS)
        name, values = name.partition(CALL_ID)[0], _values(args)  # (a call's own id: not kept)
        if not tag or values is None or len(values) != 1 or not name.strip() or len(name.split()) != 1:
            return None
        calls.append({"name": name.strip(), "arguments": values[0]})
    return "", calls


HERMES = CallFormat("hermes", (OPEN, CLOSE), _hermes)
JSON = CallFormat("json", (PYTHON_TAG,), _json, first="{")
MISTRAL = CallFormat("mistral", (TOOL_CALLS,), _mistral)
MISTRAL_ARGS = CallFormat("mistral_args", (TOOL_CALLS, ARGS, CALL_ID), _mistral_args)
_TOLD: dict[tuple[str, ...], CallFormat | None] = {}


def told(turn: str) -> CallFormat | None:
    """The format of `turn`, an assistant turn of `PROBE`'s call as a chat template writes it; None for another."""
    name, args = PROBE["name"], PROBE["arguments"]
    if OPEN in turn:
        return HERMES
    if TOOL_CALLS in turn:
        after = turn.split(TOOL_CALLS, 1)[1].lstrip()
        if after.startswith(name) and after[len(name):].lstrip().startswith((ARGS, CALL_ID)):
            return MISTRAL_ARGS
        listed = _written(after) if after.startswith("[") else None
        return MISTRAL if isinstance(listed, list) and listed and _named(listed[0]) else None
    written = _written(turn.lstrip().removeprefix(PYTHON_TAG).lstrip())
    return JSON if _named(written) and args in (written.get("parameters"), written.get("arguments")) else None


def _named(call: Any) -> bool:
    return isinstance(call, dict) and call.get("name") == PROBE["name"]


def _written(text: str) -> Any:
    """The JSON value `text` opens with (what follows it aside), None where it opens with none."""
    try:
        return _JSON.raw_decode(text)[0]
    except BAD_JSON:
        return None


def call_format(tokenizer: Any) -> CallFormat | None:
    """The format the tokenizer's chat template writes calls in (`told`), None for another or none; once per
    template."""
    key = (str(tokenizer.chat_template), str(tokenizer.bos_token), str(tokenizer.eos_token))
    if key not in _TOLD:
        _TOLD[key] = told(call_turn(tokenizer))
    return _TOLD[key]
