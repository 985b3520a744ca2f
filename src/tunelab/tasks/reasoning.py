"""Reasoning in generated replies, for models whose chat template writes a think block (Qwen3's `<think>\\n…
\\n</think>\\n\\n` before a reply, empty where it has no reasoning): a reply that starts with one is the text after it,
its reasoning returned beside it (an empty block is gone), as vLLM's `--reasoning-parser qwen3` returns `content`
and `reasoning_content`. Told from the chat template (it writes `<think>` and `</think>`), not the model's name; other
models' replies are untouched, and so is a reply that does not start with the block (`<think>` mid-way is text).

A reply that opens a block and never closes it (max_new_tokens ran out while it reasoned) is all reasoning: its reply
is empty, as a stream that sent its reasoning as it came must have it. A template whose generation prompt opens the
block itself (Qwen3-*-Thinking-2507, QwQ, DeepSeek-R1's distills: it ends in `<think>\\n`, `opens_think`) has the
model write only its end: such a reply starts inside the block (a `<think>` it writes again is dropped), as vLLM's
`deepseek_r1` parser reads it.

Training rows: an assistant turn's `reasoning_content` (the field Qwen3's template reads) is kept and trained as the
template writes it (chat_template.py `render` refuses it on a template that writes none; an earlier turn's that the
template leaves out, Qwen3's before the last user turn, is said once a file: `unwritten_reasoning`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

OPEN, CLOSE = "<think>", "</think>"
REASONING = "reasoning_content"  # an assistant message's reasoning, as Qwen3's template and vLLM name it
_PROBE = "tunelab_probe_reasoning"
_PROBED: dict[tuple[str, str], bool] = {}  # (what, the chat template) → what its probe found


def _once(tokenizer: Any, what: str, probe: Callable[[], bool]) -> bool:
    """`probe()` once per chat template; a template that cannot render the probe: False."""
    key = (what, str(getattr(tokenizer, "chat_template", None)))
    if key not in _PROBED:
        try:
            _PROBED[key] = probe()
        except Exception:  # noqa: BLE001 - a template that cannot write the probe does not write it
            _PROBED[key] = False
    return _PROBED[key]


def thinks(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template writes think blocks (`<think>` … `</think>`)."""
    template = getattr(tokenizer, "chat_template", None)
    text = template if isinstance(template, str) else " ".join(map(str, (template or {}).values())) \
        if isinstance(template, dict) else ""
    return OPEN in text and CLOSE in text


def writes_reasoning(tokenizer: Any) -> bool:
    """Whether the chat template writes an assistant turn's `reasoning_content` (Qwen3's does, in its think block).
    Once per template."""
    turns = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", REASONING: _PROBE}]
    return _once(tokenizer, "writes", lambda: _PROBE in tokenizer.apply_chat_template(turns, tokenize=False))


def opens_think(tokenizer: Any) -> bool:
    """Whether the chat template's generation prompt opens a think block (ends in `<think>`, whitespace aside): the
    model writes its reasoning and `</think>` only. Once per template."""
    def probe() -> bool:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                               add_generation_prompt=True)
        return thinks(tokenizer) and prompt.rstrip().endswith(OPEN)

    return _once(tokenizer, "opens", probe)


class ThinkSplit:
    """A reply's text as it streams (`write` each piece, `flush` at its end), split where it starts with a think
    block: the reasoning inside it to `reasoning` (the whitespace around it left out), the text after it to `content`
    (the whitespace before it left out); a reply that does not start with one goes to `content` as it is. `opened`:
    the prompt opened the block (`opens_think`), the reply starts inside it."""

    def __init__(self, content: Callable[[str], None], reasoning: Callable[[str], None], opened: bool = False) -> None:
        self.content, self.reasoning, self.opened = content, reasoning, opened
        self.state, self.buffer, self.said = "start", "", False  # said: reasoning other than whitespace sent

    def write(self, text: str) -> None:
        self.buffer += text
        if self.state == "start":
            head = self.buffer.lstrip()
            if head.startswith(OPEN):
                self.state, self.buffer = "reasoning", head[len(OPEN):]
            elif OPEN.startswith(head):  # (whitespace, or `<thi`: wait for more)
                return
            else:
                self.state = "reasoning" if self.opened else "content"
        if self.state == "reasoning":
            at = self.buffer.find(CLOSE)
            if at < 0:
                hold = next((k for k in range(len(CLOSE) - 1, 0, -1) if self.buffer.endswith(CLOSE[:k])), 0)
                body = self.buffer[: len(self.buffer) - hold]
                sent = body.rstrip()  # trailing whitespace waits: it may end the reasoning
                self._reason(sent)
                self.buffer = self.buffer[len(sent):]
                return
            self._reason(self.buffer[:at].rstrip())
            self.state, self.buffer = "after", self.buffer[at + len(CLOSE):]
        if self.state == "after":
            self.buffer = self.buffer.lstrip()
            if not self.buffer:
                return
            self.state = "content"
        if self.buffer:
            self.content(self.buffer)
            self.buffer = ""

    def _reason(self, text: str) -> None:
        if not self.said:
            text = text.lstrip()
        if text:
            self.said = True
            self.reasoning(text)

    def flush(self) -> None:
        """The end of the reply: what is held goes out (reasoning without its trailing whitespace)."""
        if self.state == "start" and self.buffer:
            (self._reason if self.opened else self.content)(self.buffer.strip() if self.opened else self.buffer)
        elif self.state == "reasoning":
            self._reason(self.buffer.rstrip())
        self.buffer = ""


def split_reasoning(text: str, opened: bool = False) -> tuple[str, str | None]:
    """(the reply, its reasoning: None where it has none) of a whole reply (`ThinkSplit`)."""
    content: list[str] = []
    reasoning: list[str] = []
    split = ThinkSplit(content.append, reasoning.append, opened)
    split.write(text)
    split.flush()
    return "".join(content), "".join(reasoning) or None


def reply_of(tokenizer: Any, text: str, generated: bool = True) -> tuple[str, str | None]:
    """A generated reply's text and reasoning: split where the model's template thinks (`thinks`; started inside the
    block where its generation prompt opens it, `opens_think`), else as it is. Not `generated` (a row's reference):
    split where it starts with a block."""
    return split_reasoning(text, generated and opens_think(tokenizer)) if thinks(tokenizer) else (text, None)


def reference_of(tokenizer: Any, reference: str) -> str:
    """A row's reference reply as eval scores it: without its think block (`reply_of`, not generated); a tool-call
    turn's reference, cut after the generation prompt as a reply is, starts `</think>` where that prompt opened the
    block, and is read as a generated reply (else a right prediction, split, never matched it)."""
    return reply_of(tokenizer, reference, generated=reference.lstrip().startswith("</think>"))[0]
