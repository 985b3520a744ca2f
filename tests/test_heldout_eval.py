"""The held-out evaluation path: metrics on a file that lacks a trained class, numeric labels from pandas / numpy,
the model's data.clean at inference, truncation said at eval and predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from tunelab.metrics.classification import multi_label, single_label
from tunelab.tasks import classification_report


# ------------------------------------------------------------------------ macro averages
def test_macro_averages_over_the_classes_of_the_split() -> None:
    """A file with 2 of the 3 trained classes, all correct: macro F1 1.0 as scikit-learn's (was 0.667)."""
    names = ["a", "b", "c"]
    gold = np.array([0, 0, 1, 1])
    m = single_label(gold, np.eye(3)[gold], names)
    assert m["f1_macro"] == m["precision_macro"] == m["recall_macro"] == 1.0 == f1_score(gold, gold, average="macro")
    assert m["per_class"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert m["confusion_matrix"]["matrix"][2] == [0, 0, 0] and m["roc_auc"] is None
    # a class predicted but never gold counts (as a 0) as scikit-learn counts it; and every average is sklearn's
    pred = np.array([0, 2, 1, 1])
    m = single_label(gold, np.eye(3)[pred], names)
    for avg in ("macro", "micro", "weighted"):
        assert m[f"f1_{avg}"] == pytest.approx(f1_score(gold, pred, average=avg, zero_division=0))
        assert m[f"precision_{avg}"] == pytest.approx(precision_score(gold, pred, average=avg, zero_division=0))
        assert m[f"recall_{avg}"] == pytest.approx(recall_score(gold, pred, average=avg, zero_division=0))
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    json.dumps(m)  # metrics.json / eval's stdout: the nulls are JSON


def test_multi_label_macro_is_scikit_learns() -> None:
    """Multi-label: over every label, as scikit-learn scores an indicator matrix (unchanged)."""
    gold = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    m = multi_label(gold, gold.astype(float), ["a", "b", "c"], 0.5)
    assert m["f1_macro"] == pytest.approx(f1_score(gold, gold, average="macro", zero_division=0))


def test_report_shows_an_absent_class_without_scores() -> None:
    recs = [{"labels": ["a", "b", "c"], "gold": "a", "prediction": "a", "probs": [0.9, 0.05, 0.05]},
            {"gold": "b", "prediction": "b", "probs": [0.1, 0.8, 0.1]}]
    metrics = single_label(np.array([0, 1]), np.array([r["probs"] for r in recs]), ["a", "b", "c"])
    html = classification_report.results(recs, metrics)
    rows = html.split("<h4>Per class</h4>")[1]
    assert "<tr><td>c</td><td>-</td><td>-</td><td>-</td>" in rows  # was 0.0000 precision / recall / f1
    assert '<tr><td>a</td><td class="num">1.00</td>' in rows
