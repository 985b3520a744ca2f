"""Metric functions, one module per family (scikit-learn / seqeval underneath; QA follows the official
SQuAD and CMRC 2018 evaluation scripts, which have no library form here)."""

from __future__ import annotations

from typing import Any


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of a split (nested tables such as per_class, and booleans, are left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
