"""Report sections that do not depend on the task: run summary, data, training curves, baselines,
learning curve."""

from __future__ import annotations

import json
import logging
import random
from contextlib import contextmanager
from typing import Any

from tunelab import plots
from tunelab.data.report import training_fingerprint
from tunelab.html import chart, esc, figs, note, table
from tunelab.io import read_json
from tunelab.metrics import scalars
from tunelab.report.context import Context

LENGTH_SAMPLE = 5000  # token lengths are counted on at most this many rows per split (seeded sample)


def _json_file(ctx: Context, *parts: str) -> Any:
    return None if ctx.out_dir is None else read_json(ctx.out_dir.joinpath(*parts))


def _last_logged_loss(ctx: Context) -> float | None:
    losses = [r["loss"] for r in ctx.log or () if "loss" in r and "final" not in r and isinstance(r["loss"], float)]
    return losses[-1] if losses else None


def _plain(value: Any, limit: int = 300) -> str:
    """A summary value as words: `key: value` pairs, lists joined — no JSON braces in the report."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(_plain(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def max_length(ctx: Context) -> int | None:
    data = ctx.config.get("data") or {}
    return data.get("max_length") or getattr(getattr(ctx.task, "data", None), "max_length", None)


# -- run summary ---------------------------------------------------------------------------------
def summary_section(ctx: Context) -> str:
    train = ctx.metrics.get("train") or {}
    method = ctx.config.get("method") or {}
    params = train.get("parameters") or {}
    hw = train.get("hardware") or {}
    rows: list[tuple[str, Any]] = [
        ("task", ctx.task_name or "-"),
        ("model", ctx.config.get("model", "-")),
        ("method", ", ".join(f"{k}={v}" for k, v in method.items()) if isinstance(method, dict) else method),
    ]
    if params:
        share = params.get("trainable_pct", "-")
        rows.append(("parameters (trainable / total)",
                     f"{params.get('trainable', 0):,} / {params.get('total', 0):,} ({share} %)"))
    if train.get("rows"):
        rows.append(("rows", ", ".join(f"{k}: {v:,}" for k, v in train["rows"].items())))
    last = _last_logged_loss(ctx)
    if last is not None:
        rows.append(("final training loss (last logged step)", last))
    for key, label in (("steps", "optimizer steps"), ("epochs", "epochs"),
                       ("loss", "training loss (mean over the run)"),
                       ("wall_s", "training time (s)"), ("total_wall_s", "total run time (s)"),
                       ("real_tokens_per_s", "throughput (real tokens / s)"), ("padding_pct", "padding (%)"),
                       ("precision", "precision")):
        if key in train:
            rows.append((label, train[key]))
    if hw:
        rows.append(("hardware", ", ".join(f"{k}: {v}" for k, v in hw.items())))
    if train.get("best"):
        b = train["best"]
        rows.append(("best evaluation", f"{b.get('metric')} = {b.get('value')} at step {b.get('step')}"
                     + (" (stopped early)" if b.get("stopped_early") else "")))
    for split, recs in ctx.records.items():
        if split not in (train.get("rows") or {}):
            rows.append((f"evaluated rows ({split})", len(recs)))
    out = table(["item", "value"], rows)
    heads = {s: scalars(m) for s, m in ctx.metrics.items() if s != "train" and isinstance(m, dict)}
    if heads:
        names = list(dict.fromkeys(k for m in heads.values() for k in m))
        out += "<h3>Final metrics</h3>" + table(["metric", *heads], [[n, *(m.get(n) for m in heads.values())]
                                                                    for n in names])
    return out


# -- data ----------------------------------------------------------------------------------------
@contextmanager
def _quiet_tokenizer() -> Any:
    """No 'sequence longer than the maximum' warnings while counting full lengths."""
    log = logging.getLogger("transformers.tokenization_utils_base")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def data_section(ctx: Context) -> str:
    out = []
    summary = None if ctx.run_dir is None else _json_file(ctx, "data_summary.json")
    if summary:
        read, used = summary.get("rows_read") or {}, summary.get("rows_used") or {}
        removed, added = summary.get("removed") or {}, dict(summary.get("rows_added") or {})
        held = summary.get("held_out_for_validation")
        if held:  # rows moved from train to the validation split: train's read count holds them
            added["validation"] = {"held out of train": held}
            added["train"] = {**(added.get("train") or {}), "held out as validation": -held}
        names = list(dict.fromkeys([*read, *used]))

        def listed(counts: dict[str, dict[str, int]], s: str) -> str:
            return ", ".join(f"{k}: {v}" for k, v in (counts.get(s) or {}).items()) or "0"

        out.append(table(["split", "rows read", "removed", "added / moved", "rows used"],
                         [[s, read.get(s, 0), listed(removed, s), listed(added, s), used.get(s)] for s in names]))
        applied = {k: v for k, v in (summary.get("applied") or {}).items() if v}
        if applied:
            out.append("<h4>Applied to the data</h4>" + table(["step", "settings"],
                                                             [[k, _plain(v)] for k, v in applied.items()]))
    split_names = list(dict.fromkeys([*ctx.splits, *ctx.records]))
    dist = {s: ctx.task.label_counts(ctx.splits.get(s, ()), ctx.records.get(s, ())) for s in split_names} \
        if ctx.task is not None else {}
    dist = {s: c for s, c in dist.items() if c}
    if dist:
        what = ctx.task.count_kind
        out.append(f"<h3>{esc(what.capitalize())} distribution</h3>")
        shares = {s: {k: v / max(sum(c.values()), 1) for k, v in sorted(c.items())} for s, c in dist.items()}
        keys = sorted({k for c in dist.values() for k in c})
        out.append(table([what, *dist], [[k, *(f"{c.get(k, 0)} ({100 * shares[s].get(k, 0):.1f} %)"
                                               for s, c in dist.items())] for k in keys]))
        out.append(figs(chart(plots.bars(shares, f"{what} share per split", "share"), f"{what} distribution")))
    out.append(_lengths(ctx))
    return "".join(out)


def _lengths(ctx: Context) -> str:
    if ctx.tokenizer is None or not ctx.splits:
        return note("Token lengths: not available (no tokenizer or examples in memory).")
    if ctx.task is None or ctx.task.token_lengths(ctx.tokenizer, []) is None:
        return note(f"Token lengths: not counted for task {ctx.task_name!r}.")
    limit = max_length(ctx)
    rng = random.Random(0)
    lengths: dict[str, list[int]] = {}
    sampled = []
    for split, examples in ctx.splits.items():
        if len(examples) > LENGTH_SAMPLE:
            sampled.append(f"{split}: {LENGTH_SAMPLE:,} of {len(examples):,}")
            # indices, not rows: the training split may be spilled to disk (data/row_spill.py), and the same
            # indices as sampling the rows themselves
            examples = [examples[i] for i in sorted(rng.sample(range(len(examples)), LENGTH_SAMPLE))]
        with _quiet_tokenizer():
            lengths[split] = ctx.task.token_lengths(ctx.tokenizer, examples) or []
    rows = []
    for split, ls in lengths.items():
        if not ls:
            continue
        srt = sorted(ls)
        over = sum(n > limit for n in ls) if limit else 0
        rows.append([split, len(ls), srt[len(srt) // 2], srt[min(len(srt) - 1, int(0.95 * len(srt)))], srt[-1],
                     f"{100 * over / len(ls):.1f} %"])
    how = ctx.task.length_note()
    out = ["<h3>Token lengths</h3>",
           table(["split", "rows counted", "median", "p95", "max", f"over max_length ({limit})"], rows),
           note(f"Untruncated lengths in model tokens, special tokens included; {how}."
                + (f" Sampled: {'; '.join(sampled)}." if sampled else ""))]
    out.append(figs(chart(plots.histogram(lengths, "token length", "tokens", vline=limit,
                                        vlabel=f"max_length {limit}"), "token length histogram")))
    return "".join(out)


# -- training curves -----------------------------------------------------------------------------
def curves_section(ctx: Context) -> str | None:
    if ctx.log is None:
        return None
    rows = ctx.log
    steps = [r for r in rows if "loss" in r and "final" not in r and not any(k.startswith("eval/") for k in r)]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    images = []
    if steps:
        x = [r["step"] for r in steps]
        images.append(chart(plots.lines({"training loss": (x, [r["loss"] for r in steps])}, "training loss",
                                      "step", integer_x=True), "training loss"))
        if any("lr" in r for r in steps):
            images.append(chart(plots.lines({"lr": (x, [r.get("lr", 0) for r in steps])}, "learning rate", "step",
                                          integer_x=True),
                              "learning rate"))
    if evals:
        names = [k for k in dict.fromkeys(k for r in evals for k in r)
                 if k.startswith("eval/") and k not in ("eval/n", "eval/tokens")
                 and all(isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool) for r in evals)]
        unit = [n for n in names if all(0 <= r[n] <= 1 for r in evals)][:8]
        x = [r["step"] for r in evals]
        if unit:
            images.append(chart(plots.lines({n[5:]: (x, [r[n] for r in evals]) for n in unit}, "evaluation", "step",
                                          markers=True, integer_x=True), "evaluation metrics"))
        for n in [n for n in names if not all(0 <= r[n] <= 1 for r in evals)][:3]:
            images.append(chart(plots.lines({n[5:]: (x, [r[n] for r in evals])}, n[5:], "step", markers=True,
                                          integer_x=True), n))
    if not images:
        return note("metrics.jsonl has no training or evaluation rows yet.")
    return figs(*images) + note(f"{len(steps)} logged steps, {len(evals)} evaluations (RUN/metrics.jsonl).")


# -- baselines and learning curve ------------------------------------------------------------------
def baselines_section(ctx: Context) -> str | None:
    data = _json_file(ctx, "baselines.json")
    if not isinstance(data, dict):
        return None
    out = []
    for split, by_name in data.items():
        if split == "meta" or not isinstance(by_name, dict):
            continue
        if _other_rows(ctx, data, split):
            out.append(f"<h3>{esc(split)}</h3>" + note(
                f"baselines.json scored other {split} rows than these ({_counts(ctx, data, split)}: another file, or "
                f"another data.validation_split or train.seed): not shown; run `tunelab baseline` with this run's "
                "config again"))
            continue
        ours = scalars(ctx.metrics.get(split) or {})
        names = list(dict.fromkeys(k for m in by_name.values() if isinstance(m, dict) for k in scalars(m)))
        rows = [[b, *(m.get(n) for n in names)] for b, m in by_name.items() if isinstance(m, dict)]
        if ours:
            rows.append(["fine-tuned (this run)", *(ours.get(n) for n in names)])
        out.append(f"<h3>{esc(split)}</h3>" + table(["model", *names], rows))
    if isinstance(data.get("meta"), dict):  # (the rows' hashes are for the check above, not for reading)
        shown = {k: v for k, v in data["meta"].items() if k != "rows_sha256"}
        out.append(note("meta: " + json.dumps(shown, ensure_ascii=False)[:600]))
    return "".join(out) or None


def _other_rows(ctx: Context, data: dict[str, Any], split: str) -> bool:
    """Whether baselines.json scored `split` on other rows than the report's: by the rows' hash where it has one
    (baselines since 2026-12-06), else by their count; False when the report has no rows of that split."""
    rows, meta = ctx.splits.get(split), data.get("meta") if isinstance(data.get("meta"), dict) else {}
    if rows is None:
        return False
    sha = (meta.get("rows_sha256") or {}).get(split)
    if isinstance(sha, str):
        return sha != training_fingerprint(rows)
    count = (meta.get("rows") or {}).get(split)
    return isinstance(count, int) and count != len(rows)


def _counts(ctx: Context, data: dict[str, Any], split: str) -> str:
    count = ((data.get("meta") or {}).get("rows") or {}).get(split)
    return f"{count} rows there, {len(ctx.splits[split])} here" if isinstance(count, int) else "other rows"


def learning_curve_section(ctx: Context) -> str | None:
    data = _json_file(ctx, "curve", "curve.json")
    if not isinstance(data, dict) or not data.get("points"):
        return None
    pts = sorted(data["points"], key=lambda p: p.get("rows", 0))
    metric = str(data.get("metric", "metric"))
    png = plots.lines({metric: ([p["rows"] for p in pts], [p["value"] for p in pts])}, "learning curve",
                      "training rows", metric, markers=True)
    return figs(chart(png, "learning curve")) + table(["fraction", "rows", metric],
                                                    [[p.get("fraction"), p.get("rows"), p.get("value")] for p in pts])
