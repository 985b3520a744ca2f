"""Compute only the first token in the last layer of BERT-style encoders when the head reads only
that token (sequence classification with [CLS] pooling).

The last layer still needs keys and values of every token, but its query, attention output and
feed-forward run for one token instead of all of them: the same logits and gradients, with about
10/12 of the last layer's matmuls skipped (MiniLM-L6: ~14 % of all training FLOPs).

Applied by replacing that one layer's `forward` (parameter names and saved weights are unchanged),
and only after a probe shows identical logits; otherwise the model is left as it was. Under gradient checkpointing
(`train.gradient_checkpointing`) the replaced forward checkpoints itself, as the class's does: transformers wraps the
class's `forward` (`GradientCheckpointingLayer`), which the replacement would otherwise step around, keeping that
layer's activations.
"""

from __future__ import annotations

import sys
import types
from functools import partial
from typing import Any

import torch

SUPPORTED = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}


def _first_token_forward(self: torch.nn.Module, hidden_states: torch.Tensor,
                         attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> torch.Tensor:
    if getattr(self, "gradient_checkpointing", False) and self.training and torch.is_grad_enabled() \
            and not _checkpointed_by_call():
        return self._gradient_checkpointing_func(partial(_first_token, self), hidden_states, attention_mask)
    return _first_token(self, hidden_states, attention_mask)


def _checkpointed_by_call() -> bool:
    """Whether transformers checkpoints a layer in its `__call__` (before 5.x moved it into the class's `forward`),
    which then covers a replaced forward too."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return "__call__" in vars(GradientCheckpointingLayer)


def _first_token(self: torch.nn.Module, hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None) -> torch.Tensor:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # (~2 s to import: only once a model runs)

    sa = self.attention.self
    b, t, _ = hidden_states.shape
    d = sa.attention_head_size
    first = hidden_states[:, :1]
    q = sa.query(first).view(b, 1, -1, d).transpose(1, 2)
    k = sa.key(hidden_states).view(b, t, -1, d).transpose(1, 2)
    v = sa.value(hidden_states).view(b, t, -1, d).transpose(1, 2)
    mask = attention_mask[..., :1, :] if attention_mask is not None and attention_mask.dim() == 4 else attention_mask
    eager = sys.modules[type(sa).__module__].eager_attention_forward
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager)
    out, _ = attend(sa, q, k, v, mask, dropout=sa.dropout.p if sa.training else 0.0, scaling=sa.scaling)
    attended = self.attention.output(out.reshape(b, 1, -1), first)
    return self.output(self.intermediate(attended), attended)


def _last_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return None
    last = layers[-1]
    needed = ("attention", "intermediate", "output")
    if not all(hasattr(last, n) for n in needed) or not hasattr(last.attention, "self"):
        return None
    return last


@torch.no_grad()
def _same_logits(model: torch.nn.Module, vocab: int) -> bool:
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(vocab, 6), (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    layer = _last_layer(model)
    patched = model(input_ids=ids, attention_mask=mask).logits
    del layer.forward  # back to the class's forward for the reference
    reference = model(input_ids=ids, attention_mask=mask).logits
    layer.forward = types.MethodType(_first_token_forward, layer)
    model.train(was_training)
    return bool(torch.allclose(patched, reference, atol=1e-4, rtol=1e-4))


def first_token_only(model: torch.nn.Module) -> bool:
    """Patch the last layer if the model is a supported first-token classifier; True if patched."""
    cfg = model.config
    if cfg.model_type not in SUPPORTED or getattr(cfg, "is_decoder", False) or cfg.chunk_size_feed_forward:
        return False
    layer = _last_layer(model)
    if layer is None:
        return False
    layer.forward = types.MethodType(_first_token_forward, layer)
    if _same_logits(model, cfg.vocab_size):
        return True
    del layer.forward
    return False
