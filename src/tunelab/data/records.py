"""A parsed row that remembers its file and line (`Record`), and a file's rows (`Table`): what every reader returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)  # one per row: no per-instance __dict__
class Record:
    source: str
    line: int | None  # 1-based line of the row (row number for Parquet / JSON arrays; None for SQuAD JSON)
    data: dict[str, Any]


@dataclass
class Table:
    source: str
    records: list[Record]
    columns: list[str] | None = None  # tabular formats have a fixed header

    def __len__(self) -> int:
        return len(self.records)
