"""The QA part of the report: scores by gold answer length and by question word, and the worst answers."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from tunelab import plots
from tunelab.html import chart, figs, metric_table, table
from tunelab.metrics import scalars
from tunelab.text import CJK_CHAR

QUESTION_WORDS_ZH = ("为什么", "什么", "多少", "哪", "谁", "几", "何时", "怎么", "如何")
QUESTION_WORDS_EN = ("how many", "how much", "what", "which", "who", "whom", "whose", "when", "where", "why", "how")


def question_word(question: str) -> str:
    """The question's wh-word (English: the first one; Chinese: 什么 / 谁 / 哪 / 多少 / ...), else `other`."""
    if CJK_CHAR.search(question):
        return next((w for w in QUESTION_WORDS_ZH if w in question), "other")
    low = question.lower()
    hits = [(m.start(), w) for w in QUESTION_WORDS_EN for m in [re.search(rf"\b{w}\b", low)] if m]
    return min(hits)[1] if hits else "other"


def length_bucket(answers: Sequence[str]) -> str:
    """The shortest gold answer's length: words, or characters for Chinese."""
    if not answers:
        return "no answer"
    a = min(answers, key=len)
    n = len(a) if CJK_CHAR.search(a) else len(a.split())
    unit = "chars" if CJK_CHAR.search(a) else "words"
    for hi, name in ((1, "1"), (2, "2"), (4, "3-4"), (8, "5-8")):
        if n <= hi:
            return f"{name} {unit[:-1] if hi == 1 else unit}"
    return f"9+ {unit}"


def _buckets(recs: Sequence[dict[str, Any]], key: Any) -> list[list[Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        groups[key(r)].append(r)
    return [[k, len(g), float(np.mean([r["correct"] for r in g])), float(np.mean([r["score"] for r in g]))]
            for k, g in sorted(groups.items(), key=lambda kv: -len(kv[1]))]


def results(recs: Sequence[dict[str, Any]], metrics: dict[str, Any], shown: int = 15) -> str:
    out = [metric_table(scalars(metrics))]
    by_len = _buckets(recs, lambda r: length_bucket(r["gold"]))
    by_q = _buckets(recs, lambda r: question_word(r.get("question") or r["text"].split("\n", 1)[0]))
    for title, rows in (("By gold answer length", by_len), ("By question word", by_q)):
        out.append(f"<h4>{title}</h4>" + table(["bucket", "n", "exact match", "F1"], rows))
    out.append(figs(chart(plots.bars({"F1": {r[0]: r[3] for r in by_len}, "EM": {r[0]: r[2] for r in by_len}},
                                   "by answer length"), "by answer length"),
                    chart(plots.bars({"F1": {r[0]: r[3] for r in by_q}, "EM": {r[0]: r[2] for r in by_q}},
                                   "by question word"), "by question word")))
    wrong = sorted((r for r in recs if not r["correct"]), key=lambda r: r["score"])[:shown]
    if wrong:
        rows = [[r["index"], r.get("question") or r["text"][:200], " | ".join(r["gold"]) or "(no answer)",
                 r["prediction"] or "(no answer)", r["score"]] for r in wrong]
        out.append(f"<h4>Errors (the {len(wrong)} lowest F1)</h4>"
                   + table(["#", "question", "gold", "predicted", "F1"], rows))
    return "".join(out)
