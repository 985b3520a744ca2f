"""Text classification: single-label or multi-label, one text or a text pair.

Rows: `{text, [text_pair], label}`; labels are strings (or numbers) in the data, and the label map is
saved in the model's config (`id2label`). A label may also be a `{label: probability}` object, a soft
target (trained with soft cross-entropy; scored against its most probable label). Continuing from a
tuned model keeps its labels and appends new ones, growing the head (incremental fine-tuning).

Long texts: `data.truncation` keeps the head, the tail or head+tail of a text, or cuts it into sliding
windows (`data.window_stride` tokens of overlap): each window trains with the row's label, and evaluation /
prediction combine a row's window logits (`data.window_aggregate`: mean or max) back into one row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tunelab.config.sections import TaskConfig, TrainConfig
from tunelab.data.advice import near_label
from tunelab.data.readers import Record, Table, require_field, require_text
from tunelab.data.sampling import label_counts
from tunelab.data.windows import check_window_room
from tunelab.errors import ConfigError, DataError
from tunelab.metrics import classification as cm
from tunelab.models.first_token import first_token_only
from tunelab.registry import TASKS
from tunelab.tasks import classification_report
from tunelab.tasks.base import Example, Features, Task
from tunelab.tasks.class_labels import cell_labels, label_string, label_text, run_together, soft_label
from tunelab.tasks.label_head import continued_head, head_modules, tuned_labels
from tunelab.tasks.losses import LossSpec, class_weights, make_loss_fn, soft_binary_kl, soft_kl
from tunelab.tasks.model_rows import check_pair_read, with_row
from tunelab.tasks.truncation import aggregate_windows, cut_note, cut_tokens, rows_cut


class ClassificationConfig(TaskConfig):
    name: Literal["classification"] = "classification"
    multi_label: bool = Field(False, description="Each row has a list of labels (sigmoid + threshold).")
    threshold: float = Field(0.5, gt=0, lt=1, description="Multi-label decision threshold on probabilities.")
    label_separator: str | None = Field(
        None, description="Multi-label: cut each text label (a CSV / TSV / Parquet cell) at this string, e.g. ';'. "
        "A cell holding a JSON list is that list either way; with no separator, a text label holding ';', ',' or a "
        "vertical bar is refused.")
    labels: list[str] | None = Field(None, description="Label order; default: sorted labels of the train split.")

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_in_data(cls, value: Any) -> Any:
        """`labels: [0, 1]` or `[true, false]` name the labels the data's numbers and bools become."""
        if not isinstance(value, list):
            return value
        out = [label_string(v) or v for v in value]  # non-scalars stay as they are: pydantic rejects them
        dup = next((v for i, v in enumerate(out) if v in out[:i]), None)
        if dup is not None:
            raise ValueError(f"duplicate label {dup!r}")
        return out

    @field_validator("label_separator")
    @classmethod
    def _separator_not_empty(cls, value: str | None) -> str | None:
        if value == "":  # `--set task.label_separator=|`: YAML reads a bare | as an (empty) block scalar
            raise ValueError("an empty separator (in --set, quote a '|' for YAML: --set \"task.label_separator='|'\")")
        return value

    @model_validator(mode="after")
    def _separator_multi_label(self) -> ClassificationConfig:
        if self.label_separator is not None and not self.multi_label:
            raise ValueError("label_separator splits multi-label cells: set task.multi_label=true, or drop it")
        return self


@TASKS.register("classification")
class Classification(Task):
    Config = ClassificationConfig
    auto_model_class = "AutoModelForSequenceClassification"
    export_formats = ("onnx", "torch")
    compressible = True
    onnx_outputs = ("logits",)
    cfg: ClassificationConfig

    def __init__(self, cfg: ClassificationConfig, data: Any) -> None:
        super().__init__(cfg, data)
        self.labels: list[str] = list(cfg.labels or [])
        self._trained_on: list[str] = []  # the training split's labels (`check_train`), before the model knows any
        self._loss: LossSpec | None = None  # set by configure_loss
        self._soft_split = False
        self._cut = 0  # rows the last `encode` cut at data.max_length

    # -- data --------------------------------------------------------------------------------
    def _parse_label(self, record: Record, columns: list[str] | None) -> str | list[str] | dict[str, float]:
        field = self.data.label_field
        value = require_field(record, field, columns)
        # the labels a value written otherwise is matched to (`label_text`: `True` in a CSV cell is JSON's `true`):
        # the model's (task.labels, a tuned model's), else the training split's once read (validation, test)
        known = self.labels or self._trained_on
        if value is None:
            raise DataError(record.source, record.line, field, "missing label (null)")
        if isinstance(value, dict):
            return soft_label(record, field, value, self.cfg.multi_label, known)
        if self.cfg.multi_label:
            items = value if isinstance(value, list) else cell_labels(record, field, value, self.cfg.label_separator,
                                                                      known)
            return [label_text(record, field, v, known) for v in items]
        if isinstance(value, list):
            raise DataError(
                record.source, record.line, field,
                "a list label in single-label mode (set task.multi_label=true for multi-label data)",
            )
        return label_text(record, field, value, known)

    def parse(self, table: Table, *, labelled: bool = True) -> list[Example]:
        out = []
        for rec in table.records:
            ex: Example = {"text": require_text(rec, self.data.text_field, table.columns),
                           "source": rec.source, "line": rec.line, "row": rec.data}
            if self.data.text_pair_field:
                ex["text_pair"] = require_text(rec, self.data.text_pair_field, table.columns)
            else:
                check_pair_read(rec, self.data)
            if labelled:
                ex["label"] = self._parse_label(rec, table.columns)
            out.append(ex)
        return out

    def check_train(self, examples: list[Example]) -> None:
        """At least two classes; the labels seen are those the validation and test splits, read next, are matched to
        (`_parse_label`: a validation CSV's `True` / `1.0` is the training JSONL's `true` / `1`, as eval and predict
        match them to a tuned model's labels)."""
        seen = Counter(lab for ex in examples for lab in self._as_list(ex["label"]))
        if len(seen) < 2:
            only = next(iter(seen), "none")
            raise DataError(examples[0]["source"], None, self.data.label_field,
                            f"training data has a single class ({only!r}); classification needs at least two")
        self._trained_on = sorted(seen)

    def check_labels(self, examples: Sequence[Example], model_path: str) -> None:
        """The labels `build_model` gives the model (a tuned model's, then task.labels or the training split's)."""
        known = list(dict.fromkeys(tuned_labels(model_path, "ForSequenceClassification")
                                   + (self.labels or self._trained_on)))
        for ex in examples:
            for lab in self._as_list(ex.get("label", [])):
                if lab not in known:
                    raise self._not_among(ex, lab, known)

    def _not_among(self, ex: Example, lab: str, labels: list[str]) -> DataError:
        return DataError(ex["source"], ex["line"], self.data.label_field,
                         f"label {lab!r} is not among the training labels ({', '.join(labels)})"
                         + near_label(lab, labels) + run_together(self.cfg.labels or [], lab))

    def stratify_key(self, example: Example) -> Hashable | None:
        lab = example["label"]
        if isinstance(lab, dict):  # soft: the most probable label (multi-label: those >= 0.5)
            if self.cfg.multi_label:
                return tuple(sorted(k for k, p in lab.items() if p >= 0.5))
            return max(lab, key=lab.get)
        return tuple(sorted(lab)) if isinstance(lab, list) else lab

    @staticmethod
    def _as_list(label: str | list[str] | dict[str, float]) -> list[str]:
        return list(label) if isinstance(label, list | dict) else [label]

    # -- model -------------------------------------------------------------------------------
    def build_model(self, model_path: str, train: list[Example]) -> tuple[torch.nn.Module, Any]:
        wanted = self.labels or sorted({lab for ex in train for lab in self._as_list(ex["label"])})
        problem = "multi_label_classification" if self.cfg.multi_label else "single_label_classification"
        load = partial(AutoModelForSequenceClassification.from_pretrained, model_path, problem_type=problem)
        model, self.labels = continued_head(load, model_path, "ForSequenceClassification", wanted,
                                            self.head_modules)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if tokenizer.pad_token is None:  # decoder LMs: pad with EOS; the head reads the last real token
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        return self.optimize(model), tokenizer

    def optimize(self, model: torch.nn.Module) -> torch.nn.Module:
        first_token_only(model)  # the head reads [CLS] only: skip the rest of the last layer
        return model

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        return head_modules(model)

    def soft_target_loss(self, student: Any, teacher: Any, batch: dict[str, torch.Tensor], temperature: float,
                         divergence: str = "kl") -> torch.Tensor:
        if self.cfg.multi_label:
            return soft_binary_kl(student.logits, teacher.logits, temperature)
        return soft_kl(student.logits, teacher.logits, temperature, divergence=divergence)

    def check_unlabeled(self) -> None:
        if self.cfg.multi_label:  # a multi-hot placeholder has no ignore index
            raise ConfigError("config: data.unlabeled: multi-label classification cannot distill from unlabelled "
                              "rows yet")

    def unlabeled_example(self, example: Example) -> Example:
        if self._soft_split:  # a distribution placeholder has no ignore index either
            raise ConfigError("config: data.unlabeled: training labels given as distributions cannot be mixed with "
                              "unlabelled rows yet")
        return {**example, "label": self.labels[0]}

    def configure_loss(self, train: TrainConfig, examples: list[Example]) -> dict[str, Any]:
        soft = any(isinstance(ex.get("label"), dict) for ex in examples)
        self._soft_split = soft and not self.cfg.multi_label  # the training split's labels are distributions
        labels = self.labels or sorted({lab for ex in examples for lab in self._as_list(ex["label"])})
        weights = class_weights(train.class_weights, labels, label_counts(examples), len(examples),
                                self.cfg.multi_label)
        multi = self.cfg.multi_label
        custom = weights is not None or train.focal_gamma or train.label_smoothing or (soft and not multi)
        self._loss = LossSpec(multi, weights, train.focal_gamma, train.label_smoothing) if custom else None
        if self._loss is None:
            return {"type": "model", "soft_labels": soft}
        return {"type": self._loss.kind(), "soft_labels": soft,
                "class_weights": dict(zip(labels, (round(w, 6) for w in weights), strict=True)) if weights else None,
                "weights_as": ("pos_weight" if multi else "class weight") if weights else None,
                "focal_gamma": train.focal_gamma, "label_smoothing": train.label_smoothing}

    def loss_fn(self) -> Any:
        return make_loss_fn(self._loss) if self._loss is not None else None

    def encodes_in_parts(self, examples: Sequence[Example]) -> bool:
        return not self._soft(examples)  # a part without the split's soft labels would get another label shape

    def _soft(self, examples: Sequence[Example]) -> bool:
        return not self.cfg.multi_label and any(isinstance(ex.get("label"), dict) for ex in examples)

    def encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        # one soft label makes the whole split distributions (a batch needs one label shape)
        soft = self._soft(examples)
        self._cut = 0
        return self.in_chunks(examples, lambda part, offset: self._encode(part, offset, tokenizer, soft))

    def length_note(self) -> str:
        return f"truncation: {self.data.truncation}"

    def cut_note(self) -> str | None:
        return cut_note(self._cut, self.data.max_length, self.data.truncation)

    def _encode(self, examples: Sequence[Example], offset: int, tokenizer: Any, soft: bool) -> list[Features]:
        texts = [ex["text"] for ex in examples]
        pairs = [ex["text_pair"] for ex in examples] if self.data.text_pair_field else None
        mode, owners = self.data.truncation, None
        if mode == "head":
            enc = tokenizer(texts, pairs, truncation=True, max_length=self.data.max_length)
            self._cut += rows_cut(enc, self.data.max_length)
        elif mode == "sliding_window":  # several features per long row, each knows its row
            if pairs:  # a pair that leaves a window no more text than its stride: one line, not a tokenizer panic
                check_window_room(tokenizer, examples, self.data.max_length, self.data.window_stride,
                                  self.data.text_pair_field)
            enc = tokenizer(texts, pairs, truncation="only_first" if pairs else True, max_length=self.data.max_length,
                            stride=self.data.window_stride, return_overflowing_tokens=True)
            owners = enc["overflow_to_sample_mapping"]
        else:
            enc = cut_tokens(tokenizer, texts, pairs, self.data.max_length, mode)
            self._cut += enc["cut"]
        index = {n: i for i, n in enumerate(self.labels)}
        feats: list[Features] = []
        for j in range(len(enc["input_ids"])):
            i = owners[j] if owners is not None else j
            ex = examples[i]
            f: Features = {"input_ids": enc["input_ids"][j]}
            if "token_type_ids" in enc:
                f["token_type_ids"] = enc["token_type_ids"][j]
            if owners is not None:
                f["example_index"] = offset + i
            if "label" in ex:
                f["labels"] = self._target(ex, index, soft)
            feats.append(f)
        return feats

    def logits(self, model: torch.nn.Module, features: Sequence[Features], collate: Any, batch_size: int) -> Any:
        raw = super().logits(model, features, collate, batch_size)
        if not features or "example_index" not in features[0]:
            return raw
        return aggregate_windows(raw, [f["example_index"] for f in features], self.data.window_aggregate)

    def _target(self, ex: Example, index: dict[str, int], soft: bool = False) -> int | list[float]:
        """Class id; a 0/1 (or probability) vector for multi-label, and for single-label when `soft`."""
        label = ex["label"]
        for lab in self._as_list(label):
            if lab not in index:
                raise self._not_among(ex, lab, self.labels)
        if not self.cfg.multi_label and not soft:
            return index[max(label, key=label.get) if isinstance(label, dict) else label]
        vec = [0.0] * len(self.labels)
        for lab, p in label.items() if isinstance(label, dict) else ((lab, 1.0) for lab in self._as_list(label)):
            vec[index[lab]] = p
        return vec

    # -- scoring -----------------------------------------------------------------------------
    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return cm.sigmoid(logits) if self.cfg.multi_label else cm.softmax(logits)

    def metric_names(self) -> tuple[str, ...]:
        averaged = ("macro", "micro", "weighted", "samples") if self.cfg.multi_label else ("macro", "micro", "weighted")
        first = ("f1_micro", "subset_accuracy", "hamming_loss") if self.cfg.multi_label else ("accuracy",)
        return tuple(dict.fromkeys((*first, *(f"{m}_{a}" for a in averaged for m in ("precision", "recall", "f1")),
                                    "roc_auc", "n")))

    def metrics(self, logits: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
        probs = self.probabilities(logits)
        index = {n: i for i, n in enumerate(self.labels)}
        if self.cfg.multi_label:  # soft multi-label truth: the labels with probability >= 0.5
            truth = (np.asarray([self._target(ex, index) for ex in examples]) >= 0.5).astype(int)
            return cm.multi_label(truth, probs, self.labels, self.cfg.threshold)
        truth = np.asarray([self._target(ex, index) for ex in examples])
        return cm.single_label(truth, probs, self.labels)

    def predictions(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        probs = self.probabilities(logits)
        out = []
        for ex, p in zip(examples, probs, strict=True):
            scores = {n: round(float(v), 6) for n, v in zip(self.labels, p, strict=True)}
            if self.cfg.multi_label:
                label: Any = [n for n, v in scores.items() if v >= self.cfg.threshold]
            else:
                label = self.labels[int(p.argmax())]
            out.append(with_row(ex["row"], {"pred_label": label, "scores": scores}))
        return out

    def records(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Gold and predicted label (multi-label: sorted lists), 1/0 score, `probs` in label order;
        `labels` on the first row. A soft gold label counts as its most probable label(s)."""
        probs, index, out = self.probabilities(logits), {n: i for i, n in enumerate(self.labels)}, []
        for i, (ex, p) in enumerate(zip(examples, probs, strict=True)):
            if self.cfg.multi_label:
                target = self._target(ex, index)
                gold: Any = sorted(n for n, v in zip(self.labels, target, strict=True) if v >= 0.5)
                pred: Any = sorted(n for n, v in zip(self.labels, p, strict=True) if v >= self.cfg.threshold)
            else:
                gold, pred = self.labels[self._target(ex, index)], self.labels[int(p.argmax())]
            text = ex["text"] + ("\n" + ex["text_pair"] if "text_pair" in ex else "")
            row = {"text": text, "gold": gold, "prediction": pred, "correct": gold == pred,
                   "score": float(gold == pred), "probs": [round(float(v), 6) for v in p]}
            out.append({**row, "labels": list(self.labels)} if i == 0 else row)
        return out

    def metadata(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def load_metadata(self, meta: dict[str, Any]) -> None:
        self.labels = list(meta["labels"])

    # -- what reports, compare, baselines and ensembles ask --------------------------------------
    paired_test = "mcnemar"
    baselines = "labels"
    ensembles = True

    def label_counts(self, examples: Sequence[Example] = (), records: Sequence[dict[str, Any]] = ()) -> Counter[str]:
        counts: Counter[str] = Counter()
        for ex in examples:
            lab = ex.get("label")
            if isinstance(lab, dict):
                lab = max(lab, key=lab.get)
            counts.update(lab if isinstance(lab, list) else [lab] if lab is not None else [])
        for r in records if not examples else ():
            counts.update(r["gold"] if isinstance(r["gold"], list) else [r["gold"]])
        return counts

    def report_results(self, records: Sequence[dict[str, Any]], metrics: dict[str, Any],
                       generations: Sequence[dict[str, Any]] | None = None) -> str:
        return classification_report.results(records, metrics)

    def report_errors(self, records: Sequence[dict[str, Any]], examples: Sequence[Example] | None, model: Any,
                      tokenizer: Any) -> str:
        return (classification_report.mistakes(self, records, examples, model, tokenizer)
                + classification_report.confused(records))

    def ensemble_mismatch(self, other: Task, first: str) -> str | None:
        mine, theirs = self.cfg, other.cfg  # type: ignore[attr-defined]
        if theirs.multi_label != mine.multi_label:
            return (f"task.multi_label={str(theirs.multi_label).lower()} differs from {first} "
                    f"({str(mine.multi_label).lower()})")
        if theirs.multi_label and theirs.threshold != mine.threshold:
            return f"task.threshold={theirs.threshold} differs from {first} ({mine.threshold})"
        if list(other.labels) != list(self.labels):  # type: ignore[attr-defined]
            return (f"label map [{', '.join(other.labels)}] differs from {first}'s "  # type: ignore[attr-defined]
                    f"[{', '.join(self.labels)}]")
        return None

