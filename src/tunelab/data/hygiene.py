"""Data hygiene as an action: clean texts (`data.clean`); dropping duplicates (`data.dedup`) is data/dedup.py.

Works on parsed examples of any task: string fields `text` / `text_pair` are cleaned;
a list field `tokens` (NER) is cleaned token by token (never dropping a token, so tags stay aligned);
`messages` (SFT) has the content of every turn cleaned. A turn keeps its layout, since a model learns to write
it: NFC instead of NFKC (full-width ，！？ stay), and whitespace tidied line by line (trailing spaces cut, runs of
blank lines made one) instead of collapsed. Every dropped row goes to the `DataReport`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

from tunelab.config.sections import CleanConfig
from tunelab.data.dedup import TEXT_KEYS, compared_texts
from tunelab.data.report import DataReport
from tunelab.text import rules_version

# one attribute: a name, and a quoted or plain value (a name alone must be an HTML attribute's: _VALUELESS)
_ATTR = r"""\s+([A-Za-z_:][-\w:.]*)(\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?"""
_TAG = re.compile(rf"<(/?)([A-Za-z][A-Za-z0-9]*)((?:{_ATTR})*)\s*/?>")
# the HTML elements (HTML5 and the legacy ones still met in scraped text): `<int>`, `<String>`, `<T>` are not tags
_ELEMENTS = frozenset("""a abbr acronym address area article aside audio b base bdi bdo big blink blockquote body br
button canvas caption center cite code col colgroup data datalist dd del details dfn dialog dir div dl dt em embed
fieldset figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img
input ins kbd label legend li link main map mark marquee menu meta meter nav nobr noscript object ol optgroup option
output p param picture pre progress q rp rt ruby s samp section select small source span strike strong sub summary sup
svg table tbody td template textarea tfoot th thead time title tr track tt u ul var video wbr""".split())  # noqa: SIM905
_BOOLEAN = frozenset("""allowfullscreen async autofocus autoplay checked controls default defer disabled formnovalidate
hidden inert ismap itemscope loop multiple muted nomodule noshade novalidate nowrap open playsinline readonly required
reversed selected""".split())  # noqa: SIM905
# what a name written without a value may be: a boolean attribute, or one of the common ones (`<p class>`, `<a
# download>`), or data-* / aria-*; `<b and c>` (in `a<b and c>d`) has none of them, so it is text
_VALUELESS = _BOOLEAN | frozenset("""accesskey alt class contenteditable dir download draggable height href id lang
name rel role spellcheck src style tabindex target title translate type value width""".split())  # noqa: SIM905
# elements written without their closing tag: void ones, and those whose end tag HTML lets a page leave out
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
_END_OPTIONAL = {"li", "p", "td", "th", "tr", "dt", "dd", "option", "optgroup", "rt", "rp", "tbody", "thead", "tfoot",
                 "colgroup"}
_GRADE = re.compile(r"<[A-FSU]>")  # a school grade's shape (`_grade`)
_CLOSING = re.compile(r"</([A-Za-z][A-Za-z0-9]*)\s*>")
_BLOCKS = {"<!--": "-->", "<script": "</script", "<style": "</style"}  # what `_drop_blocks` removes: start, end
_DOCTYPE = re.compile(r"<!doctype\s[^<>]*>", re.IGNORECASE)
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_BLOCK = {"br", "p", "div", "li", "ul", "ol", "dl", "dt", "dd", "tr", "td", "th", "table", "hr", "blockquote",
          "option", "optgroup", "section", "article", "header", "footer", "h1", "h2", "h3", "h4", "h5", "h6"}
# zero-width space, word joiner, BOM, soft hyphen (ZWJ / ZWNJ stay: emoji sequences, Persian)
_INVISIBLE = re.compile("[\u200b\u2060\ufeff\u00ad]")


def _tag(m: re.Match[str], closed: dict[str, int]) -> str:
    """A tag of an HTML element, written in one case, its attributes well formed (`<b and c>` in `a<b and c>d` is
    text): removed (a block element: a space); anything else as it is. An opening tag right after a word's letter
    (`Task<object>`, `impl<S>`, `Func<A>`: a generic type) is text unless its closing tag follows (`very<b>good</b>`)
    or it has none (`line<br>`) or may leave it out in lowercase (`one<li>two`; `Component<P>` is a type); `closed`:
    where the text closes each element name last. (A grade, `grade <B>`: `_grade`.)"""
    close, name, attrs = m.groups()[:3]
    if name.lower() not in _ELEMENTS or not (name.islower() or name.isupper()) or (close and attrs):
        return m.group(0)
    if any(not value and not (attr.lower() in _VALUELESS or attr.lower().startswith(("data-", "aria-")))
           for attr, value in re.findall(_ATTR, attrs)):
        return m.group(0)
    before = m.string[m.start() - 1] if m.start() else " "
    open_ended = name.lower() in _VOID or name.islower() and name in _END_OPTIONAL
    if not close and not open_ended and (before.isalnum() or before == "_") and (
            closed.get(name.lower(), -1) < m.end()):
        return m.group(0)
    return " " if name.lower() in _BLOCK else ""


def _grade(m: re.Match[str]) -> bool:
    """A tag that reads as a school grade: one uppercase letter of A-F, S or U, nothing inside, with a space, a
    punctuation mark, a symbol (`<A>+`, `grade=<A>`, an emoji) or the text's start / end on each side (`grade <B> in
    maths`, `Grade <A>`, `got a <B>,`), invisible characters (a zero-width space) passed over; kept as text where it
    is the only kind of tag a text would lose (`<B>Bold`, `<U>title`, `<p>My grade is <B>` stay markup)."""
    if not _GRADE.fullmatch(m.group(0)):
        return False
    text, before, after = m.string, m.start() - 1, m.end()
    while before >= 0 and _INVISIBLE.match(text, before):
        before -= 1
    while after < len(text) and _INVISIBLE.match(text, after):
        after += 1
    return all(i < 0 or i >= len(text) or text[i].isspace() or unicodedata.category(text[i])[0] in "PS"
               for i in (before, after))


def _drop_blocks(text: str) -> str:
    """Comments, scripts and styles out, each a space. Scanned with `str.find`, each kind given up once one has no end
    (a regex's lazy match ran to the end of the text from every unclosed `<!--`: 6 s on 100 KB)."""
    lower, out, i, ahead = text.lower(), [], 0, dict.fromkeys(_BLOCKS, 0)
    while ahead:
        for opening in list(ahead):  # the next start of each kind still looked for
            if ahead[opening] < i or ahead[opening] == 0:
                ahead[opening] = lower.find(opening, i)
                if ahead[opening] < 0:
                    del ahead[opening]
        if not ahead:
            break
        opening, start = min(ahead.items(), key=lambda kv: kv[1])
        after = start + len(opening)
        if opening != "<!--" and after < len(lower) and (lower[after].isalnum() or lower[after] in "-_"):
            ahead[opening] = lower.find(opening, after)  # `<scripts>`: not this element
            if ahead[opening] < 0:
                del ahead[opening]
            continue
        end = lower.find(_BLOCKS[opening], after)
        if end < 0:  # no end after this one, so none after any later one either
            del ahead[opening]
            continue
        end = end + 3 if opening == "<!--" else (lower.find(">", end) + 1 or len(lower))
        out += [text[i:start], " "]
        i = end
    return "".join(out) + text[i:]


def strip_html(text: str) -> str:
    """Remove HTML markup: scripts, styles, comments, and tags of HTML elements (`<p class="x">`, `</p>`, `<br/>`),
    never other text between `<` and `>` (`std::vector<int>`, `if a<b and c>d`) nor a grade where no other tag
    goes (`grade <B> in maths`: `_grade`); decode entities written with their
    `;` (`&amp;`, `&#233;`), never entity-like text without it (`AT&T&not good` stays)."""
    if "<" not in text and "&" not in text:
        return text
    text = _DOCTYPE.sub(" ", _drop_blocks(text))
    closed = {c.group(1).lower(): c.start() for c in _CLOSING.finditer(text)}  # once per text: linear
    stripped = [(m, new) for m in _TAG.finditer(text) if (new := _tag(m, closed)) != m.group(0)]
    # grades alone would go: they stay (by the text rules of an older run, before 5, they go: its rows read again
    # as it cleaned them)
    if stripped and not (rules_version() >= 5 and all(_grade(m) for m, _ in stripped)):
        parts, at = [], 0
        for m, new in stripped:
            parts += [text[at:m.start()], new]
            at = m.end()
        text = "".join(parts) + text[at:]
    return _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)


def normalize_unicode(text: str, form: str = "NFKC") -> str:
    text = _INVISIBLE.sub("", unicodedata.normalize(form, text))
    if text.isascii() and text.isprintable():
        return text
    return "".join(c for c in text if c in "\t\n\r" or unicodedata.category(c) != "Cc")


def tidy_lines(text: str) -> str:
    """Whitespace cleaning that keeps lines and indentation (the first line's too): trailing spaces cut,
    blank-line runs made one, leading blank lines dropped."""
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in text.splitlines()))
    return text.lstrip("\n").rstrip()


def clean_text(text: str, cfg: CleanConfig, layout: bool = False) -> str:
    """`layout`: keep what a generated text shows (SFT turns): NFC, and lines tidied rather than joined."""
    if cfg.strip_html:
        text = strip_html(text)
    if cfg.normalize_unicode:
        text = normalize_unicode(text, "NFC" if layout else "NFKC")
    if cfg.collapse_whitespace:
        text = tidy_lines(text) if layout else " ".join(text.split())
    return text


def _clean_value(value: Any, cfg: CleanConfig) -> Any:
    if isinstance(value, str):
        return clean_text(value, cfg)
    if isinstance(value, list):  # tokens: each stays (an emptied token keeps its original text)
        return [(clean_text(t, cfg) or t) if isinstance(t, str) else t for t in value]
    return value


def clean_inputs(examples: list[dict[str, Any]], cfg: CleanConfig) -> list[dict[str, Any]]:
    """Rows given to a tuned model (eval, predict, serve, the API) cleaned as its training rows were: every row
    kept, whatever its length (min/max_chars filter training rows only) or what cleaning leaves of it. A row of
    `tokens` (NER) has them cleaned token by token, its `text` (which the token offsets index) left as given; the
    input row echoed back (`row`) is never changed."""
    return [_cleaned(ex, cfg, ("tokens",) if "tokens" in ex else ("text", "text_pair")) for ex in examples]


def _cleaned(ex: dict[str, Any], cfg: CleanConfig, keys: tuple[str, ...] = TEXT_KEYS) -> dict[str, Any]:
    """A copy of the example with its `keys` texts and its turns cleaned (a text cleaning leaves as it was keeps its
    one string object: pickled once where the rows are spilled)."""
    new = dict(ex)
    for key in keys:
        if key in ex:
            value = _clean_value(ex[key], cfg)
            new[key] = ex[key] if value == ex[key] else value
    if "messages" in ex:
        new["messages"] = _clean_messages(ex["messages"], cfg)
    return new


def _clean_messages(messages: list[dict[str, Any]], cfg: CleanConfig) -> list[dict[str, Any]]:
    return [{**m, "content": clean_text(m["content"], cfg, layout=True),
             **({"reasoning_content": clean_text(m["reasoning_content"], cfg, layout=True)}
                if "reasoning_content" in m else {})} for m in messages]


def _emptied(cleaned: dict[str, Any], original: dict[str, Any]) -> dict[str, Any] | None:
    """Where cleaning left a text empty (for SFT: the first turn it emptied), or None."""
    for k in TEXT_KEYS:
        if isinstance(cleaned.get(k), str) and not cleaned[k].strip():
            return {"field": k}
    for i, (m, o) in enumerate(zip(cleaned.get("messages", ()), original.get("messages", ()), strict=True)):
        if o["content"].strip() and not m["content"].strip():
            return {"field": original.get("field"), "turn": i + 1, "role": m["role"]}
    return None


def text_length(example: dict[str, Any]) -> int:
    """Characters of the example's texts (tokens joined by spaces; every turn's content for SFT)."""
    return sum(len(p) for p in compared_texts(example, roles=False))


def clean_split(examples: list[dict[str, Any]], cfg: CleanConfig, split: str, report: DataReport,
                filter_length: bool) -> list[dict[str, Any]]:
    """Clean every text; drop rows left empty, and (with `filter_length`) rows outside min/max_chars."""
    out = []
    for ex in examples:
        new = _cleaned(ex, cfg)
        empty = _emptied(new, ex)
        if empty is not None:
            report.remove(split, ex, "empty_after_cleaning", **empty)
            continue
        n = text_length(new)
        if filter_length and cfg.min_chars is not None and n < cfg.min_chars:
            report.remove(split, ex, "too_short", chars=n, min_chars=cfg.min_chars)
            continue
        if filter_length and cfg.max_chars is not None and n > cfg.max_chars:
            report.remove(split, ex, "too_long", chars=n, max_chars=cfg.max_chars)
            continue
        if any(new[k] != ex[k] for k in (*TEXT_KEYS, "messages") if k in ex):
            report.cleaned[split] += 1
        out.append(new)
    return out
