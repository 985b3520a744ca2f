"""The two registries, `TASKS` and `METHODS`. An entry is a class with a pydantic `Config` whose
`name` field is a `Literal` of the registered name; the config schema is built from them."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str):
        def add(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = cls
            return cls

        return add

    def get(self, name: str) -> type[T]:
        from tunelab.errors import ConfigError

        if name not in self._entries:
            raise ConfigError(f"{self.kind}: unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, type[T]]]:
        return sorted(self._entries.items())
