"""Replies streamed as they are generated (transformers' TextIteratorStreamer, generation in a thread), for
`tunelab chat` and `tunelab serve`; and fitting a conversation into the model's context."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TextIO

import torch
from transformers import StoppingCriteriaList, TextIteratorStreamer

from tunelab.models.generate import generate_ids
from tunelab.tasks.chat_template import prompt_ids
from tunelab.tasks.generation import GenerationConfig, decode_reply, generate_kwargs
from tunelab.tasks.reasoning import ThinkSplit, opens_think, reply_of, thinks


class _WholeCharacters(TextIteratorStreamer):
    """transformers' streamer, whose last flush leaves out half a character (U+FFFD: max_new_tokens ended between a
    character's byte tokens), as the reply returned does (`decode_reply`)."""

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        super().on_finalized_text(text.rstrip("\ufffd") if stream_end else text, stream_end)


class _Interrupt:
    """A stopping criterion that ends generation once `event` is set (Ctrl-C in the main thread)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_reply(model: torch.nn.Module, tokenizer: Any, ids: list[int], cfg: GenerationConfig, stop: list[int],
                 out: TextIO, interrupted: threading.Event | None = None, info: dict[str, Any] | None = None,
                 reasoning: Callable[[str], None] | None = None) -> str:
    """Generate one reply to the prompt `ids`, writing its text to `out` as it comes; returns the reply
    (cut at the first end-of-turn id, special tokens left out, stripped). A model whose template thinks (Qwen3's):
    the reply is what follows its think block, the reasoning in it given to `reasoning` as it comes (None: left out;
    tasks/reasoning.py). `info` receives `tokens` (generated, the end-of-turn token included) and `finish` (`stop`,
    or `length` when max_new_tokens ran out)."""
    streamer = _WholeCharacters(tokenizer, skip_prompt=True, skip_special_tokens=True)
    interrupted = interrupted or threading.Event()
    kwargs = {**generate_kwargs(cfg.model_copy(update={"num_beams": 1}), tokenizer, stop), "streamer": streamer,
              "stopping_criteria": StoppingCriteriaList([_Interrupt(interrupted)])}
    device = next(model.parameters()).device
    input_ids = torch.as_tensor([ids], device=device)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            with torch.no_grad():
                result["sequences"] = generate_ids(model, input_ids, torch.ones_like(input_ids), **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            result["error"] = e
            streamer.end()

    if cfg.do_sample:
        torch.manual_seed(cfg.seed)
    split = ThinkSplit(out.write, reasoning or (lambda _: None), opens_think(tokenizer)) if thinks(tokenizer) else None
    write = split.write if split is not None else out.write
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        for text in streamer:
            write(text)
            out.flush()
    except BaseException:  # Ctrl-C (or a broken output): stop generating before leaving
        interrupted.set()
        thread.join()
        raise
    thread.join()
    if split is not None:
        split.flush()
    if "error" in result:
        raise result["error"]
    new = result["sequences"][0, len(ids):].tolist()
    end = next((k for k, t in enumerate(new) if t in stop), None)
    if info is not None:
        info.update(tokens=len(new) if end is None else end + 1,
                    finish="length" if end is None and len(new) >= cfg.max_new_tokens else "stop")
    new = new[: end if end is not None else len(new)]
    return reply_of(tokenizer, decode_reply(tokenizer, new))[0]


def fit_prompt(tokenizer: Any, messages: list[dict[str, str]], budget: int | None) -> tuple[list[int], int]:
    """Prompt ids of the conversation, leaving out the oldest turns (never the system message or the last
    user turn) until it fits `budget` tokens; returns (ids, turns left out)."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    dropped = 0
    while True:
        ids = prompt_ids(tokenizer, system + turns)
        if budget is None or len(ids) <= budget or len(turns) <= 1:
            return ids, dropped
        # drop the oldest exchange (user + assistant) so roles keep alternating
        step = 2 if len(turns) > 2 else 1
        turns, dropped = turns[step:], dropped + step
