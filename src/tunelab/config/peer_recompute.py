"""Gradient checkpointing as HF Trainer and LLaMA-Factory set it, read for `tunelab config import` (config/peers.py)
as tunelab's `train.gradient_checkpointing`.

HF TrainingArguments' `gradient_checkpointing` (Axolotl's key too) is the setting itself, off by default. LLaMA-Factory
checkpoints unless `disable_gradient_checkpointing: true` (its `prepare_model_for_training`: on by default), and HF's
Trainer under it turns checkpointing on where `gradient_checkpointing: true` says so, whatever LLaMA-Factory's key
says: so a LLaMA-Factory file without `disable_gradient_checkpointing` is written `true`, and said so, as its other
defaults are. A value that is not true or false is one line at its key."""

from __future__ import annotations

from typing import Any

HF, LF = "gradient_checkpointing", "disable_gradient_checkpointing"
FIELD = "train.gradient_checkpointing"


def read_recompute(p: Any, llama_factory: bool) -> None:
    """Write `train.gradient_checkpointing` of the peer file `p` (its keys read, `p.later`); `llama_factory`: the
    file is LLaMA-Factory's (its default: on)."""
    on, off = p.later.get(HF), p.later.get(LF)
    for key, value in ((HF, on), (LF, off)):
        if value is not None and not isinstance(value, bool):
            raise p.refuse(key, f"{value!r}: true or false")
    if on is True:
        p.set(FIELD, True, HF)
        if off is True:
            p.skip(LF, f"{HF}: true turns checkpointing on in HF's Trainer under LLaMA-Factory")
    elif llama_factory and off is None:
        p.set(FIELD, True, LF)
        despite = f" whatever {HF}: false says" if on is False else ""
        p.notes.append(f"not set: {LF} (LLaMA-Factory's default, false: it checkpoints{despite}; written: {FIELD} "
                       "true)")
    elif off is not None:  # (LLaMA-Factory's: the opposite)
        p.set(FIELD, not off, LF)
    elif on is not None:
        p.set(FIELD, on, HF)
