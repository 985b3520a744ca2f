"""What a run checks before it loads anything: its output_dir (run_dir.py: a file, foreign files, a run of another
config), its inputs kept apart from it, the checkpoint a resume names and the settings it may change — on the main
process of a launch (a refusal ends every process: one line, exit code 2). Light: the config, the run's files and
the launch's process group, not the training stack (transformers' model code, peft), so that `tunelab train` refuses
such a run in the time its config takes to read (~3 s on a 2-core CPU) rather than the ~7 s the stack took to import
first, and each process of a launch as soon; `pipeline.run` opens the run with the same checks (the API's path, and
whatever changed in between)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

from tunelab.config.fields import flat_fields, within
from tunelab.config.run import RunConfig, build_config, check_label_field, config_to_yaml
from tunelab.data.load import run_data, run_model
from tunelab.data.report import read_summary, summary_rules
from tunelab.errors import ConfigError, TunelabError
from tunelab.io import same_file
from tunelab.methods.base import Method
from tunelab.registry import METHODS
from tunelab.text import rules_version, text_rules
from tunelab.training.checkpoint import Verified, find_checkpoint
from tunelab.training.distributed import check_strategy, launched, on_main
from tunelab.training.run_dir import check_inputs_apart, check_output_dir, run_inputs


def resolved(cfg: RunConfig) -> RunConfig:
    """`cfg` with the values the run will use where the config left them to tunelab (`train.lr`: the method's
    default), so that RUN/config.yaml says what ran."""
    if cfg.train.lr is None:
        lr = METHODS.get(cfg.method.name).default_lr
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": lr})})
    return cfg


@dataclass(frozen=True)
class OpenedRun:
    """A run whose first checks passed: its resolved config (and config.yaml text), method, output_dir, the
    checkpoint it resumes (`own`: this output_dir's own), the text rules its rows are read by, and whether it may
    replace what output_dir holds."""

    cfg: RunConfig
    config_yaml: str
    method: Method
    out: Path
    resume_from: Path | None
    own: bool
    rules: int
    overwrite: bool

    def check_out(self, locked: bool) -> None:
        """output_dir may take this run (`locked`: again, under the run's lock), with the settings a resume keeps."""
        check_output_dir(self.out, partial(_same_config, self.config_yaml), resume=self.own, overwrite=self.overwrite,
                         locked=locked)
        _check_resumed_settings(self.out, self.cfg, self.resume_from, self.own)


def open_run(cfg: RunConfig, resume: str | Verified | None = None, overwrite: bool = False) -> OpenedRun:
    """The run's first checks (`pipeline.run`'s start), on the main process: a user error raised on every process.
    `resume`: `auto`, a checkpoint path to verify, or a `Verified` one; `overwrite`: as `pipeline.run`'s."""
    cfg = resolved(cfg)
    config_yaml = config_to_yaml(cfg)
    method = METHODS.get(cfg.method.name)(cfg.method)
    if launched():  # train.distributed applies to launched runs (tunelab train --nproc, torchrun)
        check_strategy(cfg.train, cfg.method.name, cfg.distill is not None)
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # the launch's process group: the checks' refusal reaches all
    out = Path(cfg.output_dir)
    resume_from = resume.path if isinstance(resume, Verified) else find_checkpoint(resume, out) if resume else None
    # resuming this directory's own checkpoint (OUTPUT_DIR/checkpoints/step-N) is the one way past its checks; a
    # checkpoint of another run starts this one from it, into an output_dir checked as for a new run
    own = resume_from is not None and resume_from.resolve().parent == (out / "checkpoints").resolve()
    # rows compared and measured as the resumed run did (text.TEXT_RULES: an older run's by its rules; a trial of a
    # study begun by older rules, by the study's: `rules_version()` where its caller set them)
    rules = summary_rules(read_summary(resume_from.parent.parent)) \
        if resume_from is not None and resume_from.parent.name == "checkpoints" else rules_version()
    opened = OpenedRun(cfg, config_yaml, method, out, resume_from, own, rules, overwrite)

    def first_checks() -> None:  # (on the main process; a refusal ends every process, one line, exit code 2)
        if not own:  # (a run of an older tunelab resumes as it was)
            check_label_field(cfg.task, cfg.data)
        check_inputs_apart(out, run_inputs(cfg))
        opened.check_out(locked=False)

    with text_rules(rules):
        on_main(first_checks)
    return opened


def _same_config(config_yaml: str, saved: dict[str, Any]) -> bool:
    """Whether a saved config.yaml describes this run, read through today's schema (fields added since then take
    their defaults; a saved `lr: null` is the method's default)."""
    try:
        return config_to_yaml(resolved(build_config(saved))) == config_yaml
    except TunelabError:
        return False


# what a resumed run may change: how long it trains, how often it saves, logs and evaluates (and on what batch size
# and test file), which checkpoint it keeps as best, where it reports, its feature cache, passes' size and
# recomputed layers (memory: the same weights)
RESUME_MAY_CHANGE = ("output_dir", "search", "data.test", "data.cache", "data.cache_limit_gb", "train.epochs",
                     "train.max_steps", "train.save_steps", "train.save_total_limit", "train.log_steps",
                     "train.eval_steps", "train.eval_batch_size", "train.micro_batch_tokens", "train.report",
                     "train.report_to", "train.baseline_eval", "train.early_stopping", "train.best_metric",
                     "train.select_best", "train.gradient_checkpointing")


def _check_resumed_settings(out: Path, cfg: RunConfig, resume_from: Path | None, own: bool) -> None:
    """A resume's settings are those of the run it continues: this output_dir's (`own`; --overwrite too: a resumed run
    continues the one it resumes), or those of the run whose checkpoint (RUN/checkpoints/step-N) starts this one."""
    if own:
        check_resumed_config(out, cfg)
    elif resume_from is not None and resume_from.parent.name == "checkpoints":
        check_resumed_config(resume_from.parent.parent, cfg, "train without --resume")


def check_resumed_config(out: Path, cfg: RunConfig, otherwise: str = "start a new output_dir") -> None:
    """`--resume` continues the run in `out` (this output_dir, or the run whose checkpoint starts this one) with its
    config: a changed setting other than RESUME_MAY_CHANGE (the learning rate, the data, the model, LoRA's alpha...)
    is refused in one line naming it (`otherwise`: the way out it offers), instead of a config.yaml that says what the
    checkpoint's weights were not trained with (the optimizer state restores the old lr and weight decay)."""
    for key, new, old in (config_changes(out, cfg, RESUME_MAY_CHANGE) or [])[:1]:
        raise ConfigError(f"config: {key}: {new!r} where the run being resumed has {old!r} "
                          f"({out / 'config.yaml'}); resume with its settings, or {otherwise}")


def config_changes(out: Path, cfg: RunConfig, may_change: Sequence[str] = ()) -> list[tuple[str, Any, Any]] | None:
    """(key, cfg's value, the run's) of each setting but `may_change` where `cfg` (resolved) and the run in `out`
    differ (as resumes, and the studies' trials, folds and points, compare); None without a readable config.yaml."""
    saved = run_config(out)
    if saved is None:
        return None  # (a run of an older tunelab: the checkpoint's own checks still apply)
    old, new = flat_fields(resolved(saved).model_dump(mode="json")), flat_fields(cfg.model_dump(mode="json"))
    return [(k, new.get(k), old.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)
            and not (k in (*DATA_FILES, "data.augment.synonyms", "model") and same_file(old.get(k), new.get(k)))
            and not any(within(k, m) for m in may_change)]


def run_config(out: Path) -> RunConfig | None:
    """The config the run in `out` trained with (config.yaml; relative data paths and the model as it read them, from
    its folder: from elsewhere `train.jsonl` may name another file); None without a readable config.yaml."""
    try:
        saved = build_config(yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) or {})
    except (OSError, ValueError, yaml.YAMLError, TunelabError):  # (ValueError: bytes that are not UTF-8)
        return None
    summary = read_summary(out)
    return saved.model_copy(update={"data": run_data(out, saved.data, summary),
                                    "model": run_model(summary, saved.model)})


DATA_FILES = ("data.train", "data.validation", "data.test", "data.unlabeled")
