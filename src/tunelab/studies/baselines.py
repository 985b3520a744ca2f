"""Baselines for a run config: the numbers a fine-tuned model has to beat (`tunelab baseline`).

The splits are loaded exactly as training loads them (same cleaning, dedup, validation hold-out and
seed), and classification baselines are scored by the task's own metrics, so they compare directly
with `RUN/metrics.json`:

- `tfidf_nb`, `tfidf_logreg`: TF-IDF (sublinear tf) + multinomial naive Bayes (alpha 0.1) / logistic
  regression (C 1.0; liblinear for two classes or one-vs-rest, else lbfgs), trained on the train split.
  Features: word uni+bigrams (`text.tokens`), or character 1–3-grams when the training texts are Chinese
  (`text.is_chinese`: at least 30 % CJK characters; `analyzer`: auto | word | char). Multi-label:
  one-vs-rest. Text pairs are joined with " | ".
- `zero_shot_embedding` (with `embedding_model`) and `zero_shot_llm` (with `zero_shot_model`):
  see `studies/zero_shot.py`; single-label, single-text only.
- `sft` and `pretrain`: `ngram_lm`, a character Kneser-Ney model trained on the
  train split's assistant replies (or texts); validation perplexity per character.

Result: `{split: {baseline: metrics}, "meta": {...}}`, also written atomically to OUTPUT_DIR/baselines.json.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import MultinomialNB
from sklearn.preprocessing import MultiLabelBinarizer

from tunelab.config.run import RunConfig
from tunelab.data.load import load_splits
from tunelab.data.report import DataReport, training_fingerprint
from tunelab.errors import TunelabError
from tunelab.io import make_dirs, write_json_atomic
from tunelab.progress import table_console
from tunelab.registry import TASKS
from tunelab.studies import zero_shot
from tunelab.studies.ngram_lm import CharNgramLM
from tunelab.tasks.base import Task
from tunelab.text import is_chinese, tokens

ANALYZERS = ("auto", "word", "char")
NB_ALPHA, LOGREG_C = 0.1, 1.0


def load_label_descriptions(path: str | Path | None, labels: list[str]) -> dict[str, str]:
    """A JSON object {label: description}; every key must be a label."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise TunelabError(f"{p}: label descriptions file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TunelabError(f"{p}: invalid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
        raise TunelabError(f"{p}: expected a JSON object of label → non-empty description string")
    unknown = [k for k in data if k not in labels]
    if unknown:
        raise TunelabError(f"{p}: unknown label {unknown[0]!r} (labels: {', '.join(labels)})")
    return {str(k): v for k, v in data.items()}


def choose_analyzer(texts: list[str], analyzer: str = "auto") -> str:
    """`word` or `char`: auto picks char when most non-space characters are CJK."""
    if analyzer not in ANALYZERS:
        raise TunelabError(f"baseline: analyzer must be one of {', '.join(ANALYZERS)}, got {analyzer!r}")
    if analyzer != "auto":
        return analyzer
    sample = random.Random(0).sample(texts, min(len(texts), 2000))
    return "char" if is_chinese(sample) else "word"


def _vectorizer(analyzer: str) -> Any:

    if analyzer == "char":
        return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, dtype=np.float32)
    return TfidfVectorizer(tokenizer=tokens, token_pattern=None, lowercase=False, ngram_range=(1, 2),
                           sublinear_tf=True, dtype=np.float32)


def _text(ex: dict[str, Any]) -> str:
    return ex["text"] + (" | " + ex["text_pair"] if "text_pair" in ex else "")


def _classical(splits: dict[str, list[dict[str, Any]]], task: Task, labels: list[str], analyzer: str,
               ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """({baseline: {split: probabilities}}, {baseline: seconds}) for tfidf_nb and tfidf_logreg; the
    vectoriser's fit counts in both."""
    t_vec = time.perf_counter()
    vec = _vectorizer(analyzer)
    x_train = vec.fit_transform([_text(ex) for ex in splits["train"]])
    keys = [task.stratify_key(ex) for ex in splits["train"]]  # soft labels → the most probable label(s)
    multi = bool(getattr(task.cfg, "multi_label", False))
    if multi:
        y = MultiLabelBinarizer(classes=labels).fit_transform([list(k) for k in keys])
    else:
        index = {lab: i for i, lab in enumerate(labels)}
        y = np.array([index[k] for k in keys])
    fit_s = time.perf_counter() - t_vec
    out: dict[str, dict[str, np.ndarray]] = {}
    walls: dict[str, float] = {}
    solver = "liblinear" if multi or len(labels) == 2 else "lbfgs"  # liblinear: faster for binary problems
    for name, est in (("tfidf_nb", MultinomialNB(alpha=NB_ALPHA)),
                      ("tfidf_logreg", LogisticRegression(C=LOGREG_C, solver=solver, max_iter=1000))):
        t0 = time.perf_counter()
        model = OneVsRestClassifier(est) if multi else est
        model.fit(x_train, y)
        out[name] = {}
        for split, examples in splits.items():
            if split == "train":
                continue
            p = model.predict_proba(vec.transform([_text(ex) for ex in examples]))
            if not multi:  # columns of the classes present in train → every label
                full = np.zeros((len(examples), len(labels)))
                full[:, model.classes_] = p
                p = full
            out[name][split] = p
        walls[name] = round(fit_s + time.perf_counter() - t0, 2)
    return out, walls


def _score(task: Task, probs: np.ndarray, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's own metrics from probabilities (as logits: log p, or log-odds for multi-label)."""
    p = np.clip(probs.astype(np.float64), 1e-12, 1 - 1e-12)
    logits = np.log(p / (1 - p)) if getattr(task.cfg, "multi_label", False) else np.log(p)
    return task.metrics(logits, examples)


def _labels(task: Task, train: list[dict[str, Any]]) -> list[str]:
    configured = getattr(task.cfg, "labels", None)
    if configured:
        return list(configured)
    return sorted({lab for ex in train for lab in task._as_list(ex["label"])})


def _classification(cfg: RunConfig, task: Task, splits: dict[str, list[dict[str, Any]]], result: dict[str, Any],
                    opts: dict[str, Any]) -> None:
    meta = result["meta"]
    labels = _labels(task, splits["train"])
    task.labels = labels
    multi = bool(task.cfg.multi_label)
    zero = [m for m in (opts["embedding_model"], opts["zero_shot_model"]) if m]
    if zero and (multi or cfg.data.text_pair_field):
        raise TunelabError("baseline: zero-shot baselines need single-label classification of one text "
                           "(task.multi_label and data.text_pair_field are not supported)")
    descriptions = load_label_descriptions(opts["label_descriptions"], labels)
    analyzer = choose_analyzer([ex["text"] for ex in splits["train"]], opts["analyzer"])
    meta.update(labels=labels, multi_label=multi, analyzer=analyzer,
                features="character 1-3-grams" if analyzer == "char" else "word 1-2-grams",
                nb_alpha=NB_ALPHA, logreg_c=LOGREG_C, label_descriptions=descriptions or None)
    evals = [s for s in splits if s != "train"]
    probs, walls = _classical(splits, task, labels, analyzer)
    meta["wall_s"].update(walls)
    for name, per_split in probs.items():
        for split in evals:
            result[split][name] = _score(task, per_split[split], splits[split])
    label_texts = [descriptions.get(lab, lab) for lab in labels]
    if opts["embedding_model"]:
        t0 = time.perf_counter()
        meta["embedding_model"] = opts["embedding_model"]
        if not descriptions and all(lab.strip().lstrip("-").isdigit() for lab in labels):
            meta["notes"].append("zero_shot_embedding: the labels are numbers; pass --label-descriptions")
        for split in evals:
            texts = [ex["text"] for ex in splits[split]]
            probs = zero_shot.embedding_scores(texts, label_texts, opts["embedding_model"], opts["batch_size"])
            result[split]["zero_shot_embedding"] = _score(task, probs, splits[split])
        meta["wall_s"]["zero_shot_embedding"] = round(time.perf_counter() - t0, 2)
    if opts["zero_shot_model"]:
        t0 = time.perf_counter()
        meta["zero_shot_model"] = opts["zero_shot_model"]
        content_free = zero_shot.llm_scores(list(zero_shot.CONTENT_FREE), labels, opts["zero_shot_model"],
                                            descriptions, opts["batch_size"])
        prior = zero_shot.label_prior(content_free)
        meta["zero_shot_llm_prior"] = dict(zip(labels, prior.round(4).tolist(), strict=True))
        for split in evals:
            examples = splits[split]
            limit = opts["llm_limit"]
            if limit is not None and limit < len(examples):
                rng = random.Random(cfg.train.seed)
                examples = [examples[i] for i in sorted(rng.sample(range(len(examples)), limit))]
                meta["notes"].append(f"zero_shot_llm: {split} scored on a seeded sample of {limit} of "
                                     f"{len(splits[split])} rows (train.seed {cfg.train.seed})")
            cut = sum(len(ex["text"]) > zero_shot.MAX_TEXT_CHARS for ex in examples)
            if cut:
                meta["notes"].append(f"zero_shot_llm: {cut} {split} texts cut to {zero_shot.MAX_TEXT_CHARS} chars")
            loglik = zero_shot.llm_scores([ex["text"] for ex in examples], labels, opts["zero_shot_model"],
                                          descriptions, opts["batch_size"])
            result[split]["zero_shot_llm"] = _score(task, zero_shot.softmax(loglik), examples)
            result[split]["zero_shot_llm_calibrated"] = _score(
                task, zero_shot.softmax(zero_shot.calibrate(loglik, prior)), examples)
        meta["wall_s"]["zero_shot_llm"] = round(time.perf_counter() - t0, 2)


def lm_texts(examples: list[dict[str, Any]]) -> list[str]:
    """What the n-gram model reads: assistant replies (sft rows) or the `text` of each row."""
    out = []
    for ex in examples:
        if "messages" in ex:
            out.extend(m["content"] for m in ex["messages"] if m["role"] == "assistant")
        elif isinstance(ex.get("text"), str):
            out.append(ex["text"])
        else:
            raise TunelabError("baseline: rows have neither messages nor a text to model")
    return out


def _language_model(splits: dict[str, list[dict[str, Any]]], result: dict[str, Any], order: int) -> None:
    t0 = time.perf_counter()
    lm = CharNgramLM(order).fit(lm_texts(splits["train"]))
    for split, examples in splits.items():
        if split != "train":
            result[split]["ngram_lm"] = lm.perplexity(lm_texts(examples))
    result["meta"]["wall_s"]["ngram_lm"] = round(time.perf_counter() - t0, 2)
    result["meta"]["ngram_order"] = order


def run_baselines(cfg: RunConfig, zero_shot_model: str | None = None, embedding_model: str | None = None,
                  label_descriptions: str | Path | None = None, analyzer: str = "auto", llm_limit: int | None = None,
                  ngram_order: int = 5, batch_size: int = 16, write: bool = True) -> dict[str, Any]:
    """Baselines for the run config `cfg` (see the module doc); writes OUTPUT_DIR/baselines.json."""
    if analyzer not in ANALYZERS:
        raise TunelabError(f"baseline: analyzer must be one of {', '.join(ANALYZERS)}, got {analyzer!r}")
    if llm_limit is not None and llm_limit < 1:
        raise TunelabError(f"baseline: llm_limit must be at least 1, got {llm_limit}")
    if ngram_order < 1:
        raise TunelabError(f"baseline: ngram_order must be at least 1, got {ngram_order}")
    name = cfg.task.name
    family = TASKS.get(name).baselines
    if family is None:
        able = ", ".join(TASKS.names(lambda cls: cls.baselines is not None))
        raise TunelabError(f"baseline: no baselines for task {name!r} ({able})")
    if write:  # before the work: a place that takes no files is said at once
        make_dirs(Path(cfg.output_dir), "output_dir")
    t0 = time.perf_counter()
    task = TASKS.get(name)(cfg.task, cfg.data)
    splits = load_splits(cfg.data, task, cfg.train.seed, DataReport())
    if len(splits) == 1:
        raise TunelabError("baseline: no validation or test rows to score (data.validation_split is 0)")
    result: dict[str, Any] = {s: {} for s in splits if s != "train"}
    result["meta"] = {"task": name, "rows": {s: len(ex) for s, ex in splits.items()}, "seed": cfg.train.seed,
                      # which rows each split was: a report sets the baselines beside a run scored on the same ones
                      "rows_sha256": {s: training_fingerprint(ex) for s, ex in splits.items() if s != "train"},
                      "wall_s": {}, "notes": []}
    if family == "labels":
        _classification(cfg, task, splits, result, {
            "zero_shot_model": zero_shot_model, "embedding_model": embedding_model, "analyzer": analyzer,
            "label_descriptions": label_descriptions, "llm_limit": llm_limit, "batch_size": batch_size})
    else:
        if zero_shot_model or embedding_model:
            able = ", ".join(TASKS.names(lambda cls: cls.baselines == "labels"))
            raise TunelabError(f"baseline: zero-shot baselines are for {able}, not {name}")
        _language_model(splits, result, ngram_order)
    result["meta"]["wall_s"]["total"] = round(time.perf_counter() - t0, 2)
    if write:
        write_json_atomic(make_dirs(Path(cfg.output_dir), "output_dir") / "baselines.json", result)
    return result


_COLUMNS = ("accuracy", "f1_micro", "f1_macro", "subset_accuracy", "roc_auc", "perplexity_per_char",
            "bits_per_char", "n", "texts")


def print_baselines(result: dict[str, Any], console: Any = None) -> None:
    """One rich table on stderr: a row per split and baseline."""
    console = console or table_console()
    rows = [(split, name, m) for split, by in result.items() if split != "meta" for name, m in by.items()]
    cols = [c for c in _COLUMNS if any(m.get(c) is not None for _, _, m in rows)]
    if "accuracy" in cols:  # single-label: micro F1 equals accuracy
        cols.remove("f1_micro")
    table = Table(title=f"baselines ({result['meta']['task']})")
    for c in ("split", "baseline", *cols, "wall_s"):
        table.add_column(c, justify="left" if c in ("split", "baseline") else "right")
    walls = result["meta"]["wall_s"]
    for split, name, m in rows:
        vals = [m.get(c) for c in cols]
        table.add_row(split, name, *["-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
                                     for v in vals], str(walls.get(name, "-")))
    console.print(table)
    for note in result["meta"]["notes"]:
        console.print(f"note: {note}")
