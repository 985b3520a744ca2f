"""The two registries, `TASKS` and `METHODS`. An entry is a class with a pydantic `Config` whose `name` field is a
`Literal` of the registered name; the config schema is built from them.

Entries register themselves when their module is imported (`@TASKS.register("ner")`). A registry knows the package
that holds its entries and imports it on first use, so looking a task up never needs an import of `tunelab.tasks`
by the code that asks: the config (a lower layer) builds its schema from whatever is registered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tunelab.errors import ConfigError


class Registry:
    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package  # imported on first use: its __init__ imports every entry module
        self._entries: dict[str, type[Any]] = {}

    def register(self, name: str) -> Callable[[type[Any]], type[Any]]:
        def add(cls: type[Any]) -> type[Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = cls
            return cls

        return add

    def _entries_loaded(self) -> dict[str, type[Any]]:
        importlib.import_module(self.package)
        return self._entries

    def get(self, name: str) -> type[Any]:
        entries = self._entries_loaded()
        if name not in entries:
            raise ConfigError(f"{self.kind}: unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return entries[name]

    def names(self, where: Callable[[type[Any]], bool] | None = None) -> list[str]:
        """The registered names, sorted; `where(cls)` keeps only the entries it accepts."""
        return sorted(n for n, cls in self._entries_loaded().items() if where is None or where(cls))

    def items(self) -> list[tuple[str, type[Any]]]:
        return sorted(self._entries_loaded().items())


TASKS = Registry("task", "tunelab.tasks")
METHODS = Registry("method", "tunelab.methods")
