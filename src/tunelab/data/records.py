"""A parsed row that remembers its file and line (`Record`), and a file's rows (`Table`): what every reader returns."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

# Rows read to be trained on (the default), or read again once trained / copied through (a run's own splits for its
# report and exports, `tunelab data augment`): only the first refuse a field the config would leave unread
# (tasks.model_rows.check_pair_read) — a trained run cannot change its config any more, and a copy loses nothing.
FRESH_READ: ContextVar[bool] = ContextVar("fresh_read", default=True)


@contextmanager
def _off(flag: ContextVar[bool]) -> Iterator[None]:
    token = flag.set(False)
    try:
        yield
    finally:
        flag.reset(token)


def read_again() -> AbstractContextManager[None]:
    return _off(FRESH_READ)


# Whether what reading changed in a file's rows (`Task.read_counts`: NER's words split at an entity's edge) is said on
# stderr as well as counted: not in a study's sub-runs (cv's folds, curve's points), whose files the study wrote from
# rows its own first read said it of (`changes_unsaid`).
SAY_CHANGES: ContextVar[bool] = ContextVar("say_changes", default=True)


def changes_unsaid() -> AbstractContextManager[None]:
    return _off(SAY_CHANGES)


class ItemLine(int):
    """The line a JSON array's item starts on, printed with the item's place in the array, from 1: `1 (row 37)`, so
    an error names `train.json:1 (row 37): label: ...` — an array written on one line (`json.dump` without `indent`)
    has every item on line 1, where a line alone names none of them. An int everywhere else (compared, sorted,
    written to JSON as the line: `removed.jsonl`'s `line`, its `array_row` beside it)."""

    row: int

    def __new__(cls, line: int, row: int) -> ItemLine:
        self = super().__new__(cls, line)
        self.row = row
        return self

    def __getnewargs__(self) -> tuple[int, int]:  # type: ignore[override] - (pickled with its row: data/row_spill.py)
        return int(self), self.row

    def __str__(self) -> str:
        return f"{int(self)} (row {self.row})"


@dataclass(frozen=True, slots=True)  # one per row: no per-instance __dict__
class Record:
    source: str
    line: int | None  # 1-based line of the row (a JSON array's item: the line it starts on, an `ItemLine` naming its
    # row too; row number for Parquet / Arrow; None for SQuAD JSON)
    data: dict[str, Any]
    first_item_line: int | None = None  # a CoNLL sentence: its item i (token, tag) is on line first_item_line + i

    def item_line(self, i: int) -> int | None:
        """The line of a row's item `i` (0-based) where it has one of its own (CoNLL), else the row's."""
        return self.line if self.first_item_line is None else self.first_item_line + i


@dataclass
class Table:
    source: str
    records: list[Record]
    columns: list[str] | None = None  # tabular formats have a fixed header

    def __len__(self) -> int:
        return len(self.records)
