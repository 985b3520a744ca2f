"""Causal-LM cross-entropy computed only where a token is trained (label != -100).

A causal LM predicts token t+1 from position t, so the positions whose *next* label is trained are selected
(`trained_positions`) and only their rows go through the vocabulary projection: with a 49k vocabulary the
full-vocabulary logits of every position (B x L x V, fp32) dominated SFT memory and a good part of its time.

How the rows are selected: transformers 5.x models project only the positions given by a boolean
`logits_to_keep` mask of shape (B, L) (`modeling_utils.slice_logits_to_keep`, used by 250+ causal LMs;
their own head code then runs unchanged — tied embeddings, Gemma's final logit soft-capping, logit scaling).
The model is called through its wrappers (DDP, peft LoRA/DoRA, whose adapters sit inside the modules), so
gradients flow exactly as in `model(**batch).loss`. A model class whose `forward` does not slice by mask
(detected from its source once per class), and peft prompt learning (prefix / prompt tuning, whose virtual
tokens shift or extend the positions), fall back to the model's full logits, cut to the input positions,
then the same selection: slower, same value.

Packed batches (see tasks/packing.py) carry `position_ids`; they are passed with `attention_mask=None` and
`use_cache=False`, the only combination under which transformers derives the per-example block-diagonal
causal mask from the position resets (masking_utils.find_packed_sequence_indices). `use_cache=False` is
always passed outside prompt learning: with the config default (True) a training forward builds a
DynamicCache, which also disables that detection.

The loss is the mean over the batch's trained tokens — the value of `model(input_ids, attention_mask,
labels=labels).loss` (transformers' ForCausalLMLoss with ignore_index=-100).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import torch.nn.functional as F

IGNORE = -100


def trained_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, targets): keep[b, t] is True where labels[b, t+1] is trained; targets are those labels in
    row-major order, the order in which `hidden[keep]` lists the positions."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep, labels[:, 1:][keep[:, :-1]]


def trained_count(batch: dict[str, torch.Tensor]) -> int:
    """The positions the causal loss is a mean over (labels shifted by one): a batch's loss units."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def causal_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """The transformers causal LM inside DDP / peft wrappers; None under peft prompt learning."""
    m = getattr(model, "module", model)  # DistributedDataParallel
    peft_cfg = getattr(m, "active_peft_config", None)
    if peft_cfg is not None:
        if peft_cfg.is_prompt_learning:
            return None
        m = m.get_base_model()
    return m


@functools.cache
def slices_by_mask(cls: type) -> bool:
    """Whether `cls.forward` projects only the positions of a boolean `logits_to_keep` mask."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return "slice_logits_to_keep" in source


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The forward inputs of a batch: packed rows (with `position_ids`) go without the 2-D mask, so that
    transformers builds the block-diagonal mask from the position resets; padded rows keep theirs."""
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "attention_mask": None}
    return {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}


def trained_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets): the (N, V) logits of the positions whose next token is trained, and those tokens."""
    labels = batch["labels"]
    keep, targets = trained_positions(labels)
    inputs = model_inputs(batch)
    base = causal_model(model)
    if base is not None and slices_by_mask(type(base)):
        logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits  # (N, V)
    else:
        if base is not None:
            inputs["use_cache"] = False
        logits = model(**inputs).logits[:, -labels.shape[1]:]  # prompt tuning prepends virtual positions
        logits = logits[keep]
    if logits.shape[0] != targets.shape[0]:
        raise RuntimeError(f"causal loss: the model returned {logits.shape[0]} rows of logits for "
                           f"{targets.shape[0]} trained positions")
    return logits, targets


def token_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll, rows): the float32 cross-entropy of every trained token of the batch and its row index."""
    logits, targets = trained_logits(model, batch)
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    keep, _ = trained_positions(batch["labels"])
    return nll, keep.nonzero()[:, 0]


def causal_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the batch's trained tokens (0 with a gradient path when there are none)."""
    nll, _ = token_nll(model, batch)
    return nll.sum() / max(nll.numel(), 1)


def example_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of NLL, trained-token count) per row of an unpacked batch, float64 / int64."""
    nll, rows = token_nll(model, batch)
    return per_row(nll, rows, batch["labels"].shape[0])


def per_row(nll: torch.Tensor, rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of `nll`, count) for each of `n` rows, float64 / int64; `rows[i]` is the row of `nll[i]`."""
    sums = torch.zeros(n, dtype=torch.float64, device=nll.device).index_add_(0, rows, nll.double())
    return sums, torch.bincount(rows, minlength=n)


def eval_batches(order: list[int], trained: list[int], batch_size: int, max_trained: int = 2048,
                 lengths: list[int] | None = None, max_tokens: int | None = None) -> list[list[int]]:
    """`order` (longest row first) cut into batches of at most `batch_size` rows and (unless one row alone has more)
    at most `max_trained` trained tokens, which bounds the (N, V) logits of an evaluation forward (2048 x 49k fp32
    = 0.4 GB) whatever `train.eval_batch_size` is; with `lengths`, also at most `max_tokens` padded tokens (rows x
    the batch's longest row), which bounds the activations: 64 CSL abstracts of ~800 tokens in one forward took
    Gemma-3-270M's evaluation from 7 to 15 GB of RSS in a training process (EVAL_TOKENS)."""
    batches: list[list[int]] = []
    cur: list[int] = []
    tokens = 0
    for i in order:
        longest = max(lengths[cur[0]], lengths[i]) if cur and lengths is not None else 0
        too_long = max_tokens is not None and cur and longest * (len(cur) + 1) > max_tokens
        if cur and (len(cur) == batch_size or tokens + trained[i] > max_trained or too_long):
            batches.append(cur)
            cur, tokens = [], 0
        cur.append(i)
        tokens += trained[i]
    return batches + [cur] if cur else batches


def eval_tokens(device: torch.device) -> int | None:
    """The padded tokens of one evaluation forward (eval_batches' `max_tokens`): 16,384 on the CPU, where the
    process's memory is the machine's; no limit on a GPU."""
    return EVAL_TOKENS if device.type == "cpu" else None


EVAL_TOKENS = 16_384
