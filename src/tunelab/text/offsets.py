"""Where a span's character offset goes wrong (`offset_hint`): QA's `answer_start`, an NER span's `start`, each
checked against the text the row says is there."""

from __future__ import annotations


def offset_hint(context: str, text: str, start: int, field: str, what: str) -> str:
    """Where `start` (the row's `field`) is `text`'s offset in `context`'s UTF-8 bytes (what a byte-counting tool, or
    Go / Rust string indices, give for Chinese text), or in its UTF-16 code units (JavaScript's or Java's string
    indices, what a browser annotation tool exports: an emoji or a rare character such as 𠮷 counts two), not in its
    characters: said, with the character offset; else the nearest place `text` (the `what`) is at (an offset off by
    one, as annotation exports have it) and how far it is; "" where it is nowhere."""
    for codec, width, kind in (("utf-8", 1, "UTF-8 byte offset"),
                               ("utf-16-le", 2, "UTF-16 offset, as JavaScript and Java count, an emoji as two")):
        raw, answer = context.encode(codec), text.encode(codec)
        if start >= 0 and raw[width * start:width * start + len(answer)] == answer:
            chars = len(raw[:width * start].decode(codec, errors="ignore"))
            if chars != start:  # (ASCII before it: the same in each unit)
                return f" ({start} is its {kind}; {field} counts characters: {chars})"
    found = [i for i in range(len(context)) if context.startswith(text, i)]  # (else the nearest place it is at)
    near = min(found, key=lambda i: (abs(i - start), i), default=None)
    return "" if near is None else f" (the {what} is at {near}, {near - start:+d} from {field})"
