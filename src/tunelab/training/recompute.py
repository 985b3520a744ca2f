"""Gradient checkpointing (`train.gradient_checkpointing`): each transformer layer keeps only its input in the forward
pass and runs again in backward to give its activations back, as HF Trainer's `gradient_checkpointing=True` does
(transformers' own `activation_checkpointing_enable`, torch's non-reentrant `torch.utils.checkpoint`): the
activations held between forward and backward are a layer's boundary values instead of every intermediate, for one
more forward of every layer per step.

The same run to float rounding, not a different one: torch's checkpoint saves the RNG state (CPU, and the device's)
before a layer and restores it for the recomputation, and every dropout tunelab trains with draws from torch's default
generator (`FastDropout`, LoRA's fast forward, the short-row attention's mask, sdpa's own), so a recomputed layer
draws the masks its forward drew; autocast is replayed as it was. The [CLS]-only last layer of a classifier
(models/first_token.py) checkpoints itself. What cannot be recomputed is refused in one line before the run writes
anything (`check_recompute`): a model class transformers does not checkpoint (`supports_gradient_checkpointing`:
ALBERT, MPNet, ...), and peft's prefix tuning, whose learnt keys and values reach the layers as a cache that a
checkpointed layer is not given (transformers drops it; peft refuses the pair too): `method: prefix` is refused with
the config already (config/run.py), the adapter here too, for any other caller of the training loop.

Non-reentrant checkpointing needs no input that requires grad (the reentrant kind does: peft / transformers then
hook the input embeddings to make theirs require it), so the hook `activation_checkpointing_enable` adds is taken
off again: a frozen-embedding LoRA run's adapters get their gradients without it, and no gradient is computed down
to the embeddings for nothing. `config.use_cache` is off while training (a cache is never built to be dropped) and
everything is put back as it was by `restore_recompute` (the saved model's config is the base's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tunelab.errors import ConfigError
from tunelab.training.attention import transformers_model

FIELD = "config: train.gradient_checkpointing"
CACHE_ADAPTERS = ("PREFIX_TUNING", "CARTRIDGE")  # peft's adapters that reach the layers as a key/value cache


def check_recompute(model: torch.nn.Module) -> None:
    """Refuse (one-line ConfigError naming the field) a model whose layers gradient checkpointing cannot recompute."""
    m = transformers_model(model)
    if m is None or not getattr(m, "supports_gradient_checkpointing", False):
        name = type(m if m is not None else model).__name__
        raise ConfigError(f"{FIELD}: {name} does not support gradient checkpointing (its transformers class has no "
                          "supports_gradient_checkpointing); set it to false, and lower train.batch_size or "
                          "data.max_length to fit memory")
    peft_config = getattr(getattr(model, "module", model), "active_peft_config", None)
    kind = getattr(getattr(peft_config, "peft_type", None), "value", None)
    if kind in CACHE_ADAPTERS:  # (method prefix: refused with the config, config/run.py)
        raise ConfigError(f"{FIELD}: a peft {kind.lower()} adapter gives every layer its learnt keys and values as a "
                          "cache, which a recomputed layer is not given; set it to false")


@dataclass
class Recomputing:
    """What `use_recompute` changed, to put back."""

    model: Any  # the transformers PreTrainedModel
    use_cache: bool | None
    was_on: bool


def use_recompute(model: torch.nn.Module) -> Recomputing:
    """Checkpoint every layer of `model` (its transformers model, under a peft wrapper) while it trains."""
    check_recompute(model)
    m = transformers_model(model)
    was_on = bool(getattr(m, "is_activation_checkpointing", False))
    hooked = hasattr(m, "_require_grads_hook")
    kwargs = {"use_reentrant": False}
    if hasattr(m, "activation_checkpointing_enable"):  # (transformers 5.x's name; gradient_checkpointing_* before)
        m.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if not hooked and hasattr(m, "_require_grads_hook"):  # (what the reentrant kind needs; see above)
        m.disable_input_require_grads()
    state = Recomputing(m, getattr(m.config, "use_cache", None), was_on)
    if state.use_cache is not None:
        m.config.use_cache = False
    return state


def restore_recompute(state: Recomputing | None) -> None:
    """The model as before `use_recompute` (layers run plainly, its config's use_cache back)."""
    if state is None:
        return
    m = state.model
    if not state.was_on:
        if hasattr(m, "activation_checkpointing_disable"):
            m.activation_checkpointing_disable()
        else:
            m.gradient_checkpointing_disable()
    if state.use_cache is not None:
        m.config.use_cache = state.use_cache
