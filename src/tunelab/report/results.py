"""Results by task, from the per-example records: classification (metrics, confusion matrix, per-class
P/R/F1, ROC / PR curves, reliability), NER (per type, error examples with spans), QA (by answer length and
question word), SFT (samples with references, per-example loss)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from tunelab.report import plots
from tunelab.report.html import Context, esc, figs, img, note, table

MAX_CURVES = 12  # one-vs-rest curves drawn (the most frequent classes)


def results_section(ctx: Context) -> str | None:
    if not ctx.records:
        return note("No per-example records (RUN/predictions/*.jsonl) for this task.")
    build = {"classification": classification, "ner": ner, "qa": qa, "sft": sft}.get(ctx.task_name)
    if build is None:
        return note(f"No task-specific results for task {ctx.task_name!r}.")
    return "".join(f"<h3>{esc(split)} ({len(recs):,} rows)</h3>" + (
        sft(recs, ctx.metrics.get(split) or {}, ctx.generations.get(split)) if build is sft
        else build(recs, ctx.metrics.get(split) or {})) for split, recs in ctx.records.items() if recs)


def _scalar_table(metrics: dict[str, Any]) -> str:
    rows = [[k, v] for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return table(["metric", "value"], rows) if rows else ""


# -- classification ------------------------------------------------------------------------------
def label_names(recs: Sequence[dict[str, Any]]) -> list[str]:
    return list(recs[0].get("labels") or sorted({str(g) for r in recs for g in _as_list(r["gold"])}))


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list) else [v]


def classification(recs: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> str:
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
    out = [_scalar_table(metrics)]
    if multi:
        truth = np.zeros_like(probs, dtype=int)
        pred = np.zeros_like(probs, dtype=int)
        for i, r in enumerate(recs):
            truth[i, [index[g] for g in r["gold"]]] = 1
            pred[i, [index[g] for g in r["prediction"]]] = 1
        p, rc, f, s = prfs(truth, pred, zero_division=0)
    else:
        y = np.asarray([index[r["gold"]] for r in recs])
        yhat = np.asarray([index[r["prediction"]] for r in recs])
        truth = np.eye(len(labels), dtype=int)[y]
        p, rc, f, s = prfs(y, yhat, labels=range(len(labels)), zero_division=0)
    out.append("<h4>Per class</h4>" + table(["class", "precision", "recall", "f1", "support"],
                                           [[n, p[k], rc[k], f[k], int(s[k])] for k, n in enumerate(labels)]))
    images = []
    if not multi:
        cm = confusion_matrix(y, yhat, labels=range(len(labels)))
        images.append(img(plots.confusion(cm, labels), "confusion matrix"))
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
        images += [img(plots.curves(roc, "roc"), "ROC curves"), img(plots.curves(pr, "pr"), "precision-recall curves")]
    if skipped:
        out.append(note(f"{skipped} class(es) without curves (all rows one way in this split, or beyond the "
                        f"{MAX_CURVES} most frequent)."))
    if multi:
        conf = np.where(probs >= 0.5, probs, 1 - probs).ravel()
        correct = (pred == truth).ravel().astype(float)
    else:
        conf, correct = probs.max(1), (y == yhat).astype(float)
    png, ece = plots.reliability(conf, correct)
    images.append(img(png, "reliability diagram"))
    out.append(figs(*images))
    out.append(note(f"Expected calibration error (10 equal-width confidence bins): {ece:.4f}. "
                    + ("ROC / PR one-vs-rest per class." if not binary else "")))
    return "".join(out)


# -- NER -----------------------------------------------------------------------------------------
def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    from tunelab.tasks.ner import spans

    return set(spans(list(tags)))


def highlight(tokens: Sequence[str], ents: set[tuple[str, int, int]], other: set[tuple[str, int, int]],
              kind: str) -> str:
    """Tokens with `ents` as <mark class="{kind}"> (class "match" when `other` has the same entity)."""
    start = {s: (t, s, e) for t, s, e in ents}
    cjk = sum(bool(re.fullmatch(r"[\u3400-\u9fff\uf900-\ufaff]", w)) for w in tokens)
    glue = "" if cjk * 2 > len(tokens) else " "  # Chinese character-level tokens join without spaces
    parts, i = [], 0
    while i < len(tokens):
        if i in start:
            t, s, e = start[i]
            cls = "match" if (t, s, e) in other else kind
            words = glue.join(esc(w) for w in tokens[s:e])
            parts.append(f'<mark class="{cls} t-{esc(re.sub(r"[^A-Za-z0-9_-]", "_", t))}">{words}'
                         f'<span class="etype">{esc(t)}</span></mark>')
            i = e
        else:
            parts.append(esc(tokens[i]))
            i += 1
    return glue.join(parts)


def ner(recs: Sequence[dict[str, Any]], metrics: dict[str, Any], shown: int = 15) -> str:
    out = [_scalar_table(metrics)]
    per = metrics.get("per_type") or {}
    if per:
        out.append("<h4>Per entity type</h4>" + table(
            ["type", "precision", "recall", "f1", "support"],
            [[t, m["precision"], m["recall"], m["f1"], m["support"]] for t, m in sorted(per.items())]))
        out.append(figs(img(plots.bars({"f1": {t: m["f1"] for t, m in sorted(per.items())}}, "F1 per entity type"),
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


# -- QA ------------------------------------------------------------------------------------------
QUESTION_WORDS_ZH = ("为什么", "什么", "多少", "哪", "谁", "几", "何时", "怎么", "如何")
QUESTION_WORDS_EN = ("how many", "how much", "what", "which", "who", "whom", "whose", "when", "where", "why", "how")


def question_word(question: str) -> str:
    """The question's wh-word (English: the first one; Chinese: 什么 / 谁 / 哪 / 多少 / ...), else `other`."""
    if re.search(r"[\u3400-\u9fff]", question):
        return next((w for w in QUESTION_WORDS_ZH if w in question), "other")
    low = question.lower()
    hits = [(m.start(), w) for w in QUESTION_WORDS_EN for m in [re.search(rf"\b{w}\b", low)] if m]
    return min(hits)[1] if hits else "other"


def length_bucket(answers: Sequence[str]) -> str:
    """The shortest gold answer's length: words, or characters for Chinese."""
    if not answers:
        return "no answer"
    a = min(answers, key=len)
    n = len(a) if re.search(r"[\u3400-\u9fff]", a) else len(a.split())
    unit = "chars" if re.search(r"[\u3400-\u9fff]", a) else "words"
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


def qa(recs: Sequence[dict[str, Any]], metrics: dict[str, Any], shown: int = 15) -> str:
    out = [_scalar_table(metrics)]
    by_len = _buckets(recs, lambda r: length_bucket(r["gold"]))
    by_q = _buckets(recs, lambda r: question_word(r.get("question") or r["text"].split("\n", 1)[0]))
    for title, rows in (("By gold answer length", by_len), ("By question word", by_q)):
        out.append(f"<h4>{title}</h4>" + table(["bucket", "n", "exact match", "F1"], rows))
    out.append(figs(img(plots.bars({"F1": {r[0]: r[3] for r in by_len}, "EM": {r[0]: r[2] for r in by_len}},
                                   "by answer length"), "by answer length"),
                    img(plots.bars({"F1": {r[0]: r[3] for r in by_q}, "EM": {r[0]: r[2] for r in by_q}},
                                   "by question word"), "by question word")))
    wrong = sorted((r for r in recs if not r["correct"]), key=lambda r: r["score"])[:shown]
    if wrong:
        rows = [[r["index"], r.get("question") or r["text"][:200], " | ".join(r["gold"]) or "(no answer)",
                 r["prediction"] or "(no answer)", r["score"]] for r in wrong]
        out.append(f"<h4>Errors (the {len(wrong)} lowest F1)</h4>"
                   + table(["#", "question", "gold", "predicted", "F1"], rows))
    return "".join(out)


# -- SFT -----------------------------------------------------------------------------------------
SAMPLE_SCORES = ("exact_match", "bleu", "chrf", "rouge_l", "rouge1", "rouge2", "rougeL")


def sft(recs: Sequence[dict[str, Any]], metrics: dict[str, Any], generations: Sequence[dict[str, Any]] | None = None,
        shown: int = 10) -> str:
    """`generations`: RUN/predictions/<split>.generations.jsonl (replies of the first rows with per-sample
    generation scores), when the run generated them."""
    out = [_scalar_table(metrics)]
    if generations:
        names = [k for k in SAMPLE_SCORES if any(k in g for g in generations)]
        rows = [[i, g.get("prompt", ""), g.get("reference", ""), g.get("prediction", ""), *(g.get(k) for k in names),
                 recs[i].get("loss") if i < len(recs) else None] for i, g in enumerate(generations[:shown])]
        out.append(f"<h4>Generated replies (the first {len(rows)} of {len(generations)})</h4>"
                   + table(["#", "prompt", "reference", "generated", *names, "loss"], rows))
    losses = [r["loss"] for r in recs if r.get("loss") is not None]
    if losses:
        out.append(figs(img(plots.histogram({"examples": losses}, "per-example loss", "mean assistant-token NLL"),
                            "per-example loss")))
    generated = any(r.get("prediction") is not None for r in recs)
    picked = list(recs[:shown])
    rows = []
    for r in picked:
        loss = r.get("loss")
        row = [r["index"], r["text"], r["gold"]]
        if generated:
            row.append(r.get("prediction") or "")
        rows.append([*row, loss, math.exp(min(loss, 700)) if loss is not None else None, r["score"]])
    headers = ["#", "prompt", "reference", *(["generated"] if generated else []), "loss", "perplexity", "score"]
    out.append(f"<h4>Samples (the first {len(picked)})</h4>" + table(headers, rows))
    out.append(note("score = 1 - min(1, loss / 10) per example (loss: mean cross-entropy of the reference's "
                    "assistant tokens)." + ("" if generated else " No generated replies: set "
                                            "task.generation.eval_generate: true to generate them.")))
    return "".join(out)
