"""Scores of generated text against one reference each: exact match, BLEU, chrF, ROUGE-1/2/L.

- `exact_match` (0–1): equal after collapsing whitespace runs to one space and trimming (case kept).
- `bleu`, `chrf` (0–100): sacrebleu's corpus BLEU (`13a` tokenisation; `zh` when any sample holds a CJK
  character or Hangul syllable in its reference or its reply; per sample, that sample's own) and chrF (character
  6-grams, β = 2, whitespace ignored).
- `rouge1`, `rouge2`, `rougeL` (0–1): rouge-score F-measures, averaged over samples. rouge-score's own tokenizer
  keeps only `[a-z0-9]` and so drops Chinese entirely; a sample whose reference or reply holds any CJK character
  (or Hangul syllable) is segmented here instead — jieba words when `jieba` is installed, single CJK characters
  (and Hangul syllables) otherwise — with Latin words and numbers kept as rouge-score keeps them (lower-cased
  `[a-z0-9]` runs) and punctuation dropped. A segmented text is NFKC-normalised first, so full-width digits and
  letters (`２０２３`, `ＡＩ`) count as `2023`, `ai`; an English one is scored as written (NFKC would join `™` / `²`
  to the word before).

Per sample: sentence BLEU (effective order, exponential smoothing), sentence chrF and ROUGE-L F.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from typing import Any

from tunelab.text import CJK, HANGUL, jieba_or_none

_ZH_CHAR = re.compile(f"[{CJK}{HANGUL}]")

_ZH_TOKEN = re.compile(rf"[{CJK}{HANGUL}]|[a-z0-9]+")  # Korean syllables segmented as before
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def normalise(text: str) -> str:
    """Whitespace runs → one space, trimmed."""
    return " ".join(text.split())


@cache
def segment_zh(text: str) -> list[str]:
    """Tokens for ROUGE on Chinese: jieba words when jieba is installed, else single CJK characters; Latin
    words and numbers lower-cased `[a-z0-9]` runs (after NFKC, so full-width `２０２３` / `ＡＩ` are kept as
    `2023` / `ai`); punctuation and whitespace dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    jieba = jieba_or_none()
    if jieba is None:
        return _ZH_TOKEN.findall(text)
    out = []
    for word in jieba.lcut(text):
        word = word.strip()
        if word and (_ZH_CHAR.search(word) or re.fullmatch(r"[a-z0-9]+", word)):
            out.append(word)
        elif word:
            out += re.findall(r"[a-z0-9]+", word)
    return out


class _ZhTokenizer:
    """rouge-score tokenizer interface (`tokenize(text) -> list[str]`)."""

    def tokenize(self, text: str) -> list[str]:
        return segment_zh(text)


def _has_zh(text: str) -> bool:
    return _ZH_CHAR.search(text) is not None


def _rouge(zh: bool) -> Any:
    from rouge_score import rouge_scorer  # imported when replies are scored (with sacrebleu ~1 s), not at start-up

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_ZhTokenizer() if zh else None)


def score_generations(predictions: Sequence[str], references: Sequence[str],
                      language: str | None = None) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(corpus metrics, per-sample {exact_match, bleu, chrf, rouge_l}). `language`: `zh`, `en` or None
    (decided per sample: zh when its reference or its prediction holds any CJK character or Hangul syllable; the
    corpus BLEU's tokenisation by the references)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return {"exact_match": 0.0, "bleu": 0.0, "chrf": 0.0, **dict.fromkeys(ROUGE_TYPES, 0.0), "generated": 0}, []
    preds, refs = list(predictions), list(references)
    # each sample by its own texts (a set mixing Chinese and English replies scores both rightly): any CJK character
    # in the reference or the reply segments it, since rouge-score's tokenizer would drop that Chinese (a reply
    # mostly English names with a few Chinese words scored 1.0 against a different Chinese sentence); the corpus
    # BLEU, one tokenisation for all: `zh` when any reference has CJK (13a would keep each Chinese run one token; on
    # other text `zh` differs from 13a only on HTML entities) — by the references, so that two models' replies to one
    # set are scored alike
    zhs = ([_has_zh(r) or _has_zh(p) for p, r in zip(preds, refs, strict=True)] if language is None
           else [language == "zh"] * len(refs))
    tokenize = "zh" if (any(_has_zh(r) for r in refs) if language is None else language == "zh") else "13a"
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(tokenize=tokenize), CHRF()
    sentence_bleu = {zh: BLEU(tokenize="zh" if zh else "13a", effective_order=True) for zh in set(zhs)}
    rouge = {zh: _rouge(zh) for zh in set(zhs)}
    samples, sums = [], dict.fromkeys(ROUGE_TYPES, 0.0)
    for p, r, zh in zip(preds, refs, zhs, strict=True):
        rs = rouge[zh].score(r, p)  # (a segmented row is NFKC-normalised by segment_zh; an English one as written)
        for k in ROUGE_TYPES:
            sums[k] += float(rs[k].fmeasure)
        samples.append({
            "exact_match": float(normalise(p) == normalise(r)),
            "bleu": round(sentence_bleu[zh].sentence_score(p, [r]).score, 4),
            "chrf": round(chrf.sentence_score(p, [r]).score, 4),
            "rouge_l": round(float(rs["rougeL"].fmeasure), 6),
        })
    n = len(refs)
    corpus = {
        "exact_match": sum(s["exact_match"] for s in samples) / n,
        "bleu": round(bleu.corpus_score(preds, [refs]).score, 6),
        "chrf": round(chrf.corpus_score(preds, [refs]).score, 6),
        **{k: v / n for k, v in sums.items()},
        "generated": n,
        "bleu_tokenize": tokenize,
    }
    return corpus, samples
