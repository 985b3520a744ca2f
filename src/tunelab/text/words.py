"""Raw text into words with their character offsets (`split_words`): what NER predicts on where a row gives a `text`
rather than tokens — words, single punctuation marks and single CJK characters, a grapheme never cut."""

from __future__ import annotations

import re
import unicodedata

from tunelab.text import CJK

_WORD = re.compile(rf"[{CJK}]|[^\s{CJK}\w]|[^\W{CJK}]+", re.UNICODE)


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words, single punctuation marks and single CJK characters, with character offsets. A character that belongs
    to the one before it stays with it: a combining mark (`Cafe\u0301`, Hindi's vowel signs: `हिन्दी` is one word),
    a variation selector or skin tone (`❤️`, `👍🏽`), what a zero-width joiner joins (`👨‍👩‍👧`) and a flag's pair."""
    words: list[tuple[str, int, int]] = []
    for m in _WORD.finditer(text):
        w, s, e = m.group(), m.start(), m.end()
        if words and words[-1][2] == s and _continues(words[-1][0], w):
            words[-1] = (words[-1][0] + w, words[-1][1], e)
        else:
            words.append((w, s, e))
    return words


def grapheme_edge(text: str, at: int) -> bool:
    """Whether cutting `text` at `at` (0 < at < len) leaves every character as it prints whole: not before a mark that
    goes on the character before it (a combining mark, a variation selector, a skin tone; Hangul's vowel and final
    jamo, Thai's and Lao's `am`), not after a zero-width joiner, not between a flag's two halves."""
    before, ch = text[at - 1], text[at]
    if _joins(ch) or before == "\u200d" or ch in _SPACING or "\u1160" <= ch <= "\u11ff" or "\ud7b0" <= ch <= "\ud7ff":
        return False
    flags = 0  # regional indicators just before the cut: an odd number, and the cut is inside a flag
    while flags < at and text[at - 1 - flags] in _INDICATORS:
        flags += 1
    return not (flags % 2 and ch in _INDICATORS)


def _continues(before: str, word: str) -> bool:
    """Whether `word` goes on the grapheme or word `before` it ends (see split_words)."""
    if _joins(word[0]) or before[-1] == "\u200d" or len(before) == 1 and _FLAG.match(before + word[0]):
        return True
    return _joins(before[-1]) and _LETTER.match(before[0]) is not None and _LETTER.match(word[0]) is not None


def _joins(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Mc", "Me") or ch in _JOINING


_JOINING = {"\u200d", *map(chr, range(0xFE00, 0xFE10)), *map(chr, range(0x1F3FB, 0x1F400))}
_SPACING = {"\u0e33", "\u0eb3"}  # Thai and Lao `am`: letters (Lo) that print on the character before them
_INDICATORS = "".join(map(chr, range(0x1F1E6, 0x1F200)))  # a flag is two of them
_FLAG = re.compile("[\U0001F1E6-\U0001F1FF]{2}")  # two regional indicators: a flag
_LETTER = re.compile(rf"[^\W{CJK}]")
