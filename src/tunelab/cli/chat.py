"""`tunelab chat MODEL_DIR`: an interactive terminal conversation with a tuned SFT model.

The conversation is kept and rendered with the model's saved chat template each turn; the reply streams
token by token (transformers' TextIteratorStreamer, generation in a thread) and stops at the template's
end-of-turn token. A model whose template thinks (Qwen3's) has its reply printed without the think block, the
reasoning in it dimmed before the reply on a terminal (left out where the output is not one); the conversation keeps
the reply only, as Qwen3's template writes earlier turns. When the conversation no longer fits the model's context
(prompt + max_new_tokens over max_position_embeddings) the oldest turns are left out of the prompt (the system
message stays), with a note on stderr. `exit`, `quit`, end of input (Ctrl-D) or Ctrl-C end it; `/reset` starts
over. Input is read as UTF-8 whatever the locale;
a line that is not UTF-8 text is not sent, with a note naming its line and byte.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from jinja2 import TemplateError

from tunelab.errors import TunelabError
from tunelab.export.save import load_model
from tunelab.registry import TASKS
from tunelab.tasks.chat_template import chat_turns
from tunelab.tasks.generation import with_overrides
from tunelab.tasks.streaming import fit_prompt, stream_reply
from tunelab.text import unicode_problem

EXIT_WORDS = ("exit", "quit")
DIM, PLAIN = "\x1b[2m", "\x1b[0m"


class Shown:
    """A reply as `tunelab chat` prints it: its text to `out`; the reasoning of a model whose template thinks
    (Qwen3's; tasks/reasoning.py) before it, dimmed, on a terminal only (elsewhere, e.g. piped, left out)."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.dim, self.open = out, out.isatty(), False

    def reasoning(self, text: str) -> None:
        if self.dim:
            self.out.write(text if self.open else DIM + text)
            self.open = True

    def write(self, text: str) -> None:
        self.close()
        self.out.write(text)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        """The reasoning ended: plain text again, the reply on a line of its own."""
        if self.open:
            self.out.write(PLAIN + "\n\n")
            self.open = False


def read_line(stdin: Any, number: int) -> tuple[str, str | None]:
    """(the next line of input, "" at its end; why it cannot be sent, or None): decoded as UTF-8 from the bytes beneath
    `stdin` where it has them (the locale's codec made bad bytes unpaired surrogates, on which the tokenizer failed
    with a traceback), `number` its line."""
    raw = getattr(stdin, "buffer", None)
    line = stdin.readline() if raw is None else raw.readline()
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return line.decode("utf-8", "replace"), (f"line {number} of the input is not UTF-8 text (byte "
                                                     f"0x{line[exc.start]:02x} at column {exc.start + 1})")
    problem = unicode_problem(line)
    return line, (f"line {number} of the input: {problem}" if problem else None)


def _check_system(tokenizer: Any, start: list[dict[str, str]]) -> None:
    """A template may refuse a system turn (Gemma-2's): said once, in one line, before the conversation."""
    if start:
        try:
            fit_prompt(tokenizer, [*start, {"role": "user", "content": "hello"}], None)
        except TemplateError as exc:
            raise TunelabError(f"--system: the model's chat template refuses a system message: {str(exc)[:200]}"
                               ) from None


def _prompt(tokenizer: Any, messages: list[dict[str, str]], budget: int | None, stderr: TextIO) -> list[int] | None:
    """The conversation's prompt ids within `budget` (the oldest turns left out, said); None, said, when the last
    message cannot be sent: too long, or refused by the model's own template (roles, a system turn)."""
    try:
        ids, dropped = fit_prompt(tokenizer, messages, budget)
    except TemplateError as exc:
        stderr.write(f"(the model's chat template refuses this conversation: {str(exc)[:200]}; not sent)\n")
        return None
    if dropped:
        stderr.write(f"(the {dropped} oldest turns no longer fit the context and are left out)\n")
    if budget is not None and len(ids) > budget:
        stderr.write(f"(message too long: {len(ids)} prompt tokens, at most {budget}; not sent)\n")
        return None
    return ids


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
    stop = task.stop_ids(tokenizer, model)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and cfg.max_new_tokens > positions // 2:  # keep at least half the context for the conversation
        stderr.write(f"(replies cut at {positions // 2} new tokens: the model has {positions} positions)\n")
        cfg = cfg.model_copy(update={"max_new_tokens": positions // 2})
    budget = positions - cfg.max_new_tokens if positions else None
    start = [{"role": "system", "content": system}] if system else []
    _check_system(tokenizer, start)
    messages = list(start)
    replies = number = 0
    mode = f"sampling at temperature {cfg.temperature:g}" if cfg.do_sample else "greedy"
    stderr.write(f"chat with {model_dir} ({mode}, up to {cfg.max_new_tokens} new tokens). "
                 "exit, quit or Ctrl-D to leave; /reset starts over.\n")
    try:
        while True:
            stdout.write(">>> ")
            stdout.flush()
            number += 1
            line, problem = read_line(stdin, number)
            if not line:  # end of input
                stdout.write("\n")
                break
            if problem is not None:
                stderr.write(f"({problem}; not sent)\n")
                continue
            text = line.strip()
            if not text:
                continue
            if text.lower() in EXIT_WORDS:
                break
            if text == "/reset":
                messages = list(start)
                stderr.write("(conversation cleared)\n")
                continue
            messages.append({"role": "user", "content": text})  # the template fills the last one only (chat_turns)
            ids = _prompt(tokenizer, chat_turns(task, messages), budget, stderr)
            if ids is None:
                messages.pop()
                continue
            shown = Shown(stdout)
            reply = stream_reply(model, tokenizer, ids, cfg, stop, shown,  # type: ignore[arg-type]
                                 reasoning=shown.reasoning)
            shown.close()
            stdout.write("\n")
            messages.append({"role": "assistant", "content": reply})
            replies += 1
    except KeyboardInterrupt:
        stdout.write("\n")
    stdout.flush()
    return replies
