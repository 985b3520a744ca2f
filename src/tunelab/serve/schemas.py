"""Request bodies of the HTTP API (pydantic: a bad field is a 422 naming it) and the server's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tunelab.text import json_problem


def utf8(value: Any) -> Any:
    """`value` (a string, or the strings and keys inside lists and objects) as UTF-8 can carry it: a lone surrogate
    (JSON's "\\ud800") is refused here, as the data files' reader refuses it, instead of failing in a tokenizer or in
    the answer that echoes the row; so is nesting deeper than 64 levels."""
    if (problem := json_problem(value, numbers=False)) is not None:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(utf8)]


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


class PredictRequest(_Body):
    model: str | None = Field(None, description="Which served model (default: the only classifier / tagger / QA "
                              "model).")
    inputs: Annotated[list[str | dict[str, Any]], AfterValidator(utf8)] = Field(
        min_length=1, description="Texts, or rows with the data fields (text, text_pair, question, context).")


class Message(_Body):
    role: Literal["system", "user", "assistant"]
    content: Text


class _Sampling(_Body):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    stream: bool = False
    n: Literal[1] = 1
    user: str | None = None


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(_Sampling):
    prompt: Text
