"""`tunelab chat MODEL_DIR`: an interactive terminal conversation with a tuned SFT model.

The conversation is kept and rendered with the model's saved chat template each turn; the reply streams
token by token (transformers' TextIteratorStreamer, generation in a thread) and stops at the template's
end-of-turn token. When the conversation no longer fits the model's context (prompt + max_new_tokens over
max_position_embeddings) the oldest turns are left out of the prompt (the system message stays), with a
note on stderr. `exit`, `quit`, end of input (Ctrl-D) or Ctrl-C end it; `/reset` starts over.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import torch
from transformers import StoppingCriteriaList, TextIteratorStreamer

from tunelab.errors import TunelabError
from tunelab.export.save import load_model
from tunelab.registry import TASKS
from tunelab.tasks.chat_template import prompt_ids
from tunelab.tasks.generation import GenerationConfig, generate_kwargs, with_overrides

EXIT_WORDS = ("exit", "quit")


class _Interrupt:
    """A stopping criterion that ends generation once `event` is set (Ctrl-C in the main thread)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_reply(model: torch.nn.Module, tokenizer: Any, ids: list[int], cfg: GenerationConfig, stop: list[int],
                 out: TextIO, interrupted: threading.Event | None = None) -> str:
    """Generate one reply to the prompt `ids`, writing its text to `out` as it comes; returns the reply
    (cut at the first end-of-turn id, special tokens left out, stripped)."""
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    interrupted = interrupted or threading.Event()
    kwargs = {**generate_kwargs(cfg.model_copy(update={"num_beams": 1}), tokenizer, stop), "streamer": streamer,
              "stopping_criteria": StoppingCriteriaList([_Interrupt(interrupted)])}
    device = next(model.parameters()).device
    input_ids = torch.as_tensor([ids], device=device)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            with torch.no_grad():
                result["sequences"] = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                                     **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            result["error"] = e
            streamer.end()

    if cfg.do_sample:
        torch.manual_seed(cfg.seed)
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        for text in streamer:
            out.write(text)
            out.flush()
    except BaseException:  # Ctrl-C (or a broken output): stop generating before leaving
        interrupted.set()
        thread.join()
        raise
    thread.join()
    if "error" in result:
        raise result["error"]
    new = result["sequences"][0, len(ids):].tolist()
    new = new[: next((k for k, t in enumerate(new) if t in stop), len(new))]
    return tokenizer.decode(new, skip_special_tokens=True).strip()


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


def run_chat(model_dir: Path, *, system: str | None = None, max_new_tokens: int | None = None,
             temperature: float | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None,
             stderr: TextIO | None = None) -> int:
    """Chat until exit / EOF / Ctrl-C; returns the number of replies given."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    task, model, tokenizer = load_model(model_dir)
    if not task.generates_replies:
        able = ", ".join(TASKS.names(lambda cls: cls.generates_replies))
        raise TunelabError(f"{model_dir}: chat needs a model trained with task {able} (this one: {task.cfg.name})")
    cfg = with_overrides(task.cfg.generation, max_new_tokens=max_new_tokens, temperature=temperature)
    stop = task.stop_ids(tokenizer)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and cfg.max_new_tokens > positions // 2:  # keep at least half the context for the conversation
        stderr.write(f"(replies cut at {positions // 2} new tokens: the model has {positions} positions)\n")
        cfg = cfg.model_copy(update={"max_new_tokens": positions // 2})
    budget = positions - cfg.max_new_tokens if positions else None
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    replies = 0
    mode = f"sampling at temperature {cfg.temperature:g}" if cfg.do_sample else "greedy"
    stderr.write(f"chat with {model_dir} ({mode}, up to {cfg.max_new_tokens} new tokens). "
                 "exit, quit or Ctrl-D to leave; /reset starts over.\n")
    try:
        while True:
            stdout.write(">>> ")
            stdout.flush()
            line = stdin.readline()
            if not line:  # end of input
                stdout.write("\n")
                break
            text = line.strip()
            if not text:
                continue
            if text.lower() in EXIT_WORDS:
                break
            if text == "/reset":
                messages = list(start)
                stderr.write("(conversation cleared)\n")
                continue
            messages.append({"role": "user", "content": text})
            ids, dropped = fit_prompt(tokenizer, messages, budget)
            if dropped:
                stderr.write(f"(the {dropped} oldest turns no longer fit the context and are left out)\n")
            if budget is not None and len(ids) > budget:
                messages.pop()
                stderr.write(f"(message too long: {len(ids)} prompt tokens, at most {budget}; not sent)\n")
                continue
            reply = stream_reply(model, tokenizer, ids, cfg, stop, stdout)
            stdout.write("\n")
            messages.append({"role": "assistant", "content": reply})
            replies += 1
    except KeyboardInterrupt:
        stdout.write("\n")
    stdout.flush()
    return replies
