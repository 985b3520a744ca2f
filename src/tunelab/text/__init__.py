"""Text utilities shared by every stage: the one CJK character class and "is this Chinese" rule, normalisation,
edit distance (rapidfuzz), tokens, and the optional jieba segmenter.

Tokens are lowercased words for alphabetic scripts and single characters for CJK (Chinese, Japanese
kana), so every measure works on Chinese without a word segmenter. Embedding similarity is models/embeddings.py; what
to say of bytes that are not UTF-8 is text/encodings.py.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any

from rapidfuzz.distance import Levenshtein

# CJK ideographs (incl. extensions and compatibility forms), kana, CJK punctuation is not included
# The one CJK class: Japanese kana, CJK ideographs (extension A, the unified block, compatibility ideographs,
# extensions B and later). Each such character is a word of its own (Chinese needs no segmenter for that).
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
HANGUL = "\uac00-\ud7af"  # Korean syllables: words are space-separated, so they join CJK only where asked (BLEU/ROUGE)
CJK_CHAR = re.compile(f"[{CJK}]")
_CJK_SPACE = re.compile(f"(?<=[{CJK}]) (?=[{CJK}])")
# The rules by which rows are read, compared (duplicates, leakage) and measured (data.clean's min/max_chars), recorded
# in a run's data_summary.json (`text_rules`): 2 (2026-12-07) leaves no space between two CJK characters in `normalize`
# and joins NER tokens as their sentence (`join_tokens`); 3 (2026-12-07) reads SFT rows' tools and template rows'
# system / history (tasks/sft_rows.py), counting a turn's `weight` 0 and the tools in the duplicate key (data/dedup.py);
# 4 (2026-12-07) keys a tool call by its parsed JSON; 5 (2026-12-07) keeps a grade (`grade <B>`, `Grade <A>`) as text
# in data.clean's strip_html where it is the only tag a text would lose, refuses SFT tool turns out of order and
# gives calls and results ids (tasks/chat_tools.py link_calls), a result keyed by the call it answers; 6 (2026-12-08)
# keeps an SFT assistant turn's `reasoning_content` (trained; in the duplicate key and cleaned); 1 (no record)
# as before: so that an older run's rows read again (resume, report, export, compress) are those it trained on.
TEXT_RULES = 6
_RULES: ContextVar[int] = ContextVar("tunelab_text_rules", default=TEXT_RULES)


@contextmanager
def text_rules(version: int) -> Iterator[None]:
    """Rows compared and measured by the rules of `version` inside the block (an older run's: `TEXT_RULES`)."""
    token = _RULES.set(version)
    try:
        yield
    finally:
        _RULES.reset(token)


def rules_version() -> int:
    """The version of the text rules in force (`text_rules`)."""
    return _RULES.get()
CHINESE_SHARE = 0.3  # is_chinese: at least this share of the non-space characters are CJK
_TOKEN = re.compile(rf"[{CJK}]|(?:(?![{CJK}])\w)+")
# a CJK character, a run of other word characters, or one mark: Chinese segmented without a segmenter
CJK_UNIT = re.compile(rf"[{CJK}]|[^\W{CJK}]+|[^\w\s]", re.UNICODE)


def unicode_problem(text: str, nul: bool = True) -> str | None:
    """Why `text` cannot be written as UTF-8 (an unpaired surrogate: a valid JSON escape such as `\\ud800`, invalid
    Unicode, on which tokenizers and writers fail later with a traceback), or, with `nul` (a text the model reads),
    holds a NUL; else None. The UTF-16 hint only where the text looks like UTF-16 read as UTF-8 (`h\\x00i\\x00`: a
    NUL after every character), not for one NUL (JSON's `\\u0000`, an API's input)."""
    if nul and (at := text.find("\x00")) != -1:
        wide = text.count("\x00") > 1 and not (text[1::2].strip("\x00") and text[::2].strip("\x00"))
        return f"a NUL character at character {at + 1}" + (
            ": a UTF-16 file without its byte-order mark? save it as UTF-8" if wide else "; remove it")
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"invalid Unicode: unpaired surrogate {text[exc.start]!r} at character {exc.start + 1}"
    return None


def json_problem(value: Any, where: str = "", numbers: bool = True, max_depth: int = 64,
                 max_items: int = 1_000_000, nul: bool = True) -> str | None:
    """`where: problem` for the first thing inside a JSON / YAML value (texts, object keys, lists, objects) that a
    tokenizer or a JSON answer cannot carry: an unpaired surrogate and, with `numbers`, NaN / Infinity; also nesting
    deeper than `max_depth` or more than `max_items` values (YAML anchors can repeat one list exponentially); with
    `nul`, a NUL in a text or key (`unicode_problem`). Walked without recursion, each list / object once."""
    stack, seen, items = [(value, where, 0)], set(), 0
    while stack:
        item, at, depth = stack.pop()
        items += 1
        if depth > max_depth or items > max_items:
            return f"{where or 'value'}: nested too deeply or too large (more than {max_depth} levels or " \
                   f"{max_items:,} values)"
        if isinstance(item, str):
            if (problem := unicode_problem(item, nul)) is not None:
                return f"{at or 'value'}: {problem}"
        elif numbers and isinstance(item, float) and not math.isfinite(item):
            return f"{at or 'value'}: {item} is not a finite number"
        elif isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and (problem := unicode_problem(key, nul)) is not None:
                        return f"{at or 'value'} (a key): {problem}"
                    stack.append((child, f"{at}.{key}" if at else str(key), depth + 1))
            else:
                stack.extend((child, f"{at}[{i}]", depth + 1) for i, child in enumerate(item))
    return None


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space, stripped, no space between two CJK characters
    (`早餐 一般` is `早餐一般`: Chinese is written without them)."""
    out = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return _CJK_SPACE.sub("", out) if _RULES.get() >= 2 else out


def levenshtein(a: str, b: str, *, limit: int | None = None) -> int:
    """Character edit distance (insert, delete, substitute; each costs 1), by rapidfuzz. With `limit`, the answer
    is exact up to `limit` and `limit + 1` for anything larger (rapidfuzz stops early past the cutoff)."""
    return Levenshtein.distance(a, b, score_cutoff=limit)


def tokens(text: str) -> list[str]:
    """Lowercased words (letters, digits, underscore) for alphabetic scripts; one token per CJK
    character. Punctuation and whitespace are dropped."""
    return _TOKEN.findall(text.lower())


def is_cjk(char: str) -> bool:
    """One character of the CJK class."""
    return CJK_CHAR.fullmatch(char) is not None


def cjk_share(texts: str | Sequence[str]) -> float:
    """Share of CJK characters among the non-space characters of `texts` (0.0 when there are none)."""
    texts = [texts] if isinstance(texts, str) else texts
    cjk = sum(len(CJK_CHAR.findall(t)) for t in texts)
    total = sum(not c.isspace() for t in texts for c in t)
    return cjk / total if total else 0.0


def is_chinese(texts: str | Sequence[str]) -> bool:
    """The one "is this Chinese" rule: at least CHINESE_SHARE of the non-space characters are CJK (QA scoring of a
    Chinese context, word-level augmentation, NER joining and the baselines' analyzer all ask it)."""
    return cjk_share(texts) >= CHINESE_SHARE


@cache
def jieba_or_none() -> Any:
    """The jieba module when installed (Chinese word segmentation), else None (callers fall back to characters)."""
    try:
        import jieba  # optional: tunelab[zh]

        jieba.setLogLevel(60)
        return jieba
    except ImportError:
        return None


ZH_PUNCT = "\u3000-\u303f\uff00-\uffef"  # CJK symbols and punctuation (、。「」), full-width forms (，！？)

# -- a pre-tokenised row's sentence (NER `tokens`) -------------------------------------------------------------------
# The sentence a pre-tokenised NER row stands for: its tokens joined, and each token's span in that text.
#
# - A character-level Chinese row (a token holds a CJK character and every token is one character, as in the
#   Resume, Weibo and MSRA sets, a space being a token of its own) is its tokens joined without anything between:
#   `['T', 'C', 'L', '集', '团']` is `TCL集团`, so offsets index the real sentence.
# - Another Chinese row (a CJK character in its tokens, and most of its words — tokens with a letter — holding one,
#   or `is_chinese` of them, or a CJK / full-width punctuation mark such as `，` `。` among them; e.g. word-segmented:
#   `['2019', '年', '3', '月']` is `2019年3月`): a space only between two Latin / digit words
#   (`The Weeknd`), never next to a CJK character or a punctuation mark, nor between two single characters
#   (`['T', 'C', 'L', '集团']` is `TCL集团`).
# - Any other row (English, perhaps with a Chinese name): a space between tokens, none between two CJK characters or
#   CJK punctuation marks (`Li visited 北京 today`).
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
    words = [t for t in tokens if any(c.isalpha() for c in t)]  # (numbers and marks are neither language's)
    cjk = sum(1 for t in words if CJK_CHAR.search(t))
    chinese = cjk > 0 and (2 * cjk > len(words) or is_chinese(list(tokens)) or any(_ZH_MARK.search(t) for t in tokens))
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
