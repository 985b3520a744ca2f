"""Running a model over features for scores: batched by length, under the autocast of the precision in use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from tunelab.models.precision import autocast_dtype
from tunelab.progress import Steps

Collate = Callable[[Sequence[dict[str, Any]]], dict[str, torch.Tensor]]

TARGETS = ("labels", "start_positions", "end_positions")  # training targets, not model inputs


@torch.inference_mode()
def forward_logits(
    model: torch.nn.Module, features: Sequence[dict[str, Any]], collate: Collate, batch_size: int,
    precision: str = "auto",
) -> np.ndarray:
    """Logits for every feature, in input order; batches are formed by length (little padding)."""
    model.eval()
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, precision, model)
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    out: list[np.ndarray | None] = [None] * len(features)
    with Steps("score", len(features), "rows") as progress:
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            batch = {k: v.to(device) for k, v in collate([features[i] for i in chunk]).items() if k not in TARGETS}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                output = model(**batch)  # extractive QA: start and end logits per token, stacked as [..., 2]
                logits = output.logits if "logits" in output else torch.stack([output.start_logits,
                                                                                output.end_logits], -1)
                logits = logits.float().cpu().numpy()
            for j, i in enumerate(chunk):  # per-token logits: cut each row back to its own length
                out[i] = logits[j][: len(features[i]["input_ids"])] if logits.ndim == 3 else logits[j]
            progress.advance(len(chunk))
    if not out:
        return np.zeros((0,))
    return np.stack(out) if len({o.shape for o in out}) == 1 else np.asarray(out, dtype=object)
