"""The config sections: the typed schema of each part of a run (`data`, `train`, and the bases of the
task and method sub-configs; the base of them all, `Section`, is config/base.py's). `config/run.py` assembles them
into `RunConfig` and loads YAML + overrides; every field's description is the generated reference in docs/config.md."""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from tunelab.config.base import Section
from tunelab.errors import ConfigError

# train.report_to: tracker name -> the package it needs
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def metric_mode(metric: str, mode: str = "auto") -> str:
    """`auto`: lower is better for losses and error rates, higher for everything else."""
    if mode != "auto":
        return mode
    return "min" if any(w in metric for w in ("loss", "error", "perplexity")) else "max"


class TaskConfig(Section):
    """Base of task sub-configs; each task subclasses it with `name: Literal[...]`. `scoring_only`: the settings
    that change how outputs are decoded or scored, not the features (left out of the feature-cache key)."""

    scoring_only: ClassVar[frozenset[str]] = frozenset()
    name: str


class MethodConfig(Section):
    """Base of method sub-configs; each method subclasses it with `name: Literal[...]`."""

    name: str


class CleanConfig(Section):
    normalize_unicode: bool = Field(True, description="NFKC-normalise and drop zero-width and control characters "
                                    "(SFT turns: NFC, so full-width punctuation stays).")
    strip_html: bool = Field(True, description="Remove tags of HTML elements, comments, scripts (`List<T>` stays); "
                             "unescape entities ending in `;` (&amp;). SFT: also HTML a reply means to show; turn off "
                             "for code data.")
    collapse_whitespace: bool = Field(True, description="Runs of whitespace (newlines too) become one space; trim. "
                                      "SFT turns keep lines and indentation: trailing spaces cut, blank-line runs "
                                      "made one.")
    min_chars: int | None = Field(None, ge=1, description="Drop training rows shorter than this after cleaning.")
    max_chars: int | None = Field(None, ge=1, description="Drop training rows longer than this after cleaning.")


class AugmentConfig(Section):
    ops: list[Literal["delete", "swap", "insert", "synonym"]] = Field(
        ["delete", "swap", "insert", "synonym"], min_length=1,
        description="EDA operations; each copy applies one, picked at random (seeded by train.seed).",
    )
    ratio: float = Field(0.1, gt=0, le=1, description="Share of the words (characters for Chinese) each op changes.")
    copies: int = Field(1, ge=1, le=100, description="Augmented copies added per training row.")
    synonyms: str | None = Field(
        None, description="Synonym file (`word<TAB>syn1,syn2` lines or JSON {word: [...]}); null: nearest "
        "neighbours in the model's input-embedding space."
    )
    neighbours: int = Field(5, ge=1, description="Embedding neighbours per word used as synonyms (synonyms: null).")
    language: Literal["auto", "en", "zh"] = Field(
        "auto", description="en: whitespace words; zh: characters (jieba words if installed); auto: per row."
    )


class DataConfig(Section):
    # a loaded model's settings cut to its positions (models.positions.cut_to_positions): the max_length it had
    _cut_from: int | None = PrivateAttr(None)
    train: str | None = Field(None, description="Training file (JSONL, CSV, TSV or Parquet).")
    validation: str | None = Field(None, description="Validation file; if absent, split from train.")
    test: str | None = Field(None, description="Test file; when given, the final evaluation also runs on it.")
    unlabeled: str | None = Field(None, description="Rows without labels (the input fields only) that distillation "
                                  "trains on with the teacher's soft targets alone (needs a distill section).")
    text_field: str = Field("text", description="Column holding the input text.")
    text_pair_field: str | None = Field(None, description="Column holding the second text of a pair.")
    label_field: str = Field("label", description="Column holding the label (a list for multi-label).")
    max_length: int = Field(256, ge=8, le=131072, description="Longest input in tokens; longer is truncated.")
    truncation: Literal["head", "tail", "head+tail", "sliding_window"] = Field(
        "head", description="A row over max_length. Classification: head keeps a text's first tokens, tail its last, "
        "head+tail the first and last half of the budget (max_length minus special tokens; the head the smaller half); "
        "sliding_window: windows of max_length, each a training row, logits combined by window_aggregate; a text pair's"
        " longer text cut first (windows slide over `text` only). sft: head cuts the end; head+tail first the middle "
        "of the longest user / system messages (tunelab's cut; LLaMA-Factory's infer_seqlen budget: docs/sft.md)."
    )
    window_stride: int = Field(
        32, ge=0, description="sliding_window: tokens shared by consecutive windows (at most max_length / 2)."
    )
    window_aggregate: Literal["mean", "max"] = Field(
        "mean", description="sliding_window: a row's logits are the mean or the maximum of its windows' logits."
    )
    validation_split: float = Field(
        0.1, ge=0.0, lt=1.0,
        description="Fraction of train held out when no validation file: round(rows × it), stratified by class "
        "(QA: whole contexts), seeded by train.seed.",
    )
    clean: CleanConfig | None = Field(
        None, description="Clean texts of every split (true = the defaults); removals go to removed.jsonl."
    )
    dedup: bool = Field(
        False, description="Drop exact and normalised (NFKC, case, whitespace) duplicates within each split, "
        "and training/validation rows that repeat a validation/test row."
    )
    sampling: Literal["oversample", "undersample"] | None = Field(
        None, description="Balance the training classes by seeded random over- or undersampling."
    )
    augment: AugmentConfig | None = Field(
        None, description="Add EDA-augmented copies of training rows (true = the defaults)."
    )
    cache: bool | None = Field(
        None, description="Keep the tokenised training split on disk, memory-mapped, for later runs of the same "
        "rows, task settings and tokenizer and for every process of a distributed run (~/.cache/tunelab/features; "
        "$TUNELAB_CACHE moves it; `tunelab data cache` lists it). Default: on from 20,000 training examples."
    )
    cache_limit_gb: float | None = Field(
        20.0, gt=0, description="The feature cache's size limit: after a run writes an entry, the least recently "
        "used entries are removed until the cache holds at most this many GiB (the run's own entry stays); null: "
        "no limit. Entries of an older tunelab version or tokenizer are never reused, so they age out."
    )

    @field_validator("clean", "augment", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        """`clean: true` means the defaults, `clean: false` means off."""
        return {} if value is True else None if value is False else value

    def files(self) -> list[tuple[str, str]]:
        """(key, path) of every file this section names (the splits, the unlabelled rows, augment's synonyms), as
        given: what a run reads, and what no output may replace."""
        synonyms = self.augment.synonyms if self.augment is not None else None
        return [(key, value) for key, value in (("train", self.train), ("validation", self.validation),
                                                ("test", self.test), ("unlabeled", self.unlabeled),
                                                ("augment.synonyms", synonyms)) if value]

    @model_validator(mode="after")
    def _window(self) -> DataConfig:
        if self.truncation == "sliding_window" and self.window_stride > self.max_length // 2:
            raise ConfigError(f"config: data.window_stride: {self.window_stride} is more than half of "
                              f"data.max_length ({self.max_length}); windows would barely advance")
        return self


class DistillConfig(Section):
    teacher: str = Field(description="The teacher: a run directory (or its model/) of the same task and tokenizer. "
                         "`model: layers:0,2,4` then starts the student from the teacher with only those layers.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the soft targets (KL at T, scaled "
                               "by T²).")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the soft-target loss; 1 - alpha weighs the "
                         "task's own loss on the gold labels.")
    loss: Literal["kl", "jsd"] = Field("kl", description="Soft-target divergence: kl (forward KL, teacher to "
                                       "student) or jsd (Jensen-Shannon, symmetric).")


class EarlyStoppingConfig(Section):
    metric: str | None = Field(
        None, description="Eval metric to watch (a key of the task's metrics, e.g. accuracy, f1_macro); "
        "default: the task's headline metric (the first)."
    )
    patience: int = Field(3, ge=1, description="Stop after this many evaluations without improvement.")
    min_delta: float = Field(0.0, ge=0, description="An improvement must exceed this much to reset the patience "
                             "(any improvement is still the best checkpoint, as in HF Trainer).")
    mode: Literal["auto", "max", "min"] = Field(
        "auto", description="max: higher is better; min: lower is better; auto: min if the name has loss or error."
    )


class DistributedConfig(Section):
    """How several processes (`tunelab train --nproc N`, torchrun, accelerate launch) share the work; one process
    ignores it. `train.batch_size` stays the global batch: each process takes its share of every batch."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp", description="ddp: a full copy of the model per process, gradients averaged (accelerate); fsdp: "
        "PyTorch FSDP2 (`fully_shard` per transformer layer): parameters, gradients and optimizer state sharded "
        "over the processes, CPU (gloo) or GPU; deepspeed: DeepSpeed ZeRO through accelerate (CUDA GPUs only, "
        "`pip install deepspeed`)."
    )
    zero_stage: Literal[2, 3] = Field(
        2, description="deepspeed: ZeRO-2 shards optimizer state and gradients; ZeRO-3 also the parameters."
    )
    offload: bool = Field(
        False, description="Keep sharded state in CPU memory: deepspeed offloads optimizer state (and the parameters "
        "at ZeRO-3); fsdp offloads parameters, gradients and optimizer state (CPUOffloadPolicy)."
    )
    reshard_after_forward: bool = Field(
        True, description="fsdp: free each layer's gathered parameters after its forward (less memory, one more "
        "all-gather in backward); false keeps them until backward (ZeRO-2-like)."
    )


class TrainConfig(Section):
    epochs: float = Field(3.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(16, ge=1, description="Examples (rows) per batch, over all processes together (each "
                            "of N processes takes every N-th row of a batch); see micro_batch_tokens.")
    micro_batch_tokens: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto", description="Run a batch of more than this many tokens (rows x longest row) as several "
        "forward/backward passes of at most this many; gradients, loss and optimizer step stay those of the whole "
        "batch (each pass's loss is weighted by its share of the batch's trained tokens, or rows; with class_weights "
        "on hard labels the passes are weighted by rows, not by summed class weights, so that case is close, not "
        "exact). Less memory, "
        "and on CPUs no slower (docs/benchmarks.md). auto: 1024 on CPU, no splitting on GPU; null: never split."
    )
    eval_batch_size: int = Field(64, ge=1, description="Examples per forward pass in evaluation.")
    lr: float | None = Field(None, gt=0, description="Peak learning rate; default is the method's own.")
    layer_lr_decay: float | None = Field(
        None, gt=0, le=1, description="Layer-wise learning-rate decay: the task head and the top layer train at "
        "train.lr, each layer below at this factor times the one above, the embeddings lowest (e.g. 0.8). null: one "
        "learning rate for all."
    )
    optimizer: Literal["adamw", "adafactor", "sgd"] = Field(
        "adamw", description="adamw (fused; see adam_beta1, adam_beta2, adam_epsilon), adafactor (lr as the absolute "
        "step size) or sgd (see momentum)."
    )
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (optimizer: sgd only).")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW's beta1, the decay of its running mean of the "
                              "gradient (optimizer: adamw only; HF's adam_beta1).")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW's beta2, the decay of its running mean of the "
                              "squared gradient (optimizer: adamw only; HF's adam_beta2; many LLM recipes: 0.95).")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW's epsilon, added to the root of the squared-gradient "
                                "mean (optimizer: adamw only; HF's adam_epsilon).")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (not on biases and norms).")
    l1: float = Field(
        0.0, ge=0, description="L1 penalty: this times the sum of absolute trainable weights is added to the loss."
    )
    rdrop: float = Field(
        0.0, ge=0, description="R-Drop (Liang et al. 2021): each row runs twice (two dropout samples) and this "
        "weight (alpha; 0.1-1 in the paper) times the symmetric KL divergence of the two outputs joins the loss; "
        "steps cost ~2x. classification, ner, qa. 0: off."
    )
    neftune_alpha: float | None = Field(
        None, ge=0, description="NEFTune (Jain et al. 2023), as HF's neftune_noise_alpha (TRL, LLaMA-Factory): while "
        "training, uniform noise in ±alpha/sqrt(L·d) joins the input embeddings (L: the batch's padded length, a "
        "packed row's with task.packing; d: the hidden size); none in evaluation or generation. Meant for instruction "
        "tuning (sft; the paper: 5-15); every task takes it. null or 0: off."
    )
    dropout: float | None = Field(
        None, ge=0, lt=1, description="Set every dropout probability of the model (and its config) to this; "
        "null keeps the model's own."
    )
    fast_dropout: bool = Field(
        True, description="Train with tunelab.training.dropout.FastDropout in place of every nn.Dropout module (LoRA's "
        "too): the same dropout from 16-bit draws (p exact to 1/131072) with a bool mask, ~4x less time and memory."
    )
    fast_lora: bool = Field(
        True, description="Train peft LoRA linear layers with tunelab.training.lora_forward: the same sum as peft's "
        "forward with fewer element-wise passes (no float32 round trip of the input, dropout scale and LoRA scaling "
        "on the rank-r intermediate, the adapter added inside its matmul); DoRA, QLoRA, FSDP and DeepSpeed keep peft's."
    )
    short_row_attention: bool = Field(
        True, description="On the CPU, a model that runs sdpa attention computes rows of at most 256 tokens by "
        "matmul-softmax-matmul (tunelab.training.attention) instead of the flash kernel: the same function, 10-20 % "
        "faster steps on short rows; longer rows and GPUs keep sdpa."
    )
    sparse_embeddings: bool = Field(
        True, description="Full fine-tuning with AdamW on one process: the word embedding gets row gradients and "
        "only the rows the batches have touched are clipped and stepped (tunelab.training.sparse_rows): the same "
        "weights as dense AdamW, less time and memory per step; a tied output layer keeps it dense."
    )
    gradient_checkpointing: bool = Field(
        False, description="Keep only each transformer layer's input during the forward pass and recompute the "
        "layer in backward (HF's gradient_checkpointing, non-reentrant): the same losses and weights (dropout masks "
        "replay) for one more forward a step. SmolLM2-135M LoRA on alpaca, 2-core CPU: peak RSS 4.4 -> 2.5 GB, steps "
        "1.4-1.55x slower (full fine-tuning: ~1.33x; docs/benchmarks.md). Needs a model class that supports it; not "
        "with method prefix."
    )
    warmup: float = Field(
        0.0, ge=0, description="Warmup: a fraction of all steps if < 1 (rounded up, as HF's warmup_ratio), "
        "else a step count."
    )
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "polynomial", "reduce_on_plateau"] = (
        Field("linear", description="Learning-rate schedule after warmup (every one warms up first: constant with a "
              "warmup is constant_with_warmup, where HF's constant drops it); reduce_on_plateau steps on the eval "
              "metric (best_metric / early_stopping.metric / headline).")
    )
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="reduce_on_plateau: multiply the lr by this.")
    plateau_patience: int = Field(
        1, ge=0, description="reduce_on_plateau: evaluations without improvement tolerated before reducing."
    )
    grad_accum: int = Field(
        1, ge=1, description="Batches accumulated per optimizer step (an epoch's last step takes the batches left); "
        "the step's loss is the mean over all its rows or trained tokens, as one batch of them all.")
    distributed: DistributedConfig = Field(
        DistributedConfig(), description="Several processes: strategy ddp, fsdp or deepspeed (docs/distributed.md)."
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip gradients to this norm; null disables.")
    seed: int = Field(42, description="Seed for data order, splits, dropout and initialisation.")
    eval_steps: int | None = Field(None, gt=0, description="Evaluate every N steps; default once per epoch.")
    save_steps: int | None = Field(
        None, ge=0, description="Checkpoint every N steps; default once per epoch; 0 = no checkpoints."
    )
    save_total_limit: int = Field(
        2, ge=1, description="Keep this many newest checkpoints, plus the best one when a best metric is tracked."
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="Stop when the eval metric stops improving, e.g. {metric: accuracy, patience: 3}."
    )
    best_metric: str | None = Field(
        None, description="Eval metric that picks the best checkpoint (kept, never pruned); "
        "default: early_stopping.metric (one metric picks and stops: naming both, they must be the same)."
    )
    select_best: bool | None = Field(
        None, description="Export the best checkpoint's weights instead of the last; default: true when "
        "early_stopping or best_metric is set."
    )
    log_steps: int = Field(10, ge=1, description="Write a metrics.jsonl line every N steps.")
    report: bool = Field(True, description="Write RUN/report.html at the end of the run (off: tune trials, cv folds "
                         "and curve points that need no report each; `tunelab report RUN` builds it later).")
    baseline_eval: bool | None = Field(
        None, description="Score the untrained model on validation before training (metrics.json `baseline`; sft "
        "with generation.eval_generate also generates with it); default: true for pretrain, else false."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 autocast where the CPU/GPU runs bf16 natively, else fp32 (bf16 / fp16 set "
        "on a CPU without them is warned about: an AVX2-only CPU multiplies them 30-100x slower than fp32). Training, "
        "validation and the final scores run at it; a run at fp32 records it (model/tunelab.json `precision`) and "
        "eval / predict / serve score its model at fp32 too (TUNELAB_PRECISION=bf16 overrides)."
    )
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together (less padding, same randomness per epoch)."
    )
    class_weights: Literal["auto"] | dict[str, float] | None = Field(
        None, description="Weighted loss: auto (n / (classes * count), as sklearn 'balanced'; multi-label: "
        "negatives / positives as BCE pos_weight; counted on the final training rows, after sampling and "
        "augmentation) or {label: weight} (unlisted labels: 1)."
    )
    focal_gamma: float = Field(0.0, ge=0, description="Focal loss focusing parameter; 0 = plain cross-entropy.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        [], description="Also log every metrics.jsonl row to these trackers, offline, inside OUTPUT_DIR "
        "(tensorboard/, mlflow.db, wandb/); each needs its package (pip install 'tunelab[track]')."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Mix this much of a uniform distribution into targets.")

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if value is None or value == "auto":
            return value
        if not isinstance(value, dict):
            raise ValueError("expected auto or a mapping {label: weight}")
        out = {}
        for key, weight in value.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
                raise ValueError(f"weight of {key!r} must be a number > 0, got {weight!r}")
            out[str(key).lower() if isinstance(key, bool) else str(key)] = float(weight)
        return out

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if isinstance(names, list):
            for name in names:
                if name in TRACKER_PACKAGES and importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
                    raise ValueError(f"{name} is not installed; pip install 'tunelab[track]' "
                                     f"(or {TRACKER_PACKAGES[name]})")
        return names

    @model_validator(mode="after")
    def _one_metric(self) -> TrainConfig:
        """One tracker picks the best checkpoint and stops training: two different metrics were one silently."""
        es = self.early_stopping
        if es is not None and es.metric is not None and self.best_metric is not None and es.metric != self.best_metric:
            raise ConfigError(f"config: train.early_stopping.metric: {es.metric!r} where train.best_metric is "
                              f"{self.best_metric!r}: one metric picks the best checkpoint and stops training (as HF "
                              "Trainer's metric_for_best_model); leave one of them out")
        return self

    def needs_evaluations(self) -> str | None:
        """The setting that needs evaluations during training (so validation rows), if any."""
        if self.tracks_best():
            return "early_stopping / best_metric / select_best"
        return "scheduler: reduce_on_plateau" if self.scheduler == "reduce_on_plateau" else None

    def check_evaluations(self, evaluates: bool) -> None:
        """The one-line refusal of a setting that needs evaluations where there are none."""
        if not evaluates and (needs := self.needs_evaluations()):
            raise ConfigError(f"config: train: {needs} needs evaluations: give data.validation or keep "
                              "data.validation_split > 0")

    def tracks_best(self) -> bool:
        """A best checkpoint is tracked (and never pruned) when a selection metric is configured."""
        return bool(self.early_stopping or self.best_metric or self.select_best)

    def selects_best(self) -> bool:
        return self.select_best if self.select_best is not None else self.tracks_best()
