"""NER rows that give a text and its entities as character spans → the words of the text (`split_words`, as predict
cuts a raw text: each CJK character a word) and a BIO tag per word: B- on the first word a span covers, I- on the
rest, O elsewhere.

The format is told by the row's keys (`text` is `data.text_field`):
- `{"text", "label": {TYPE: {ENTITY: [[start, end], ...]}}}` — CLUENER2020: `end` INCLUSIVE, ENTITY the text there;
- `{"text", "label": [[start, end, TYPE], ...]}` — doccano (its 1.x export: `labels`); or
  `[{"start", "end", "text", "labels": [TYPE]}]`, Label Studio's JSON-MIN export;
- `{"text", "entities": [[start, end, TYPE], ...]}` — spaCy; or `[{"start_offset", "end_offset", "label"}]`, newer
  doccano; or `[{"start", "end", "label"}]`; or `[{"type", "text", "start", "end", ...}]`, what ner's predict writes;
- `{"data": {"text"}, "annotations": [{"result": [{"value": {"start", "end", "text", "labels": [TYPE]}}]}]}` — a
  Label Studio JSON export's task (its cancelled annotations left out; one annotation a task).
Ends are exclusive but CLUENER's. Where a span names its entity text (CLUENER's key, a `text`), the text at its
offsets must be it. A span whose edge falls inside a word splits it there (`E12` of `E12http`, Korean `삼성전자` of
`삼성전자는`), and a span given twice, identically, is taken once: both counted (`Changed`, `Task.read_counts`).
Refused, in one line naming the row and field: a span outside the text or empty, one whose edge falls inside a
character as it prints (a letter and its combining mark), two that overlap (nested entities), an entity text that is
not at its offsets, a type that does not print (a control character, a zero-width space) or is a tag (`B-LOC`, `O`),
a label of another shape.

The example is a token row's (tokens, tags) with the words' `offsets` in the `raw_text` they index (not a `text`: not
cleaned, compared or augmented as one) and `continues`, the words that go on the one before them (split at an
entity's edge): duplicates are compared by the text's words (data/dedup.py).
"""

from __future__ import annotations

import json
import re
import unicodedata
from bisect import bisect_right
from typing import Any

from tunelab.data.readers import Record, check_unicode, require_text, row_has
from tunelab.errors import DataError
from tunelab.tasks.base import Example
from tunelab.text.offsets import offset_hint
from tunelab.text.words import grapheme_edge, split_words

SPAN_KEYS = ("label", "entities", "labels")  # (labels: doccano 1.x's export)
TYPE_KEYS = ("label", "labels", "type")  # a span object's type: doccano's, Label Studio JSON-MIN's, ner predict's
_BLANK = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}  # letters that print as nothing: Hangul fillers, braille
_AS_TAG = re.compile(r"^[BI]-(.+)$")
_SHAPES = ('CLUENER\'s {"TYPE": {"ENTITY": [[start, end], ...]}}, doccano\'s [[start, end, "TYPE"], ...] or '
           '[{"start", "end", "label"}, ...]')
_LS_SPAN = '{"value": {"start", "end", "labels": ["TYPE"]}}'


Word = tuple[str, int, int]  # a word, its start and end in the text


class Changed:
    """What reading span rows changed, per kind: how many, and the first, where (`take`: `Task.read_counts`)."""

    SAID = {"words_split_at_entity_edge": "word{s} split at an entity's edge",
            "duplicate_spans_taken_once": "span{s} given twice, identical, taken once"}

    def __init__(self) -> None:
        self.counts: dict[str, list[Any]] = {}
        self.source = ""  # the file or folder being read: a first row in it is named by its line

    def add(self, kind: str, n: int, what: str, rec: Record) -> None:
        if n:
            where = f"line {rec.line}" if rec.source == self.source else f"{rec.source}:{rec.line}"
            self.counts.setdefault(kind, [0, f"{what} at {where}"])[0] += n

    def take(self) -> dict[str, tuple[int, str]]:
        """{kind: (count, `N words split at an entity's edge (e.g. 'E12http' at line 4)`)}, then none."""
        out = {k: (n, f"{n} {self.SAID[k].format(s='s' * (n > 1))} (e.g. {first})")
               for k, (n, first) in self.counts.items()}
        self.counts.clear()
        return out


def span_key(row: dict[str, Any], text_field: str) -> str | None:
    """The key that holds a row's entities as character spans (`label`, `entities`, Label Studio's `annotations`),
    or None for a row that is not such a row."""
    if isinstance(row.get("data"), dict) and "annotations" in row:
        return "annotations"
    if text_field in row:
        return next((k for k in SPAN_KEYS if k in row), None)
    return None


def span_example(rec: Record, key: str, text_field: str, labelled: bool, changed: Changed | None = None) -> Example:
    """The example of a span row (module doc): its words, their offsets in the text, and (labelled) their tags;
    `changed` counts the words split and the spans given twice."""
    if key == "annotations":
        data = rec.data["data"]
        text = data.get(text_field)
        if text is None:
            raise DataError(rec.source, rec.line, f"data.{text_field}", f"missing field ({row_has(data)})")
        if not isinstance(text, str) or not text.strip():
            raise DataError(rec.source, rec.line, f"data.{text_field}", f"expected non-empty text, got {_show(text)}")
        check_unicode(rec, f"data.{text_field}", text)
    else:
        text = require_text(rec, text_field, None)
    words = split_words(text)
    if not words:
        raise DataError(rec.source, rec.line, text_field, "the text holds no word")
    tags: list[str] | None = None
    continues: list[int] = []
    if labelled:
        if len(held := [k for k in SPAN_KEYS if k in rec.data]) > 1:
            raise DataError(rec.source, rec.line, key, f"the row has both {' and '.join(held)}: which holds "
                            "its entities? keep one")
        words, continues, tags = _tags(rec, key, text, words, _spans(rec, key), changed or Changed())
    ex: Example = {"tokens": [w for w, _, _ in words], "offsets": [(s, e) for _, s, e in words], "raw_text": text,
                   "source": rec.source, "line": rec.line, "row": rec.data}
    if continues:
        ex["continues"] = continues
    if tags is not None:
        ex["tags"], ex["tags_from"] = tags, key
    return ex


# a span: (start, end exclusive, type, its entity text or None, how the row writes it, whether its end is inclusive)
Span = tuple[int, int, str, str | None, str, bool]


def _spans(rec: Record, key: str) -> list[Span]:
    value = rec.data[key]

    def fail(problem: str) -> DataError:
        return DataError(rec.source, rec.line, key, problem)

    if key == "annotations":
        return _label_studio(rec, value)
    if isinstance(value, dict) and key == "label":
        return _cluener(value, fail)
    if not isinstance(value, list):
        raise fail(f"expected {_SHAPES}, got {_show(value)}")
    out: list[Span] = []
    for k, item in enumerate(value, start=1):
        shown = f"span {k} {_show(item)}"
        if isinstance(item, list) and len(item) == 3:
            s, e = _ints(item[0], item[1], shown, fail)
            out.append((s, e, _type(item[2], lambda problem, shown=shown: fail(f"{shown}: {problem}")), None,
                        shown, False))
        elif isinstance(item, dict) and (("start" in item and "end" in item) or
                                         ("start_offset" in item and "end_offset" in item)):
            s, e = _ints(item.get("start", item.get("start_offset")), item.get("end", item.get("end_offset")),
                         shown, fail)
            given = item.get("text")
            if given is not None and not isinstance(given, str):
                raise fail(f"{shown}: its text is not a string")
            named = [k for k in TYPE_KEYS if k in item]
            if len(named) != 1:
                raise fail(f"{shown}: " + (f"both {' and '.join(named)}: which is its type? keep one" if named else
                                           f"no entity type ({', '.join(TYPE_KEYS[:-1])} or {TYPE_KEYS[-1]})"))
            typ = _type(item[named[0]], lambda problem, shown=shown: fail(f"{shown}: {problem}"))
            out.append((s, e, typ, given, shown, False))
        else:
            raise fail(f"{shown}: expected {_SHAPES}")
    return out


def _cluener(value: dict[str, Any], fail: Any) -> list[Span]:
    """CLUENER's `{TYPE: {ENTITY: [[start, end], ...]}}`, its ends inclusive (made exclusive here)."""
    out: list[Span] = []
    for typ, ents in value.items():
        _type(typ, fail)
        if not isinstance(ents, dict):
            raise fail(f"{typ!r}: expected {{\"ENTITY\": [[start, end], ...]}} (CLUENER), got {_show(ents)}")
        for ent, places in ents.items():
            if not isinstance(places, list) or not places:
                raise fail(f"{typ!r} {ent!r}: expected a list of [start, end] pairs, got {_show(places)}")
            for p in places:
                if not (isinstance(p, list) and len(p) == 2):
                    raise fail(f"{typ!r} {ent!r}: expected [start, end] (end inclusive), got {_show(p)}")
                s, e = _ints(p[0], p[1], f"{typ!r} {ent!r} {_show(p)}", fail)
                out.append((s, e + 1, typ, ent, f"{typ!r} {ent!r} {_show(p)}", True))
    return out


def _label_studio(rec: Record, value: Any) -> list[Span]:
    def fail(problem: str, field: str = "annotations") -> DataError:
        return DataError(rec.source, rec.line, field, problem)

    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise fail(f"expected Label Studio's list of annotations [{{\"result\": [...]}}], got {_show(value)}")
    kept = [(i, a) for i, a in enumerate(value) if not a.get("was_cancelled")]
    if not kept:
        raise fail("the task has no annotation (none made, or all cancelled): label it, or export only annotated "
                   "tasks")
    if len(kept) > 1:
        raise fail(f"{len(kept)} annotations of one task (several annotators): ner reads one a task; keep one")
    i, ann = kept[0]
    result = ann.get("result")
    if not isinstance(result, list):
        raise fail(f"expected a list of results, got {_show(result)}", f"annotations[{i}].result")
    out: list[Span] = []
    for k, item in enumerate(result):
        field = f"annotations[{i}].result[{k}]"
        v = item.get("value") if isinstance(item, dict) else None
        if not isinstance(v, dict) or "start" not in v or "end" not in v or "labels" not in v:
            what = f"a {item['type']!r} result" if isinstance(item, dict) and "type" in item else _show(item)
            raise fail(f"expected a labelled span {_LS_SPAN}, got {what} (ner reads labelled spans only)", field)

        def bad(problem: str, field: str = field) -> DataError:
            return fail(problem, field)

        s, e = _ints(v["start"], v["end"], "the span", bad)
        given = v.get("text")
        if given is not None and not isinstance(given, str):
            raise bad("its text is not a string")
        out.append((s, e, _type(v["labels"], bad), given, f"{field} [{s}, {e}) {_show(v['labels'])}", False))
    return out


def _ints(s: Any, e: Any, shown: str, fail: Any) -> tuple[int, int]:
    if any(isinstance(x, bool) or not isinstance(x, int) for x in (s, e)):
        raise fail(f"{shown}: start and end must be integers")
    return s, e


def _type(label: Any, fail: Any) -> str:
    """An entity type: a non-empty string of characters that print, without spaces at its ends, that is not a tag
    (`B-LOC`, `O`: ner writes the tags); or a list of one (Label Studio's `labels`). Shown quoted, escapes visible."""
    if isinstance(label, list) and len(label) == 1:
        label = label[0]
    elif isinstance(label, list):
        raise fail(f"{len(label)} labels {_show(label)} for one span: ner gives a span one type")
    shown = repr(label) if isinstance(label, str) else _show(label)
    if not isinstance(label, str) or not label or label.strip() != label:
        raise fail(f"entity type {shown}: expected a name (PER, LOC ...), no space at its ends")
    if bad := next((c for c in label if not c.isprintable() or c in _BLANK), None):
        name = unicodedata.name(bad, "")
        raise fail(f"entity type {shown}: it holds U+{ord(bad):04X}{f' {name}' if name else ''}, which does not "
                   "print: a type is a name of visible characters (PER, LOC ...)")
    if label == "O" or (tag := _AS_TAG.match(label)):
        raise fail(f"entity type {shown} is a tag, not a type: write the type name" + (
            f" ({tag.group(1)!r}); ner writes the B- and I- tags itself" if label != "O" else
            " (PER, LOC ...); a word outside every entity needs no span"))
    return label


def _tags(rec: Record, key: str, text: str, words: list[Word], spans: list[Span], changed: Changed,
          ) -> tuple[list[Word], list[int], list[str]]:
    """The words, split where a span's edge falls inside one; the words that go on the one before them (so split);
    and each word's tag. A span given twice, identically, is taken once."""
    for span in spans:
        _check(rec, key, text, span)
    words, continues, cut = _split(rec, key, text, words, spans)
    if cut:
        changed.add("words_split_at_entity_edge", len(cut), repr(cut[0]), rec)
    tags = ["O"] * len(words)
    owner: dict[int, str] = {}  # word → the span that tags it
    seen: set[tuple[int, int, str]] = set()
    for s, e, typ, _, shown, _ in spans:
        if (s, e, typ) in seen:
            changed.add("duplicate_spans_taken_once", 1, shown if shown.startswith("annotations[") else
                        f"{key} {shown}", rec)
            continue
        seen.add((s, e, typ))
        fail = _failing(rec, key, shown)
        covered = [i for i, (_, ws, we) in enumerate(words) if ws < e and we > s]
        if not covered:
            raise fail(f"covers no word, only {text[s:e]!r}")
        if clash := next((owner[i] for i in covered if i in owner), None):
            raise fail(f"overlaps {clash}: nested or overlapping entities are not supported (one type a word)")
        for n, i in enumerate(covered):
            tags[i], owner[i] = ("B-" if n == 0 else "I-") + typ, shown
    return words, continues, tags


def _check(rec: Record, key: str, text: str, span: Span) -> None:
    """A span is inside the text, not empty, and its entity text (where given) is the text at its offsets."""
    s, e, _, given, shown, inclusive = span
    fail = _failing(rec, key, shown)
    if given == "":
        raise fail("its entity text is empty")
    wrong = given is not None and (s < 0 or text[s:e] != given)  # (an offset's unit said before its range)
    hint = _where(text, given, s, e, inclusive) if given is not None and wrong else ""
    if wrong and hint:
        raise fail(f"the entity {given!r} is not the text at its offsets, which holds {text[max(s, 0):e]!r}{hint}")
    if s < 0 or e > len(text):
        raise fail(f"outside the text, whose {len(text)} characters are at 0 to {len(text) - 1}" + (
            " (CLUENER's end is inclusive)" if inclusive else f" (an end is exclusive: at most {len(text)})"))
    if s >= e:
        raise fail("an empty span: its start is after its end (CLUENER's end is inclusive: [5, 5] is one "
                   "character)" if inclusive else "an empty span: its start must be before its end (exclusive)")
    if wrong:
        raise fail(f"the entity {given!r} is not the text at its offsets, which holds {text[s:e]!r}")


def _split(rec: Record, key: str, text: str, words: list[Word], spans: list[Span],
           ) -> tuple[list[Word], list[int], list[str]]:
    """The words cut where a span's edge falls inside one (refused inside a character as it prints: a letter and its
    combining mark), the indices of the parts after a cut, and the words cut (in the text's order)."""
    starts = [ws for _, ws, _ in words]
    cuts: dict[int, set[int]] = {}  # word → the places it is cut at
    for s, e, _, _, shown, _ in spans:
        for at in (s, e):
            i = bisect_right(starts, at) - 1
            w, ws, we = words[i] if i >= 0 else ("", 0, 0)
            if not ws < at < we:
                continue
            if not grapheme_edge(text, at):
                raise _failing(rec, key, shown)(
                    f"{text[s:e]!r} {'starts' if at == s else 'ends'} inside a character of the word {w!r} (at "
                    f"{ws}–{we}): {text[at - 1]!r} and U+{ord(text[at]):04X} print as one; an entity's edge must fall "
                    "between characters as they print")
            cuts.setdefault(i, set()).add(at)
    if not cuts:
        return words, [], []
    out: list[Word] = []
    continues: list[int] = []
    for i, (w, ws, we) in enumerate(words):
        edges = [ws, *sorted(cuts.get(i, ())), we]
        for k, (a, b) in enumerate(zip(edges, edges[1:], strict=False)):
            if k:
                continues.append(len(out))
            out.append((w[a - ws:b - ws], a, b))
    return out, continues, [words[i][0] for i in sorted(cuts)]


def _where(text: str, given: str, s: int, e: int, inclusive: bool) -> str:
    """Where an entity the text does not hold at its span's offsets is: its end off (CLUENER's written exclusive),
    its start in UTF-8 / UTF-16 units, or the nearest place it is at (`offset_hint`); "" where it is nowhere."""
    if inclusive and s >= 0 and text[s:e - 1] == given:
        return "; CLUENER's end is inclusive, and this one looks exclusive"
    if s >= 0 and text.startswith(given, s):
        return f" (it ends at {s + len(given) - inclusive}: the end is off)"
    return offset_hint(text, given, s, "start", "entity")


def _failing(rec: Record, key: str, shown: str) -> Any:
    field, _, rest = shown.partition(" ") if shown.startswith("annotations[") else (key, "", shown)

    def fail(problem: str) -> DataError:
        return DataError(rec.source, rec.line, field, f"{rest}: {problem}")

    return fail


def _show(value: Any) -> str:
    """A value as the row writes it (JSON; a character that does not print escaped: `\\u200b`), cut to 60
    characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text if len(text) <= 60 else text[:59] + "…"
