"""Training losses for imbalanced and soft-labelled data: class weights, focal loss, label smoothing.

    single-label:  -Σ_c w_c · t_c · (1 - p_c)^γ · log p_c      t = hard one-hot or a soft distribution,
                                                               smoothed: t·(1 - s) + s/k
    multi-label:   -[w_c · t · (1 - p)^γ · log p + (1 - t) · p^γ · log(1 - p)]   (w_c = BCE pos_weight)

With γ = 0 these are exactly torch's `cross_entropy(weight, label_smoothing)` (hard targets: the mean
is weighted by the targets' class weights; soft targets: a plain mean over rows) and
`binary_cross_entropy_with_logits(pos_weight)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.errors import ConfigError


def focal_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 0.0,
               weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Single-label loss; `target` holds class ids (n,) or distributions (n, k). Per-token logits
    (n, seq, k) with ids (n, seq) are scored on the positions whose id is not -100 (NER), as are rows of ids
    (distillation's unlabelled rows)."""
    k = logits.shape[-1]
    if logits.dim() == 3:
        logits, target = logits.reshape(-1, k), target.reshape(-1)
    if not target.is_floating_point():
        keep = target != -100
        logits, target = logits[keep], target[keep]
    logp = F.log_softmax(logits.float(), dim=-1)
    hard = not target.is_floating_point()
    t = F.one_hot(target, k).float() if hard else target.float()
    if label_smoothing:
        t = t * (1 - label_smoothing) + label_smoothing / k
    w = weight.float() if weight is not None else torch.ones(k, device=logits.device)
    term = -t * logp * w
    if gamma:
        term = term * (1 - logp.exp()).pow(gamma)
    per_row = term.sum(-1)
    if hard and weight is not None:
        return per_row.sum() / w[target].sum()
    return per_row.mean()


def binary_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 0.0,
                      pos_weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Multi-label loss; `target` (n, k) holds 0/1 or probabilities."""
    x = logits.float()
    t = target.float()
    if label_smoothing:
        t = t * (1 - label_smoothing) + label_smoothing / 2
    log_p, log_q = F.logsigmoid(x), F.logsigmoid(-x)
    pos, neg = t * log_p, (1 - t) * log_q
    if pos_weight is not None:
        pos = pos * pos_weight.float()
    if gamma:
        p = torch.sigmoid(x)
        pos, neg = pos * (1 - p).pow(gamma), neg * p.pow(gamma)
    return -(pos + neg).mean()


def class_weights(spec: str | dict[str, float] | None, labels: list[str], counts: dict[str, float],
                  rows: int, multi_label: bool, aliases: dict[str, list[str]] | None = None) -> list[float] | None:
    """`train.class_weights` as one weight per label (in `labels` order).

    auto, single-label: n / (classes · count_c), sklearn's "balanced" (classes absent from the data: 1);
    auto, multi-label: negatives / positives per label, the BCE pos_weight; a mapping: its weights, 1
    for labels it does not list. `aliases` lets a mapping name a group (NER: `PER` → B-PER and I-PER)."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        groups = {**(aliases or {}), **{name: [name] for name in labels}}
        unknown = [name for name in spec if name not in groups]
        if unknown:
            raise ConfigError(f"config: train.class_weights: unknown label {unknown[0]!r} "
                              f"(labels: {', '.join(groups)})")
        by_label = {label: float(w) for name, w in spec.items() for label in groups[name]}
        return [by_label.get(name, 1.0) for name in labels]
    if multi_label:
        return [(rows - counts[n]) / counts[n] if counts.get(n) and rows > counts[n] else 1.0 for n in labels]
    present = [n for n in labels if counts.get(n)]
    total = sum(counts[n] for n in present)
    return [total / (len(present) * counts[n]) if counts.get(n) else 1.0 for n in labels]


@dataclass(frozen=True)
class LossSpec:
    multi_label: bool
    weights: list[float] | None = None
    gamma: float = 0.0
    label_smoothing: float = 0.0

    def kind(self) -> str:
        base = "binary_cross_entropy" if self.multi_label else "cross_entropy"
        return f"focal_{base}" if self.gamma else base


def make_loss_fn(spec: LossSpec) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
    """`f(model, batch)` for engine.train: the model's logits scored with `spec` (labels not passed in)."""
    cache: dict[Any, torch.Tensor] = {}

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        target = batch["labels"]
        w = None
        if spec.weights is not None:
            if logits.device not in cache:
                cache[logits.device] = torch.tensor(spec.weights, dtype=torch.float32, device=logits.device)
            w = cache[logits.device]
        if spec.multi_label:
            return binary_focal_loss(logits, target, gamma=spec.gamma, pos_weight=w,
                                     label_smoothing=spec.label_smoothing)
        return focal_loss(logits, target, gamma=spec.gamma, weight=w, label_smoothing=spec.label_smoothing)

    return loss_fn


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
            mask: torch.Tensor | None = None, divergence: str = "kl") -> torch.Tensor:
    """Hinton et al.'s soft-target loss: KL(teacher ‖ student) of the softmaxes at `temperature` over the last dim
    (`divergence="jsd"`: the Jensen-Shannon divergence of the two, symmetric and bounded), × T² (so its gradients
    keep their scale as T changes), averaged over the rows `mask` keeps (all by default)."""
    t = temperature
    log_s = torch.log_softmax(student.float() / t, -1)
    log_t = torch.log_softmax(teacher.float() / t, -1)
    if divergence == "jsd":
        log_m = torch.logsumexp(torch.stack([log_s, log_t]), 0) - math.log(2)
        div = 0.5 * (log_t.exp() * (log_t - log_m)).sum(-1) + 0.5 * (log_s.exp() * (log_s - log_m)).sum(-1)
    else:
        div = (log_t.exp() * (log_t - log_s)).sum(-1)
    if mask is not None:
        div = div[mask]
    return div.mean() * t * t if div.numel() else student.sum() * 0


def soft_binary_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """soft_kl for independent sigmoid outputs (multi-label): each label's two-way KL, averaged, × T²."""
    s = student.float() / temperature
    p = torch.sigmoid(teacher.float() / temperature)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(s, p, reduction="mean")
    entropy = torch.nn.functional.binary_cross_entropy(p, p, reduction="mean")
    return (bce - entropy) * temperature * temperature
