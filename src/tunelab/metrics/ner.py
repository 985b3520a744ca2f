"""Entity-level metrics with seqeval: P/R/F1 overall (micro) and per entity type, token accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np


def entity_metrics(truth: list[list[str]], pred: list[list[str]], strict: bool = False) -> dict[str, Any]:
    # seqeval (and the scikit-learn it loads, ~1 s) when entities are scored, not whenever tunelab loads its tasks
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    kw: dict[str, Any] = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(truth, pred, output_dict=True, zero_division=0, **kw)
    tokens = sum(len(t) for t in truth)
    correct = sum(a == b for t, p in zip(truth, pred, strict=True) for a, b in zip(t, p, strict=True))
    per_type = {
        k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
            "support": int(v["support"])}
        for k, v in report.items() if not k.endswith(" avg")
    }
    return {
        "f1": float(f1_score(truth, pred, zero_division=0, **kw)),
        "precision": float(precision_score(truth, pred, zero_division=0, **kw)),
        "recall": float(recall_score(truth, pred, zero_division=0, **kw)),
        "token_accuracy": correct / max(tokens, 1),
        "per_type": per_type,
        "n": len(truth),
    }


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1) for each entity of a BIO sequence."""
    found: list[tuple[str, int, int]] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-") or (tag.startswith("I-") and (not found or found[-1][2] != i
                                                              or found[-1][0] != tag[2:])):
            found.append((tag[2:], i, i + 1))
        elif tag.startswith("I-"):
            typ, s, _ = found[-1]
            found[-1] = (typ, s, i + 1)
    return found


def bio_viterbi(scores: np.ndarray, labels: Sequence[str]) -> list[int]:
    """The most probable tag sequence that is valid BIO: `I-X` only after `B-X` or `I-X` (not first).

    `scores`: (words, labels) log-probabilities, a word's row may be all -inf but one (a forced tag). A model with
    a per-token softmax picks each word's tag alone and can end an entity with an orphan `I-`, which seqeval
    counts as an entity of its own; decoding under the constraint (as a CRF with forbidden transitions does,
    AllenNLP's `allowed_transitions`) chooses the best valid path instead. Where the per-word choice is valid it
    is the path returned."""
    n, size = scores.shape
    if n == 0:
        return []
    inside, trans = _bio_transitions(tuple(labels))
    best = np.where(inside, -np.inf, scores[0])
    back = np.zeros((n, size), dtype=np.int64)
    for t in range(1, n):
        cand = best[:, None] + trans
        back[t] = cand.argmax(0)
        best = cand[back[t], np.arange(size)] + scores[t]
    path = [int(best.argmax())]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


@cache
def _bio_transitions(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Which labels are `I-` (not allowed first) and the transition scores [prev, next]: 0, or -inf for an `I-X`
    after anything but `B-X` / `I-X`. Built once per label set, not per sentence."""
    inside = np.array([lab.startswith("I-") for lab in labels])
    allowed = np.ones((len(labels), len(labels)), dtype=bool)
    for j, lab in enumerate(labels):
        if lab.startswith("I-"):
            allowed[:, j] = [p in (f"B-{lab[2:]}", lab) for p in labels]
    return inside, np.where(allowed, 0.0, -np.inf)
