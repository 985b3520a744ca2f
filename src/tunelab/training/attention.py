"""Attention for short rows on the CPU: plain matmul → softmax → matmul instead of sdpa's flash kernel.

PyTorch's CPU flash-attention kernel (what `attn_implementation="sdpa"` runs on the CPU) works in query
blocks and has a fixed cost per block and head that dominates when rows are short and the compute is bf16.
Measured on 2 cores (AVX-512-BF16), forward + backward, the two paths alternated on the same batches:

| model, precision | rows | matmul path vs sdpa |
|---|---|---|
| SmolLM2-135M + LoRA, bf16 autocast | 16 alpaca batches of 8 rows, 44-173 tokens | 1.13x faster |
| SmolLM2-135M + LoRA, bf16 autocast | packed rows of 512 tokens | 0.89x (slower) |
| SmolLM2-135M + LoRA, fp32 | the same 8 short batches | 0.98x (slower) |
| all-MiniLM-L6-v2 classifier, bf16 autocast | 32 rows of 32 / 64 / 128 tokens | 1.22x / 1.20x / 1.34x faster |
| all-MiniLM-L6-v2 classifier, fp32 | 32 rows of 32 / 64 / 128 tokens | 0.97x / 0.95x / 0.94x (slower) |

So `use_short_row_attention(model)` switches a model that runs "sdpa" to `SHORT_ROW_ATTENTION`, a
registered attention implementation (transformers' `AttentionInterface`, with sdpa's mask format) that
computes rows of at most `SHORT_ROWS` tokens by matmul when they are computed in bf16 / fp16 (the query's
dtype, or autocast's) — what `eager` does, with sdpa's masks and its `is_causal` rule — and hands every
other call to transformers' own `sdpa_attention_forward` unchanged: float32, longer rows, a score matrix
above `MAX_SCORES` elements (the matmul path keeps it for backward), decoding (one query), a key cache
longer than the queries, position biases, soft-capping, any device but the CPU. The same function, to
float rounding, down to sdpa's zero output for a query row that sees no key (left padding).

Attention dropout (training BERT-style models: MiniLM's and m3e's attention_probs_dropout_prob is 0.1) is drawn
by `FastDropout`'s mask (training/dropout.py) instead of `F.dropout`'s float Bernoulli samples. With dropout,
sdpa on the CPU leaves its flash kernel for the math path, which holds the whole score matrix as this path does
(forward + backward of 12 heads x 8,192 tokens in bf16, 2-core Intel Xeon with AMX: sdpa without dropout 122 ms at
384 tokens, with dropout 0.1 749 ms; this path 643 ms, and 800 against sdpa's 843 MB at 512 tokens), so rows of any
length take this path when dropout is on. MiniLM masked-LM training, 16 x 256 tokens, bf16: 1.62 s a step with
`F.dropout` here, 1.33 s with the fast mask; at 32 x 128: 1.06 → 0.93 s.

The implementation name is runtime state only: `save_pretrained` does not write it, and
`restore_attention` puts the previous one back.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tunelab.training.dropout import fast_dropout

SHORT_ROW_ATTENTION = "tunelab_short_rows"
SHORT_ROWS = 256
MAX_SCORES = 1 << 24  # batch x heads x queries x keys: 32 MB of bf16 scores per layer, at most
MATMUL_DTYPES = (torch.bfloat16, torch.float16)  # in float32 sdpa is as fast or faster


def short_row_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    b, h, q_len, dim = query.shape
    k_len = key.shape[2]
    # under autocast the matmuls run in its dtype (RoPE turns a llama's bf16 queries back into float32)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype
    long_rows = q_len > SHORT_ROWS or b * h * q_len * k_len > MAX_SCORES
    if (query.device.type != "cpu" or dtype not in MATMUL_DTYPES or q_len <= 1 or (long_rows and dropout == 0.0)
            or k_len != q_len or kwargs.get("position_bias") is not None
            or kwargs.get("softcap") is not None or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = h // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * (scaling if scaling is not None else dim**-0.5)
    if attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True)):
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()
    attends = None  # bool masks: the query rows that see at least one key
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        attends = attention_mask.any(dim=-1, keepdim=True)
    elif attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    if attends is not None and not bool(attends.all()):
        probs = probs * attends  # sdpa's output for a query row that sees no key (left padding) is 0
    if dropout > 0.0:
        probs = fast_dropout(probs, dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def register(name: str = SHORT_ROW_ATTENTION, function: Any = short_row_attention) -> None:
    """An attention implementation by name in transformers' interface, taking sdpa's masks."""
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, sdpa_mask)


def transformers_model(model: torch.nn.Module) -> Any:
    """The transformers `PreTrainedModel` inside DDP / peft wrappers, or None."""
    m = getattr(model, "module", model)
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    return m if isinstance(m, PreTrainedModel) else None


def use_short_row_attention(model: torch.nn.Module, device: torch.device) -> str | None:
    """Switch a CPU model that runs "sdpa" to the short-row attention; returns the implementation to restore
    (None: nothing was switched)."""
    m = transformers_model(model)
    if device.type != "cpu" or m is None or getattr(m.config, "_attn_implementation", None) != "sdpa":
        return None
    register()
    m.set_attn_implementation(SHORT_ROW_ATTENTION)
    return "sdpa"


def restore_attention(model: torch.nn.Module, previous: str | None) -> None:
    m = transformers_model(model)
    if previous is not None and m is not None:
        m.set_attn_implementation(previous)
