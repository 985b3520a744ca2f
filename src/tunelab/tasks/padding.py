"""A batch of features padded to its longest row: what `Task.collate` makes by default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Features = dict[str, Any]


def pad_batch(features: Sequence[Features], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad `input_ids` (and `token_type_ids`) to the longest row; add the attention mask."""
    width = max(len(f["input_ids"]) for f in features)
    n = len(features)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long) if "token_type_ids" in features[0] else None
    for i, f in enumerate(features):
        k = len(f["input_ids"])
        ids[i, :k] = torch.as_tensor(f["input_ids"])
        mask[i, :k] = 1
        if types is not None:
            types[i, :k] = torch.as_tensor(f["token_type_ids"])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    if "labels" in features[0]:
        first = features[0]["labels"]
        if isinstance(first, list) and first and isinstance(first[0], int):  # token labels (multi-hot are floats)
            labels = torch.full((n, width), -100, dtype=torch.long)
            for i, f in enumerate(features):
                labels[i, : len(f["labels"])] = torch.as_tensor(f["labels"])
            batch["labels"] = labels
        else:
            batch["labels"] = torch.as_tensor(np.asarray([f["labels"] for f in features]))
    return batch
