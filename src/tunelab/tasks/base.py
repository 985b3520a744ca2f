"""What every task provides: parse rows, build the model, encode, collate, score, predict."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from tunelab.config import DataConfig, TaskConfig, TrainConfig
from tunelab.data.readers import Table
from tunelab.errors import ConfigError

Example = dict[str, Any]
Features = dict[str, Any]


class Task(ABC):
    """One task. `Config` is its pydantic sub-config (`task: {name: ..., ...}`)."""

    Config: ClassVar[type[TaskConfig]]
    auto_model_class: ClassVar[str]  # transformers Auto* class name used to reload the exported model
    baseline_eval: ClassVar[bool] = False  # also score the untrained model on validation (metrics.json `baseline`)

    def __init__(self, cfg: TaskConfig, data: DataConfig) -> None:
        self.cfg = cfg
        self.data = data
        self.new_token_ids: list[int] = []  # tokens build_model added to the vocabulary (their rows start untrained)

    # -- data --------------------------------------------------------------------------------
    @abstractmethod
    def parse(self, table: Table, *, labelled: bool = True) -> list[Example]:
        """Validate rows into examples; raise DataError(file:line: field: problem) on bad input."""

    def refuse_row_edits(self, why: str, keys: tuple[str, ...] = ("clean", "dedup", "sampling", "augment")) -> None:
        """For tasks whose rows must stay exactly as read (offsets, chat turns): these `data.*` keys are config
        errors `config: data.<key>: <why>`."""
        for key in keys:
            if getattr(self.data, key, None):
                raise ConfigError(f"config: data.{key}: {why}")

    def check_train(self, examples: list[Example]) -> None:  # noqa: B027 - optional hook
        """Whole-split checks on training data (e.g. at least two classes)."""

    def stratify_key(self, example: Example) -> Hashable | None:
        return None

    # -- model -------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, model_path: str, train: list[Example]) -> tuple[torch.nn.Module, Any]:
        """Load (model, tokenizer) for training, sizing any head from the training examples."""

    def optimize(self, model: torch.nn.Module) -> torch.nn.Module:
        """Task-aware speed-ups that leave outputs unchanged (applied for training and inference)."""
        return model

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        """Names of freshly initialised task-head modules (always trainable, saved with adapters)."""
        return []

    @abstractmethod
    def encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        """Tokenise examples into features; each has `input_ids` (a list) and, if labelled, `labels`."""

    def configure_loss(self, train: TrainConfig, examples: list[Example]) -> dict[str, Any]:
        """Set up the training loss from `train.class_weights / focal_gamma / label_smoothing` and the
        final training examples (before `loss_fn()` is asked); returns what was applied, for the run summary."""
        used = next((k for k in ("class_weights", "focal_gamma", "label_smoothing") if getattr(train, k)), None)
        if used is not None:
            raise ConfigError(f"config: train.{used}: not supported by task {self.cfg.name} yet")
        return {"type": "model"}

    def check_method(self, method: str) -> None:  # noqa: B027 - optional hook
        """Refuse (ConfigError) a method this task's config cannot work with; called before loading."""

    def train_features(self, features: list[Features]) -> list[Features]:
        """The encoded training split as the engine batches it (sft packs several examples per row);
        evaluation always gets `encode`'s one feature per example."""
        return features

    def loss_fn(self) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None:
        """A custom training loss `f(model, batch)`, or None for the model's own loss."""
        return None

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        """What the training loss is a mean over, counted in `batch`: its labelled tokens for token-level
        labels (-100 = not trained), else its rows. The engine weights the passes of a split batch by it. A loss
        that is a class-weighted mean (train.class_weights on hard labels) divides by the summed weights instead,
        so its split passes are weighted approximately."""
        labels = batch.get("labels")
        if labels is not None and labels.dim() == 2 and not labels.is_floating_point():
            return int((labels != -100).sum())
        return len(batch["input_ids"])

    def collate(self, features: Sequence[Features], pad_id: int) -> dict[str, torch.Tensor]:
        return pad_batch(features, pad_id)

    # -- scoring -----------------------------------------------------------------------------
    def logits(self, model: torch.nn.Module, features: Sequence[Features], collate: Callable[..., Any],
               batch_size: int) -> np.ndarray:
        """What `metrics` / `predictions` receive: one entry per example. Tasks whose examples become
        several features (sliding windows; features carry `example_index`) combine them here."""
        from tunelab.engine import forward_logits

        return forward_logits(model, features, collate, batch_size)

    @abstractmethod
    def metrics(self, logits: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
        """Metrics of one evaluation split; the headline metric first."""

    @abstractmethod
    def predictions(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """One output row per example."""

    def records(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Per-example evaluation rows `{text, gold, prediction, correct, score, ...}` (see tunelab.records);
        a task without them raises NotImplementedError and no records are written."""
        raise NotImplementedError

    # -- saved with the model ----------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {}

    def load_metadata(self, meta: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore state saved by `metadata()` (e.g. the label map) when loading a tuned model."""


def pad_batch(features: Sequence[Features], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad `input_ids` (and `token_type_ids`) to the longest row; add the attention mask."""
    width = max(len(f["input_ids"]) for f in features)
    n = len(features)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long) if "token_type_ids" in features[0] else None
    for i, f in enumerate(features):
        k = len(f["input_ids"])
        ids[i, :k] = torch.as_tensor(f["input_ids"])
        mask[i, :k] = 1
        if types is not None:
            types[i, :k] = torch.as_tensor(f["token_type_ids"])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    if "labels" in features[0]:
        first = features[0]["labels"]
        if isinstance(first, list) and first and isinstance(first[0], int):  # token labels (multi-hot are floats)
            labels = torch.full((n, width), -100, dtype=torch.long)
            for i, f in enumerate(features):
                labels[i, : len(f["labels"])] = torch.as_tensor(f["labels"])
            batch["labels"] = labels
        else:
            batch["labels"] = torch.as_tensor(np.asarray([f["labels"] for f in features]))
    return batch
