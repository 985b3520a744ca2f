"""Masked-LM cross-entropy computed only at the masked positions (label != -100).

transformers' `*ForMaskedLM` models run their vocabulary head (BERT's `cls`, RoBERTa's `lm_head`, ...) over every
position, though only the ~15 % masked ones carry a loss: a batch of 16 blocks of 256 tokens with MiniLM's
30,522-token vocabulary is 125 M logits (0.5 GB in float32), about half the step's FLOPs and most of its memory
traffic (the bf16 → fp32 copy and log-softmax of those logits). Here a forward hook on the base model (`bert`,
`roberta`, ...) hands the head only the masked positions' hidden states (1 x N x H): a masked-LM head is applied
position by position, so its logits there are the full head's and the loss is `model(**batch).loss`'s — the mean
cross-entropy over the masked tokens. `position_wise` checks that on a small input once per model (a head that
mixes positions would differ); where it does not hold, or under peft prompt learning (virtual tokens shift the
positions), the model's full logits are cut to the masked positions instead: slower, same value.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.data.lm import IGNORE
from tunelab.tasks.causal_loss import causal_model, per_row

_CHECKED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


@contextmanager
def _only(base: torch.nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """While open, `base`'s sequence output is cut to the positions where `keep` (B x L) is True, as 1 x N x H."""

    def cut(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0][keep].unsqueeze(0), *output[1:])
        output["last_hidden_state"] = output[0][keep].unsqueeze(0)
        return output

    handle = base.register_forward_hook(cut)
    try:
        yield
    finally:
        handle.remove()


def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


def position_wise(model: torch.nn.Module) -> bool:
    """Whether the masked-LM head of `model` (a transformers `*ForMaskedLM`, unwrapped) gives, on the masked positions'
    hidden states alone, the logits it gives them in the full forward: checked once per model, in eval mode, without
    autocast (to float rounding of the weights' dtype). Says so on stderr when it does not."""
    known = _CHECKED.get(model)
    if known is not None:
        return known
    base = getattr(model, "base_model", None)
    ok = False
    if isinstance(base, torch.nn.Module) and base is not model:
        was_training = model.training
        model.eval()
        try:
            param = next(model.parameters())
            g = torch.Generator().manual_seed(0)
            vocab = int(getattr(model.config, "vocab_size", 0) or 0)
            ids = torch.randint(5, max(vocab, 6), (2, 7), generator=g).to(param.device)
            mask = torch.ones_like(ids)
            mask[1, 5:] = 0
            keep = torch.zeros_like(ids, dtype=torch.bool)
            keep[0, 1], keep[0, 4], keep[1, 2] = True, True, True
            tol = 1e-4 if param.dtype == torch.float32 else 2e-2
            with torch.no_grad(), torch.autocast(param.device.type, enabled=False):
                full = model(input_ids=ids, attention_mask=mask).logits[keep]
                with _only(base, keep):
                    cut = model(input_ids=ids, attention_mask=mask).logits
            ok = cut.dim() == 3 and cut.shape[1] == 3 and bool(torch.allclose(cut[0], full, atol=tol, rtol=tol))
        except Exception:  # noqa: BLE001 - whatever a head that needs every position raises: the full logits then
            ok = False
        finally:
            model.train(was_training)
        if not ok:
            print(f"pretrain: the masked-LM head of {type(model).__name__} is not applied position by position: the "
                  "loss projects every position to the vocabulary (slower, the same value)", file=sys.stderr)
    _CHECKED[model] = ok
    return ok


def _masked(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor]:
    """(logits, targets, keep): the (N, V) logits of the masked positions in row-major order, their labels, and the
    (B, L) mask of those positions."""
    labels = batch["labels"]
    keep = labels != IGNORE
    inner = causal_model(model)  # the transformers model inside DDP / peft; None under prompt learning
    if inner is not None and position_wise(inner):
        with _only(inner.base_model, keep):
            logits = model(**_inputs(batch)).logits[0]
    else:
        logits = model(**_inputs(batch)).logits[:, -labels.shape[1]:][keep]  # prompt tuning prepends positions
    return logits, labels[keep], keep


def masked_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the batch's masked tokens (float32), as the model's own loss."""
    logits, targets, _ = _masked(model, batch)
    return F.cross_entropy(logits.float(), targets)


def masked_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of NLL over the masked tokens, their count) per row."""
    logits, targets, keep = _masked(model, batch)
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    return per_row(nll, keep.nonzero()[:, 0], keep.shape[0])
