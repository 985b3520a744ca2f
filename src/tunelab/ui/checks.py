"""What the web UI checks of a request before anything runs or is written: the playground's inputs and messages, the
launch form's values. Each refusal is a TunelabError of one line naming the field (`inputs[0]`,
`messages[1].content`, `train.lr`); nothing here imports torch."""

from __future__ import annotations

from typing import Any

import yaml

from tunelab.config.fields import apply_override, typed_value
from tunelab.errors import ConfigError, TunelabError
from tunelab.text import json_problem, unicode_problem

ROLES = ("system", "user", "assistant")
MAX_DEPTH = 64  # lists and objects inside each other: deeper is refused before a parser or writer recurses
MAX_PROMPT_TOKENS = 4096  # longest chat prompt when the model does not say (as `tunelab serve`'s default)


def kind(value: Any) -> str:
    """A JSON value's type in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return {str: "a text", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def utf8(text: str, where: str) -> None:
    """Refuse a lone surrogate (JSON's "\\ud800"): valid JSON, but not Unicode that UTF-8, a tokenizer or the
    answer itself can carry."""
    if (problem := unicode_problem(text)) is not None:
        raise TunelabError(f"{where}: {problem}")


def json_value(value: Any, where: str, numbers: bool = True) -> None:
    """Refuse what JSON or YAML can bring but the UI cannot read or answer with (`text.json_problem`): unpaired
    surrogates (in texts and keys), NaN / Infinity with `numbers`, nesting deeper than MAX_DEPTH, YAML anchors that
    multiply one list past a million values."""
    if (problem := json_problem(value, where, numbers, MAX_DEPTH)) is not None:
        raise TunelabError(problem)


def predict_inputs(inputs: list[Any]) -> list[Any]:
    """Each input is a text or a row (an object of its fields: `text`, `question`, `tokens`, ...); the task's own
    reader then checks the row's fields, as it checks a data file's."""
    for i, x in enumerate(inputs):
        if not isinstance(x, str | dict):
            raise TunelabError(f"inputs[{i}]: expected a text or an object of its fields, got {kind(x)}")
        json_value(x, f"inputs[{i}]")
    return inputs


def chat_messages(messages: list[Any]) -> list[dict[str, str]]:
    """The conversation as the chat template takes it: {role: system|user|assistant, content: text} each."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise TunelabError(f"{where}: expected an object {{role, content}}, got {kind(m)}")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or role not in ROLES:
            got = "missing" if "role" not in m else repr(role[:40]) if isinstance(role, str) else kind(role)
            raise TunelabError(f"{where}.role: expected one of {', '.join(ROLES)}; got {got}")
        if not isinstance(content, str):
            got = "missing" if "content" not in m else kind(content)
            raise TunelabError(f"{where}.content: expected a text; got {got}")
        utf8(content, f"{where}.content")
        out.append({"role": role, "content": content})
    return out


def flow_depth(text: str) -> int:
    """How deep `[` and `{` nest in a YAML text outside its quoted scalars (a quote inside a plain word such as `it's`
    is read as one too: the count is then lower, never higher, than YAML's)."""
    depth = deepest = i = 0
    quote = ""
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1  # (an escaped character of a double-quoted scalar)
            elif c == quote == "'" and text.startswith("''", i):
                i += 1  # ('' in a single-quoted scalar: one quote)
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return deepest


def form_value(key: str, text: str) -> Any:
    """A form field's text as the YAML value it spells (`3`, `5e-5`, `[a, b]`); an error names the setting. Nesting
    deeper than MAX_DEPTH is refused before YAML reads it: PyYAML's scanner looks over one possible key per open
    bracket at every token (5 s for 5,000 levels in a 10 kB field, the server's thread held all that time)."""
    if flow_depth(text) > MAX_DEPTH:
        raise TunelabError(f"{key}: nested too deeply (more than {MAX_DEPTH} levels)")
    try:
        value = typed_value(text)
    except yaml.YAMLError as exc:  # (a key twice in one mapping too)
        problem = str(getattr(exc, "problem", "") or exc).splitlines()[0]
        raise TunelabError(f"{key}: not a YAML value ({problem}): {text[:60]!r}") from None
    except RecursionError:
        raise TunelabError(f"{key}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    json_value(value, key, numbers=False)  # inf / NaN: the config's own check says it (jobs.launch)
    return value


def set_field(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """tree[a][b][c] = value for `a.b.c` as `--set` does it (`config.fields.apply_override`); a value where a
    section would go (`model.foo`: model is not a section) is one line."""
    parts = dotted.split(".")
    if not all(p.strip() for p in parts):
        raise TunelabError(f"{dotted!r}: expected a dotted key such as train.lr")
    try:
        apply_override(tree, parts, value)
    except ConfigError as exc:
        raise TunelabError(str(exc).removeprefix("--set ")) from None


def shown(text: str, limit: int = 200) -> str:
    """A path or name as a message shows it: as typed, or quoted with escapes when it holds control characters,
    cut at `limit` characters."""
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= limit else text[:limit] + "…"
