"""Error analysis: the most confident classification mistakes with integrated-gradients token attributions,
the most confused label pairs, and near-duplicates between the training and evaluation splits."""

from __future__ import annotations

import importlib
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tunelab.report.html import Context, esc, note, table

MISTAKES = 10  # most confident mistakes shown per split, each with attributions
IG_STEPS = 20
DUPLICATES_SHOWN = 20


def errors_section(ctx: Context) -> str | None:
    out = []
    if ctx.task_name == "classification":
        for split, recs in ctx.records.items():
            body = _mistakes(ctx, split, recs) + _confused(recs)
            if body:
                out.append(f"<h3>{esc(split)}</h3>{body}")
    out.append(_near_duplicates(ctx))
    return "".join(out) or None


def _mistakes(ctx: Context, split: str, recs: Sequence[dict[str, Any]]) -> str:
    wrong = [r for r in recs if not r["correct"]]
    if not wrong:
        return note("No mistakes in this split.")
    wrong.sort(key=lambda r: -max(r["probs"]))
    wrong = wrong[:MISTAKES]
    labels = recs[0].get("labels") or []
    examples = ctx.splits.get(split)
    attributions: list[str | None] = [None] * len(wrong)
    why = ""
    if ctx.model is None or ctx.tokenizer is None or ctx.task is None:
        why = "no model in memory"
    elif examples is None or len(examples) != len(recs):
        why = "the split's examples are not in memory"
    else:
        from tunelab.report.attribution import explain, render_tokens

        targets = [max(range(len(r["probs"])), key=r["probs"].__getitem__) for r in wrong]
        try:
            found = explain(ctx.task, ctx.model, ctx.tokenizer, [examples[r["index"]] for r in wrong], targets,
                            IG_STEPS)
            attributions = [render_tokens(a) for a in found]
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
    return (f"<h4>Most confident mistakes ({len(wrong)})</h4>"
            + table(["#", "text", "gold", "predicted", "confidence"], rows, raw_columns=(1, 2, 3, 4))
            + note(legend))


def _confused(recs: Sequence[dict[str, Any]], shown: int = 10) -> str:
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


def example_text(task_name: str, ex: dict[str, Any]) -> str:
    """The text compared for near-duplicates: the input, as in the records."""
    if task_name == "ner":
        from tunelab.tasks.ner import _join

        return _join(ex["tokens"])[0]
    if task_name == "qa":
        return ex["question"] + "\n" + ex["context"]
    if task_name == "sft":
        return "\n".join(m["content"] for m in ex["messages"] if m["role"] != "assistant")
    return ex["text"] + ("\n" + ex["text_pair"] if "text_pair" in ex else "")


def _near_duplicates(ctx: Context) -> str:
    head = "<h3>Near-duplicates between train and evaluation</h3>"
    try:
        leakage = importlib.import_module("tunelab.leakage")
    except ImportError:
        return head + note("Skipped: tunelab.leakage is not available in this installation.")
    train = ctx.splits.get("train")
    if not train:
        return head + note("Skipped: the training split is not available (evaluation-only report).")
    train_texts = [example_text(ctx.task_name, ex) for ex in train]
    out = [head]
    for split, examples in ctx.splits.items():
        if split == "train":
            continue
        t0 = time.perf_counter()
        found = leakage.near_duplicates(train_texts, [example_text(ctx.task_name, ex) for ex in examples],
                                        threshold=0.9, top_k=1)
        hits = sorted(found, key=lambda d: -d["similarity"])
        share = len({d["eval_index"] for d in hits}) / max(len(examples), 1)
        out.append(note(f"{split}: {len({d['eval_index'] for d in hits})} of {len(examples):,} rows "
                        f"({100 * share:.1f} %) have a training row with similarity >= 0.9 "
                        f"(full splits, {time.perf_counter() - t0:.1f} s)."))
        if hits:
            out.append(table([f"{split} #", "train #", "similarity", f"{split} text", "train text"],
                             [[d["eval_index"], d["train_index"], d["similarity"], _short(d["eval_text"]),
                               _short(d["train_text"])] for d in hits[:DUPLICATES_SHOWN]]))
    return "".join(out)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
