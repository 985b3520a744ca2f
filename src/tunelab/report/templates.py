"""The HTML pages' Jinja2 templates (report/templates/*.j2): autoescaped, so a user's text never becomes markup;
bodies built by tunelab.html are passed in already escaped and marked `| safe` in the template."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined


@cache
def _environment() -> Environment:
    return Environment(loader=PackageLoader("tunelab.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, keep_trailing_newline=True)


def render_template(name: str, **values: Any) -> str:
    return _environment().get_template(name).render(**values)
