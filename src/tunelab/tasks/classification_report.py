"""The classification part of the report: per-class P/R/F1, confusion matrix, ROC / PR curves, reliability
(results), and the most confident mistakes with integrated-gradients attributions and the most confused label
pairs (error analysis)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from tunelab import plots
from tunelab.html import chart, esc, figs, metric_table, note, table
from tunelab.metrics import scalars
from tunelab.metrics.classification import per_class
from tunelab.models.attribution import explain, render_tokens
from tunelab.tasks.base import Task

MAX_CURVES = 12  # one-vs-rest curves drawn (the most frequent classes)
MISTAKES = 10  # most confident mistakes shown per split, each with attributions
IG_STEPS = 20
IG_BUDGET_S = 30.0  # per split, no attribution is started after this many seconds (MiniLM ~0.4 s each; 7B: minutes)


def label_names(recs: Sequence[dict[str, Any]]) -> list[str]:
    return list(recs[0].get("labels") or sorted({str(g) for r in recs for g in _as_list(r["gold"])}))


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list) else [v]


def results(recs: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> str:
    # scikit-learn when a report is built (~1 s to import), not whenever tunelab loads a classifier
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )
    from sklearn.metrics import precision_recall_fscore_support as prfs

    labels = label_names(recs)
    index = {n: i for i, n in enumerate(labels)}
    probs = np.asarray([r["probs"] for r in recs], dtype=float)
    multi = isinstance(recs[0]["gold"], list)
    out = [metric_table(scalars(metrics))]
    if multi:
        truth = np.zeros_like(probs, dtype=int)
        pred = np.zeros_like(probs, dtype=int)
        for i, r in enumerate(recs):
            truth[i, [index[g] for g in r["gold"]]] = 1
            pred[i, [index[g] for g in r["prediction"]]] = 1
        p, rc, f, s = prfs(truth, pred, zero_division=0)
        rows = [[n, p[k], rc[k], f[k], int(s[k])] for k, n in enumerate(labels)]
    else:
        y = np.asarray([index[r["gold"]] for r in recs])
        yhat = np.asarray([index[r["prediction"]] for r in recs])
        truth = np.eye(len(labels), dtype=int)[y]
        # the metrics' own per-class scores: a class not in the split's gold or predictions shows "-"
        rows = [[n, c["precision"], c["recall"], c["f1"], c["support"]] for n, c in per_class(y, yhat, labels).items()]
    out.append("<h4>Per class</h4>" + table(["class", "precision", "recall", "f1", "support"], rows))
    images = []
    if not multi:
        cm = confusion_matrix(y, yhat, labels=range(len(labels)))
        images.append(chart(plots.confusion(cm, labels), "confusion matrix"))
    else:
        out.append(note("Multi-label: no confusion matrix; curves and calibration are per label decision."))
    binary = not multi and len(labels) == 2
    classes = [1] if binary else sorted(range(len(labels)), key=lambda k: -truth[:, k].sum())
    roc, pr, skipped = {}, {}, 0
    for k in classes:
        col = truth[:, k]
        if col.min() == col.max():
            skipped += 1
            continue
        if len(roc) >= MAX_CURVES:
            skipped += 1
            continue
        fpr, tpr, _ = roc_curve(col, probs[:, k])
        prec, rec, _ = precision_recall_curve(col, probs[:, k])
        name = labels[k] if not binary else f"positive = {labels[1]}"
        roc[name] = (fpr, tpr, float(roc_auc_score(col, probs[:, k])))
        pr[name] = (rec, prec, float(average_precision_score(col, probs[:, k])))
    if roc:
        images += [chart(plots.curves(roc, "roc"), "ROC curves"),
                   chart(plots.curves(pr, "pr"), "precision-recall curves")]
    if skipped:
        out.append(note(f"{skipped} class(es) without curves (all rows one way in this split, or beyond the "
                        f"{MAX_CURVES} most frequent)."))
    if multi:
        conf = np.where(probs >= 0.5, probs, 1 - probs).ravel()
        correct = (pred == truth).ravel().astype(float)
    else:
        conf, correct = probs.max(1), (y == yhat).astype(float)
    png, ece = plots.reliability(conf, correct)
    images.append(chart(png, "reliability diagram"))
    out.append(figs(*images))
    out.append(note(f"Expected calibration error (10 equal-width confidence bins): {ece:.4f}. "
                    + ("ROC / PR one-vs-rest per class." if not binary else "")))
    return "".join(out)


def mistakes(task: Task, recs: Sequence[dict[str, Any]], examples: Sequence[dict[str, Any]] | None, model: Any,
             tokenizer: Any) -> str:
    wrong = [r for r in recs if not r["correct"]]
    if not wrong:
        return note("No mistakes in this split.")
    wrong.sort(key=lambda r: -max(r["probs"]))
    wrong = wrong[:MISTAKES]
    labels = recs[0].get("labels") or []
    attributions: list[str | None] = [None] * len(wrong)
    why = ""
    if model is None or tokenizer is None:
        why = "no model in memory"
    elif examples is None or len(examples) != len(recs):
        why = "the split's examples are not in memory"
    else:
        targets = [max(range(len(r["probs"])), key=r["probs"].__getitem__) for r in wrong]
        try:
            found = explain(task, model, tokenizer, [examples[r["index"]] for r in wrong], targets,
                            IG_STEPS, IG_BUDGET_S)
            attributions[:len(found)] = [render_tokens(a) for a in found]
        except Exception as e:  # noqa: BLE001 - a model without inputs_embeds support: show the texts only
            why = f"attributions failed: {type(e).__name__}: {e}"
    rows = []
    for r, attr in zip(wrong, attributions, strict=True):
        text = attr if attr is not None else esc(r["text"])
        gold = ", ".join(r["gold"]) if isinstance(r["gold"], list) else r["gold"]
        pred = ", ".join(r["prediction"]) if isinstance(r["prediction"], list) else r["prediction"]
        conf = max(r["probs"])
        top = labels[r["probs"].index(conf)] if labels else ""
        rows.append([r["index"], f'<div class="text">{text}</div>', esc(gold), esc(pred),
                     f"{conf:.3f}" + (f" ({esc(top)})" if top else "")])
    legend = ("Token colours: integrated gradients (pad-token baseline, "
              f"{IG_STEPS} steps) of the predicted class's logit; green pushes towards the prediction, red away. "
              "Hover a token for its score.") if not why else f"No attributions: {why}."
    done = sum(a is not None for a in attributions)
    if not why and done < len(wrong):
        legend += (f" Attributions for the first {done} of {len(wrong)}: the report starts no new one after "
                   f"{IG_BUDGET_S:g} s.")
    return (f"<h4>Most confident mistakes ({len(wrong)})</h4>"
            + table(["#", "text", "gold", "predicted", "confidence"], rows, raw_columns=(1, 2, 3, 4))
            + note(legend))


def confused(recs: Sequence[dict[str, Any]], shown: int = 10) -> str:
    if isinstance(recs[0]["gold"], list):  # multi-label: a missed label next to a wrongly added one
        pairs = Counter((m, a) for r in recs for m in set(r["gold"]) - set(r["prediction"])
                        for a in set(r["prediction"]) - set(r["gold"]))
    else:
        pairs = Counter((r["gold"], r["prediction"]) for r in recs if not r["correct"])
    if not pairs:
        return ""
    gold_n = Counter(g for r in recs for g in (r["gold"] if isinstance(r["gold"], list) else [r["gold"]]))
    rows = [[g, p, n, f"{100 * n / max(gold_n[g], 1):.1f} %"] for (g, p), n in pairs.most_common(shown)]
    return "<h4>Most confused label pairs</h4>" + table(["gold", "predicted", "rows", "share of gold"], rows)
