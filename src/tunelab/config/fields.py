"""Dotted field paths of a nested config (`train.lr`), with nothing heavier than the standard library: the web UI
uses them too, and it must not import torch (tunelab.config.run does, through the registries)."""

from __future__ import annotations

from typing import Any

from tunelab.errors import ConfigError, option


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


def apply_override(tree: dict, path: list[str], value: Any) -> None:
    """tree[a][b][c] = value for the dotted path [a, b, c], sections made as needed (`--set`, the web UI's form);
    a value where a section would go is one line (ConfigError), as is `task: sft` made `{name: sft}` first."""
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if isinstance(child, str) and ".".join(path[: i + 1]) in ("task", "method"):
            child = {"name": child}  # `method: lora` then `--set method.r=8`
        if child is None:
            child = {}
        if not isinstance(child, dict):
            key = ".".join(path)
            raise ConfigError(f"{option(f'--set {key}', f'config: {key}')}: {'.'.join(path[: i + 1])} is not a section")
        node[part] = child
        node = child
    node[path[-1]] = value
