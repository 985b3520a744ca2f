"""The marks a Chinese input method (or a word processor's quotes) types where JSON wants ASCII ones (`“text”`,
`"text"： 1`, `"a"，"b"`), named where a JSON decoder stopped at one (`json_mark`): its message alone (`Expecting ':'
delimiter`) does not say that the colon it stopped at is a full-width one, which looks like the ASCII colon it
wants."""

from __future__ import annotations

import re

_IME = "a Chinese input method's"
_QUOTE = ("a curly quote (a word processor's or a Chinese input method's)", '"')
# each mark: (what it is, the ASCII mark JSON wants in its place)
_MARKS = {
    "\u201c": _QUOTE, "\u201d": _QUOTE, "\u2018": _QUOTE, "\u2019": _QUOTE,
    "\uff02": (f"a full-width quote ({_IME})", '"'), "\u300c": (f"a corner bracket ({_IME})", '"'),
    "\u300d": (f"a corner bracket ({_IME})", '"'), "\uff1a": (f"a full-width colon ({_IME})", ":"),
    "\uff0c": (f"a full-width comma ({_IME})", ","), "\u3001": (f"an enumeration comma ({_IME})", ","),
    "\uff5b": (f"a full-width brace ({_IME})", "{"), "\uff5d": (f"a full-width brace ({_IME})", "}"),
    "\uff3b": (f"a full-width bracket ({_IME})", "["), "\uff3d": (f"a full-width bracket ({_IME})", "]"),
    "\u3010": (f"a lenticular bracket ({_IME})", "["), "\u3011": (f"a lenticular bracket ({_IME})", "]"),
    "\u3000": (f"a full-width space ({_IME})", " "),
}


# what a JSON decoder's message wants next (the ASCII marks it says so of: a full-width one in their place is named)
# (Python's json says "Expecting ',' delimiter" where a ',' or the closing brace / bracket goes, and "Expecting
# property name" / "Expecting value" where an object / array may close: `{"a": 1｝`, `{｝`, `[］`)
_WANTS = {"Expecting ':' delimiter": ":", "Expecting ',' delimiter": ",]}",
          "Expecting property name enclosed in double quotes": '"}', "Expecting value": '"[{]'}
_VALUE_STARTS = '"[{-0123456789tfnNI'  # the first characters of a JSON value
_BLANK = re.compile("[ \t\n\r\u3000]*")


def json_mark(doc: object, pos: object, msg: str) -> str:
    """`; '：' (U+FF1A) there is a full-width colon (a Chinese input method's): JSON needs ':'` where the character a
    JSON decoder stopped at (`pos` of `doc`, a JSONDecodeError's, whose message is `msg`) is one of `_MARKS` whose
    ASCII mark is what the message wants there (`_WANTS`: `：` for "Expecting ':' delimiter", not where a value
    was expected; `，` after a row is "Extra data", which ',' is too) — a full-width space where the next mark is
    what it wants (an ASCII space is skipped) —, else ""."""
    if not isinstance(doc, str) or not isinstance(pos, int) or not 0 <= pos < len(doc) or doc[pos] not in _MARKS:
        return ""
    what, ascii_mark = _MARKS[doc[pos]]
    if ascii_mark == " ":
        after = doc[(end := _BLANK.match(doc, pos).end()):end + 1]  # (the next mark: its ASCII one for a wide one)
        after = _MARKS.get(after, ("", after))[1]
        wanted = (after == "" if msg == "Extra data" else
                  after != "" and after in {"Expecting value": _VALUE_STARTS,
                                            "Expecting ',' delimiter": ",]}"}.get(msg, _WANTS.get(msg, "")))
    else:
        wanted = ascii_mark in _WANTS.get(msg, "")
    if not wanted:
        return ""
    return f"; {doc[pos]!r} (U+{ord(doc[pos]):04X}) there is {what}: JSON needs {ascii_mark!r}"


def equals_mark(pair: str) -> str:
    """`; '＝' (U+FF1D) is a full-width equals sign (a Chinese input method's): type '='` for a `key=value` setting
    (`--set`, the web UI's more settings) written with one, or with a full-width colon, in place of '=', else ""."""
    return next((f"; {c!r} (U+{ord(c):04X}) is a full-width {name} ({_IME}): type '='"
                 for c, name in (("\uff1d", "equals sign"), ("\uff1a", "colon")) if c in pair), "")
