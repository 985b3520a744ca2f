"""Python objects as rows: what the Python API (`Model.predict`, `Model.evaluate`) and `tunelab serve` are given —
texts, mappings, lists of them, files, data frames — as one `Table`, or one line (a TunelabError) naming what is
wrong. No data-frame library is imported: a frame is recognised by what it does (`to_dict("records")`)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tunelab.data.readers import Table, read_rows, read_table, rows_table
from tunelab.errors import ArgumentError, DataError, TunelabError

SOURCE = "<input>"  # how errors name an in-memory row: `<input>:N`
_EXPECTED = ("a text (str), a row (a mapping of fields), a list of texts or rows, a file (a Path) or a pandas "
             "DataFrame")


def check_count(name: str, value: Any) -> None:
    """`batch_size`, `limit`: a whole number of at least 1, as the CLI's `--batch-size` / `--limit` (ArgumentError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ArgumentError(f"{name}: expected a whole number of at least 1, got {value!r}")


def check_flag(name: str, value: Any) -> None:
    """`overwrite` and the like: True or False (ArgumentError), as a CLI flag is."""
    if not isinstance(value, bool):
        raise ArgumentError(f"{name}: expected True or False, got {value!r}")


def check_number(name: str, value: Any, least: float = 0.0, most: float | None = None) -> None:
    """`max_drop`, `min_agreement` and the like: a real number from `least` (to `most`), as the CLI's `min=` /
    `max=` option ranges (ArgumentError)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and least <= value
    if not ok or (most is not None and value > most):
        span = f"from {least:g} to {most:g}" if most is not None else f"of at least {least:g}"
        raise ArgumentError(f"{name}: expected a number {span}, got {value!r}")


def check_path(name: str, value: Any, what: str, optional: bool = False) -> Path | None:
    """A path argument (`what` it names, e.g. "a run directory") as a Path: a str or Path, not empty; None where
    `optional` (ArgumentError)."""
    if value is None and optional:
        return None
    if not isinstance(value, str | Path):
        raise ArgumentError(f"{name}: expected {what} (a str or Path), got {type(value).__name__}")
    if not str(value).strip():
        raise ArgumentError(f"{name}: empty; expected {what}")
    return Path(value)


def model_table(inputs: Any, text_field: str, *, files: bool, name: str = "inputs", conll_txt: bool = False) -> Table:
    """`inputs` as rows: a Table as it is; a Path a file (read as `tunelab predict --input` reads it); a str a file
    when `files` (evaluate), else one text (`{text_field: str}`, predict); a mapping one row; a data frame its
    records; any other iterable its items, each a text or a row. `conll_txt`: the model's task reads a `.txt` of
    CoNLL lines as CoNLL (`Task.txt_as_conll`). Anything else, and an item of another type, is one
    line naming it (`name`: the argument, as the caller spells it); no rows at all is `<input>: empty input: no
    rows`."""
    if isinstance(inputs, Table):
        return inputs
    if isinstance(inputs, Path) or (files and isinstance(inputs, str)):
        return read_table(inputs, conll_txt) if files else read_rows(inputs, text_field, conll_txt)
    if isinstance(inputs, str | Mapping):
        inputs = [inputs]
    elif _is_frame(inputs):
        inputs = inputs.to_dict("records")
    elif isinstance(inputs, bytes | bytearray) or not isinstance(inputs, Iterable):
        hint = "; decode bytes to a str first" if isinstance(inputs, bytes | bytearray) else ""
        expected = "a file (a str or Path), a row (a mapping of fields), a list of rows or a pandas DataFrame" \
            if files else _EXPECTED
        raise ArgumentError(f"{name}: expected {expected}; got {type(inputs).__name__}{hint}")
    rows = [_row(item, i, text_field) for i, item in enumerate(inputs, start=1)]
    if not rows:
        raise TunelabError(f"{SOURCE}: empty input: no rows")
    return rows_table(rows, SOURCE)


def _is_frame(value: Any) -> bool:
    """A pandas DataFrame (or one alike): iterating it would give its column names, not its rows."""
    return hasattr(value, "columns") and callable(getattr(value, "to_dict", None)) and hasattr(value, "iloc")


def _row(item: Any, number: int, text_field: str) -> dict[str, Any]:
    if isinstance(item, str):
        return {text_field: item}
    if isinstance(item, Mapping):
        return dict(item)
    hint = ""
    if isinstance(item, list | tuple) and item and all(isinstance(x, str) for x in item):
        hint = " (a list of words is one row: {\"tokens\": [...]}, for a NER model"
        hint += "; a pair of texts: {\"text\": ..., \"text_pair\": ...}, for a model trained on pairs)" \
            if len(item) == 2 else ")"
    raise DataError(SOURCE, number, None, f"expected a text (str) or a row (a mapping of fields), got "
                    f"{type(item).__name__}{hint}")
