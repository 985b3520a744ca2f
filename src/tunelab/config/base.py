"""The base of every config section (`Section`): immutable, unknown keys are errors, and a boolean where a number
goes is one line. `config/sections.py`, `config/optimizer.py` and the task / method sub-configs build on it."""

from __future__ import annotations

from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


class Section(BaseModel):
    """Base of every config section: immutable, unknown keys are errors."""

    # coerce_numbers_to_str: `--set output_dir=2024` and `labels: [0, 1]` arrive from YAML as numbers
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        """`lr: true` is a mistake, not 1.0 (pydantic's lax mode reads a bool as a number): one error naming it.
        Only fields that hold numbers (a nested section's `clean: true` means its defaults: its own validator)."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and field is not None and _a_number(field.annotation):
                    raise PydanticCustomError("number_not_bool", "{name}: expected a number, got {value}",  # run.py
                                              {"name": name, "value": str(value).lower()})
        return data


def _a_number(annotation: Any) -> bool:
    """A field of numbers: int or float, or a union of them with None or Literal texts (`"auto"`)."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) not in (Union, UnionType):
        return False
    members = get_args(annotation)
    others = [a for a in members if a not in (int, float, type(None))]
    texts = all(get_origin(a) is Literal and all(isinstance(v, str) for v in get_args(a)) for a in others)
    return texts and any(a in (int, float) for a in members)
