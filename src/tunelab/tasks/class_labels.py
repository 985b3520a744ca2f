"""Classification labels as the model knows them: a scalar label as its string, hard and soft labels of a row read
into those strings, each bad one a DataError naming the row and the label field.

Numbers are labels by their text: an integer (Python or numpy) as its digits, an integral float (`1.0`: a pandas
column that held a NaN is float, JSON may write 1.0) as the integer it is (`1`), bools as true / false (a text
`True` / `FALSE`, as pandas / Excel write them, is the model's `true` / `false` where it knows that one). A float
with a fraction keeps its text (`0.5`), a label only where the model trained on it. A multi-label text cell is a JSON
list of labels, or cut at `task.label_separator` (`cell_labels`)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tunelab.data.readers import Record, check_unicode
from tunelab.errors import DataError


def label_string(value: Any) -> str | None:
    """A scalar label as the string the model knows it by (bools as true/false, integral floats as integers);
    None if not a scalar."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() else str(number)
    if isinstance(value, str):
        return value
    return None


def _number_forms(text: str) -> list[str]:
    """Other ways to write the integer `text` is: `1` ↔ `1.0` (`01`, `1e0` are not the same label)."""
    if re.fullmatch(r"[+-]?(0|[1-9]\d*)\.0+", text):
        return [str(int(float(text)))]
    return [f"{int(text)}.0"] if re.fullmatch(r"[+-]?(0|[1-9]\d*)", text) else []


def _bool_forms(text: str) -> list[str]:
    """Other ways to write the bool `text` is: `true` ↔ `True` ↔ `TRUE` (JSON's, Python's / pandas', Excel's)."""
    if text.lower() in ("true", "false") and text in (text.lower(), text.capitalize(), text.upper()):
        return [form for form in (text.lower(), text.capitalize(), text.upper()) if form != text]
    return []


def label_text(record: Record, field: str, value: Any, known: Sequence[str] = ()) -> str:
    """`value` as a label string, or a DataError naming the row. `known`: the labels of a tuned model, where an
    integral float it was trained on as such (`1.0`, by a tunelab before integral floats read as integers) is
    still that label."""
    if isinstance(value, float | np.floating) and not math.isfinite(value):  # NaN: how pandas writes a missing label
        raise DataError(record.source, record.line, field, f"missing label ({value})")
    text = label_string(value)
    if text is None:
        raise DataError(record.source, record.line, field, f"expected a label string, got {type(value).__name__}")
    if not text.strip():
        raise DataError(record.source, record.line, field, "empty label")
    if known and text not in known:  # the same number written otherwise: 1 (JSON) / 1.0 (a CSV cell, an older model),
        # the same bool: true (JSON) / True (pandas' CSV cell), where the model knows it one way only
        forms = [form for form in _number_forms(text) + _bool_forms(text) if form in known]
        text = forms[0] if len(forms) == 1 else text
    check_unicode(record, field, text)
    return text


SEPARATORS = "|;,"  # what a multi-label cell may separate its labels by: refused unless task.label_separator says


def cell_labels(record: Record, field: str, value: Any, separator: str | None, known: Sequence[str] = ()) -> list[Any]:
    """The labels of a multi-label value that is no list: a text cell holding a JSON list (`["ham", "question"]`,
    what `json.dumps` writes; CSV / TSV / Parquet text cannot hold a list otherwise) is that list; with `separator`,
    a text cut at it (`spam|promo`); any other value one label. A text holding one of SEPARATORS with no separator
    set, or a bracketed list that is not JSON (`['ham', 'spam']`, Python's), is refused: one label or several? —
    but for one of the model's labels (`known`: `Arts, Culture`, a model trained before cells were read so)."""
    if not isinstance(value, str) or value in known:
        return [value]
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            items = json.loads(text)
        except (ValueError, RecursionError):  # (a list nested past Python's stack)
            items = None
        if isinstance(items, list):
            return items
        if any(c in text for c in ",'\""):
            raise DataError(record.source, record.line, field, f"{value!r} is not a JSON list of labels (a Python "
                            "list written as text?): write the cells with json.dumps (pandas: "
                            "df[col].map(json.dumps)): [\"ham\", \"spam\"], in double quotes")
    if separator is not None:
        return [part.strip() for part in value.split(separator)]
    mark = next((c for c in SEPARATORS if c in value), None)
    if mark is not None:
        split = json.dumps([part.strip() for part in value.split(mark)], ensure_ascii=False)
        raise DataError(record.source, record.line, field,
                        f"{value!r} holds {mark!r}: several labels or one? Set task.label_separator={mark!r} to split "
                        f"cells at it, or write each cell as a JSON list: {split}, or "
                        f"{json.dumps([value], ensure_ascii=False)} for one label")
    return [value]


def soft_label(record: Record, field: str, value: dict[str, Any], multi_label: bool,
               known: Sequence[str] = ()) -> dict[str, float]:
    """`{label: probability}`: probabilities in [0, 1]; for single-label they must sum to 1."""
    if not value:
        raise DataError(record.source, record.line, field, "empty label distribution {}")
    out: dict[str, float] = {}
    for key, p in value.items():
        name = label_text(record, field, key, known)
        number = not isinstance(p, bool | np.bool_) and isinstance(p, int | float | np.integer | np.floating)
        if not number or not 0 <= p <= 1:
            raise DataError(record.source, record.line, field, f"probability of {name!r} must be in [0, 1], got {p!r}")
        out[name] = float(p)
    total = sum(out.values())
    if not multi_label and abs(total - 1) > 1e-3:
        raise DataError(record.source, record.line, field, f"label probabilities sum to {total:g}; expected 1")
    return out


def run_together(labels: Sequence[str], label: str) -> str:
    """A note for a row whose `label` is missing from `task.labels` because the config wrote a YAML flow list with a
    full-width comma (`[正面，负面]`: one label, YAML separates items with ASCII `,` only); '' where that is not it."""
    for one in labels:
        if label in re.split(r"\s*[，、]\s*", one) and label != one:
            fixed = ", ".join(p for p in re.split(r"\s*[，、]\s*", one) if p)
            return (f"; task.labels has {one!r} as one label: a YAML list separates its items with an ASCII comma, "
                    f"not '，' or '、' (write [{fixed}])")
    return ""
