"""Raw text into words with their character offsets (`split_words`): what NER predicts on where a row gives a `text`
rather than tokens — words, single punctuation marks and single CJK characters, a grapheme never cut."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import regex

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
    """Whether cutting `text` at `at` (0 < at < len) leaves every character as it prints whole: `at` starts one of
    its extended grapheme clusters (`regex`'s `\\X`, Unicode's rules: not before a combining mark, a variation
    selector or a skin tone, Hangul's vowel and final jamo, Thai's and Lao's `am`; not after a zero-width joiner, nor
    between a flag's two halves; not after a virama that joins two consonants into a conjunct: Hindi `क्ष`, Khmer's
    coeng in `ម្ពុ`)."""
    return at in _cluster_starts(text)


@lru_cache(maxsize=8)  # (a row's spans ask of one text in turn)
def _cluster_starts(text: str) -> frozenset[int]:
    return frozenset(m.start() for m in _CLUSTER.finditer(text))


def _continues(before: str, word: str) -> bool:
    """Whether `word` goes on the grapheme or word `before` it ends (see split_words)."""
    if _joins(word[0]) or before[-1] == "\u200d" or len(before) == 1 and _FLAG.match(before + word[0]):
        return True
    return _joins(before[-1]) and _LETTER.match(before[0]) is not None and _LETTER.match(word[0]) is not None


def _joins(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Mc", "Me") or ch in _JOINING


_JOINING = {"\u200d", *map(chr, range(0xFE00, 0xFE10)), *map(chr, range(0x1F3FB, 0x1F400))}
_FLAG = re.compile("[\U0001F1E6-\U0001F1FF]{2}")  # two regional indicators: a flag
_LETTER = re.compile(rf"[^\W{CJK}]")
_CLUSTER = regex.compile(r"\X")  # an extended grapheme cluster: a character as it prints
