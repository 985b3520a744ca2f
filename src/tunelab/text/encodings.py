"""Bytes that are not UTF-8: what a data or config file's reader says of them (`encoding_hint`, `utf16_hint`) —
the encoding a bad line reads as (GBK, Big5, Japanese, Korean, Windows-1252) and the `iconv` command that converts
the file, or, where its other lines are UTF-8, that the line itself must be fixed (`bad_line`, `whole_file`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tunelab.text import HANGUL, ZH_PUNCT
from tunelab.text.gbk_or_big5 import More, chinese_codec, readings, window, written_in

# -- bytes that are not UTF-8 ----------------------------------------------------------------------------------------
# What to say about bytes that are not UTF-8: a line that reads as Chinese in GBK (GB18030, a Chinese Windows' and its
# Excel's encoding) or in Big5 (Traditional Chinese: Taiwan's, Hong Kong's), Japanese, Korean, or Western European
# text in Windows-1252 (Excel's CSV on a Windows in Western Europe and the Americas: `café`, `it’s`), or a UTF-16
# file (Excel's "Unicode text"), with the `iconv` command that converts the file — or, where the file's other lines
# are UTF-8 text (which converting it whole would garble), that the line itself must be fixed.
_THREE_BYTES = re.compile("[\u0800-\U0010ffff]")  # a character of 3 or more UTF-8 bytes (Chinese, kana, ...)
_ACCENTED = re.compile("[A-Za-z][\u00c0-\u024f]|[\u00c0-\u024f][A-Za-z]")
_TWO_WIDE = re.compile("[^\x00-\x7f].*?[^\x00-\x7f]", re.S)  # two characters of two bytes or more
# Latin-1's signs and no-break space (`·`, `¥`, `°`, U+00A0): UTF-8 text, though a GBK line may read as one (路 is
# 0xC2 0xB7, UTF-8's `·`): where a line holds two non-ASCII characters, one of them such, it is not GBK's
_SIGN = re.compile("[\u0080-\u00bf]")
_CHECKED_AFTER = 200_000  # lines after the bad one looked at for UTF-8 text (a larger file: the rest assumed alike)
NAMES = {"GB18030": "Chinese in GBK (GB18030), the encoding of a Chinese Windows",
         "BIG5": "Chinese in Big5 (Traditional Chinese), the encoding of a Windows in Taiwan or Hong Kong",
         "EUC-JP": "Japanese in EUC-JP", "SHIFT_JIS": "Japanese in Shift_JIS, the encoding of a Japanese Windows",
         "EUC-KR": "Korean in EUC-KR (CP949), the encoding of a Korean Windows",
         "CP1252": "Western European text in Windows-1252 (cp1252, Latin-1), the encoding of a Windows in Western "
                   "Europe and the Americas"}
# Japanese: kana among ideographs and CJK punctuation; Korean: Hangul syllables (Hanja and punctuation beside them)
_KANA, _HANGUL = re.compile("[\u3040-\u30ff]"), re.compile(f"[{HANGUL}]")
_JAPANESE = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff01-\uff5e\u2010-\u203b]")
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
Whole = bool | None | Callable[[str], bool | None]  # (a function: given the encoding the line reads as)


def encoding_hint(line: bytes, path: Path | str, excel: bool = True, whole: Whole = True, more: More = None,
                  at: int = 0) -> str:
    """For a line of bytes that is not UTF-8: a hint where it reads as Chinese (GBK, Big5), Japanese, Korean
    (`_reads_as`; `more`: the file's lines from this one on, read where it reads as Chinese in both GBK and Big5) or
    Western European text in Windows-1252 (`_western`) with what to do, else "". `whole` (or a
    function that says it, asked only for such a line, `whole_file`): True where the file holds no UTF-8 text but
    ASCII besides the line: convert it with iconv (for standard input, `<stdin>`, the pipe to put before the tunelab
    command); False: its other lines are UTF-8, so this line is to be fixed where it is; None: not known (standard
    input past its first line; a file whose other lines read both as UTF-8 and as the line's encoding): both said,
    the file's iconv command last. `at`: the bad byte in `line`, around which WINDOW bytes of a long line are read."""
    line = window(line, at)
    codec = _reads_as(line, more) or _western(line)
    if codec is None:
        return ""
    if callable(whole):
        whole = whole(codec)
    stdin = str(path) == "<stdin>"
    excel = excel and not stdin and codec != "EUC-JP"
    said = f"; the line reads as {NAMES[codec]}" + (" and of Excel's CSV there" if excel else "")
    if whole is False:
        return (f"{said}, in a file otherwise UTF-8: retype or paste this line again in a UTF-8 editor (converting the "
                f"whole file with iconv -f {codec} would garble its UTF-8 lines)")
    if whole is None and stdin:
        return (f"{said}: if all the input is, convert it on its way in: ... | iconv -f {codec} -t UTF-8 | tunelab "
                "...; if only this line is, fix the line")
    if whole is None:
        return (f"{said}; the file's other non-ASCII lines read as UTF-8 but may be {codec} too: if only this line "
                f"is {codec}, retype or paste it again in a UTF-8 editor; if the whole file is, "
                f"{convert(codec, path, excel)}")
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


def bad_line(raw: bytes, at: int) -> tuple[int, int, bytes, Callable[[str], bool | None], More]:
    """For a file read whole (`raw`) that is not UTF-8 at byte `at`: (its line number, its column, the line's bytes,
    a function that says whether the file holds no UTF-8 text besides that line — `encoding_hint`'s `whole`,
    `whole_file` —, one that gives the file's lines from that one on: its `more`)."""
    start, end = raw.rfind(b"\n", 0, at) + 1, raw.find(b"\n", at)
    line = raw.count(b"\n", 0, at) + 1
    return (line, at - start + 1, raw[start:end if end != -1 else len(raw)],
            lambda codec: whole_file(_lines(raw), line, codec), lambda: _lines(raw, start))


def _lines(raw: bytes, start: int = 0) -> Iterator[bytes]:
    """The lines of `raw` from byte `start` on, one at a time (not the whole file split: `whole_file` stops after
    _CHECKED_AFTER)."""
    while (end := raw.find(b"\n", start)) != -1:
        yield raw[start:end]
        start = end + 1
    yield raw[start:]


def whole_file(lines: Iterable[bytes], bad: int, codec: str = "") -> bool | None:
    """`encoding_hint`'s `whole` for a file whose line `bad` (the first that is not UTF-8) reads as `codec`, from its
    lines (`_utf8_text`, up to _CHECKED_AFTER lines after that one): False where another holds UTF-8 text; None (not
    known) where its other non-ASCII lines all decode as UTF-8, none of them surely text: `лл`, GBK's `谢谢`, and
    `для` alike read as Chinese in GBK; True where none does, or another line is not UTF-8 either."""
    unsure = other = False
    for number, raw in enumerate(lines, start=1):
        if number > bad + _CHECKED_AFTER:
            break
        if number == bad or raw.isascii():
            continue
        utf8 = _utf8_text(raw, codec)
        if utf8:
            return False
        unsure, other = unsure or utf8 is None, other or utf8 is False
    return None if unsure and not other else True


def _utf8_text(raw: bytes, codec: str = "") -> bool | None:
    """True where the line decodes as UTF-8 with a character of three bytes or more (Chinese, kana; a GBK or Big5
    line seldom decodes so), two or more characters of two bytes (Cyrillic, Greek, Hebrew, Arabic: `мир`; where a GBK
    or Big5 line decodes, one of its characters in two bytes 0xC2-0xDF 0x80-0xBF does, alone: `台` is 0xCC 0xA8,
    U+0328) — but not where the line is Chinese in `codec` (the bad line's GBK or Big5) as it is mostly written
    (`written_in`): GBK's `谢谢` is UTF-8's `лл`, `学习` `ѧϰ` (where Cyrillic or Greek in UTF-8 reads as rare GBK
    characters: `мир` as `屑懈褉`), unless one is a Latin-1 sign or a no-break space (`Kitchen · Dining`: `_SIGN`) —,
    or an accented Latin letter next to an ASCII one (`café`); None where it decodes as UTF-8 but is not said so;
    False where it does not decode."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if _THREE_BYTES.search(text) is not None or _ACCENTED.search(text) is not None:
        return True
    if _TWO_WIDE.search(text) is None:
        return None
    return True if _SIGN.search(text) is not None or not written_in(raw, codec) else None


def _reads_as(line: bytes, more: More = None) -> str | None:
    """"EUC-JP" / "SHIFT_JIS" / "EUC-KR" (`_japanese_or_korean`), Japanese kanji alone in Shift_JIS (`_kanji`), else
    "GB18030" or "BIG5" where the line reads as Chinese in it (text/gbk_or_big5.py: where it reads so in both, the
    one whose reading — of the line, or of the file's lines that are not UTF-8 (`more`) — is more of the characters
    Chinese is mostly written with), else None: Windows-1252 text (`_western`: `Zoë’s`, 0xEB 0x92, a rare GBK
    ideograph) or nothing is said of it."""
    if (other := _japanese_or_korean(line)) is not None:
        return other
    read = readings(line)
    if (kanji := _kanji(line)) >= 2 and kanji > read["GB18030"][1]:
        return "SHIFT_JIS"
    return chinese_codec(read, more)


# Windows-1252's Latin letters (not its ª º µ, which a CJK line's bytes read as beside ASCII letters: 和 is 0xBA 0xCD)
_ACCENTS = "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff"  # À-ÿ but × ÷
_SHIFT_JIS_LEAD = re.compile("[\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192]")  # Œ œ Š š Ÿ Ž ž ƒ
_LATIN = re.compile(f"[A-Za-z{_ACCENTS}{_SHIFT_JIS_LEAD.pattern[1:-1]}]+")
_WORDS = re.compile(f"{_LATIN.pattern}|[^\\W\\d_\u00aa\u00b5\u00ba]+")  # Latin letters or others (ª µ º: symbols)
# an accented letter after the word's first ASCII letters (`café`, `Größe`) or two ASCII letters (`Élysées`) — in a
# CJK line read as Windows-1252 a lead byte (0x81-0xFE) reads as one after a trail byte (`ÖxÙI` is GBK's 謝買); none
# in a word with Œ œ Š š Ž ž Ÿ ƒ (0x83-0x9F, Shift_JIS's lead bytes: `CuŠÜ` is Cu含)
_ACCENTED_WORD = re.compile(f"(?:^[A-Za-z]+|[A-Za-z]{{2}})[{_ACCENTS}]")
_OPENING, _CLOSING = "\u201c\u2018\u00ab\u00bf\u00a1\u201e\u2039", "\u201d\u2019\u00bb\u2026\u2013\u2014\u203a"
_APOSTROPHE = re.compile("(?<![^\\x00-\\x7f])[A-Za-z]+\u2019[A-Za-z]+(?![^\\x00-\\x7f])")  # `it’s`: 0x92


def _western(line: bytes) -> str | None:
    """"CP1252" where the line decodes as Windows-1252 (a superset of Latin-1's letters, with its curly quotes, dashes
    and €: `it’s` is 0x92) into Latin text: no control character but a tab or a line end (a binary file is no text);
    a word of Latin letters with an accented one inside (`café`, `naïve`, `Größe`: `_ACCENTED_WORD`) between ASCII
    characters or quotes and dashes, or `’` between ASCII letters (`it’s`); no word of two or more letters without an
    ASCII one or with other letters. The accents of French, Spanish, German or Portuguese sit in words of Latin
    letters, where Cyrillic or Greek in their own Windows code pages (`Привет` in cp1251) read as words of accented
    letters only (`Ïðèâåò`), and Chinese, Japanese or Korean as symbols among one-letter words (`“不错”` in GBK:
    `¡°²»´í¡±`) — said to be no encoding: a wrong guess, whose iconv writes garbled text that trains silently, is
    worse than none."""
    try:
        text = line.decode("cp1252")
    except UnicodeDecodeError:  # (0x81, 0x8D, 0x8F, 0x90, 0x9D: no character in Windows-1252)
        return None
    if any(c < " " and c not in "\t\r\n" or c == "\x7f" for c in text):
        return None
    words = [m for m in _WORDS.finditer(text) if len(m.group()) > 1 and not m.group().isascii()]
    if any(not _LATIN.fullmatch(m.group()) or not any(c.isascii() for c in m.group()) for m in words):
        return None
    return "CP1252" if _APOSTROPHE.search(text) or any(_latin_word(text, m) for m in words) else None


def _latin_word(text: str, word: re.Match[str]) -> bool:
    before, after = text[word.start() - 1:word.start()], text[word.end():word.end() + 1]
    return (_ACCENTED_WORD.search(word.group()) is not None and not _SHIFT_JIS_LEAD.search(word.group())
            and (not before or before.isascii() or before in _OPENING)
            and (not after or after.isascii() or after in _CLOSING))


def _kanji(line: bytes) -> int:
    """Japanese kanji of JIS level 1 (lead byte 0x88-0x9F) in the line read as Shift_JIS (cp932, a Japanese
    Windows'), where all its other non-ASCII characters are kanji, kana or Japanese punctuation and full-width forms:
    a line of kanji alone (`東京 B-LOC`, which GBK reads as rare ideographs, `搶嫗`). None where a character reads as
    half-width katakana (0xA1-0xDF), as GBK's and Big5's common characters' lead bytes do. A kanji whose trail byte is
    ASCII and that touches an ASCII letter or digit does not count: Windows-1252's quotes and dashes before a letter
    read so (`it’s`, 0x92 0x73; `Euskaltel–Euskadi`, 0x96 0x45)."""
    try:
        text = line.decode("cp932")
    except UnicodeDecodeError:
        return 0
    wide = [(i, c) for i, c in enumerate(text) if not c.isascii()]
    if not all(_JAPANESE.match(c) for _, c in wide):
        return 0
    return sum(1 for i, c in wide if 0x88 <= (b := c.encode("cp932"))[0] <= 0x9F
               and (b[1] >= 0x80 or not any(n.isascii() and n.isalnum() for n in text[i - 1:i] + text[i + 1:i + 2])))


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
            # Korean text holds few Hanja among its Hangul; a GBK line read as EUC-KR is Hangul and Hanja mixed
            hanja = sum(1 for c in wide if "\u4e00" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff") \
                if script is _HANGUL else 0
            if own >= 2 and all(allowed.match(c) for c in wide) and own >= 0.3 * len(wide) \
                    and usual >= max(1, 0.3 * own * (script is _HANGUL)) and hanja * 4 <= own:
                return name
    return None


