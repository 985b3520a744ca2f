"""`model.generate()` as the model trained: for a prompt-learning peft model (`method: prefix`, `method: prompt`) the
base model generates with the virtual tokens put where training put them, instead of through peft's own
`generate()`.

Why hand-written: with transformers 5.25 and peft 0.21, peft's `prepare_inputs_for_generation` looks for the cache
under `past_key_values`, which transformers now passes as `cache`; it then feeds the whole prompt again at every
step (prompt tuning: the reply differs from the trained model's from its second token on, and a learned position
table runs out after a few tokens) or never puts the prefix in the cache (prefix tuning: the base model's reply).
Here a prompt-tuned model generates from its input embeddings with the virtual tokens' embeddings first, and a
prefix-tuned one from a cache holding the prefix; both with the attention mask extended over the virtual tokens,
so that positions (counted from the mask under left padding) are those of training. The first-token and whole-reply
equality to peft's own forward pass is tested (tests/test_prefix.py)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
)

from tunelab.models.precision import autocast_dtype


def _prompt_learning(model: Any) -> tuple[str, int] | None:
    """(peft type, virtual tokens) of a prompt-learning peft model's active adapter; None for any other model."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or not getattr(cfg, "is_prompt_learning", False):
        return None
    kind = getattr(cfg.peft_type, "value", cfg.peft_type)
    return str(kind), int(cfg.num_virtual_tokens)


def virtual_tokens(model: Any) -> int:
    """How many positions a prompt / prefix-tuned model's virtual tokens take before every sequence (0: none)."""
    found = _prompt_learning(model)
    return found[1] if found else 0


def _cache_argument(model: Any) -> str:
    """The name generate() takes a prefilled cache under: `cache` since transformers 5.25, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class _AfterVirtual(LogitsProcessor):
    """A logits processor that reads the sequence so far (a repetition penalty, n-gram blocking) given it without the
    first `n` columns: the virtual tokens' stand-ins, which are not text the model saw."""

    def __init__(self, inner: LogitsProcessor, n: int) -> None:
        self.inner, self.n = inner, n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.inner(input_ids[:, self.n:], scores)


def _sequence_settings(base: Any, kwargs: dict[str, Any], n: int) -> dict[str, Any]:
    """`kwargs` with the settings that read the sequence (`repetition_penalty`, `no_repeat_ngram_size`, given or in
    the model's generation_config.json) turned into processors that skip the stand-ins, generate()'s own off."""
    own = kwargs.get("generation_config") or getattr(base, "generation_config", None)
    penalty = kwargs.get("repetition_penalty", getattr(own, "repetition_penalty", None))
    ngram = kwargs.get("no_repeat_ngram_size", getattr(own, "no_repeat_ngram_size", None))
    extra = ([RepetitionPenaltyLogitsProcessor(float(penalty))] if penalty not in (None, 1.0) else []) + (
        [NoRepeatNGramLogitsProcessor(int(ngram))] if ngram else [])
    if not extra:
        return kwargs
    processors = LogitsProcessorList([*(kwargs.get("logits_processor") or []), *(_AfterVirtual(p, n) for p in extra)])
    return {**kwargs, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "logits_processor": processors}


def generate_ids(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """`model.generate(input_ids=..., attention_mask=..., **kwargs)`: the prompt ids followed by the new ones, one
    row per prompt, as generate() returns them — for a prompt / prefix-tuned model too (see the module's text). At
    the model's inference precision (`autocast_dtype`: its run's, where it trained at fp32), for every caller alike
    (eval / predict, serve, chat): the same greedy reply everywhere."""
    device = input_ids.device
    dtype = autocast_dtype(device, model=model)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        return _generate_ids(model, input_ids, attention_mask, **kwargs)


def _generate_ids(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    found = _prompt_learning(model)
    if found is None:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    kind, n = found
    base = model.get_base_model()
    rows = input_ids.shape[0]
    kwargs = _sequence_settings(base, kwargs, n)
    mask = torch.cat([attention_mask.new_ones((rows, n)), attention_mask], dim=1)
    # n placeholder ids stand for the virtual tokens in the sequence generate() keeps (what reads it skips them:
    # `_sequence_settings`); each row's last prompt token, a real one under left padding
    held = input_ids[:, -1:].expand(rows, n)
    if kind == "PREFIX_TUNING":  # the prefix as the cache's first n positions
        # (generate() repeats each row per beam, the cache left as given: it is made that wide)
        cache = model.get_prompt(batch_size=rows * max(1, int(kwargs.get("num_beams") or 1)))
        out = base.generate(input_ids=torch.cat([held, input_ids], dim=1), attention_mask=mask,
                            **{_cache_argument(base): cache}, **kwargs)
        return out[:, n:]
    embeds = base.get_input_embeddings()(input_ids)  # prompt tuning: the virtual tokens' embeddings first
    prompts = model.get_prompt(batch_size=rows).to(embeds.dtype)
    out = base.generate(input_ids=torch.cat([held, input_ids], dim=1),
                        inputs_embeds=torch.cat([prompts, embeds], dim=1), attention_mask=mask, **kwargs)
    return out[:, n:]
