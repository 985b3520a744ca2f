"""Progress of long work on stderr: a rich bar on a terminal; elsewhere (CI, nohup, a pipe) a plain line every few
seconds (`TUNELAB_PROGRESS_EVERY`, default 10) and the last count, so a log shows work that takes a while as it goes
(short work prints nothing).
`TUNELAB_NO_PROGRESS=1` turns both off.

One bar at a time: work nested inside another's progress (an evaluation during training) reports nothing of its own.
`quiet_transformers`: transformers' own bars and load reports kept off the terminal for a Python API call.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_EVERY_S = 10.0  # seconds between plain progress lines (TUNELAB_PROGRESS_EVERY overrides)
_active: list[Steps] = []


def _every() -> float:
    return float(os.environ.get("TUNELAB_PROGRESS_EVERY", PLAIN_EVERY_S))


def wanted() -> bool:
    return not os.environ.get("TUNELAB_NO_PROGRESS")


def table_console(file: Any = None, width: int | None = None) -> Console:
    """The console tables of user text print on (stderr by default): Rich markup off, so a label, a file name or a
    parameter holding `[/red]` or `[b]x` prints as written (with markup, a traceback or a label shown as `x`)."""
    return Console(file=file or sys.stderr, width=width, markup=False)


def speaks() -> bool:
    """Whether this process says what every process of a launch would say alike (warnings, user errors): the first
    of its machine (torchrun's LOCAL_RANK 0) — one line, not one per process, and each machine's own (a file missing
    on one of several machines is said there). Outside a launcher, always."""
    launched = "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ  # (a Slurm script may set LOCAL_RANK alone)
    return not launched or os.environ["LOCAL_RANK"] == "0"


def say(line: str) -> None:
    """One line on stderr, above the bar when one is drawn (e.g. an evaluation's scores during training); under a
    launcher, by the first process of each machine (`speaks`)."""
    if not speaks():
        return
    if _active and _active[0].bar is not None:
        _active[0].bar.console.print(line, highlight=False, markup=False)
    else:
        print(line, file=sys.stderr, flush=True)


class Steps:
    """`with Steps("eval", total, "rows") as p: ... p.advance(n)` — `fields` (e.g. loss) show beside the count."""

    def __init__(self, label: str, total: int, unit: str = "", enabled: bool = True, **fields: str) -> None:
        self.label, self.total, self.unit, self.fields = label, total, unit, dict(fields)
        self.nested = bool(_active)  # inside another's progress: quiet
        self.enabled = enabled and wanted() and not self.nested
        self.done, self.bar, self._task, self._shown = 0, None, None, -1
        self._t0 = self._last = time.perf_counter()

    def __enter__(self) -> Steps:
        if not self.nested:  # also when disabled (another process's training): the work inside stays quiet
            _active.append(self)
        if not self.enabled:
            return self
        console = Console(file=sys.stderr)
        if console.is_terminal:
            columns = [TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn()]
            columns += [TextColumn(f"{k} {{task.fields[{k}]}}") for k in self.fields]
            columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
            self.bar = Progress(*columns, console=console, transient=False)
            self.bar.__enter__()
            self._task = self.bar.add_task(self.label, total=self.total, **self.fields)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self in _active:
            _active.remove(self)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.__exit__(kind, exc, tb)
        elif kind is None and self._shown >= 0 and self.done != self._shown:  # the last count, after earlier ones
            self._plain()

    def update(self, done: int, **fields: Any) -> None:
        self.done = done
        self.fields.update({k: str(v) for k, v in fields.items()})
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self._task, completed=done, **self.fields)  # type: ignore[arg-type]
        elif time.perf_counter() - self._last >= _every():
            self._plain()

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def _plain(self) -> None:
        self._last, self._shown = time.perf_counter(), self.done
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self.fields.items() if v != "-")
        print(f"{self.label}: {self.done:,}/{self.total:,}{' ' + self.unit if self.unit else ''}{share}{extra}, "
              f"{self._last - self._t0:.0f} s", file=sys.stderr, flush=True)


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0  # API calls inside quiet_transformers now (threads of a user's server overlap them)
_loud_state: tuple[Any, ...] = ()  # what the first of them found, put back by the last


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' verbosity at error and its progress bars (with huggingface_hub's) off for the block (a Python
    API call: its weight-loading bars and load reports), as the CLI sets them for a whole command; what they were is
    put back when the last overlapping call ends (a count under a lock: calls from several threads would otherwise
    put back each other's quiet state for good)."""
    global _quiet_depth, _loud_state
    from transformers.utils import logging as hf_logging

    hub = importlib.import_module("huggingface_hub.utils.tqdm")  # (the package exports a `tqdm` class by that name)
    with _QUIET_LOCK:
        if _quiet_depth == 0:
            _loud_state = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(),
                           dict(hub.progress_bar_states))
            hf_logging.set_verbosity_error()
            with warnings.catch_warnings():  # (HF_HUB_DISABLE_PROGRESS_BARS set: a warning that it wins, as it does)
                warnings.simplefilter("ignore")
                hf_logging.disable_progress_bar()
        _quiet_depth += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                verbosity, bars, hub_states = _loud_state
                hf_logging.set_verbosity(verbosity)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
                hub.progress_bar_states.clear()
                hub.progress_bar_states.update(hub_states)
