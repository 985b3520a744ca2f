"""The NER part of the report: per-type scores, error kinds, and the worst sentences with gold and predicted
entities highlighted."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tunelab import plots
from tunelab.html import chart, esc, figs, metric_table, table
from tunelab.metrics import scalars
from tunelab.metrics.ner import spans
from tunelab.text import gaps


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    return set(spans(list(tags)))


def highlight(tokens: Sequence[str], ents: set[tuple[str, int, int]], other: set[tuple[str, int, int]],
              kind: str) -> str:
    """Tokens with `ents` as <mark class="{kind}"> (class "match" when `other` has the same entity)."""
    start = {s: (t, s, e) for t, s, e in ents}
    glue = gaps(tokens)  # as the records' `text`: a Chinese character-level row without spaces
    parts, i = [], 0
    while i < len(tokens):
        if i in start:
            t, s, e = start[i]
            cls = "match" if (t, s, e) in other else kind
            words = "".join(glue[k] * (k > s) + esc(tokens[k]) for k in range(s, e))
            parts.append(glue[i] + f'<mark class="{cls} t-{esc(re.sub(r"[^A-Za-z0-9_-]", "_", t))}">{words}'
                         f'<span class="etype">{esc(t)}</span></mark>')
            i = e
        else:
            parts.append(glue[i] + esc(tokens[i]))
            i += 1
    return "".join(parts)


def results(recs: Sequence[dict[str, Any]], metrics: dict[str, Any], shown: int = 15) -> str:
    out = [metric_table(scalars(metrics))]
    per = metrics.get("per_type") or {}
    if per:
        out.append("<h4>Per entity type</h4>" + table(
            ["type", "precision", "recall", "f1", "support"],
            [[t, m["precision"], m["recall"], m["f1"], m["support"]] for t, m in sorted(per.items())]))
        out.append(figs(chart(plots.bars({"f1": {t: m["f1"] for t, m in sorted(per.items())}}, "F1 per entity type"),
                            "F1 per entity type")))
    kinds: dict[str, int] = defaultdict(int)
    for r in recs:
        g, p = entity_spans(r["gold"]), entity_spans(r["prediction"])
        for _t, s, e in g - p:
            same_span = any((s, e) == (s2, e2) for _, s2, e2 in p)
            overlap = any(s < e2 and s2 < e for _, s2, e2 in p)
            kinds["wrong type" if same_span else "wrong boundary" if overlap else "missed"] += 1
        for _t, s, e in p - g:
            if not any(s < e2 and s2 < e for _, s2, e2 in g):
                kinds["spurious"] += 1
    if kinds:
        out.append("<h4>Error kinds</h4>" + table(["kind", "count"], sorted(kinds.items(), key=lambda kv: -kv[1])))
    wrong = sorted((r for r in recs if not r["correct"]), key=lambda r: r["score"])[:shown]
    if wrong:
        rows = []
        for r in wrong:
            tokens = r.get("tokens") or r["text"].split()
            g, p = entity_spans(r["gold"]), entity_spans(r["prediction"])
            rows.append([r["index"], highlight(tokens, g, p, "gold"), highlight(tokens, p, g, "pred"), r["score"]])
        out.append(f"<h4>Error examples (the {len(wrong)} lowest sentence F1)</h4>"
                   '<p class="legend"><mark class="gold">gold only</mark><mark class="pred">predicted only</mark>'
                   '<mark class="match">both</mark></p>' + table(["#", "gold", "predicted", "F1"], rows, (1, 2)))
    return "".join(out)


def _entity_f1(sums: np.ndarray) -> np.ndarray:
    both = sums[..., 1] + sums[..., 2]
    return np.where(both > 0, 2 * sums[..., 0] / np.maximum(both, 1), 1.0)


def paired_parts(records: list[dict[str, Any]]) -> tuple[str, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """compare's bootstrap of the corpus entity F1 (exact type and span, as `f1`): per sentence (entities found
    right, gold entities, predicted entities), the F1 of their sums over the resampled sentences."""
    parts = []
    for r in records:
        gold, pred = entity_spans(r["gold"]), entity_spans(r["prediction"])
        parts.append((len(gold & pred), len(gold), len(pred)))
    return "entity F1", np.asarray(parts, dtype=float).reshape(-1, 3), _entity_f1
