"""`RUN/model/README.md`: the model card of a tuned model — what it does, what it was made from and with, how well
it did, how to make it again, and the base model's licence (the front matter follows the Hugging Face card format)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from tunelab import __version__
from tunelab.config.run import RunConfig
from tunelab.evaluation.evaluate import format_value
from tunelab.metrics import scalars
from tunelab.models.aliases import ALIASES, base_model_of, model_dir_of
from tunelab.models.student import STUDENT_LAYERS
from tunelab.tasks.base import Task


def _front_matter(folder: Path, key: str) -> str | None:
    """A key of the model card's front matter in `folder` (README.md), or None."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    found = re.search(rf"^{key}:\s*(\S.*)$", card.read_text(encoding="utf-8", errors="replace"), re.M)
    return found.group(1).strip().strip("'\"") if found else None


def base_licence(model: str) -> str:
    """The base model's licence: the alias table's, a local model directory's card front matter, else unknown."""
    if model in ALIASES:
        return ALIASES[model].licence
    return _front_matter(Path(model), "licen[cs]e") or "unknown (see the base model's own card)"


def card_base(cfg: RunConfig) -> tuple[str, str]:
    """(base model, its licence) the card names: the run's model; for a student cut from its teacher (`model:
    layers:...`) the teacher's, as the teacher's own card says (a student of a student: its teacher's), else as its
    tunelab.json names it."""
    if cfg.distill is None or not cfg.model.startswith(STUDENT_LAYERS):
        return cfg.model, base_licence(cfg.model)
    teacher = model_dir_of(cfg.distill.teacher)
    base = _front_matter(teacher, "base_model")
    if base is None:
        base = base_model_of(teacher) or str(teacher)
    licence = _front_matter(teacher, "licen[cs]e")
    return base, licence if licence and not licence.startswith("unknown") else base_licence(base)


def model_card(cfg: RunConfig, task: Task, metrics: dict[str, Any]) -> str:
    """The card's Markdown from the run's config, its task (label map) and its final metrics."""
    base, licence = card_base(cfg)
    train = metrics.get("train") or {}
    method = ", ".join(f"{k}={v}" for k, v in cfg.method.model_dump(mode="json").items())
    files = {"train": cfg.data.train, "validation": cfg.data.validation, "test": cfg.data.test}
    rows = train.get("rows") or {}
    data_lines = [f"| {split} | {files.get(split) or 'held out of train (data.validation_split)'} | {n:,} |"
                  for split, n in rows.items()]
    splits = {s: scalars(m) for s, m in metrics.items() if s not in ("train", "baseline") and isinstance(m, dict)}
    names = list(dict.fromkeys(k for m in splits.values() for k in m))
    metric_lines = [f"| {n} | " + " | ".join(format_value(m.get(n)) for m in splits.values()) + " |" for n in names]
    labels = task.metadata().get("labels")
    argv = shlex.join(["tunelab", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("tunelab", "__main__.py") else None
    parts = [
        "---", f"license: {licence}", f"base_model: {base}", "library_name: transformers",
        f"tags: [tunelab, {cfg.task.name}, {cfg.method.name}]", "---", "",
        f"# {Path(cfg.output_dir).name}", "",
        f"A `{cfg.task.name}` model fine-tuned with tunelab {__version__} from `{base}` ({method}). "
        "It loads with plain transformers (`RUN/model`), or with `tunelab.load()` / `tunelab predict`.", "",
    ]
    if cfg.distill is not None:
        cut = (f"the student starts from its layers {cfg.model[len(STUDENT_LAYERS):]}; "
               if cfg.model.startswith(STUDENT_LAYERS) else "")
        parts += [f"Distilled from the teacher `{cfg.distill.teacher}` ({cut}temperature {cfg.distill.temperature}, "
                  f"alpha {cfg.distill.alpha}, loss {cfg.distill.loss}).", ""]
    if labels:
        parts += [f"Labels ({len(labels)}): " + ", ".join(f"`{x}`" for x in labels), ""]
    parts += ["## Data", "", "| split | file | rows |", "|---|---|---|", *data_lines, ""]
    if metric_lines:
        parts += ["## Metrics", "", "| metric | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|",
                  *metric_lines, ""]
    parts += ["## Training", "",
              f"{train.get('steps', '-')} optimizer steps ({train.get('epochs', '-')} epochs), lr {cfg.train.lr}, "
              f"batch size {cfg.train.batch_size}, precision {train.get('precision', '-')}, "
              f"{train.get('wall_s', '-')} s on {((train.get('hardware') or {}).get('device') or '-')}.", "",
              "## Reproduce", "", "```bash", f"tunelab train {Path(cfg.output_dir) / 'config.yaml'}", "```", ""]
    if argv:
        parts += [f"Made by: `{argv}`", ""]
    parts += ["## Licence", "", f"The weights derive from `{base}`, whose licence is: {licence}. "
              "The training data's licence applies as well.", ""]
    return "\n".join(parts)
