"""What `tunelab data check` warns about beyond counting (each a line, none an error): a tokenizer that does not
cover the text's language, labels that look like one class, validation labels training never saw, conversations
that start with the assistant after a system message or end on a user turn."""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tunelab.models.aliases import ALIASES
from tunelab.text import is_chinese

UNKNOWN_SHARE = 0.05  # warn when more than this share of the tokens are the tokenizer's unknown token
SAMPLE = 2000  # rows tokenised for the unknown-token share


def unknown_tokens(tokenizer: Any, examples: Sequence[Any], text_of: Callable[[Any], str], model: str,
                   cap: int = 1 << 16) -> str | None:
    """A warning when the tokenizer turns a large share of the text (`text_of` each example) into its unknown token
    (an English vocabulary on Chinese text), naming a model that fits; None when it covers the text or has no
    unknown token. Reads only the `SAMPLE` examples it tokenises, in file order (a spilled split: one chunk each at
    most, about a second at 10 M rows), never a list of every text."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not examples:
        return None
    picked = sorted(random.Random(0).sample(range(len(examples)), min(len(examples), SAMPLE)))
    sample = [text_of(examples[i])[:cap] for i in picked]  # heads: bounded
    ids = [t for row in tokenizer(sample, add_special_tokens=False)["input_ids"] for t in row]
    share = sum(t == unk for t in ids) / max(len(ids), 1)
    if share <= UNKNOWN_SHARE:
        return None
    chinese = is_chinese(sample)
    fits = [a.name for a in ALIASES.values()
            if a.name != model and ("zh" if chinese else "multilingual") in a.languages]
    hint = f"; a model for it: {', '.join(fits)}" if fits else ""
    return (f"{model} turns {100 * share:.0f} % of the tokens into {tokenizer.unk_token}: its vocabulary does not "
            f"cover this {'Chinese ' if chinese else ''}text{hint}")


def look_alike_labels(labels: Iterable[str]) -> str | None:
    """Labels that are one value written differently (`1`, `1.0`, `true`; `positive` and `positive `; `正面` and
    `正面　` with a full-width space): several classes where one was meant."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(_canonical(label), []).append(label)
    alike = [names for names in groups.values() if len(names) > 1]
    if not alike:
        return None
    shown = "; ".join(", ".join(map(_shown, names)) for names in alike)
    return f"labels {shown} look like one class written differently (each is a class of its own)"


def _shown(label: str) -> str:
    """A label as text, or quoted where a space or a full-width character would not be seen (`'positive '`)."""
    return label if label.strip() == label == unicodedata.normalize("NFKC", label) and label.isprintable() \
        else repr(label)


def _canonical(label: str) -> str:
    """The value a label means: NFKC-folded (full-width `ＰＯＳ` and `　` as `POS` and a space), trimmed, lower case,
    yes/true as 1, no/false as 0, a number as its shortest spelling."""
    low = unicodedata.normalize("NFKC", label).strip().lower()
    if low in ("true", "yes"):
        return "1"
    if low in ("false", "no"):
        return "0"
    try:
        number = float(low)
    except ValueError:
        return low
    return str(int(number)) if number.is_integer() else str(number)


def unseen_labels(labels: Iterable[str], train: Iterable[str], train_path: str) -> str | None:
    """Labels training never saw, each shown so that a space or full-width character in it is seen (`_shown`), with
    the training label it looks like (`'负面\u3000' (training has 负面)`): a trailing full-width space read as `负面`
    said that `负面` was absent."""
    seen = set(train)
    missing = sorted(set(labels) - seen)
    if not missing:
        return None

    def said(label: str) -> str:
        near = _look_alikes(label, seen)
        return _shown(label) + (f" (training has {', '.join(map(_shown, near))})" if near else "")

    return f"labels absent from {train_path}: {', '.join(map(said, missing[:5]))}{' ...' if len(missing) > 5 else ''}"


def near_label(label: str, labels: Iterable[str]) -> str:
    """What a refusal of `label` (not among `labels`) adds when some of them are the same value written differently
    (`_canonical`), each named with how it differs: `: training has 负面 (this one ends in a full-width space
    U+3000)`; else nothing. Without it, `label 'ｐｏｓｉｔｉｖｅ' is not among the training labels (negative, positive)`
    read as if `positive` were refused."""
    near = _look_alikes(label, labels)
    return "" if not near else ": training has " + ", ".join(f"{_shown(n)} ({_how_it_differs(label, n)})"
                                                             for n in near)


def _look_alikes(label: str, labels: Iterable[str]) -> list[str]:
    """Those of `labels` (other than `label`) that mean what `label` means (`_canonical`), sorted."""
    want = _canonical(label)
    return [other for other in sorted(set(labels)) if other != label and _canonical(other) == want]


def _how_it_differs(label: str, near: str) -> str:
    """How `label` is written unlike `near` (the same value): spaces at an edge, full-width (NFKC-folded) characters
    on either side, case (only where the NFKC forms differ in case alone), or another spelling of one number or
    truth value."""
    said = [f"{who} {edge} {_chars(chars)}" for text, who in ((label, "this one"), (near, "the training one"))
            for edge, chars in (("starts with", text[: len(text) - len(text.lstrip())]),
                                ("ends in", text[len(text.rstrip()):])) if chars]
    core, other = label.strip(), near.strip()
    said += [_width(text, who) for text, who in ((core, "this one"), (other, "the training one"))
             if unicodedata.normalize("NFKC", text) != text]
    folded, folded_near = unicodedata.normalize("NFKC", core), unicodedata.normalize("NFKC", other)
    if folded != folded_near:
        said.append("the two differ in case" if folded.lower() == folded_near.lower()
                    else "the two spell one value differently")
    return "; ".join(said)


def _width(text: str, who: str, named: int = 3) -> str:
    """The characters of `text` that NFKC writes otherwise, said for `who`: each named where a few are among
    others (`has U+FF01 (fullwidth exclamation mark) for '!'`), else the whole as full-width (`ｐｏｓｉｔｉｖｅ`)."""
    changed = list(dict.fromkeys(c for c in text if unicodedata.normalize("NFKC", c) != c))
    if len(changed) <= named and any(unicodedata.normalize("NFKC", c) == c for c in text):
        return f"{who} has " + " and ".join(
            f"U+{ord(c):04X} ({unicodedata.name(c, 'unnamed').lower()}) for {unicodedata.normalize('NFKC', c)!r}"
            for c in changed)
    if any(unicodedata.east_asian_width(c) == "F" for c in changed):
        return f"{who} is written in full-width characters"
    return f"{who} has characters NFKC writes as {unicodedata.normalize('NFKC', text)!r}"


def _chars(chars: str) -> str:
    """Spaces named as a reader would look for them: `a full-width space U+3000`."""
    names = {" ": "a space", "\u3000": "a full-width space U+3000", "\t": "a tab"}
    return " and ".join(names.get(c, f"U+{ord(c):04X} ({unicodedata.name(c, 'unnamed').lower()})")
                        for c in dict.fromkeys(chars))


def conversation_order(examples: Sequence[dict[str, Any]], path: str, shown: int = 3) -> list[str]:
    """Conversations whose system message is followed by the assistant (some templates, Gemma's, put the system text
    into that turn, trained as its reply) or that end on a user turn (nothing to learn after it). (One whose very
    first turn is the assistant's is the sft task's error: the template's opening would be trained as the reply.)"""
    first = [ex for ex in examples if ex["messages"] and _first_turn(ex["messages"]) == "assistant"]
    last = [ex for ex in examples if ex["messages"] and ex["messages"][-1]["role"] == "user"]
    out = []
    for rows, what in ((first, "start with the assistant after the system message"),
                       (last, "end on a user turn (no reply to learn)")):
        if rows:
            where = ", ".join(f"{ex.get('source') or path}:{ex['line']}" for ex in rows[:shown])
            where += " ..." if len(rows) > shown else ""
            out.append(f"{len(rows)} conversations {what}: {where}")
    return out


def _first_turn(messages: Sequence[dict[str, str]]) -> str:
    return next((m["role"] for m in messages if m["role"] != "system"), "")
