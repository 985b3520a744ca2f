"""The checks on a finished run's data files read again (report, export, compress, eval without --data): each file is
still there, and gives the rows the run used (RUN/data_summary.json's counts)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunelab.config.sections import DataConfig
from tunelab.errors import DataError
from tunelab.io import exists


def check_found(run_dir: Path, data: DataConfig, splits: Sequence[str], hint: str) -> None:
    """A run's file that is gone: one line naming it and the run (with the caller's `hint`), before any is read."""
    for split in splits:
        path = getattr(data, split)
        if path and not path.startswith("hf:") and not exists(Path(path)):
            raise DataError(str(Path(path)), None, f"data.{split}", f"file not found; the run {run_dir} read it: "
                            f"restore it{hint}")


def check_counts(run_dir: Path, data: DataConfig, summary: dict[str, Any], splits: dict[str, Any],
                 hint: str) -> None:
    """Each split's rows now against the count the run used (RUN/data_summary.json's `rows_used`)."""
    try:
        used, applied = dict(summary.get("rows_used") or {}), dict(summary.get("applied") or {})
    except (TypeError, ValueError):  # a damaged summary: nothing to compare
        return
    if applied.get("sampling") or applied.get("augment"):  # its training rows were resampled / augmented after this
        used.pop("train", None)
    for split, rows in splits.items():
        n = used.get(split)
        if isinstance(n, int) and n != len(rows):
            path = getattr(data, split, None) or data.train
            raise DataError(str(path), None, split, f"{len(rows):,} rows now, where the run {run_dir} used "
                            f"{n:,}: {changed_why(path)}{hint}")


def changed_why(path: str) -> str:
    """Why a run's file read again gives other rows."""
    if str(path).startswith("hf:") or Path(path).is_absolute():
        return "the data changed since"
    return (f"the file changed, or its path (relative to the current folder {Path.cwd()}) names another one; run "
            "from the folder it trained in")
