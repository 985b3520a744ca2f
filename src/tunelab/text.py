"""Text utilities shared by every stage: the one CJK character class and "is this Chinese" rule, normalisation,
edit distance (rapidfuzz), tokens, and the optional jieba segmenter.

Tokens are lowercased words for alphabetic scripts and single characters for CJK (Chinese, Japanese
kana), so every measure works on Chinese without a word segmenter. Embedding similarity is models/embeddings.py.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein

# CJK ideographs (incl. extensions and compatibility forms), kana, CJK punctuation is not included
# The one CJK class: Japanese kana, CJK ideographs (extension A, the unified block, compatibility ideographs,
# extensions B and later). Each such character is a word of its own (Chinese needs no segmenter for that).
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
HANGUL = "\uac00-\ud7af"  # Korean syllables: words are space-separated, so they join CJK only where asked (BLEU/ROUGE)
CJK_CHAR = re.compile(f"[{CJK}]")
_CJK_SPACE = re.compile(f"(?<=[{CJK}]) (?=[{CJK}])")
# The rules by which rows are compared (duplicates, leakage) and measured (data.clean's min/max_chars), recorded in a
# run's data_summary.json (`text_rules`): 2 (2026-12-07) leaves no space between two CJK characters in `normalize` and
# joins NER tokens as their sentence (`join_tokens`); 3 (2026-12-07) counts an SFT turn's `weight` 0 and a row's tools
# in its duplicate key (data/dedup.py); 1 (a run without the record) as before, so that an older run's rows read again
# (resume, report, export, compress) are those it trained on.
TEXT_RULES = 3
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


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (an unpaired surrogate: a valid JSON escape such as `\\ud800`, invalid
    Unicode, on which tokenizers and writers fail later with a traceback), or holds a NUL (what a UTF-16 file read
    as UTF-8 shows: `h\\x00i\\x00`), else None."""
    if (nul := text.find("\x00")) != -1:
        return (f"a NUL character at character {nul + 1}: a UTF-16 file without its byte-order mark? "
                "save it as UTF-8")
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"invalid Unicode: unpaired surrogate {text[exc.start]!r} at character {exc.start + 1}"
    return None


def json_problem(value: Any, where: str = "", numbers: bool = True, max_depth: int = 64,
                 max_items: int = 1_000_000) -> str | None:
    """`where: problem` for the first thing inside a JSON / YAML value (texts, object keys, lists, objects) that a
    tokenizer or a JSON answer cannot carry: an unpaired surrogate and, with `numbers`, NaN / Infinity; also nesting
    deeper than `max_depth` or more than `max_items` values (YAML anchors can repeat one list exponentially). Walked
    without recursion, each list / object once."""
    stack, seen, items = [(value, where, 0)], set(), 0
    while stack:
        item, at, depth = stack.pop()
        items += 1
        if depth > max_depth or items > max_items:
            return f"{where or 'value'}: nested too deeply or too large (more than {max_depth} levels or " \
                   f"{max_items:,} values)"
        if isinstance(item, str):
            if (problem := unicode_problem(item)) is not None:
                return f"{at or 'value'}: {problem}"
        elif numbers and isinstance(item, float) and not math.isfinite(item):
            return f"{at or 'value'}: {item} is not a finite number"
        elif isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and (problem := unicode_problem(key)) is not None:
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


# -- bytes that are not UTF-8 ----------------------------------------------------------------------------------------
# What to say about bytes that are not UTF-8: a line that reads as Chinese in GBK (GB18030, a Chinese Windows' and its
# Excel's encoding) or in Big5 (Traditional Chinese: Taiwan's, Hong Kong's), or a UTF-16 file (Excel's "Unicode
# text"), with the `iconv` command that converts the file — or, where the file's other lines are UTF-8 text (which
# converting it whole would garble), that the line itself must be fixed.
# ideographs (the unified block and extension A), CJK punctuation, full-width forms
_GBK_CHINESE = re.compile(f"[\u3400-\u4dbf\u4e00-\u9fff{ZH_PUNCT}]")
_BIG5_CHINESE = re.compile(f"[\u3400-\u4dbf\u4e00-\u9fff{ZH_PUNCT}\u2010-\u203b]")  # and Big5's — … ‧ ※
_THREE_BYTES = re.compile("[\u0800-\U0010ffff]")  # a character of 3 or more UTF-8 bytes (Chinese, kana, ...)
_ACCENTED = re.compile("[A-Za-z][\u00c0-\u024f]|[\u00c0-\u024f][A-Za-z]")
_CHECKED_AFTER = 200_000  # lines after the bad one looked at for UTF-8 text (a larger file: the rest assumed alike)
NAMES = {"GB18030": "Chinese in GBK (GB18030), the encoding of a Chinese Windows",
         "BIG5": "Chinese in Big5 (Traditional Chinese), the encoding of a Windows in Taiwan or Hong Kong",
         "EUC-JP": "Japanese in EUC-JP", "SHIFT_JIS": "Japanese in Shift_JIS, the encoding of a Japanese Windows",
         "EUC-KR": "Korean in EUC-KR (CP949), the encoding of a Korean Windows"}
# Japanese: kana among ideographs and CJK punctuation; Korean: Hangul syllables (Hanja and punctuation beside them)
_KANA, _HANGUL = re.compile("[\u3040-\u30ff]"), re.compile(f"[{HANGUL}]")
# Japanese particles; Korean's most used syllables (a GBK line read as EUC-KR / CP949 gives Hangul from all 2,350)
_USUAL = set("のはをにがでとてたしすもな" "이다는의에하고을가한지서로기를사도나은어적인대자리수부들정게시요있했니것해주"
             "그내아전상문일보우만우관과와면했라원국생회경제성결합니까습니다")
_NEIGHBOURS = ((_KANA, re.compile(f"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff{ZH_PUNCT}\u2010-\u203b\u00a8\u00b4"
                                  "\u00b6\u00d7\u00f7\u0391-\u03c9\u0401-\u0451\u2190-\u22ff\u2500-\u25ff"
                                  "\u2600-\u266f]"),
                ("euc_jp", "EUC-JP"), ("shift_jis", "SHIFT_JIS")),
               (_HANGUL, re.compile(f"[{HANGUL}\u3131-\u318e\u4e00-\u9fff\uf900-\ufaff{ZH_PUNCT}\u2010-\u203b"
                         "\u00a1-\u00ff\u2190-\u22ff\u2460-\u24ff\u2500-\u25ff]"),
                ("euc_kr", "EUC-KR"), ("cp949", "EUC-KR")))


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
Whole = bool | None | Callable[[], bool | None]


def encoding_hint(line: bytes, path: Path | str, excel: bool = True, whole: Whole = True) -> str:
    """For a line of bytes that is not UTF-8: a hint where it reads as Chinese (GBK, Big5), Japanese or Korean
    (`_reads_as`) with what to do, else "". `whole` (or a function that says it, asked only for such a line): True
    where the file holds no UTF-8 text but ASCII besides the line (`utf8_besides` is False): convert it with iconv
    (for standard input, `<stdin>`, the pipe to put before the tunelab command); False: its other lines are UTF-8, so
    this line is to be fixed where it is; None: not known (standard input past its first line)."""
    codec = _reads_as(line)
    if codec is None:
        return ""
    if callable(whole):
        whole = whole()
    stdin = str(path) == "<stdin>"
    excel = excel and not stdin and codec != "EUC-JP"
    said = f"; the line reads as {NAMES[codec]}" + (" and of Excel's CSV there" if excel else "")
    if whole is False:
        return (f"{said}, in a file otherwise UTF-8: retype or paste this line again in a UTF-8 editor (converting the "
                f"whole file with iconv -f {codec} would garble its UTF-8 lines)")
    if whole is None:
        return (f"{said}: if all the input is, convert it on its way in: ... | iconv -f {codec} -t UTF-8 | tunelab "
                "...; if only this line is, fix the line")
    return f"{said}: {convert(codec, path, excel)}"


def convert(codec: str, path: Path | str, excel: bool = True) -> str:
    """What to do with a file (or standard input, `<stdin>`) wholly in `codec`: save it as UTF-8, or the iconv
    command."""
    if str(path) == "<stdin>":
        return f"convert it on its way in: ... | iconv -f {codec} -t UTF-8 | tunelab ..."
    p = Path(path)
    utf8 = p.with_name(f"{p.stem}.utf8{p.suffix}")
    return ("save the file as UTF-8" + (' (Excel: "CSV UTF-8")' if excel else "")
            + f", or convert it: iconv -f {codec} -t UTF-8 {p} > {utf8}")


def utf16_hint(path: Path | str) -> str:
    """For text starting with UTF-16's byte order mark (Excel's "Unicode text", Windows Notepad's "Unicode")."""
    return ("; it starts with UTF-16's byte order mark (what Excel saves as \"Unicode text\"): "
            + convert("UTF-16", path, excel=False))


def bad_line(raw: bytes, at: int) -> tuple[int, int, bytes, Callable[[], bool]]:
    """For a file read whole (`raw`) that is not UTF-8 at byte `at`: (its line number, its column, the line's bytes,
    a function that says whether the file holds no UTF-8 text besides that line — `encoding_hint`'s `whole`)."""
    start, end = raw.rfind(b"\n", 0, at) + 1, raw.find(b"\n", at)
    line = raw.count(b"\n", 0, at) + 1
    return line, at - start + 1, raw[start:end if end != -1 else len(raw)], lambda: not utf8_besides(_lines(raw), line)


def _lines(raw: bytes) -> Iterator[bytes]:
    """The lines of `raw`, one at a time (not the whole file split: `utf8_besides` stops after _CHECKED_AFTER)."""
    start = 0
    while (end := raw.find(b"\n", start)) != -1:
        yield raw[start:end]
        start = end + 1
    yield raw[start:]


def utf8_besides(lines: Iterable[bytes], bad: int) -> bool:
    """Whether lines other than number `bad` (the first that is not UTF-8) hold UTF-8 text (`_utf8_text`), up to
    _CHECKED_AFTER lines after it."""
    for number, raw in enumerate(lines, start=1):
        if number > bad + _CHECKED_AFTER:
            break
        if number != bad and not raw.isascii() and _utf8_text(raw):
            return True
    return False


def _utf8_text(raw: bytes) -> bool:
    """The line decodes as UTF-8 with a character of three bytes or more (Chinese, kana; a GBK or Big5 line seldom
    decodes so), two or more characters of two bytes (Cyrillic, Greek, Hebrew, Arabic: `мир`; where a GBK or Big5
    line decodes, one of its characters in two bytes 0xC2-0xDF 0x80-0xBF does, alone: `台` is 0xCC 0xA8, U+0328) or
    an accented Latin letter next to an ASCII one (`café`)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return (_THREE_BYTES.search(text) is not None or _ACCENTED.search(text) is not None
            or sum(not c.isascii() for c in text) >= 2)


def _reads_as(line: bytes) -> str | None:
    """"EUC-JP" / "SHIFT_JIS" / "EUC-KR" (`_japanese_or_korean`), else "GB18030" or "BIG5" where the line reads as
    Chinese in it (`_chinese`), else None. Simplified Chinese in GBK
    often decodes as Big5 too, and Big5 as GBK: where both read so, the one with more of its common characters wins
    (`_common`), GBK on a tie."""
    if (other := _japanese_or_korean(line)) is not None:
        return other
    gbk, big5 = _chinese(line, "gb18030", _GBK_CHINESE), _chinese(line, "big5", _BIG5_CHINESE)
    if gbk and big5:
        return "BIG5" if _common(big5, "big5") > _common(gbk, "gb18030") else "GB18030"
    return "GB18030" if gbk else "BIG5" if big5 else None


def _japanese_or_korean(line: bytes) -> str | None:
    """"EUC-JP" / "SHIFT_JIS" where the line decodes so with kana, "EUC-KR" where it decodes as EUC-KR or CP949 with
    Hangul syllables, each with all its other non-ASCII characters of that language's text (a GBK or Big5 line that
    so decodes holds ideographs past those rows: `北京` in GBK is two Hangul, so two of its script are wanted)."""
    for script, allowed, *codecs in _NEIGHBOURS:
        for codec, name in codecs:
            try:
                text = line.decode(codec)
            except UnicodeDecodeError:
                continue
            wide = [c for c in text if not c.isascii()]
            own = sum(1 for c in wide if script.match(c))
            usual = sum(1 for c in wide if c in _USUAL)
            if own >= 2 and all(allowed.match(c) for c in wide) and own >= 0.3 * len(wide) \
                    and usual >= max(1, 0.3 * own * (script is _HANGUL)):
                return name
    return None


def _common(text: str, codec: str) -> int:
    """The characters of `text` among `codec`'s common ones: GB2312's punctuation and ideographs (lead byte 0xA1-0xA3
    or 0xB0-0xF7, trail 0xA1 or more; its rows 0xA4-0xAF hold kana, Greek, Cyrillic and nothing, which Big5's most
    used ideographs read as), Big5's punctuation and frequent ideographs (lead byte 0xA1-0xC6)."""
    count = 0
    for c in text:
        if c.isascii() or len(b := c.encode(codec)) != 2:
            continue
        if codec == "big5":
            count += 0xA1 <= b[0] <= 0xC6
        else:
            count += (0xA1 <= b[0] <= 0xA3 or 0xB0 <= b[0] <= 0xF7) and b[1] >= 0xA1
    return count


def _chinese(line: bytes, codec: str, chinese_class: re.Pattern[str]) -> str:
    """The line decoded, where it reads as Chinese in `codec`, else "". A Chinese character counts where both its bytes
    are non-ASCII, as every GB2312 one's are, or (Big5, whose trail byte may be ASCII) where its lead byte is one of
    its punctuation's or frequent ideographs' (0xA1-0xC6) and no ASCII letter or digit follows it: a Latin-1 accent
    before an ASCII letter (`naïve`: 0xEF 0x76) also decodes as an ideograph, but never so; one such character is
    enough (a character-level CoNLL line: `中 B-ORG`)."""
    try:
        text = line.decode(codec)
    except UnicodeDecodeError:
        return ""
    wide = [(i, c) for i, c in enumerate(text) if not c.isascii()]
    inside = [(i, c) for i, c in wide if not _between_letters(text, i, codec)]  # (a Latin-1 accent pair: two)
    chinese = sum(1 for i, c in inside if chinese_class.match(c) and _counts(text, i, codec))
    wide = inside if chinese >= 2 else wide  # Chinese enough: `iPhone和iPad` is no accent pair's
    return text if chinese and chinese >= 0.9 * len(wide) else ""


def _counts(text: str, i: int, codec: str) -> bool:
    b = text[i].encode(codec)
    if min(b) >= 0x80:
        return True
    after = text[i + 1:i + 2]
    return codec == "big5" and 0xA1 <= b[0] <= 0xC6 and not (after.isascii() and after.isalnum())


def _between_letters(text: str, i: int, codec: str) -> bool:
    """`text[i]` is a Latin-1 / cp1252 accent pair read as GBK or Big5: two accented letters' bytes (0xC0-0xFF each)
    between two ASCII letters (`informação`'s `çã`, `Größe`'s `öß` each decode as one ideograph) — not `iPhone和iPad`'s
    和 (0xBA 0xCD), Chinese written as such."""
    return 0 < i < len(text) - 1 and text[i - 1].isascii() and text[i - 1].isalpha() \
        and text[i + 1].isascii() and text[i + 1].isalpha() and min(text[i].encode(codec)) >= 0xC0
