"""Classification metrics with scikit-learn: accuracy, macro/micro/weighted P/R/F1, per-class
report, ROC-AUC (binary, one-vs-rest) and the confusion matrix.

Single-label macro averages are over the classes that occur in the scored rows, as gold or as prediction
(scikit-learn's default, which Hugging Face `evaluate` uses): a trained class absent from a file is no 0 in
its average, and its `per_class` scores are null (support 0). Multi-label averages are over every label, as
scikit-learn scores a label-indicator matrix."""

from __future__ import annotations

from typing import Any

import numpy as np


def _skm() -> Any:
    """scikit-learn's metrics, imported when first scored (~1 s: `tunelab predict` and `serve` never pay it)."""
    from sklearn import metrics

    return metrics


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def _averaged(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Macro / micro / weighted P/R/F1 over the classes in `y_true` or `y_pred` (scikit-learn's `labels=None`)."""
    out: dict[str, float] = {}
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = _skm().precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    return out


def per_class(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> dict[str, dict[str, float | None]]:
    """Every class's P/R/F1 and support; a class neither in `y_true` nor predicted has null scores (not 0s)."""
    p, r, f, s = _skm().precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(names))), average=None, zero_division=0
    )
    seen = set(np.unique(y_true).tolist()) | set(np.unique(y_pred).tolist())
    return {
        n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        if i in seen else {"precision": None, "recall": None, "f1": None, "support": 0}
        for i, n in enumerate(names)
    }


def single_label(y_true: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
    """`y_true`: class ids (n,); `probs`: (n, k) probabilities."""
    k = len(names)
    y_pred = probs.argmax(axis=-1)
    out: dict[str, Any] = {"accuracy": float(_skm().accuracy_score(y_true, y_pred))}
    out.update(_averaged(y_true, y_pred))
    present = np.unique(y_true)
    if k == 2 and len(present) == 2:
        out["roc_auc"] = float(_skm().roc_auc_score(y_true, probs[:, 1]))
    elif k > 2 and len(present) == k:
        out["roc_auc"] = float(_skm().roc_auc_score(y_true, probs, multi_class="ovr", labels=list(range(k))))
    else:
        out["roc_auc"] = None  # undefined: some class never occurs in this split
    out["per_class"] = per_class(y_true, y_pred, names)
    out["confusion_matrix"] = {
        "labels": names,
        "matrix": _skm().confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist(),
    }
    out["n"] = int(len(y_true))
    return out


def multi_label(y_true: np.ndarray, probs: np.ndarray, names: list[str], threshold: float) -> dict[str, Any]:
    """`y_true`: (n, k) 0/1 matrix; `probs`: (n, k) independent probabilities."""
    y_pred = (probs >= threshold).astype(int)
    y_true = y_true.astype(int)
    out: dict[str, Any] = {
        "f1_micro": float(_skm().f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "subset_accuracy": float(_skm().accuracy_score(y_true, y_pred)),
        "hamming_loss": float(_skm().hamming_loss(y_true, y_pred)),
    }
    for avg in ("macro", "micro", "weighted", "samples"):
        p, r, f, _ = _skm().precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    has_both = [(y_true[:, j].min() == 0) and (y_true[:, j].max() == 1) for j in range(len(names))]
    out["roc_auc"] = (
        float(_skm().roc_auc_score(y_true[:, has_both], probs[:, has_both], average="macro")) if any(has_both) else None
    )
    p, r, f, s = _skm().precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    out["per_class"] = {
        n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, n in enumerate(names)
    }
    out["n"] = int(len(y_true))
    return out
