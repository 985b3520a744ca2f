"""Saving a tokenizer so that it loads back as the one in memory.

transformers 5 rebuilds some tokenizers in `__init__` from their init kwargs, whatever tokenizer.json holds:
`LlamaTokenizer` sets its Metaspace `prepend_scheme` from `legacy` ("always" when true, "first" when false, the
default), yet `save_pretrained` does not write `legacy` back (it is not among the kwargs its base class keeps). A
Llama base loaded with `legacy: true` (▁ also after <s>) came back from RUN/model with ▁ before the first word only:
predict, chat, serve and export read text otherwise than training did. `save_tokenizer` writes such kwargs into
tokenizer_config.json, then reloads the directory and tokenises a few probes with both; a difference is a tunelab
bug, said on stderr as one warning naming the text (never saved silently), while the save goes on: the model beside it
is the user's trained work, which a refusal here would lose."""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

# init kwargs that decide how the tokenizer is rebuilt, for the classes that take them (LlamaTokenizer: both)
REBUILT_FROM = ("legacy", "add_prefix_space")
PROBE_TEXTS = ("say good", "  two leading spaces,  and  inside", "\nA new line: (good) 2024's")
PROBE_CHAT = [{"role": "user", "content": "say good"}, {"role": "assistant", "content": "good"}]


class TokenizerRoundTripError(RuntimeError):
    """The saved tokenizer reads text otherwise than the one saved: a bug in tunelab, not in the user's input."""


def save_tokenizer(tokenizer: Any, directory: str | Path, shown_as: str | Path | None = None) -> None:
    """`tokenizer.save_pretrained(directory)` with the init kwargs it rebuilds from, checked to load back the same
    (a difference is warned about on stderr, not raised: the save goes on). `shown_as`: the folder the warning names
    where `directory` is a staging folder renamed into place afterwards."""
    directory = Path(directory)
    tokenizer.save_pretrained(str(directory))
    carry_init_kwargs(tokenizer, directory)
    try:
        check_round_trip(tokenizer, directory, shown_as)
    except TokenizerRoundTripError as err:  # said, and the save (the trained model beside it) kept
        print(f"warning: {err}", file=sys.stderr)


def carry_init_kwargs(tokenizer: Any, directory: Path) -> None:
    """Write into DIRECTORY/tokenizer_config.json the REBUILT_FROM kwargs its class takes, as the tokenizer has them."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return
    takes = inspect.signature(type(tokenizer).__init__).parameters
    config = json.loads(path.read_text(encoding="utf-8"))
    missing = {key: getattr(tokenizer, key) for key in REBUILT_FROM
               if key in takes and isinstance(getattr(tokenizer, key, None), bool)
               and config.get(key) != getattr(tokenizer, key)}
    if missing:
        config.update(missing)
        path.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def probes(tokenizer: Any) -> list[tuple[str, bool]]:
    """(text, add_special_tokens) pairs: a special token before text, leading spaces, a chat-templated row."""
    special = next((t for t in (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) if t), "")
    out = [(text, True) for text in PROBE_TEXTS] + [(f"{special}{PROBE_TEXTS[0]}", False)]
    if getattr(tokenizer, "chat_template", None):
        # a template that takes other rows (a system turn first, tools only) gives no probe
        with contextlib.suppress(Exception):
            out.append((tokenizer.apply_chat_template(PROBE_CHAT, tokenize=False), False))
    return out


def check_round_trip(tokenizer: Any, directory: Path, shown_as: str | Path | None = None) -> None:
    """Raise TokenizerRoundTripError where DIRECTORY's tokenizer tokenises a probe otherwise than `tokenizer` (the
    message names `shown_as`, else DIRECTORY)."""
    from transformers import AutoTokenizer

    back = AutoTokenizer.from_pretrained(str(directory))
    for text, special in probes(tokenizer):
        want = tokenizer(text, add_special_tokens=special)["input_ids"]
        got = back(text, add_special_tokens=special)["input_ids"]
        if got != want:
            raise TokenizerRoundTripError(
                f"{shown_as or directory}: the saved tokenizer ({type(back).__name__}) reads {text!r} as "
                f"{back.convert_ids_to_tokens(got)}, the tokenizer in use as {tokenizer.convert_ids_to_tokens(want)}: "
                "a tunelab bug, please report it")
