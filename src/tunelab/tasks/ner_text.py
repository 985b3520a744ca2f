"""The sentence a pre-tokenised NER row stands for: its tokens joined, and each token's span in that text.

- A character-level Chinese row (a token holds a CJK character and every token is one character, as in the
  Resume, Weibo and MSRA sets, a space being a token of its own) is its tokens joined without anything between:
  `['T', 'C', 'L', '集', '团']` is `TCL集团`, so offsets index the real sentence.
- Another Chinese row (a CJK character in its tokens, and `text.is_chinese` of them or a CJK / full-width punctuation
  mark such as `，` `。` among them; e.g. word-segmented): a space only between two Latin / digit words
  (`The Weeknd`), never next to a CJK character or a punctuation mark, nor between two single characters
  (`['T', 'C', 'L', '集团']` is `TCL集团`).
- Any other row (English, perhaps with a Chinese name): a space between tokens, none between two CJK characters or
  CJK punctuation marks (`Li visited 北京 today`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tunelab.text import CJK, CJK_CHAR, ZH_PUNCT, is_chinese

_CJK_SIDE = re.compile(f"[{CJK}{ZH_PUNCT}]")
_ZH_MARK = re.compile(f"[{ZH_PUNCT}]")
_WORD_SIDE = re.compile(rf"[^\W{CJK}]")  # a Latin / digit (non-CJK word) character


def gaps(tokens: Sequence[str]) -> list[str]:
    """What goes before each token (`""` before the first): `" "` or `""`, by the rules above."""
    if not tokens:
        return []
    if all(t.isascii() for t in tokens):  # (the common case, and the old rule's: 4x faster than the checks below)
        return [""] + [" "] * (len(tokens) - 1)
    if all(len(t) == 1 for t in tokens) and any(CJK_CHAR.match(t) for t in tokens):
        return [""] * len(tokens)
    chinese = any(CJK_CHAR.search(t) for t in tokens) and (
        is_chinese(list(tokens)) or any(_ZH_MARK.search(t) for t in tokens))
    out = [""]
    for a, b in zip(tokens, tokens[1:], strict=False):
        left, right = a[-1:], b[:1]
        if chinese:
            space = bool(_WORD_SIDE.match(left) and _WORD_SIDE.match(right)) and not (len(a) == 1 and len(b) == 1)
        else:
            space = not (_CJK_SIDE.match(left) and _CJK_SIDE.match(right))
        out.append(" " if space else "")
    return out


def join_tokens(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The tokens joined by `gaps`, and each token's span in that text."""
    parts, offsets, pos = [], [], 0
    for gap, tok in zip(gaps(tokens), tokens, strict=True):
        parts += [gap, tok]
        pos += len(gap)
        offsets.append((pos, pos + len(tok)))
        pos += len(tok)
    return "".join(parts), offsets
