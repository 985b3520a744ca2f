"""Pruning a tuned model: attention heads by importance (structured, the matrices physically shrunk) and weights by
magnitude (unstructured, zeros in dense matrices).

Heads (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): a gate ξ_h = 1 multiplies each head's
output before the attention's output projection; the importance of a head is |∂L/∂ξ_h| summed over training
batches, normalised per layer (l2), and the globally least important fraction goes, at least one head staying in
every layer. transformers 5 dropped `prune_heads` and `head_mask`; the shrinking here is what `prune_heads` did:
`prune_linear_layer` on the query / key / value rows and the output projection's columns of the removed heads. A
saved model records them (`tunelab.json` `pruned_heads`, the full model's numbering: a model pruned twice records
both cuts), and `apply_pruned_heads` redoes the cut on load, before the smaller weights are read. BERT-family
encoders (BERT, RoBERTa, MiniLM, XLM-R, ELECTRA) are supported.

Magnitude: `torch.nn.utils.prune.global_unstructured` (L1) over every linear layer of the encoder; the mask stays
during the recovery fine-tune and is made permanent after it. Dense kernels do the same work on zeros, so this saves
only the size of a compressed file, not time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.utils.prune
from transformers.pytorch_utils import prune_linear_layer

from tunelab.errors import TunelabError, flag
from tunelab.models.student import layer_list


def attentions(model: torch.nn.Module) -> list[Any]:
    """Each layer's attention block (`.self` with query/key/value, `.output.dense`)."""
    out = []
    for layer in layer_list(model):
        att = getattr(layer, "attention", None)
        sa = getattr(att, "self", None)
        if sa is None or not all(hasattr(sa, n) for n in ("query", "key", "value")) or not hasattr(att.output,
                                                                                                   "dense"):
            raise TunelabError(f"compress {flag('prune', 'heads')}: {type(model).__name__} is not a BERT-family "
                               "encoder (attention.self.query/key/value); head pruning supports BERT, RoBERTa, "
                               "MiniLM, XLM-R, ELECTRA")
        out.append(att)
    return out


def head_counts(model: torch.nn.Module) -> list[int]:
    return [a.self.query.out_features // a.self.attention_head_size for a in attentions(model)]


def head_importance(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                    loss_fn: Any = None) -> torch.Tensor:
    """[layers, heads] importance: |∂loss/∂gate| summed over `batches`, each layer's row l2-normalised."""
    atts = attentions(model)
    counts = head_counts(model)
    gates = [torch.ones(n, requires_grad=True) for n in counts]
    hooks = []
    for att, gate in zip(atts, gates, strict=True):
        size = att.self.attention_head_size

        def scale(_: torch.nn.Module, args: tuple[torch.Tensor, ...], g: torch.Tensor = gate, d: int = size) -> Any:
            return (args[0] * g.to(args[0].dtype).repeat_interleave(d),)

        hooks.append(att.output.dense.register_forward_pre_hook(scale))
    was_training = model.training
    model.eval()  # no dropout: the score of the model as it predicts
    score = torch.zeros(len(counts), max(counts))
    try:
        for batch in batches:
            loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
            grads = torch.autograd.grad(loss, gates)
            for i, g in enumerate(grads):
                score[i, : len(g)] += g.abs()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    norms = score.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return score / norms


def heads_to_cut(fraction: float, counts: list[int]) -> int:
    """How many of the heads (`counts`: each layer's) `heads:fraction` cuts: the nearest whole number (a half up) of
    fraction × all, at most all but one in each layer; a one-line error where that is none."""
    total = sum(counts)
    n = min(math.floor(fraction * total + 0.5), total - len(counts))
    if n < 1:
        if total == len(counts):
            raise TunelabError(f"compress {flag('prune', f'heads:{fraction:g}')}: every layer of the model has one "
                               "head left; no head can be cut")
        least = math.ceil(0.5 / total * 1e4) / 1e4  # (rounded up: heads:least cuts one)
        raise TunelabError(f"compress {flag('prune', f'heads:{fraction:g}')}: would cut no head ({fraction:g} × the "
                           f"model's {total} heads rounds to 0); heads:{least:g} or more cuts one")
    return n


def choose_heads(importance: torch.Tensor, counts: list[int], fraction: float) -> dict[int, list[int]]:
    """The globally least important `fraction` of all heads (`heads_to_cut`), keeping at least one per layer:
    {layer: [heads]}."""
    n = heads_to_cut(fraction, counts)
    order = sorted((float(importance[i, h]), i, h) for i, c in enumerate(counts) for h in range(c))
    left = list(counts)
    chosen: dict[int, list[int]] = {}
    for _, i, h in order:
        if n == 0:
            break
        if left[i] > 1:
            chosen.setdefault(i, []).append(h)
            left[i] -= 1
            n -= 1
    return {i: sorted(h) for i, h in sorted(chosen.items())}


def apply_pruned_heads(model: torch.nn.Module, pruned: dict[int, list[int]]) -> torch.nn.Module:
    """Remove heads {layer: [head indices]} from the model's matrices (in place)."""
    atts = attentions(model)
    for layer, heads in pruned.items():
        att = atts[int(layer)]
        sa, d = att.self, att.self.attention_head_size
        total = sa.query.out_features // d
        keep = torch.tensor([h * d + j for h in range(total) if h not in set(heads) for j in range(d)])
        sa.query = prune_linear_layer(sa.query, keep, dim=0)
        sa.key = prune_linear_layer(sa.key, keep, dim=0)
        sa.value = prune_linear_layer(sa.value, keep, dim=0)
        att.output.dense = prune_linear_layer(att.output.dense, keep, dim=1)
        sa.num_attention_heads = total - len(heads)
        sa.all_head_size = sa.num_attention_heads * d
    return model


def original_heads(cut: dict[str, list[int]], heads: dict[int, list[int]], total: int) -> dict[str, list[int]]:
    """`heads` {layer: [index]} of a model whose heads `cut` {layer: [head]} are gone already (a head-pruned model
    pruned again: its indices count the heads left), in the numbering of the full model (`total` heads a layer)."""
    out = {}
    for layer, indices in heads.items():
        gone = set(cut.get(str(layer), []))
        left = [h for h in range(total) if h not in gone]
        out[str(layer)] = sorted(left[i] for i in indices)
    return out


def merge_heads(a: dict[str, list[int]], b: dict[str, list[int]]) -> dict[str, list[int]]:
    """Two cuts (the full model's numbering) as one: what `tunelab.json` records of a model pruned twice."""
    return {k: sorted({*a.get(k, []), *b.get(k, [])}) for k in sorted({*a, *b}, key=int)}


def encoder_linears(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """Every linear layer of the transformer layers (the task head and embeddings excluded)."""
    return [(m, "weight") for m in layer_list(model).modules() if isinstance(m, torch.nn.Linear)]


def magnitude_prune(model: torch.nn.Module, fraction: float) -> list[tuple[torch.nn.Module, str]]:
    """Zero the globally smallest `fraction` of the encoder's linear weights; the masks stay until `make_permanent`."""
    params = encoder_linears(model)
    torch.nn.utils.prune.global_unstructured(params, pruning_method=torch.nn.utils.prune.L1Unstructured,
                                             amount=fraction)
    return params


def make_permanent(params: list[tuple[torch.nn.Module, str]]) -> None:
    for module, name in params:
        torch.nn.utils.prune.remove(module, name)


def sparsity(model: torch.nn.Module) -> float:
    """Share of zeros in the encoder's linear weights."""
    weights = [m.weight for m, _ in encoder_linears(model)]
    return float(sum(int((w == 0).sum()) for w in weights) / max(sum(w.numel() for w in weights), 1))


def parse_prune(spec: str) -> tuple[str, float]:
    """`heads:0.3` / `magnitude:0.5` → (kind, fraction); a one-line error otherwise."""
    kind, _, value = spec.partition(":")
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if kind not in ("heads", "magnitude") or not 0 < fraction < 1:
        raise TunelabError(f"compress {flag('prune')}: {spec!r}: expected heads:<fraction> or magnitude:<fraction>, a "
                           "fraction between 0 and 1 (e.g. heads:0.3)")
    return kind, fraction
