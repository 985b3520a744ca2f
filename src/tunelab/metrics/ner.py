"""Entity-level metrics with seqeval: P/R/F1 overall (micro) and per entity type, token accuracy."""

from __future__ import annotations

from typing import Any

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2


def entity_metrics(truth: list[list[str]], pred: list[list[str]], strict: bool = False) -> dict[str, Any]:
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
