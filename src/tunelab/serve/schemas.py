"""Request bodies of the HTTP API (pydantic: a bad field is a 422 naming it) and the server's settings.

Besides their own fields the OpenAI-style bodies take the common fields OpenAI's clients send, where the server can
honour them: `max_completion_tokens` (chat: the same as `max_tokens`; both given and different is a 422), role
`developer` (as `system`), a message's `content` as a list of text parts (`[{"type": "text", "text": ...}]`, joined
with newlines, as vLLM joins them), a message's `name` (taken, not used), `presence_penalty` / `frequency_penalty` of
0 (other values: a 422 saying they are not supported), `stream_options: {"include_usage": true}` (with `stream`), and
`user`; OpenAI's `tools`, `tool_choice` ("auto" or "none"; "required" and a named function are OpenAI's but a 400:
serve/tools.py `forced_calls`), `parallel_tool_calls`, an assistant message's `tool_calls` and `role: tool` messages
(serve/tools.py); and, at a value that changes nothing (what clients send by default),
`logprobs` (null / false), `logit_bias` ({}), `response_format` ({"type": "text"}), `echo` (false), `best_of` (1),
`suffix` (null), `stream_options.include_obfuscation` and a message's `refusal`, `annotations`, `audio` and
`function_call` (null: the openai client's `message.model_dump()` writes them). Anything else — other content parts
(images), `n` above 1, those fields at other values — is a 422 naming the field.
A completion's `prompt` is a text or a list of texts (token ids: a 422). A field of several types (`one_of`) is named
at its own path in the body, never by the name pydantic gives one of its types."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tunelab.text import json_problem, unicode_problem


def utf8(value: Any) -> Any:
    """`value` (a string, or the strings and keys inside lists and objects) as UTF-8 can carry it: a lone surrogate
    (JSON's "\\ud800") is refused here, as the data files' reader refuses it, instead of failing in a tokenizer or in
    the answer that echoes the row; so is nesting deeper than 64 levels. Said as the field's own error: the problem
    (a text: `inputs[0]: a NUL character at ...`), or the path inside the value and the problem (`inputs[0]: note:
    invalid Unicode ...`), without pydantic's `Value error, ` and `value: `."""
    problem = unicode_problem(value) if isinstance(value, str) else json_problem(value, numbers=False)
    if problem is not None:
        raise PydanticCustomError("invalid_text", "{problem}", {"problem": problem})
    return value


Text = Annotated[str, AfterValidator(utf8)]


def row_utf8(value: Any) -> Any:
    """A /v1/predict input as `utf8` takes it, but a NUL in a row's field passes here: the task's reader refuses it
    in a field the model reads (a 422 naming the row, as `tunelab predict` says it); another is echoed back."""
    if isinstance(value, str) or (problem := json_problem(value, numbers=False, nul=False)) is None:
        return utf8(value) if isinstance(value, str) else value
    raise PydanticCustomError("invalid_text", "{problem}", {"problem": problem})


def one_of(expected: str) -> WrapValidator:
    """A union field's errors at their place in the body: pydantic puts the name of each of the union's types in an
    error's location (`inputs[0].str`, `stop.list[function-after[utf8(), str]][0]`), which a client reads as a field
    of its body. Here the type the value has keeps its errors, at the value's own path (`stop[1]`); a value of none of
    the types is one error saying what is taken (`expected {expected}`)."""
    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            errors = exc.errors()
        # a type the value is not fails at its top, with a type error (string_type, list_type, int_parsing, ...)
        inner = [e for e in errors if len(e["loc"]) > 1 or not e["type"].endswith(("_type", "_parsing"))]
        if not inner:
            raise PydanticCustomError("union_type", f"expected {expected}")
        raise ValidationError.from_exception_data("one_of", [  # (the location without the type's name)
            {"type": PydanticCustomError(e["type"], e["msg"]), "loc": e["loc"][1:], "input": e["input"]}
            for e in inner])
    return WrapValidator(check)


def a_prompt(value: Any) -> Any:
    """A completion's `prompt`: a text or a non-empty list of texts (OpenAI's legacy API and vLLM take both); token
    ids (`[1, 2, 3]`, or a list of such lists) are refused, naming the prompt, as this server takes text only."""
    ids = "token ids are not taken by this server: send the prompt as text"
    if isinstance(value, list):
        if not value:
            raise PydanticCustomError("prompt", "empty list: expected a text or a list of texts")
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise PydanticCustomError("token_ids", ids)
        for i, v in enumerate(value):
            if isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v):
                raise ValidationError.from_exception_data("prompt", [
                    {"type": PydanticCustomError("token_ids", ids), "loc": (i,), "input": v}])
    return value


@dataclass(frozen=True)
class Settings:
    api_key: str | None = None
    max_batch: int = 32  # inputs per forward pass of /v1/predict
    max_batch_tokens: int = 8192  # padded tokens per forward pass of /v1/predict (inputs × the longest)
    max_wait_ms: float = 5.0  # how long a request waits for others to share its batch
    max_queue: int = 1024  # inputs waiting at most; beyond: 503 with Retry-After
    max_inputs: int = 256  # inputs per /v1/predict request
    max_body_bytes: int = 1 << 20  # request body; beyond: 413
    max_tokens: int = 1024  # most new tokens a completion may ask for
    max_chat_batch: int = 8  # concurrent completions of one model in one generate() call
    max_prompt_tokens: int = 4096  # longest prompt accepted (also bounded by the model's positions)
    max_input_tokens: int = 16384  # longest /v1/predict input (all its text fields), e.g. a QA context: beyond, 422
    cors_origins: tuple[str, ...] = ()  # CORS stays off unless origins are named


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


INPUT = ('a text, or an object with the task\'s data fields ({"text": ..., "text_pair": ...}, {"tokens": [...]}, '
         '{"question": ..., "context": ...})')


class PredictRequest(_Body):
    model: str | None = Field(None, description="Which served model (default: the only classifier / tagger / QA "
                              "model).")
    inputs: list[Annotated[str | dict[str, Any], one_of(INPUT), AfterValidator(row_utf8)]] = Field(
        min_length=1, description="Texts, or rows with the data fields (text, text_pair, question, context).")


def only(*noop: Any) -> AfterValidator:
    """A field OpenAI's clients send at its default: taken at a value that changes nothing, else a 422 saying so."""
    def check(value: Any) -> Any:
        if not any(type(value) is type(v) and value == v for v in noop):  # (False, not 0; [], not {})
            raise PydanticCustomError("unsupported", "not supported by this server (only {noop} is taken)",
                                      {"noop": " / ".join(json.dumps(v) for v in noop)})
        return value
    return AfterValidator(check)


class TextPart(_Body):
    type: Literal["text"]
    text: str


def text_parts(value: Any) -> Any:
    """A message's content given as OpenAI's list of content parts: text parts only, their texts joined with
    newlines (as vLLM joins them); another kind of part (an image) refused, naming it."""
    if not isinstance(value, list):
        return value
    texts = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or set(part) != {"type", "text"} or not isinstance(part["text"], str):
            what = f"a {str(kind)[:40]!r} part" if isinstance(kind, str) and kind != "text" else "not one"
            raise PydanticCustomError("text_parts", f"part {i}: only text parts (type \"text\" with a \"text\") are "
                                      f"supported ({what})")
        texts.append(part["text"])
    return "\n".join(texts)


class Function(_Body):
    name: Text
    arguments: Annotated[Text | dict[str, Any], one_of("a JSON object, or its JSON text")] = Field(
        description="A JSON object, or its JSON text (as OpenAI writes it).")


class ToolCall(_Body):
    id: Text | None = Field(None, description="Pairs the call with its result (`tool_call_id`); the chat template is "
                            "given `call00001`, ... whatever it is, as training names a row's calls.")
    type: Literal["function"] = "function"
    function: Function


class Message(_Body):
    role: Literal["system", "user", "assistant", "developer", "tool"] = Field(
        description="`developer` is taken as `system`; `tool`: a tool's result, after the assistant's call.")
    content: Annotated[Text | list[TextPart], one_of("a text, or a list of text parts"),
                       BeforeValidator(text_parts)] | None = Field(
        None, description="A text, or a list of text parts (joined with newlines); null only on an assistant "
        "message with tool_calls.")
    name: str | None = Field(None, description="Taken (OpenAI's clients send it), not used.")
    tool_calls: list[ToolCall] | None = Field(None, description="An assistant message's calls.")
    tool_call_id: Text | None = Field(None, description="A tool message's: the call it answers.")
    reasoning_content: Text | None = Field(None, description="An assistant message's reasoning (what a reply of a "
                                           "model that thinks carries, as vLLM takes it back): given to the chat "
                                           "template as training gives a row's, which writes it where it writes "
                                           "it (Qwen3's: after the last user message only); left out for a "
                                           "template that does not write it.")
    # what the openai client's `message.model_dump()` writes on the reply it gives back: taken at null, not used
    refusal: Annotated[Any, only(None)] = None
    annotations: Annotated[Any, only(None, [])] = None
    audio: Annotated[Any, only(None)] = None
    function_call: Annotated[Any, only(None)] = None

    @field_validator("role", mode="after")
    @classmethod
    def _developer(cls, role: str) -> str:
        return "system" if role == "developer" else role  # OpenAI's newer name for the system message

    @model_validator(mode="after")
    def _tool_fields(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise PydanticCustomError("tool_calls", "tool_calls: only on an assistant message")
        if self.tool_call_id is not None and self.role != "tool":
            raise PydanticCustomError("tool_call_id", "tool_call_id: only on a tool message")
        if self.reasoning_content is not None and self.role != "assistant":
            raise PydanticCustomError("reasoning_content", "reasoning_content: only on an assistant message")
        if self.content is None and not self.tool_calls:
            raise PydanticCustomError("content", "content: required (null only on an assistant message with "
                                      "tool_calls)")
        return self


def _named(value: Any, kind: str, exact: bool = True) -> bool:
    """`{"type": kind, kind: {"name": ...}}` (`exact`: nothing else in the inner object; else a whole tool's)."""
    inner = value.get(kind) if isinstance(value, dict) else None
    return (isinstance(value, dict) and set(value) == {"type", kind} and value["type"] == kind
            and isinstance(inner, dict) and (set(inner) == {"name"} or not exact)
            and isinstance(inner.get("name"), str))


def a_tool_choice(value: Any) -> Any:
    """OpenAI's `tool_choice` (the openai package's `ChatCompletionToolChoiceOptionParam`): "none", "auto",
    "required", a named function `{"type": "function", "function": {"name": ...}}`, `{"type": "allowed_tools",
    "allowed_tools": {"mode": "auto" | "required", "tools": [{"type": "function", "function": {"name": ...}}, ...]}}`
    or a named custom tool `{"type": "custom", "custom": {"name": ...}}` (serve/tools.py: allowed_tools in mode "auto"
    gives the model those tools only, `offered`; the others but "none" and "auto" are a 400, `forced_calls`);
    anything else a 422 saying what is taken."""
    allowed = value.get("allowed_tools") if isinstance(value, dict) else None
    listed = (isinstance(value, dict) and set(value) == {"type", "allowed_tools"} and value["type"] == "allowed_tools"
              and isinstance(allowed, dict) and set(allowed) == {"mode", "tools"} and allowed["mode"] in ("auto",
              "required") and isinstance(allowed["tools"], list)
              and all(_named(tool, "function", exact=False) for tool in allowed["tools"]))
    if not (listed or _named(value, "function") or _named(value, "custom")
            or value is None or isinstance(value, str) and value in ("none", "auto", "required")):
        raise PydanticCustomError("tool_choice", 'expected "none", "auto", "required", {"type": "function", '
                                  '"function": {"name": ...}}, {"type": "allowed_tools", "allowed_tools": {"mode": '
                                  '"auto" or "required", "tools": [{"type": "function", "function": {"name": ...}}, '
                                  '...]}} or {"type": "custom", "custom": {"name": ...}}')
    return value


class StreamOptions(_Body):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # padding against length side channels: taken, none sent


def no_penalty(value: float | None) -> float | None:
    if value not in (None, 0):
        raise PydanticCustomError("unsupported", "not supported: this server applies no presence or frequency penalty "
                                  "(only 0 is taken)")
    return value


class _Sampling(_Body):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: Annotated[Text | list[Text], one_of("a text, or a list of texts")] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    stream: bool = False
    stream_options: StreamOptions | None = Field(None, description="With `stream`: `include_usage` sends the usage "
                                                 "counts in a last chunk with empty `choices`.")
    presence_penalty: Annotated[float | None, AfterValidator(no_penalty)] = Field(None, description="0 only.")
    frequency_penalty: Annotated[float | None, AfterValidator(no_penalty)] = Field(None, description="0 only.")
    n: Literal[1] = 1
    user: str | None = None
    logit_bias: Annotated[dict[str, float] | None, only(None, {})] = None
    logprobs: Annotated[Annotated[bool | int, one_of("true / false, or a number")] | None, only(None, False)] = None

    @field_validator("stream_options", mode="after")
    @classmethod
    def _with_stream(cls, options: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if options is not None and not info.data.get("stream"):
            raise PydanticCustomError("stream_options", "only taken with stream: true")
        return options


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    tools: list[Annotated[Any, AfterValidator(utf8)]] | None = Field(
        None, description="OpenAI's tool descriptions, given to the model's chat template (serve/tools.py).")
    tool_choice: Annotated[Any, AfterValidator(a_tool_choice), AfterValidator(utf8)] = Field(
        None, description="auto (the default): the calls the model writes are returned as tool_calls where its "
        "template writes them in a format the server reads (Hermes' <tool_call> tags, Llama 3.1's JSON, Mistral's "
        "[TOOL_CALLS]); none: its text, as written; {\"type\": \"allowed_tools\", \"allowed_tools\": {\"mode\": "
        "\"auto\", \"tools\": [...]}}: as auto, the model given only the tools named. required, a named function "
        "({\"type\": \"function\", \"function\": {\"name\": ...}}) or allowed_tools in mode required: a 400, as "
        "this server cannot make the model call a tool; a custom tool ({\"type\": \"custom\", ...}): a 400, as it "
        "takes function tools only.")
    parallel_tool_calls: bool | None = None  # (taken: every call the model writes is returned)
    response_format: Annotated[dict[str, Any] | None, only(None, {"type": "text"})] = None
    max_completion_tokens: int | None = Field(None, ge=1, description="The same as `max_tokens` (OpenAI's newer "
                                              "name).")

    @field_validator("max_completion_tokens", mode="after")
    @classmethod
    def _one_max(cls, value: int | None, info: ValidationInfo) -> int | None:
        given = info.data.get("max_tokens")
        if value is not None and given is not None and value != given:
            raise PydanticCustomError("max_tokens", f"{value} differs from max_tokens {given} (the same setting): "
                                      "give one of them")
        return value

    @model_validator(mode="after")
    def _as_max_tokens(self) -> ChatRequest:
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


class CompletionRequest(_Sampling):
    prompt: Annotated[Text | list[Text], one_of("a text, or a list of texts"), BeforeValidator(a_prompt)] = Field(
        description="A text, or a list of texts: one choice each (its `index` the prompt's place in the list).")
    echo: Annotated[bool | None, only(None, False)] = None
    best_of: Annotated[int | None, only(None, 1)] = None
    suffix: Annotated[str | None, only(None)] = None
