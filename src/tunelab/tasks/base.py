"""What every task provides: parse rows, build the model, encode, collate, score, predict."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from pydantic import ValidationError
from transformers import AutoTokenizer

from tunelab.config.sections import DataConfig, TaskConfig, TrainConfig
from tunelab.data.dedup import duplicate_keys
from tunelab.data.readers import Table
from tunelab.data.windows import CHARS_PER_TOKEN
from tunelab.errors import ConfigError
from tunelab.models.inference import TARGETS, forward_logits
from tunelab.models.positions import check_positions
from tunelab.tasks.generation import model_stop_ids, stop_ids_of
from tunelab.tasks.padding import pad_batch

TOKENIZE_CHUNK = 8192  # examples per tokenizer call in `Task.in_chunks`
R = TypeVar("R")  # what `Task.in_chunks` collects: features, token lengths
UNLABELED = "unlabeled"  # batch key of distillation: which rows came from data.unlabeled (soft targets only)

Example = dict[str, Any]
Features = dict[str, Any]


class Task(ABC):
    """One task. `Config` is its pydantic sub-config (`task: {name: ..., ...}`)."""

    Config: ClassVar[type[TaskConfig]]
    auto_model_class: ClassVar[str]  # transformers Auto* class name used to reload the exported model
    baseline_eval: ClassVar[bool] = False  # also score the untrained model on validation (metrics.json `baseline`)
    # What the rest of tunelab asks of a task, so that no code outside tasks/ names one:
    generates_replies: ClassVar[bool] = False  # answers conversations: chat, eval generation (cfg.generation)
    headline: ClassVar[str] = "score"  # the first of `metrics` by name where it is a loss (tune's direction)
    paired_test: ClassVar[Literal["mcnemar", "bootstrap"]] = "bootstrap"  # compare: on correctness or on score
    baselines: ClassVar[Literal["labels", "language_model"] | None] = None  # tunelab baseline: which family
    ensembles: ClassVar[bool] = False  # several tuned models of the task can average their scores
    count_kind: ClassVar[str] = "label"  # what `label_counts` counts, as the report names it
    label_spans: ClassVar[str | None] = None  # `label_counts` counts spans, 0+ a row (NER: "entities"): data check %
    over_length: ClassVar[str] = "truncated"  # what becomes of a row over data.max_length, as data check says it
    training_cuts_said: ClassVar[bool] = False  # `cut_note` said of the training split too, once (sft: cut rows train)
    paired_parts: ClassVar[Callable[..., Any] | None] = None  # compare's bootstrap statistic (studies/compare.py)
    export_formats: ClassVar[tuple[str, ...]] = ()  # what `tunelab export --format` makes of this task's models
    onnx_outputs: ClassVar[tuple[str, ...]] = ()  # the model outputs an ONNX export keeps (and eval reads)
    compressible: ClassVar[bool] = False  # `tunelab compress` prunes it (its gate compares each row's prediction)
    grouped_by: ClassVar[str] = "group"  # what `group_key` returns, as a hold-out's messages name it (QA: "context")
    txt_as_conll: ClassVar[bool] = False  # a .txt of CoNLL lines (`EU B-ORG`) is read as CoNLL, not text (NER)
    # `tunelab config import` (config/peers.py): the LLaMA-Factory `stage` this task trains, and its settings for a
    # dataset_info.json entry (formatting, columns, tags: config/peer_data.py `effective`), or a `PeerRefusal`; for
    # several datasets joined into one file (data/peer_join.py), a row read by its dataset's settings as a row of
    # that file (a DataError naming the row for a bad one), and the settings the file is read with; the settings the
    # stage itself implies (dotted: task.objective), why another task's setting the file names is not carried, and
    # the keys this task reads a data setting by (HF's text_column_name: NER's task.tokens_field)
    peer_stage: ClassVar[str | None] = None
    peer_task: ClassVar[dict[str, Any]] = {}
    peer_renamed: ClassVar[dict[str, str]] = {}
    peer_said: ClassVar[dict[str, str]] = {}
    peer_dataset: ClassVar[Callable[[dict[str, Any]], dict[str, Any]] | None] = None
    peer_row: ClassVar[Callable[[dict[str, Any], Any], dict[str, Any]] | None] = None
    peer_joined: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: TaskConfig, data: DataConfig) -> None:
        self.cfg, self.data = cfg, data
        self.new_token_ids: list[int] = []  # tokens build_model added to the vocabulary (their rows start untrained)
        self.text_rules: int | None = None  # a saved model's: the text rules its inputs are read by (None: in force)

    # -- data --------------------------------------------------------------------------------
    @abstractmethod
    def parse(self, table: Table, *, labelled: bool = True) -> list[Example]:
        """Validate rows into examples; raise DataError(file:line: field: problem) on bad input."""

    def refuse_row_edits(self, why: str, keys: tuple[str, ...] = ("clean", "dedup", "sampling", "augment")) -> None:
        """For tasks whose rows stay as read (offsets, chat turns): these `data.*` are `config: data.<key>: <why>`."""
        for key in keys:
            if getattr(self.data, key, None):
                raise ConfigError(f"config: data.{key}: {why}")

    def check_train(self, examples: list[Example]) -> None:  # noqa: B027 - optional hook
        """Whole-split checks on training data (e.g. at least two classes), before the other splits are read."""

    def check_labels(self, examples: Sequence[Example], model_path: str) -> None:  # noqa: B027 - optional hook
        """After `check_train`: a row whose label the model trained from `model_path` on that split will not have,
        refused as train refuses it when it encodes the row (`data check` asks before any model is built)."""

    def read_counts(self) -> dict[str, tuple[int, str]]:
        """What `parse` changed in the rows since last asked, then none: {kind: (count, a line saying it)} (NER: words
        split at an entity's edge). Said once a file (data/load.py), counted in data_summary.json and data check."""
        return {}

    def stratify_key(self, example: Example) -> Hashable | None:
        return None

    def group_key(self, example: Example) -> Hashable | None:
        """Rows sharing it stay on one side of a validation hold-out and of cv's folds (QA: the context); None: any."""
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

    @staticmethod
    def in_chunks(examples: Sequence[Example], encode_part: Callable[[Sequence[Example], int], list[R]],
                  size: int | None = None) -> list[R]:
        """`encode_part(chunk, offset)` over chunks of `size` examples: a fast tokenizer's per-row `Encoding`
        objects (several KB each) then live for one chunk, not the whole split (measured: SST-2 at 180k rows,
        encoding took 756 MB of peak RSS at once, 4.2 KB a row); and only one chunk's texts (for a spilled split,
        its rows) are held at once (`token_lengths` counts through it too)."""
        size = size or TOKENIZE_CHUNK
        return [f for at in range(0, len(examples), size) for f in encode_part(examples[at : at + size], at)]

    @abstractmethod
    def encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        """Tokenise examples into features; each has `input_ids` (a list) and, if labelled, `labels`. Whatever
        state the task keeps from the tokenizer is set by `bind_tokenizer`, which encode calls."""

    def cut_note(self) -> str | None:
        """One line on what the last `encode` cut at data.max_length (eval and predict say it on stderr), or None;
        after `training_parts`, what all its parts cut."""
        return None

    def bind_tokenizer(self, tokenizer: Any) -> None:  # noqa: B027 - optional hook
        """Keep what the task needs of `tokenizer` to collate, score and generate (called by `encode`, and by the
        feature cache when the training split's features come from disk instead)."""

    def encodes_in_parts(self, examples: Sequence[Example]) -> bool:
        """Whether encoding `examples` part by part (each part's `example_index` shifted by its start), each part's
        result through `train_features`, gives the split's training features: the feature cache then tokenises
        a chunk at a time. Not so for rows packed across examples, or where one row decides for the whole split."""
        return type(self).train_features is Task.train_features

    def training_parts(self, examples: Sequence[Example], tokenizer: Any) -> Iterator[tuple[list[Features], int]]:
        """The training split's features as the engine batches them (`train_features`), part after part, each with
        the longest encoded input before `train_features` (what the position check needs): what the feature cache
        writes. Chunk by chunk where `encodes_in_parts`, else one part; a task that packs across examples
        overrides it to carry its open rows from part to part (pretrain)."""
        in_parts = self.encodes_in_parts(examples)
        for start in range(0, len(examples), TOKENIZE_CHUNK) if in_parts else [0]:
            feats = self.encode(examples[start : start + TOKENIZE_CHUNK] if in_parts else examples, tokenizer)
            longest = max((len(f["input_ids"]) for f in feats), default=0)
            feats = self.train_features(feats)
            for f in feats if start else ():
                if "example_index" in f:
                    f["example_index"] += start
            yield feats, longest

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
        """The encoded training split as the engine batches it (sft packs rows); evaluation gets `encode`'s features."""
        return features

    def loss_fn(self) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None:
        """A custom training loss `f(model, batch)`, or None for the model's own loss."""
        return None

    def soft_target_loss(self, student: Any, teacher: Any, batch: dict[str, torch.Tensor], temperature: float,
                         divergence: str = "kl") -> torch.Tensor:
        """Distillation (`distill:`): the student's outputs against the teacher's on one training batch."""
        raise NotImplementedError

    def check_unlabeled(self) -> None:
        """Refuse (ConfigError) distillation's `data.unlabeled` where this task's config cannot use it; checked
        before anything loads. A task that overrides `unlabeled_example` or `unlabeled_examples` can."""
        if (type(self).unlabeled_example is Task.unlabeled_example
                and type(self).unlabeled_examples is Task.unlabeled_examples):
            raise ConfigError(f"config: data.unlabeled: task {self.cfg.name} cannot distill from unlabelled rows "
                              "yet (classification, ner, qa and sft can)")

    def unlabeled_examples(self, examples: Sequence[Example], teacher: torch.nn.Module,
                           tokenizer: Any) -> list[Example]:
        """Distillation's `data.unlabeled` rows made ready to encode like training rows: by default each row's
        `unlabeled_example` (placeholder targets). A task whose soft targets need an output the row lacks
        overrides this with the teacher's (sft: its reply to the prompt)."""
        return [self.unlabeled_example(ex) for ex in examples]

    def unlabeled_example(self, example: Example) -> Example:
        """A row of distillation's `data.unlabeled` (parsed without targets) with placeholder targets, so that it
        encodes and batches like a training row: `ignore_targets` hides them from the hard loss, and the soft loss
        reads the teacher's outputs on it."""
        raise NotImplementedError

    def ignore_targets(self, batch: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """`batch` with the targets of `rows` (a bool per row) set to -100, what the hard loss (cross-entropy) skips."""
        labels = batch["labels"].clone()
        labels[rows] = -100
        return {**batch, "labels": labels}

    def distill_step(self, model: torch.nn.Module, teacher: torch.nn.Module, batch: dict[str, torch.Tensor],
                     hard: Callable[..., torch.Tensor] | None, temperature: float, alpha: float,
                     divergence: str = "kl") -> torch.Tensor:
        """One batch of distillation: `alpha · soft + (1 − alpha) · hard`, hard the task's loss on the gold labels
        (`hard(model, batch)`, or the model's own), soft `soft_target_loss` against the frozen teacher's outputs.
        Rows of `data.unlabeled` (`batch[UNLABELED]`) count in the soft part only; a batch of such rows alone is
        `alpha · soft`."""
        unlabeled = batch.get(UNLABELED)
        batch = {k: v for k, v in batch.items() if k != UNLABELED}
        inputs = {k: v for k, v in batch.items() if k not in TARGETS}
        if unlabeled is not None and bool(unlabeled.all()):
            out, hard_loss = model(**inputs), None
        else:
            scored = self.ignore_targets(batch, unlabeled) if unlabeled is not None and unlabeled.any() else batch
            out = model(**scored)
            hard_loss = hard(model, scored) if hard is not None else out.loss
        if alpha == 0 and hard_loss is not None:
            return hard_loss
        with torch.no_grad():
            target = teacher(**inputs)
        soft = alpha * self.soft_target_loss(out, target, batch, temperature, divergence)
        return soft if hard_loss is None else soft + (1 - alpha) * hard_loss

    def check_distillable(self) -> None:
        """Refuse (ConfigError) a `distill:` run of a task that overrides neither distillation hook."""
        if type(self).distill_step is Task.distill_step and type(self).soft_target_loss is Task.soft_target_loss:
            raise ConfigError(f"config: distill: task {self.cfg.name} cannot be distilled yet (classification, ner, "
                              "qa, sft can)")

    def check_positions(self, positions: int | None, learned: bool, longest: int) -> None:
        """`data check`: refuse (ConfigError) what train refuses about the model's `positions` (`learned`: position
        embeddings, which cannot extrapolate), given the split's longest row of `longest` tokens before cutting:
        inputs that reach past learned positions. Pretraining overrides it (its blocks are max_length long)."""
        check_positions(positions if learned else None, self.data.max_length, min(longest, self.data.max_length))

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
        """What `metrics` / `predictions` receive: one entry per example (a task whose examples become several
        features, as sliding windows whose features carry `example_index`, combines them here)."""
        return forward_logits(model, features, collate, batch_size)

    @abstractmethod
    def metrics(self, logits: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
        """Metrics of one evaluation split; the headline metric first."""

    def metric_names(self) -> tuple[str, ...]:
        """Every number `metrics` can give (tune checks search.metric against them before a trial); (): not known."""
        return ()

    def check_metric(self, field: str, name: str | None) -> None:
        """Refuse (ConfigError naming `field`) a metric name `metrics` never gives; any name where not known."""
        known = tuple(m for m in self.metric_names() if m != "n" and not m.endswith("_n"))  # (counts: nothing to pick)
        if name is not None and known and name not in known:
            raise ConfigError(f"config: {field}: {name!r} is not among the validation metrics of task {self.cfg.name} "
                              f"({', '.join(known)})")

    @abstractmethod
    def predictions(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """One output row per example."""

    def records(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Per-example evaluation rows `{text, gold, prediction, correct, score, ...}` (tunelab.evaluation.records); a
        task without them raises NotImplementedError and no records are written."""
        raise NotImplementedError

    # -- what reports, checks and studies ask (defaults: nothing task-specific) ------------------
    def input_fields(self) -> tuple[str, ...]:
        """The fields of one input row to `predict` (the UI playground's form): the text field (+ the pair's)."""
        return (self.data.text_field, *([self.data.text_pair_field] if self.data.text_pair_field else []))

    def example_text(self, example: Example) -> str:
        """The example's input as one text (near-duplicate search in the report, records)."""
        return str(example.get("text", "")) + ("\n" + example["text_pair"] if "text_pair" in example else "")

    def token_lengths(self, tokenizer: Any, examples: Sequence[Example]) -> list[int] | None:
        """Untruncated input length of each example (specials included): `text` (+ `text_pair`); None: not counted."""
        if not examples:
            return []
        if "text" not in examples[0]:
            return None
        pair = "text_pair" in examples[0]
        return self.in_chunks(examples, lambda part, _: head_lengths(
            tokenizer, [ex["text"] for ex in part], [ex["text_pair"] for ex in part] if pair else None,
            self.length_cap()))

    def length_cap(self) -> int:
        """Characters of one text that are tokenised to count its length (16 per token of data.max_length): a
        longer text is counted from its head, so a 50 MB line costs what a 16 × max_length one does."""
        return CHARS_PER_TOKEN * int(getattr(self.data, "max_length", 512))

    def length_note(self) -> str:
        """How an input longer than data.max_length is cut (the report's token-length note)."""
        return "rows are cut at the end"

    def label_counts(self, examples: Sequence[Example] = (), records: Sequence[dict[str, Any]] = ()) -> Counter[str]:
        """Gold `count_kind` counts of a split, from its examples or else its records (report's distribution)."""
        return Counter()

    def report_results(self, records: Sequence[dict[str, Any]], metrics: dict[str, Any],
                       generations: Sequence[dict[str, Any]] | None = None) -> str | None:
        """This task's part of the report's Results section for one split (HTML; tunelab.html blocks), or None."""
        return None

    def report_errors(self, records: Sequence[dict[str, Any]], examples: Sequence[Example] | None, model: Any,
                      tokenizer: Any) -> str | None:
        """This task's error analysis of one split (HTML), or None."""
        return None

    def ensemble_mismatch(self, other: Task, first: str) -> str | None:
        """Why `other` (a tuned model of this task) cannot join the ensemble of this one (from `first`); or None."""
        return None

    def stop_ids(self, tokenizer: Any, model: Any) -> list[int]:
        """Token ids that end `model`'s generated reply (eval, chat, serve alike): eos, and the model's own."""
        return model_stop_ids(model, stop_ids_of(tokenizer, None))

    def chat_turn(self, line: str, last: bool = True) -> str:
        """A chat turn's text as the model trained on it (sft: cleaned; the `last` user turn fills its template)."""
        return line

    def load_tokenizer(self, model_path: str) -> Any:
        """The tokenizer this task encodes with (sft adds its chat template)."""
        return AutoTokenizer.from_pretrained(model_path)

    def dedup_keys(self, example: Example) -> tuple[str, str]:
        """(exact, normalised) duplicate keys of an example: data.dedup's, so `data check` counts what dedup drops."""
        return duplicate_keys(example)

    # -- saved with the model ----------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {}

    def load_metadata(self, meta: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore state saved by `metadata()` (e.g. the label map) when loading a tuned model."""

    def rescore(self, settings: dict[str, Any]) -> list[str]:
        """A loaded model's task with other scoring settings (`tunelab eval / predict --set task.KEY=VALUE`): only
        the keys of `TaskConfig.scoring_only` (e.g. NER's decoding), never what the model was trained for.
        Returns `KEY=VALUE (saved: OLD)` for each setting that changed."""
        allowed = self.cfg.scoring_only
        for key in settings:
            if key not in allowed:
                names = ", ".join(f"task.{k}" for k in sorted(allowed)) or f"task {self.cfg.name} has none"
                raise ConfigError(f"--set task.{key}: only scoring settings change after training ({names})")
        try:
            cfg = type(self.cfg).model_validate({**self.cfg.model_dump(), **settings})
        except ValidationError as e:
            err = e.errors()[0]
            raise ConfigError(f"--set task.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        changed = [f"task.{k}={getattr(cfg, k)} (saved: {getattr(self.cfg, k)})" for k in settings
                   if getattr(cfg, k) != getattr(self.cfg, k)]
        self.cfg = cfg
        return changed


def head_lengths(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None, cap: int,
                 **kwargs: Any) -> list[int]:
    """Token counts of `texts` (and `pairs`): exact for a text of at most `cap` characters; a longer one is
    tokenised from its first `cap` characters and its count scaled by its length (memory bounded by `cap`)."""
    out = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):  # one chunk's Encoding objects at a time
        end = start + TOKENIZE_CHUNK
        cut = [t[:cap] for t in texts[start:end]]
        cut_pairs = [p[:cap] for p in pairs[start:end]] if pairs is not None else None
        for j, row in enumerate(tokenizer(cut, cut_pairs, **kwargs)["input_ids"]):
            i = start + j
            whole = len(texts[i]) + (len(pairs[i]) if pairs is not None else 0)
            head = len(cut[j]) + (len(cut_pairs[j]) if cut_pairs is not None else 0)
            out.append(len(row) if whole == head else round(len(row) * whole / max(head, 1)))
    return out
