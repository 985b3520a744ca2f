"""NEFTune (`train.neftune_alpha`; Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning"),
as HF's Trainer (`TrainingArguments.neftune_noise_alpha`, transformers/integrations/neftune.py), TRL's SFTTrainer and
LLaMA-Factory add it: a forward hook on the model's input embedding adds uniform noise in ±alpha / sqrt(L·d) to its
output while the embedding module trains, and nothing in evaluation or generation (`model.eval()`). L is the sequence
length of the forward's batch as padded (a packed row's length with `task.packing`; a pass's with
`train.micro_batch_tokens`, a process's rows' with `--nproc`), d the hidden size: HF's and TRL's formula, on the
tensor they would see.

The module is `model.get_input_embeddings()`: under peft (LoRA, DoRA, prefix / prompt tuning) the base model's word
embedding, which HF's `activate_neftune` reaches through `base_model.model` (peft's added-token wrapper, or LoRA on
the embedding, where it replaced it). The noise is a new tensor added to the embedding's output: the weights, the
word embedding's row gradients (training/sparse_rows.py: the gradient of out + noise by out is the identity, the rows
are the batch's tokens) and its `read_by` pre-hook (owed weight decay paid before the forward reads the rows) are as
without it. Drawn from torch's generator on the batch's device, as dropout is: seeded by `train.seed` (the same seed
on every process of a launched run, as HF's `set_seed`), saved in checkpoints and restored by `--resume`, so a
resumed run draws the noise the uninterrupted one drew. R-Drop's two copies of a batch (one pass) get independent
noise; a distillation teacher (a model of its own, in eval mode) gets none. The hook lives while the loop trains
(engine.Loop.run): it is gone when the model is evaluated for the last time, saved or exported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from tunelab.errors import ConfigError


def noise_bound(output: torch.Tensor, alpha: float) -> float:
    """alpha / sqrt(L·d) for an embedding output of shape (batch, L, d), computed as HF's hook does (in float32)."""
    return float(alpha / torch.sqrt(torch.tensor(output.size(-2) * output.size(-1))))


def add_noise(alpha: float, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
    """The forward hook: `output` plus uniform noise in ±noise_bound while `module` trains; else unchanged."""
    if not module.training:
        return None
    bound = noise_bound(output, alpha)
    return output + torch.zeros_like(output).uniform_(-bound, bound)


@contextmanager
def noisy_embeddings(model: torch.nn.Module, alpha: float | None) -> Iterator[None]:
    """NEFTune's hook on `model`'s input embedding while the block runs (removed after it, an error too); nothing
    where `alpha` is None or 0 (no noise, and no draws from the generator)."""
    if not alpha:
        yield
        return
    try:
        embedding = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # transformers cannot tell which module it is
        embedding = None
    if not isinstance(embedding, torch.nn.Module):
        raise ConfigError(f"config: train.neftune_alpha: {type(model).__name__} names no input embedding "
                          "(get_input_embeddings) to add the noise to; leave neftune_alpha out")
    handle = embedding.register_forward_hook(partial(add_noise, alpha))
    try:
        yield
    finally:
        handle.remove()
