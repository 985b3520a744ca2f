"""A key given twice in one JSON object, which `json.loads` reads silently (the last value wins): `duplicate_key`
finds it, cheaply enough for every row of a large file. Every key in a JSON text ends with a `"` and a `:` (JSON
blanks between), so a text with no more `:`s, or key ends, than its parsed objects hold keys has none twice
(`surely_once`, sound: it never says so of a text with one); only a text it cannot clear is parsed again, keeping
each object's pairs, to name the key and its place."""

from __future__ import annotations

import json
import re
from typing import Any

_SPACED_KEY_END = re.compile(r'"[ \t\n\r]+:')  # a key's end with blanks before its `:` (others: `":`)
_ESCAPED_END = re.compile(r'\\"[ \t\n\r]*:')  # a `\":` inside a string (or a key that ends with a backslash)
_OPENS_WITH_COLON = re.compile(r'[\[{,:][ \t\n\r]*"[ \t\n\r]*:')  # a string that starts with `:` (or a key `a:`)


class _Keyed(dict[str, Any]):
    """A JSON object as `duplicate_key`'s slow parse reads it: the keys its text gives more than once in `twice`."""

    __slots__ = ("twice",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.twice = [] if len(self) == len(pairs) else _repeated([key for key, _ in pairs])


def _repeated(keys: list[str]) -> list[str]:
    """The keys that come again after their first time, in order."""
    seen: set[str] = set()
    again = []
    for key in keys:
        if key in seen:
            again.append(key)
        seen.add(key)
    return again


def _objects(value: Any) -> list[dict[str, Any]]:
    """Every object in a parsed JSON value, level by level (list comprehensions: a large file's rows are many)."""
    objects: list[dict[str, Any]] = []
    level = [value]
    while level:
        found = [v for v in level if type(v) is dict]
        objects += found
        level = [v for d in found for v in d.values() if type(v) is dict or type(v) is list] + \
                [v for items in level if type(items) is list for v in items if type(v) is dict or type(v) is list]
    return objects


def _pairs(objects: list[dict[str, Any]]) -> int:
    """How many keys `objects` hold, all together (each key once per object)."""
    return sum(map(len, objects))


def _plain_keys(objects: list[dict[str, Any]]) -> bool:
    """Whether no key of `objects` ends with `[`, `{`, `,` or `:` (then spaces): then `_OPENS_WITH_COLON` finds in
    their text only strings that start with `:`, never a key's end."""
    return not any(key.rstrip(" ")[-1:] in ("[", "{", ",", ":") for key in set().union(*objects))


def inner_keys(value: list[Any] | dict[str, Any]) -> int:
    """How many keys a value holds one level down: an object's own, or those of the objects in a list."""
    return len(value) if type(value) is dict else sum([len(v) for v in value if type(v) is dict])


def near_keys(obj: dict[str, Any]) -> int:
    """How many keys `obj` and the objects right inside it (or in its lists: chat messages) hold: no more than all
    its objects hold (`_pairs`), and cheaper to count: `duplicate_key`'s `keys`."""
    return len(obj) + sum([inner_keys(v) for v in obj.values() if type(v) is dict or type(v) is list])


def _key_ends(text: str, start: int, end: int) -> int:
    """How many keys the JSON text `text[start:end]` gives, counted as each ends: with a `"` and a `:` (JSON blanks
    between), less the quotes a backslash escapes (inside a string). No fewer than the keys (a string that starts
    with a `:` counts too); a search for the ends and one for the escaped ones, about as cheap as one."""
    ends = text.count('":', start, end) + len(_SPACED_KEY_END.findall(text, start, end))
    for match in _ESCAPED_END.finditer(text, start, end):
        quote = first = match.start() + 1
        while first > start and text[first - 1] == "\\":
            first -= 1
        ends -= (quote - first) % 2  # an odd run of backslashes escapes the quote
    return ends


def surely_once(text: str, value: Any, keys: int = 0, start: int = 0, end: int | None = None) -> bool:
    """Whether no object of the JSON text `text[start:end]`, parsed as `value`, gives a key twice, for sure: it has
    no more `:`s than `keys` (at most as many keys as `value`'s objects hold: what a caller counted on the way), or
    no more key ends (`_key_ends`) than that or than all of `value`'s objects hold (`_pairs`), those strings that
    start with a `:` not counted where no key could be taken for one (`_plain_keys`). Not sure: a key twice (or,
    very rarely, such a string where a key ends with `:`)."""
    end = len(text) if end is None else end
    if text.count(":", start, end) == keys:
        return True
    ends = _key_ends(text, start, end)
    if ends == keys or ends == (pairs := _pairs(objects := _objects(value))):
        return True
    return _plain_keys(objects) and ends - len(_OPENS_WITH_COLON.findall(text, start, end)) == pairs


def duplicate_key(text: str, value: Any, keys: int = 0, start: int = 0, end: int | None = None,
                  ) -> tuple[str, str] | None:
    """(where, key) of a key given twice in one object of the JSON text `text[start:end]`, parsed as `value` (which
    kept only the key's last value): `where` the object's place in it (`messages[1]`, "" for `value` itself); None
    when every object's keys are distinct. `keys`: at most as many keys as `value`'s objects hold together (what the
    caller counted on the way, `near_keys`), else 0. Sound, and cheap: a text with no more `:`s, or key ends, than
    `value`'s objects hold keys has none twice (`surely_once`); only one with more key ends than that (a key twice)
    is parsed again, keeping each object's pairs, to find it."""
    end = len(text) if end is None else end
    if surely_once(text, value, keys, start, end):
        return None
    stack: list[tuple[Any, str]] = [(json.loads(text[start:end], object_pairs_hook=_Keyed), "")]
    while stack:  # depth first, in the text's order: the first object (from the outside in) with a key twice
        item, where = stack.pop()
        if isinstance(item, _Keyed):
            if item.twice:
                return where, item.twice[0]
            stack += reversed([(v, f"{where}.{k}" if where else k) for k, v in item.items()
                               if isinstance(v, dict | list)])
        elif isinstance(item, list):
            stack += reversed([(v, f"{where}[{i}]") for i, v in enumerate(item) if isinstance(v, dict | list)])
    return None


def twice(key: str, where: str = "") -> str:
    """The problem `duplicate_key` found, said: what a parser keeps of a key given twice is only its last value."""
    return (f"duplicate key {json.dumps(key, ensure_ascii=False)} in {where or 'one object'}: only its last value "
            "would be read; give each key once")
