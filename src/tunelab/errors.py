"""User-facing errors. Each one prints as a single line and exits with code 2 from the CLI."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Any, Literal

# Who is calling: the command line or the Python API. A message that names an option spells it as that caller does
# (`option`): `pass --overwrite` to a shell, `pass overwrite=True` to a notebook. None: neither said (the CLI's words).
_SURFACE: ContextVar[Literal["cli", "api"] | None] = ContextVar("tunelab_surface", default=None)


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


class ArgumentError(TunelabError):
    """A Python API call given an argument of the wrong type or value (`predict(None)`, `batch_size=0`,
    `tunelab.load(5)`): one line naming the argument and what it takes."""


class DataRefused(TunelabError):
    """`tunelab.check_data` found rows `tunelab train` refuses: the message is train's line for the first (the line
    `tunelab data check` exits 2 with); `report` is the whole report, as `tunelab data check --json` prints it."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


class ParityError(TunelabError):
    """An export, merge or compressed model that disagrees with the original beyond its check (the parity gate, a
    merge's tolerance): nothing written; exit code 1 on the command line (the input was fine)."""


class BrokenFileError(TunelabError, ValueError):
    """A file tunelab reads (tunelab.json, a run's JSON) that does not parse: one line naming it. Still a
    ValueError, so code that skips unreadable files (a damaged checkpoint) keeps doing so."""


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C in a study (tune, cv, curve): `kept` says what of it is kept (its finished trials, folds or points),
    for the one line the command prints; running the same command again continues it."""

    def __init__(self, kept: str) -> None:
        super().__init__(kept)
        self.kept = kept


class UnwritableError(TunelabError, OSError):
    """A file that cannot be written where the user asked (a directory, under a file, no permission, no space): one
    line naming it. Still an OSError, so code that falls back when a write fails (the feature cache) keeps doing so."""


@contextmanager
def surface(name: Literal["cli", "api"]) -> Iterator[None]:
    """Within it, `option` spells options as `name` does ("cli": a command's flags; "api": the Python API's
    arguments). The outermost caller decides: a CLI command that calls the API keeps the CLI's spelling."""
    token = _SURFACE.set(name) if _SURFACE.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _SURFACE.reset(token)


def option(cli: str, api: str) -> str:
    """An option as the caller names it in a message: `cli` on the command line (`--overwrite`, `--set train.lr`),
    `api` under the Python API (`overwrite=True`, `config: train.lr`). The message around it is the same."""
    return api if _SURFACE.get() == "api" else cli


def flag(name: str, value: Any = None) -> str:
    """An option as the caller spells it in a message: `--max-drop` on the command line, `max_drop` under the API;
    with a value, `--max-drop 0.5` / `max_drop=0.5` (a str quoted under the API: `format='onnx'`); True: a switch
    (`--force` / `force=True`)."""
    cli = "--" + name.replace("_", "-")
    if value is None or value is True:
        return option(cli, name if value is None else f"{name}=True")
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return option(f"{cli} {text}", f"{name}={value!r}" if isinstance(value, str) else f"{name}={text}")


def overwrite_option() -> str:
    """`--overwrite` as the caller spells it: the CLI's flag, the API's `overwrite=True`."""
    return option("--overwrite", "overwrite=True")


def require(module: str, missing: str) -> ModuleType:
    """`import module` for an optional extra, or a one-line TunelabError `missing` (what needs it, how to install)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TunelabError(missing) from None


def first_line(error: BaseException, limit: int = 300) -> str:
    """A library exception's message cut to its first non-empty line (what a one-line error quotes of it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]


def os_error_line(error: OSError) -> str:
    """An OSError on a path the user named (a directory where a file is to be written, a parent that is a file, no
    permission, a model file missing) as `PATH: reason`."""
    if error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return first_line(error)
