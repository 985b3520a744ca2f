"""Knowledge distillation (`distill:` in the config, `tunelab distill`): the student trains on
`alpha · soft + (1 - alpha) · hard`, where hard is the task's own loss on the gold labels and soft is the task's
`soft_target_loss` of the student's outputs against a frozen teacher's on the same batch (Hinton et al. 2015: KL
at temperature T, × T²). The teacher runs in the training step, under the same autocast as the student.
`data.unlabeled` rows join the training rows (`WithUnlabeled`) and count in the soft part only."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tunelab.models.aliases import model_dir_of
from tunelab.models.decoder_heads import load_head
from tunelab.models.local_save import save_model_here
from tunelab.models.student import keep_layers, parse_layers
from tunelab.models.tokenizer_save import save_tokenizer
from tunelab.tasks.base import UNLABELED, Example, Features, Task
from tunelab.tasks.feature_cache import say_training_cuts


class DistillLoss:
    """`loss(model, batch)` for the engine: the student's hard loss blended with the soft targets of `teacher`."""

    def __init__(self, task: Task, teacher: torch.nn.Module, hard: Callable[..., torch.Tensor] | None,
                 temperature: float, alpha: float, divergence: str = "kl") -> None:
        self.task, self.teacher, self.hard = task, teacher.eval().requires_grad_(False), hard
        self.temperature, self.alpha, self.divergence = temperature, alpha, divergence

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = batch["input_ids"].device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        return self.task.distill_step(model, self.teacher, batch, self.hard, self.temperature, self.alpha,
                                      self.divergence)


class WithUnlabeled(Sequence[Features]):
    """The training features followed by the unlabelled rows' (each marked `UNLABELED`), without copying the
    first (it may be a FeatureStore mapped from the cache)."""

    def __init__(self, labelled: Sequence[Features], unlabeled: list[Features]) -> None:
        self.labelled, self.unlabeled = labelled, unlabeled
        lengths = getattr(labelled, "lengths", None)
        if lengths is not None:
            self.lengths = [*lengths, *(len(f["input_ids"]) for f in unlabeled)]

    def __len__(self) -> int:
        return len(self.labelled) + len(self.unlabeled)

    def __getitem__(self, i: int) -> Features:  # type: ignore[override]
        n = len(self.labelled)
        return self.labelled[i] if i < n else self.unlabeled[i - n]


def unlabeled_features(task: Task, examples: list[Example], tokenizer: Any, teacher: torch.nn.Module,
                       state: Any = None) -> list[Features]:
    """`data.unlabeled`'s rows encoded like training rows (`Task.unlabeled_examples`: placeholder targets, or the
    teacher's outputs where the task needs them). Under several processes (`state`: accelerate's PartialState) the
    main process makes them and sends them to the others, so every process trains on the same rows."""
    from accelerate.utils import broadcast_object_list

    made = [task.unlabeled_examples(examples, teacher, tokenizer) if state is None or state.is_main_process else None]
    if state is not None and state.num_processes > 1:
        made = broadcast_object_list(made, from_process=0)
    features = task.encode(made[0], tokenizer)
    say_training_cuts(task, "unlabeled")  # the teacher's replies to data.unlabeled's prompts
    return features


def marked(features: Sequence[Features]) -> list[Features]:
    """Features of unlabelled rows, each marked `UNLABELED` (after `Task.train_features`, which builds new rows)."""
    return [{**f, UNLABELED: True} for f in features]


def flag_unlabeled(collate: Callable[[Sequence[Features]], dict[str, torch.Tensor]],
                   ) -> Callable[[Sequence[Features]], dict[str, torch.Tensor]]:
    """The task's collate plus `batch[UNLABELED]`, one bool per row (what `Task.distill_step` reads)."""

    def wrapped(features: Sequence[Features]) -> dict[str, torch.Tensor]:
        batch = collate(features)
        batch[UNLABELED] = torch.tensor([bool(f.get(UNLABELED)) for f in features])
        return batch

    return wrapped


def teacher_model_dir(teacher: str) -> Path:
    """The teacher's model directory: a run directory's model/, or the directory itself."""
    return model_dir_of(teacher)


def student_from_teacher(spec: str, teacher_dir: Path, auto_class: str) -> tempfile.TemporaryDirectory[str]:
    """`layers:0,2,4`: the teacher's model with only those layers (its tokenizer too), written to a temp directory
    the caller builds the student from (and then cleans up)."""
    from transformers import AutoTokenizer

    keep = parse_layers(spec)
    model = keep_layers(load_head(auto_class, str(teacher_dir)), keep)
    tmp = tempfile.TemporaryDirectory(prefix="tunelab-student-")
    try:
        save_model_here(model, tmp.name)  # every process of a launched run builds its own copy
        save_tokenizer(AutoTokenizer.from_pretrained(str(teacher_dir)), tmp.name)
    except BaseException:
        shutil.rmtree(tmp.name, ignore_errors=True)
        raise
    return tmp


def same_vocabulary(a: Any, b: Any) -> bool:
    return a.get_vocab() == b.get_vocab()
