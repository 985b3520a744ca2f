"""Dotted field paths of a nested config (`train.lr`), with nothing heavier than the standard library: the web UI
uses them too, and it must not import torch (tunelab.config.run does, through the registries)."""

from __future__ import annotations

from typing import Any


def within(inner: str, outer: str) -> bool:
    """Whether dotted field `inner` is `outer` or inside it (`train.lr` is within `train`)."""
    return inner == outer or inner.startswith(outer + ".")


def flat_fields(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as its leaves by dotted path: {"train": {"lr": 5e-5}} → {"train.lr": 5e-5} (an empty section
    has no leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
