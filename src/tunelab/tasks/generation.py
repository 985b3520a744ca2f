"""Reply generation for causal LMs: the `task.generation` settings and batched generation.

`generate` runs batches of prompts sorted by length, left-padded with an attention mask (positions come
from the mask, so a padded prompt generates what it would alone), greedy, beam search or sampling
(`task.generation`), and cuts each reply at the first stop id (`Task.stop_ids`: the end-of-turn ids,
`tasks.chat_template.end_of_turn_ids`, and the model's own eos ids, `model_stop_ids`).
Scoring generated replies against references is evaluation/generation.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field

from tunelab.config.base import Section
from tunelab.errors import ConfigError, TunelabError, option
from tunelab.models.generate import generate_ids, virtual_tokens
from tunelab.models.positions import learned_position_limit
from tunelab.progress import Steps

# the widest beam search: every beam is a sequence generated beside the others, with its own cache and its scores over
# the vocabulary at each step (HF's GenerationConfig sets no bound: 100000 beams ran out of memory, not into an error)
MAX_NUM_BEAMS = 32


class GenerationConfig(Section):
    max_new_tokens: int = Field(128, ge=1, description="Most tokens generated per reply (predict, eval, chat).")
    num_beams: int = Field(1, ge=1, le=MAX_NUM_BEAMS, description="Beam search width; 1 = no beam search; at most "
                           f"{MAX_NUM_BEAMS}. A batch of generation holds batch size sequences in all (prompts × "
                           "beams).")
    do_sample: bool = Field(False, description="Sample (temperature, top_p) instead of taking the likeliest token.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: the smallest token set with this "
                         "probability mass (with do_sample; top-k is off).")
    seed: int = Field(0, description="Seed for sampling; replies also depend on how prompts are batched.")
    eval_generate: bool = Field(False, description="tunelab train: also generate the validation / test replies in "
                                "the final evaluation and score them (exact_match, BLEU, chrF, ROUGE). Slow, so "
                                "off by default; `tunelab eval` generates unless --no-generate.")
    eval_limit: int | None = Field(None, ge=1, description="tunelab train with eval_generate: generate only the "
                                   "first N rows of each split (null: all).")


def prompt_limit(model: Any, cap: int) -> tuple[int, int]:
    """(the model's positions, the longest prompt it takes): its positions less one, for the first new token (a model
    with learned positions has no row past its last), and at most `cap`; `cap` + 1 positions when it does not say.
    A prompt / prefix-tuned model's virtual tokens take the first positions."""
    given = getattr(model.config, "max_position_embeddings", None)
    positions = given - virtual_tokens(model) if given else cap + 1
    return positions, min(cap, positions - 1)


def with_overrides(cfg: GenerationConfig, *, max_new_tokens: int | None = None, num_beams: int | None = None,
                   temperature: float | None = None, top_p: float | None = None) -> GenerationConfig:
    """`cfg` with command-line overrides; a temperature of 0 means greedy, above 0 sampling at it (below 1e-4 is
    greedy too: sampling at it is greedy in all but name, and dividing logits by 1e-200 overflows to inf)."""
    update: dict[str, Any] = {}
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ConfigError(f"{gen_flag('max_new_tokens')}: must be at least 1, got {max_new_tokens}")
        update["max_new_tokens"] = max_new_tokens
    if num_beams is not None:
        if not 1 <= num_beams <= MAX_NUM_BEAMS:
            raise ConfigError(f"{gen_flag('num_beams')}: must be 1 to {MAX_NUM_BEAMS} (each beam is a sequence "
                              "generated beside the others, with its own cache and scores over the vocabulary), got "
                              f"{num_beams}")
        update["num_beams"] = num_beams
    if temperature is not None:
        if not 0 <= temperature < float("inf"):  # NaN fails this too (it had meant greedy, silently)
            raise ConfigError(f"{gen_flag('temperature')}: must be 0 (greedy) or a positive finite number, got "
                              f"{temperature}")
        sample = temperature >= 1e-4
        update.update(do_sample=sample, **({"temperature": temperature} if sample else {}))
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise ConfigError(f"{gen_flag('top_p')}: must be in (0, 1], got {top_p}")
        update["top_p"] = top_p
    return GenerationConfig(**{**cfg.model_dump(), **update})


def gen_flag(name: str) -> str:
    """A generation option as the caller spells it: `--num-beams` on the command line, `num_beams` in the API."""
    return option("--" + name.replace("_", "-"), name)


def check_reply_room(cfg: GenerationConfig, model_config: Any, flag: str | None = None) -> None:
    """Refuse (one line) a reply longer than the model has positions for (its positions less one, for at least one
    prompt token): past them generation fails, or on a model with rotary positions runs on, its cache growing."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions and cfg.max_new_tokens > positions - 1:
        raise ConfigError(f"{flag or gen_flag('max_new_tokens')}: {cfg.max_new_tokens} is more than the model's "
                          f"{positions} positions leave for a reply (at most {positions - 1})")


def generate_kwargs(cfg: GenerationConfig, tokenizer: Any, stop: Sequence[int]) -> dict[str, Any]:
    """`model.generate` keyword arguments for `cfg`, stopping at `stop` (settings that `cfg` does not name,
    e.g. repetition_penalty, come from the model's generation_config.json)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop[0] if stop else 0)
    kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "num_beams": cfg.num_beams,
                              "do_sample": cfg.do_sample, "pad_token_id": pad, "eos_token_id": list(stop) or None}
    if cfg.do_sample:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
    return kwargs


def model_stop_ids(model: Any, stop: Sequence[int]) -> list[int]:
    """`stop` and after them the ids the model's own generation_config ends a reply at (its `eos_token_id`, one or a
    list), as vLLM stops at both: Llama 3.1 / 3.2 end a tool call with <|eom_id|>, which their generation_config
    lists beside <|eot_id|> and the template's turn end (`end_of_turn_ids`) is not. Where it lists only ids `stop`
    has (eos; Qwen's and Gemma's turn end too), `stop` as it was. `generate_kwargs` passes the whole list as
    generate()'s `eos_token_id`, which replaces the model's own."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)  # (a peft model: its base's)
    own = [eos] if isinstance(eos, int) else list(eos) if isinstance(eos, list | tuple) else []
    return list(dict.fromkeys([*stop, *(i for i in own if isinstance(i, int) and i >= 0)]))


def stop_ids_of(tokenizer: Any, stop_ids: Sequence[int] | None) -> list[int]:
    if stop_ids:
        return list(stop_ids)
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def position_limit(model: torch.nn.Module) -> int | None:
    """How many tokens a sequence may hold: a learned position table's rows less the virtual tokens of prompt / prefix
    tuning (peft moves the positions past them); None for rotary or relative positions, which run on past their
    trained length."""
    limit = learned_position_limit(model)
    return limit - virtual_tokens(model) if limit else limit  # (prompt and prefix tuning: positions past them)


def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]], cfg: GenerationConfig,
             batch_size: int, stop_ids: Sequence[int] | None = None, ended: list[bool] | None = None,
             ) -> list[list[int]]:
    """The new token ids of each prompt's reply (in prompt order), cut before the first stop id
    (default: eos). `batch_size` counts sequences: beam search takes batch_size // num_beams prompts at a time (at
    least one), so a wider beam costs time, not memory. A model with learned positions (`position_limit`) refuses a
    prompt that fills them (one line naming it) and cuts a reply where they end — a row that would be cut goes alone,
    so that no other row's reply is cut with it; `ended`, when given, is filled with whether each reply reached a
    stop id (else it was cut: by max_new_tokens or by the positions)."""
    if batch_size < 1:
        raise ConfigError("config: batch size must be at least 1")
    stop = stop_ids_of(tokenizer, stop_ids)
    kwargs = generate_kwargs(cfg, tokenizer, stop)
    pad = kwargs["pad_token_id"]
    if cfg.do_sample:
        torch.manual_seed(cfg.seed)
    model.eval()
    limit = position_limit(model)
    for i, prompt in enumerate(prompts):  # past its positions a learned table fails with an IndexError
        if limit and len(prompt) >= limit:
            raise TunelabError(f"generate: prompt {i + 1} of {len(prompts)} is {len(prompt)} tokens; the model has "
                               f"{limit} positions and one is the reply's at least: shorten that input")
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    rows = max(1, batch_size // cfg.num_beams)
    chunks = [order[s: s + rows] for s in range(0, len(order), rows)]
    if limit:  # a chunk whose longest prompt leaves less room than max_new_tokens: each row alone, its own room
        chunks = [part for c in chunks for part in ([c] if len(prompts[c[0]]) + cfg.max_new_tokens <= limit
                                                     else [[i] for i in c])]
    with torch.no_grad(), Steps("generate", len(prompts), "replies") as progress:
        for chunk in chunks:
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):  # left padding: every prompt ends at the last column
                n = len(prompts[i])
                ids[row, width - n:] = torch.as_tensor(list(prompts[i]), dtype=torch.long)
                mask[row, width - n:] = 1
            room = {"max_new_tokens": min(cfg.max_new_tokens, limit - width)} if limit else {}  # cut there
            gen = generate_ids(model, ids.to(device), mask.to(device), **{**kwargs, **room})  # (its precision)
            for row, i in enumerate(chunk):
                new = gen[row, width:].tolist()
                end = next((k for k, t in enumerate(new) if t in stop), None)
                out[i] = new if end is None else new[:end]
                if ended is not None:
                    ended[i] = end is not None
            progress.advance(len(chunk))
    return out


def decode_reply(tokenizer: Any, ids: Sequence[int], strip: bool = True) -> str:
    """A generated reply's text, special tokens left out, stripped — without the half of a character its last
    tokens began (a byte-level vocabulary spells a Chinese character in 2–3 tokens; max_new_tokens can cut
    between them, and the bytes left would read as U+FFFD): the reply up to the last whole character. `strip`:
    without the spaces around it (a continuation of a text keeps them)."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True).rstrip("\ufffd")  # as the stream shows it
    return text.strip() if strip else text

