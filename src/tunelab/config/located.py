"""Where a config error's key came from, for its one line: the `--set` that gave it (`--set train.lr: ...`), or the
config file and the key's line (`run.yaml:7: train.lr: ...`)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tunelab.config.fields import override_name, within
from tunelab.errors import ConfigError


def located(exc: ConfigError, path: str | Path | None, overridden: list[str]) -> ConfigError:
    """`config: key: problem` naming where its key came from (`configured`); an error of another shape as it is."""
    field = re.match(r"config: (\u3000*[\w.\[\]-]+(?:[^\x00-\x7f][^:]*?)?): ", str(exc))  # (`： 1`, `　seed`)
    if field is None:
        return exc
    if any(within(field[1], k) or within(k, field[1]) for k in overridden):
        return ConfigError(f"{override_name(field[1])}: {str(exc)[field.end():]}")
    if path is None:
        return exc
    known = key_lines(Path(path))
    line = known.get(_longest_known(field[1], known))
    where = f"{path}:{line}" if line else str(path)
    return ConfigError(f"{where}: {str(exc).removeprefix('config: ')}")


def key_lines(path: Path) -> dict[str, int]:
    """The line of each key of a config file by its dotted path (`train.lr` -> 12)."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = f"{prefix}{key.value}"
                lines[name] = key.start_mark.line + 1
                walk(value, name + ".")

    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)  # noqa: S506
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return lines
    if root is not None:
        walk(root, "")
    return lines


def _longest_known(field: str, known: dict[str, int]) -> str:
    """The longest dotted prefix of `field` that the file names (`train.lr.x` -> `train.lr`)."""
    parts = field.split(".")
    return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known), field)
