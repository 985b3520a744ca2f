"""Text classification: single-label or multi-label, one text or a text pair.

Rows: `{text, [text_pair], label}`; labels are strings (or numbers) in the data, and the label map is
saved in the model's config (`id2label`). Continuing from a tuned model keeps its labels and appends
new ones, growing the head (incremental fine-tuning).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from tunelab.config import TaskConfig
from tunelab.data.readers import Record, Table, check_unicode, require_field, require_text
from tunelab.errors import DataError
from tunelab.metrics import classification as cm
from tunelab.models.first_token import first_token_only
from tunelab.tasks import TASKS
from tunelab.tasks.base import Example, Features, Task


class ClassificationConfig(TaskConfig):
    name: Literal["classification"] = "classification"
    multi_label: bool = Field(False, description="Each row has a list of labels (sigmoid + threshold).")
    threshold: float = Field(0.5, gt=0, lt=1, description="Multi-label decision threshold on probabilities.")
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


def label_string(value: Any) -> str | None:
    """A scalar label as the string the model knows it by (bools as true/false); None if not a scalar."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | str):
        return str(value)
    return None


def _label_text(record: Record, field: str, value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):  # NaN: how pandas writes a missing label
        raise DataError(record.source, record.line, field, f"missing label ({value})")
    text = label_string(value)
    if text is None:
        raise DataError(record.source, record.line, field, f"expected a label string, got {type(value).__name__}")
    if not text.strip():
        raise DataError(record.source, record.line, field, "empty label")
    check_unicode(record, field, text)
    return text


@TASKS.register("classification")
class Classification(Task):
    Config = ClassificationConfig
    auto_model_class = "AutoModelForSequenceClassification"
    cfg: ClassificationConfig

    def __init__(self, cfg: ClassificationConfig, data: Any) -> None:
        super().__init__(cfg, data)
        self.labels: list[str] = list(cfg.labels or [])

    # -- data --------------------------------------------------------------------------------
    def _parse_label(self, record: Record, columns: list[str] | None) -> str | list[str]:
        field = self.data.label_field
        value = require_field(record, field, columns)
        if value is None:
            raise DataError(record.source, record.line, field, "missing label (null)")
        if self.cfg.multi_label:
            items = value if isinstance(value, list) else [value]
            return [_label_text(record, field, v) for v in items]
        if isinstance(value, list):
            raise DataError(
                record.source, record.line, field,
                "a list label in single-label mode (set task.multi_label=true for multi-label data)",
            )
        return _label_text(record, field, value)

    def parse(self, table: Table, *, labelled: bool = True) -> list[Example]:
        out = []
        for rec in table.records:
            ex: Example = {"text": require_text(rec, self.data.text_field, table.columns),
                           "source": rec.source, "line": rec.line, "row": rec.data}
            if self.data.text_pair_field:
                ex["text_pair"] = require_text(rec, self.data.text_pair_field, table.columns)
            if labelled:
                ex["label"] = self._parse_label(rec, table.columns)
            out.append(ex)
        return out

    def check_train(self, examples: list[Example]) -> None:
        seen = Counter(lab for ex in examples for lab in self._as_list(ex["label"]))
        if len(seen) < 2:
            only = next(iter(seen), "none")
            raise DataError(examples[0]["source"], None, self.data.label_field,
                            f"training data has a single class ({only!r}); classification needs at least two")

    def stratify_key(self, example: Example) -> Hashable | None:
        lab = example["label"]
        return tuple(sorted(lab)) if isinstance(lab, list) else lab

    @staticmethod
    def _as_list(label: str | list[str]) -> list[str]:
        return label if isinstance(label, list) else [label]

    # -- model -------------------------------------------------------------------------------
    def build_model(self, model_path: str, train: list[Example]) -> tuple[torch.nn.Module, Any]:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        base = AutoConfig.from_pretrained(model_path)
        archs = getattr(base, "architectures", None) or []
        old = ([base.id2label[i] for i in range(len(base.id2label))]
               if any(a.endswith("ForSequenceClassification") for a in archs) else [])
        wanted = self.labels or sorted({lab for ex in train for lab in self._as_list(ex["label"])})
        self.labels = old + [lab for lab in wanted if lab not in old]
        start = old or self.labels
        problem = "multi_label_classification" if self.cfg.multi_label else "single_label_classification"
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=len(start), id2label=dict(enumerate(start)),
            label2id={n: i for i, n in enumerate(start)}, problem_type=problem,
        )
        if len(self.labels) > len(start):
            grow_head(model, self.head_modules(model), len(self.labels))
        model.config.id2label = dict(enumerate(self.labels))
        model.config.label2id = {n: i for i, n in enumerate(self.labels)}
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if tokenizer.pad_token is None:  # decoder LMs: pad with EOS; the head reads the last real token
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        return self.optimize(model), tokenizer

    def optimize(self, model: torch.nn.Module) -> torch.nn.Module:
        first_token_only(model)  # the head reads [CLS] only: skip the rest of the last layer
        return model

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        return [n for n, _ in model.named_children() if n in ("classifier", "score")]

    def encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        texts = [ex["text"] for ex in examples]
        pairs = [ex["text_pair"] for ex in examples] if self.data.text_pair_field else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=self.data.max_length)
        index = {n: i for i, n in enumerate(self.labels)}
        feats: list[Features] = []
        for i, ex in enumerate(examples):
            f: Features = {"input_ids": enc["input_ids"][i]}
            if "token_type_ids" in enc:
                f["token_type_ids"] = enc["token_type_ids"][i]
            if "label" in ex:
                f["labels"] = self._target(ex, index)
            feats.append(f)
        return feats

    def _target(self, ex: Example, index: dict[str, int]) -> int | list[float]:
        for lab in self._as_list(ex["label"]):
            if lab not in index:
                raise DataError(ex["source"], ex["line"], self.data.label_field,
                                f"label {lab!r} is not among the training labels ({', '.join(self.labels)})")
        if not self.cfg.multi_label:
            return index[ex["label"]]
        hot = [0.0] * len(self.labels)
        for lab in ex["label"]:
            hot[index[lab]] = 1.0
        return hot

    # -- scoring -----------------------------------------------------------------------------
    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return cm.sigmoid(logits) if self.cfg.multi_label else cm.softmax(logits)

    def metrics(self, logits: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
        probs = self.probabilities(logits)
        index = {n: i for i, n in enumerate(self.labels)}
        if self.cfg.multi_label:
            truth = np.asarray([self._target(ex, index) for ex in examples])
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
            out.append({**ex["row"], "label": label, "scores": scores})
        return out

    def metadata(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def load_metadata(self, meta: dict[str, Any]) -> None:
        self.labels = list(meta["labels"])


def grow_head(model: torch.nn.Module, heads: list[str], num_labels: int) -> None:
    """Append rows for new labels to the final Linear of the head; old rows are kept exactly."""
    for name in heads:
        module = model.get_submodule(name)
        parent, attr = (module, None) if isinstance(module, torch.nn.Linear) else (module, "out_proj")
        old = parent if attr is None else getattr(parent, attr)
        new = torch.nn.Linear(old.in_features, num_labels, bias=old.bias is not None)
        torch.nn.init.normal_(new.weight, std=0.02)
        with torch.no_grad():
            new.weight[: old.out_features] = old.weight
            if old.bias is not None:
                new.bias.zero_()
                new.bias[: old.out_features] = old.bias
        if attr is None:
            model.set_submodule(name, new)
        else:
            setattr(parent, attr, new)
    model.config.num_labels = num_labels
    model.num_labels = num_labels
