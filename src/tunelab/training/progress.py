"""A rich progress bar on stderr: step, loss, throughput, elapsed and ETA."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    def __init__(self, total: int, enabled: bool = True) -> None:
        enabled = enabled and not os.environ.get("TUNELAB_NO_PROGRESS")
        self._p = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(file=sys.stderr), disable=not enabled, transient=False,
        )
        self._task = self._p.add_task("train", total=total, loss="-", tps="-")

    def __enter__(self) -> TrainProgress:
        self._p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._p.__exit__(*exc)

    def update(self, step: int, loss: float | None = None, tokens_per_s: float | None = None) -> None:
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if tokens_per_s is not None:
            fields["tps"] = f"{tokens_per_s:,.0f}"
        self._p.update(self._task, completed=step, **fields)
