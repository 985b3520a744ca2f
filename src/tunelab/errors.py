"""User-facing errors. Each one prints as a single line and exits with code 2 from the CLI."""

from __future__ import annotations

import importlib
from types import ModuleType


class TunelabError(Exception):
    """A problem with the user's input (config, data, model name) — never a bug in tunelab."""


class ConfigError(TunelabError):
    """Invalid configuration: unknown key, wrong type, bad YAML, unknown model alias."""


class DataError(TunelabError):
    """Invalid data; the message reads `file:line: field: problem`."""

    def __init__(self, source: str, line: int | None, field: str | None, problem: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
        self.source, self.line, self.field, self.problem = source, line, field, problem


def require(module: str, missing: str) -> ModuleType:
    """`import module` for an optional extra, or a one-line TunelabError `missing` (what needs it, how to install)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TunelabError(missing) from None
