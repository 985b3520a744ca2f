"""Extractive QA metrics: exact match and F1, max over the gold answers.

Decided per question (`style`): a Japanese question — a gold answer holds kana, or the context is Japanese (its kana
a tenth or more of its CJK characters) — is scored per character as JGLUE's JSQuAD evaluation scores it: spaces
removed, a final `。` dropped, each character a word of the SQuAD evaluation below (nltk would make a kana run one
word: a partly right answer scored 0). A Chinese one — a gold answer holds a CJK ideograph, or the context is
Chinese (a third or more CJK: an unanswerable question's too) — CMRC 2018 style, as the official
`cmrc2018_evaluate.py` scores it: lowercase, trim, drop the script's 32 marks (ASCII `- : _ * ^ / \\ ~ ` + =` and
`，。：？！“”；’《》·、「」（）－～『』`; other marks, ASCII `. , ( ) " %` and `…` among them, stay
and count), split into single characters of U+4E00–U+9FA5 and the words nltk's word tokenizer makes of the text
between them (without its sentence split, which needs a data download: `He said. It` gives `said.`, where
`nltk.word_tokenize` gives `said` `.`); F1 from the longest common substring of those segments. Otherwise the
official SQuAD v1.1/v2.0 evaluation — lowercase, strip ASCII punctuation, drop the articles a/an/the, collapse
whitespace; F1 over the bag of words (which would make a whole Chinese answer one word: a partly right one scored 0).
The prediction does not matter: two models are scored by one rule on one question.

An unanswerable question (no gold answers) scores 1 only for the empty prediction. Scores are 0–1.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

from tunelab.text import CJK_CHAR, is_chinese

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)
# the official CMRC 2018 script's `sp_char`, the only marks it removes (its `……` entry is two characters, so it never
# matches: `…` stays, a segment of its own); ASCII `.,()"%` are kept and counted there, and so here
_CMRC_PUNCT = frozenset("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")
_KANA = re.compile("[\u3040-\u30ff\uff66-\uff9f]")  # hiragana, katakana (and its half-width forms)
Style = Literal["squad", "cmrc", "jsquad"]


# -- SQuAD (English) -----------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _squad_em(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def _squad_f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:  # SQuAD 2.0: an empty answer matches only an empty answer
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


# -- CMRC 2018 (Chinese) -------------------------------------------------------------------------
def remove_punctuation(text: str) -> str:
    """The official script's `remove_punctuation` (what EM compares): lowercased, trimmed, its marks dropped."""
    return "".join(ch for ch in text.lower().strip() if ch not in _CMRC_PUNCT)


@cache
def _word_tokenizer() -> Any:
    # nltk (imported on the first Chinese question with non-Chinese text in it): the official script's
    # `nltk.word_tokenize` runs this tokenizer on each sentence; its sentence splitter needs a data download and
    # an answer span is one sentence
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def segments(text: str) -> list[str]:
    """The official script's `mixed_segmentation(text, rm_punc=True)`: each character of U+4E00–U+9FA5 a segment,
    the text between them nltk's words, the script's marks dropped."""
    out: list[str] = []
    run = ""
    for ch in text.lower().strip():
        if ch in _CMRC_PUNCT:
            continue
        if "\u4e00" <= ch <= "\u9fa5":
            if run:
                out += _word_tokenizer().tokenize(run)
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out += _word_tokenizer().tokenize(run)
    return out


def _longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def _cmrc_em(pred: str, gold: str) -> float:
    return float(remove_punctuation(pred) == remove_punctuation(gold))


def _cmrc_f1(pred: str, gold: str) -> float:
    p, g = segments(pred), segments(gold)
    if not p or not g:
        return float(p == g)
    common = _longest_common_substring(g, p)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


# -- JSQuAD (Japanese) ----------------------------------------------------------------------------
def _characters(text: str) -> str:
    """JGLUE's JSQuAD evaluation's text: spaces removed, a final `。` dropped, each character a word."""
    return " ".join(text.replace(" ", "").rstrip("。"))


def _jsquad_em(pred: str, gold: str) -> float:
    return _squad_em(_characters(pred), _characters(gold))


def _jsquad_f1(pred: str, gold: str) -> float:
    return _squad_f1(_characters(pred), _characters(gold))


# -- scoring -------------------------------------------------------------------------------------
def japanese(golds: Sequence[str], context: str = "") -> bool:
    """A Japanese question: a gold answer holds kana, or the context is CJK text (`is_chinese`: its CJK share) or a
    tenth kana (Japanese with much Latin: `Linux（リナックス）は…`), its kana a tenth or more of its CJK characters
    (a kanji-only answer in Japanese text) — not an English passage naming a Japanese word (SQuAD's `Pokémon
    (Japanese: ポケモン)`: scored as SQuAD's script scores it)."""
    kana = len(_KANA.findall(context))
    letters = sum(not c.isspace() for c in context)
    return any(_KANA.search(t) for t in golds) or (kana > 0 and (is_chinese(context) or 10 * kana >= letters)
                                                    and 10 * kana >= len(CJK_CHAR.findall(context)))


def cmrc_style(golds: Sequence[str], context: str = "") -> bool:
    """Score this question CMRC 2018 style: Chinese — a gold answer holds a CJK character (a Chinese answer in a
    mostly English context too), or the context is Chinese — and not Japanese (`japanese`)."""
    chinese = any(CJK_CHAR.search(t) for t in golds) or bool(context) and is_chinese(context)
    return chinese and not japanese(golds, context)


def style(golds: Sequence[str], context: str = "") -> Style:
    """How this question is scored: "jsquad" (Japanese: per character), "cmrc" (Chinese) or "squad"."""
    return "jsquad" if japanese(golds, context) else "cmrc" if cmrc_style(golds, context) else "squad"


def answerable(golds: Sequence[str], chinese: bool = False) -> list[str]:
    """The gold answers that say something once normalised (the official SQuAD v2 script drops the others); none:
    the question is unanswerable."""
    norm = remove_punctuation if chinese else normalize_answer
    return [g for g in golds if norm(g)]


def score(pred: str, golds: Sequence[str], scoring: Style | None = None) -> tuple[float, float]:
    """(exact match, F1) of one prediction, max over the gold answers, as the official SQuAD v2 script scores it: golds
    that normalise to nothing are dropped, and a question left without any is unanswerable — the empty gold, which
    a prediction matches when it too normalises to nothing (`the` does; an empty answer to an answerable
    question scores 0). `scoring`: the question's `style`; None decides by the golds."""
    if scoring is None:
        scoring = style(golds)
    em, f1 = {"cmrc": (_cmrc_em, _cmrc_f1), "jsquad": (_jsquad_em, _jsquad_f1)}.get(scoring, (_squad_em, _squad_f1))
    kept = answerable(golds, scoring == "cmrc") or [""]
    return max(em(pred, g) for g in kept), max(f1(pred, g) for g in kept)


def qa_metrics(preds: Sequence[str], golds: Sequence[Sequence[str]],
               styles: Sequence[Style | None] | None = None) -> dict[str, Any]:
    """`f1` (headline), `exact_match`, `n`; with unanswerable questions in the set also
    `has_answer_f1` / `has_answer_exact_match` / `has_answer_n` and the same for `no_answer_`. `styles`: per
    question, its `style`; None (or a None in it) decides by the golds."""
    styles = [None] * len(preds) if styles is None else styles
    scores = [score(p, g, c) for p, g, c in zip(preds, golds, styles, strict=True)]
    n = len(scores)
    out: dict[str, Any] = {
        "f1": sum(f for _, f in scores) / max(n, 1),
        "exact_match": sum(e for e, _ in scores) / max(n, 1),
        "n": n,
    }
    has = [bool(g) for g in golds]  # as the official script splits them: by the answers given, before normalising
    if not all(has):
        for name, keep in (("has_answer", True), ("no_answer", False)):
            part = [s for s, h in zip(scores, has, strict=True) if h == keep]
            if part:  # (as the official script: a kind of question the set does not hold has no keys)
                out[f"{name}_f1"] = sum(f for _, f in part) / len(part)
                out[f"{name}_exact_match"] = sum(e for e, _ in part) / len(part)
                out[f"{name}_n"] = len(part)
    return out
