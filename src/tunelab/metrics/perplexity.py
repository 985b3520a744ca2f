"""Language-model metrics from per-example [summed token NLL, token count] rows (sft, pretrain)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def perplexity_metrics(sums: np.ndarray) -> dict[str, Any]:
    """Mean token cross-entropy over all counted tokens (`loss`), `perplexity` = exp(loss), `tokens`."""
    total, count = float(np.sum(sums[:, 0])), int(np.sum(sums[:, 1]))
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}
