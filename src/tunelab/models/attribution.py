"""Token attributions by integrated gradients (Sundararajan et al. 2017) over the input embeddings.

For input embeddings x and a baseline x' (the pad token's embedding at every non-special position;
special tokens keep their own embedding, so their attribution is 0), the attribution of token i is
(x_i - x'_i) · mean over alpha of dF/dx_i at x' + alpha (x - x'), summed over the hidden dimension, where
F is the target class logit and alpha runs over `steps` midpoints of [0, 1]. The attributions sum to about
F(x) - F(x') (completeness); `delta` reports how far off the Riemann sum is.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch


class Encodes(Protocol):
    """What attributions ask of a task: its encoding of examples (tunelab.tasks.base.Task; models sit below tasks)."""

    def encode(self, examples: Sequence[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]: ...


@dataclass
class Attribution:
    tokens: list[str]
    scores: np.ndarray  # one per token
    target: int
    delta: float  # |sum(scores) - (F(x) - F(baseline))|
    special: list[bool] = field(default_factory=list)  # per token: [CLS], [SEP], <s>, padding ...

    def words(self) -> list[tuple[str, float]]:
        """(word, summed score) for what a reader sees: subword pieces joined (WordPiece `##`, SentencePiece `▁`,
        byte-level `Ġ` markers), special tokens left out."""
        special = self.special or [False] * len(self.tokens)
        plain = [t for t, sp in zip(self.tokens, special, strict=True) if not sp]
        marked = any(t.startswith(("▁", "Ġ")) for t in plain)
        words: list[tuple[str, float]] = []
        for tok, score, sp in zip(self.tokens, self.scores, special, strict=True):
            if sp:
                continue
            if tok.startswith("##") and words:
                words[-1] = (words[-1][0] + tok[2:], words[-1][1] + float(score))
            elif marked and not tok.startswith(("▁", "Ġ")) and words:
                words[-1] = (words[-1][0] + tok, words[-1][1] + float(score))
            else:
                words.append((tok.lstrip("▁Ġ") or tok, float(score)))
        return words


def integrated_gradients(model: torch.nn.Module, input_ids: Sequence[int], target: int, *, steps: int = 20,
                         token_type_ids: Sequence[int] | None = None, baseline_id: int = 0,
                         special_mask: Sequence[bool] | None = None) -> tuple[np.ndarray, float]:
    """Attributions (one per token) of the `target` logit of a sequence classifier, and the completeness gap."""
    model.eval()
    device = next(model.parameters()).device
    embed = model.get_input_embeddings()
    ids = torch.as_tensor([list(input_ids)], device=device)
    keep = torch.as_tensor([list(special_mask or [False] * ids.shape[1])], device=device)
    kw: dict[str, torch.Tensor] = {}
    if token_type_ids is not None:
        kw["token_type_ids"] = torch.as_tensor([list(token_type_ids)], device=device).expand(steps, -1)
    with torch.no_grad():
        x = embed(ids).float()
        base = torch.where(keep[..., None], x, embed(torch.full_like(ids, baseline_id)).float())
    alphas = ((torch.arange(steps, device=device, dtype=torch.float32) + 0.5) / steps)[:, None, None]
    path = (base + alphas * (x - base)).detach().requires_grad_(True)
    dtype = embed.weight.dtype
    mask = torch.ones(steps, ids.shape[1], dtype=torch.long, device=device)
    logits = model(inputs_embeds=path.to(dtype), attention_mask=mask, **kw).logits[:, target].float()
    (grads,) = torch.autograd.grad(logits.sum(), path)
    scores = ((x - base)[0] * grads.mean(0)).sum(-1)
    with torch.no_grad():
        ends = model(inputs_embeds=torch.cat([base, x]).to(dtype), attention_mask=mask[:2],
                     **{k: v[:2] for k, v in kw.items()}).logits[:, target].float()
    delta = abs(float(scores.sum()) - float(ends[1] - ends[0]))
    return scores.detach().cpu().numpy(), delta


def explain(task: Encodes, model: torch.nn.Module, tokenizer: Any, examples: Sequence[dict[str, Any]],
            targets: Sequence[int], steps: int = 20, budget_s: float | None = None) -> list[Attribution]:
    """Attributions for each example towards its target class (the first window of a long text), in order; with
    `budget_s`, no new example is started once that many seconds have passed (at least one is done), so fewer may
    come back: each is `steps` forward and backward passes, which a large model on a CPU pays by the minute."""
    feats = task.encode([{k: v for k, v in ex.items() if k != "label"} for ex in examples], tokenizer)
    first: dict[int, dict[str, Any]] = {}
    for j, f in enumerate(feats):
        first.setdefault(f.get("example_index", j), f)
    special = set(tokenizer.all_special_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[Attribution] = []
    start = time.perf_counter()
    for i, target in enumerate(targets):
        if out and budget_s is not None and time.perf_counter() - start > budget_s:
            break
        f = first[i]
        ids = list(f["input_ids"])
        is_special = [t in special for t in ids]
        scores, delta = integrated_gradients(model, ids, int(target), steps=steps,
                                             token_type_ids=f.get("token_type_ids"), baseline_id=pad,
                                             special_mask=is_special)
        out.append(Attribution(tokenizer.convert_ids_to_tokens(ids), scores, int(target), delta, is_special))
    return out


def render_tokens(attr: Attribution, limit: int = 200) -> str:
    """Words as HTML spans coloured by attribution (a word's pieces summed; special tokens left out): green pushes
    towards the target class, red away from it (scaled by the largest absolute value); the score is in the title."""
    words = attr.words()
    peak = max((abs(s) for _, s in words), default=0.0) or 1.0
    parts = []
    for tok, s in words[:limit]:
        a = min(1.0, abs(float(s)) / peak) * 0.85
        rgb = "30,160,60" if s >= 0 else "220,50,50"
        parts.append(f'<span class="tok" style="background:rgba({rgb},{a:.2f})" title="{float(s):+.4f}">'
                     f"{html.escape(tok)}</span>")
    more = f" … (+{len(words) - limit} words)" if len(words) > limit else ""
    return " ".join(parts) + html.escape(more)
