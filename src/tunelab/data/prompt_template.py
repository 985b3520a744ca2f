"""`task.prompt_template` (SFT): build the user turn from a row's own fields, e.g.
`"Translate into Chinese:\\n{source}"` with the reply taken from `task.response_field` (`target`).

Placeholders are `{field}` with a field name of letters, digits and `_`; `{{` and `}}` are literal braces
(as in Python's str.format), and any other brace is literal text too.
Strings are inserted as they are, numbers and booleans as their JSON text; a missing or null field, a NaN or
infinite number (how pandas and JSON `NaN` write a missing value), or a list / object value, is a one-line DataError
naming the row.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from tunelab.data.readers import Record, row_has
from tunelab.errors import ConfigError, DataError

PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(\w+)\}")


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order of first use."""
    return list(dict.fromkeys(f for f in PLACEHOLDER.findall(template) if f))


def check_template(template: str | None, response_field: str | None) -> None:
    """Config errors for a template without placeholders or without a response field."""
    if template is None:
        if response_field is not None:
            raise ConfigError("config: task.response_field: only used with task.prompt_template")
        return
    if not template_fields(template):
        raise ConfigError("config: task.prompt_template: no {field} placeholder (e.g. 'Summarise: {document}')")
    if not response_field:
        raise ConfigError("config: task.response_field: required with task.prompt_template (the reply's column)")


def _missing(value: Any) -> bool:
    """None, or a NaN / infinite number: a missing value (JSON `NaN`, pandas' empty cell), never the text "NaN"."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _value(rec: Record, field: str, why: str = "used by task.prompt_template") -> str:
    value = rec.data.get(field)
    if value is None:
        notes = [n for n in (why, "" if field in rec.data else row_has(rec.data)) if n]
        raise DataError(rec.source, rec.line, field, "missing field" + (f" ({'; '.join(notes)})" if notes else ""))
    if _missing(value):
        raise DataError(rec.source, rec.line, field, f"missing value ({value})" + (f" ({why})" if why else ""))
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise DataError(rec.source, rec.line, field, f"is not a string: {type(value).__name__}")


def template_messages(rec: Record, template: str, response_field: str, labelled: bool,
                      text_field: str | None = None) -> tuple[str, list[dict[str, str]]]:
    """(field named in errors, messages): one user turn (the filled template) and, when the row has it or
    must have it, one assistant turn (`response_field`). `text_field`: an unlabelled row that has only this
    field (a line of `predict --input -`) fills a one-placeholder template."""
    fields = template_fields(template)
    data = rec.data
    if (not labelled and text_field and len(fields) == 1 and fields[0] not in data and text_field in data
            and response_field not in data):
        data = {fields[0]: data[text_field]}
    filled = Record(rec.source, rec.line, data)
    user = PLACEHOLDER.sub(lambda m: _value(filled, m.group(1)) if m.group(1) else m.group(0)[0], template)
    msgs = [{"role": "user", "content": user}]
    reply = data.get(response_field)
    if _missing(reply) and not labelled:
        return fields[0], msgs
    return response_field, [*msgs, {"role": "assistant", "content": _value(filled, response_field, "")}]
