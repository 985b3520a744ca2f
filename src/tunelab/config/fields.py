"""Dotted field paths of a nested config (`train.lr`) and YAML read with each key once, with nothing heavier than
PyYAML: the web UI uses them too, and it must not import torch (tunelab.config.run does, through the registries)."""

from __future__ import annotations

from typing import Any

import yaml

from tunelab.errors import ConfigError, option


def twice_said(key: str) -> str:
    """What a config key given twice is told: only its last value would be read."""
    return f"duplicate key {key!r}: only its last value would be read; give each key once"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping (safe_load keeps the last silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error (DuplicateKeyError)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if not isinstance(key, str):
                continue  # (an unhashable key is the base loader's one-line error)
            if key in seen:
                raise DuplicateKeyError(None, None, twice_said(key), key_node.start_mark)  # YAML or JSON alike
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_value(text: str) -> Any:
    """The value a YAML (or JSON) text spells, as yaml.safe_load reads it; a key twice in one mapping raises
    DuplicateKeyError (a yaml.YAMLError)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader


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


def override_name(key: str) -> str:
    """A dotted-key override as the caller gave it, for an error's prefix: `--set train.lr` on the command line,
    `config: train.lr` in the Python API."""
    return option(f"--set {key}", f"config: {key}")


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
            raise ConfigError(f"{override_name('.'.join(path))}: {'.'.join(path[: i + 1])} is not a section")
        node[part] = child
        node = child
    node[path[-1]] = value
