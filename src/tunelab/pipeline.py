"""One run, top to bottom: config → data → task → model + method → engine → evaluate → export."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState

from tunelab.config.fields import flat_fields, within
from tunelab.config.run import RunConfig, build_config, check_label_field, config_to_yaml
from tunelab.data.load import load_splits, load_unlabeled, run_data, run_model
from tunelab.data.prepare import prepare_training
from tunelab.data.report import DataReport, read_summary, summary_rules
from tunelab.data.row_spill import spill_rows
from tunelab.errors import ConfigError, TunelabError
from tunelab.evaluation.evaluate import encoded, evaluate
from tunelab.evaluation.generation import final_generation
from tunelab.evaluation.records import evaluate_and_record
from tunelab.export.model_card import model_card
from tunelab.export.save import META_FILE, load_model, save_model
from tunelab.io import same_file as _same_file  # (the name the tests read it by)
from tunelab.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from tunelab.methods.base import Method, continued, count_parameters
from tunelab.metrics import scalars
from tunelab.models import resolve_model
from tunelab.models.aliases import load_problem
from tunelab.models.positions import check_positions, learned_position_limit
from tunelab.models.precision import precision_scope, resolve_precision
from tunelab.models.segments import seed_untrained_segments
from tunelab.models.student import STUDENT_LAYERS
from tunelab.progress import say
from tunelab.registry import METHODS, TASKS
from tunelab.report import write_run_report
from tunelab.tasks.base import Task
from tunelab.tasks.feature_cache import training_features
from tunelab.text import rules_version, text_rules
from tunelab.training import engine
from tunelab.training.batching import check_steps
from tunelab.training.checkpoint import Verified, check_fits, check_resumed_best, find_checkpoint, trained_heads
from tunelab.training.distill import (
    DistillLoss,
    WithUnlabeled,
    flag_unlabeled,
    marked,
    same_vocabulary,
    student_from_teacher,
    teacher_model_dir,
    unlabeled_features,
)
from tunelab.training.distributed import check_strategy, launched, on_main, whole_models
from tunelab.training.early_stopping import tracked_field
from tunelab.training.optim import check_layer_decay
from tunelab.training.rdrop import check_rdrop, rdrop_loss
from tunelab.training.recompute import check_recompute
from tunelab.training.run_dir import (
    RunDirLock,
    check_inputs_apart,
    check_output_dir,
    finish_run_dir,
    run_inputs,
    start_run_dir,
)


def resolved(cfg: RunConfig) -> RunConfig:
    """`cfg` with the values the run will use where the config left them to tunelab (`train.lr`: the method's
    default), so that RUN/config.yaml says what ran."""
    if cfg.train.lr is None:
        lr = METHODS.get(cfg.method.name).default_lr
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": lr})})
    return cfg


def run(cfg: RunConfig, resume: str | Verified | None = None,
        on_eval: Callable[[int, dict[str, Any]], None] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train, evaluate and export one run; returns the final metrics (also in metrics.json).
    `resume`: `auto` (the newest checkpoint in output_dir) or a checkpoint path to verify and continue from (a
    `Verified` one: its caller verified it). `on_eval(step, {"step", "eval/<metric>": ...})`: sees every evaluation
    during training (search pruning); an exception it raises (optuna.TrialPruned) ends the run there. `overwrite`:
    replace whatever run output_dir holds (otherwise only a finished run of this config is replaced; run_dir.py).

    Nothing is written into output_dir until the config, the data, the model and the method have all been checked
    (a failure before that leaves the directory exactly as it was), and then only under its lock."""
    t0 = time.perf_counter()
    cfg = resolved(cfg)
    config_yaml = config_to_yaml(cfg)
    method = METHODS.get(cfg.method.name)(cfg.method)
    if launched():  # train.distributed applies to launched runs (tunelab train --nproc, torchrun)
        check_strategy(cfg.train, cfg.method.name, cfg.distill is not None)
    # under `accelerate launch` / torchrun this is one of several processes
    state = PartialState(cpu=not torch.cuda.is_available())
    out = Path(cfg.output_dir)
    resume_from = resume.path if isinstance(resume, Verified) else find_checkpoint(resume, out) if resume else None
    # resuming this directory's own checkpoint (OUTPUT_DIR/checkpoints/step-N) is the one way past its checks; a
    # checkpoint of another run starts this one from it, into an output_dir checked as for a new run
    own = resume_from is not None and resume_from.resolve().parent == (out / "checkpoints").resolve()
    # rows compared and measured as the resumed run did (text.TEXT_RULES: an older run's by its rules; a trial of a
    # study begun by older rules, by the study's: `rules_version()` where its caller set them)
    rules = summary_rules(read_summary(resume_from.parent.parent)) \
        if resume_from is not None and resume_from.parent.name == "checkpoints" else rules_version()
    with text_rules(rules):

        def check_out(locked: bool) -> None:
            check_output_dir(out, partial(_same_config, config_yaml), resume=own, overwrite=overwrite, locked=locked)
            _check_resumed_settings(out, cfg, resume_from, own)

        def first_checks() -> None:  # (on the main process; a refusal ends every process, one line, exit code 2)
            if not own:  # (a run of an older tunelab resumes as it was)
                check_label_field(cfg.task, cfg.data)
            check_inputs_apart(out, run_inputs(cfg))
            check_out(locked=False)

        on_main(first_checks)
        engine.seed_everything(cfg.train.seed)

        task = TASKS.get(cfg.task.name)(cfg.task, cfg.data)
        task.check_method(cfg.method.name)
        task.check_metric(*tracked_field(cfg.train))  # a misspelt best_metric: before the data, not at the first eval
        check_rdrop(task, cfg.train.rdrop, cfg.distill is not None)
        report = DataReport()  # data.clean / dedup / sampling / augment and the loss: RUN/data_summary.json
        splits = load_splits(cfg.data, task, cfg.train.seed, report, training=True)
        unlabeled = load_unlabeled(cfg.data, task, report)  # distillation's rows without labels (data.unlabeled)
        student = (student_from_teacher(cfg.model, teacher_model_dir(cfg.distill.teacher), task.auto_model_class)
                   if cfg.distill is not None and cfg.model.startswith(STUDENT_LAYERS) else None)
        try:
            model, tokenizer = task.build_model(student.name if student else resolve_model(cfg.model), splits["train"])
        except (OSError, ValueError) as e:  # transformers: a hub id unreachable offline, no weights, an unknown type
            raise ConfigError(f"config: model: cannot load {cfg.model}: {load_problem(cfg.model, e)}") from None
        finally:
            if student is not None:
                student.cleanup()
        # a pretrained checkpoint's never-trained token-type rows (m3e-small's segment B); not a tuned model's, a
        # student's
        tuned = student is not None or (Path(cfg.model) / META_FILE).is_file()
        seeded = None if tuned else seed_untrained_segments(model)
        report.applied["segment_embeddings"] = seeded
        if seeded and state.is_main_process:
            say(f"model: {seeded}")
        distill = _distill_loss(cfg, task, tokenizer)
        method.check_model(model, task.head_modules(model), task.new_token_ids)
        # a prefix / prompt run's model: its adapter (RUN/model/adapter) trains on, or the method is refused
        model = continued(method, model, resolve_model(cfg.model) if student is None else None)
        check_layer_decay(model, cfg.train.layer_lr_decay)
        splits["train"] = prepare_training(splits["train"], cfg, task, tokenizer, model, report,
                                           {name: rows for name, rows in splits.items() if name != "train"})
        # (the one process that writes data_summary.json and checks it)
        on_main(partial(report.take_fingerprint, splits["train"], cfg.train.save_steps, resume_from))
        # the training split from the feature cache where it is on (data.cache): one process per node tokenises
        train = training_features(task, splits["train"], tokenizer, cfg.data.cache, state.local_main_process_first())
        if train.cached is not None:  # its features on disk, the training split's rows go beside them (off the heap)
            splits["train"] = spill_rows(splits["train"], train.cached)
        features = {n: encoded(task, rows, tokenizer, split=n) for n, rows in splits.items() if n != "train"}
        teacher = distill.teacher.to(state.device) if distill is not None and unlabeled else None
        extra = unlabeled_features(task, unlabeled, tokenizer, teacher, state) if teacher is not None else []
        check_positions(learned_position_limit(model), cfg.data.max_length,
                        longest_input({**features, "unlabeled": extra}, train.longest))
        features["train"] = train.features  # as the engine batches them (Task.train_features: e.g. packed)
        if extra:  # soft targets only (Task.distill_step); batched with the training rows, packed like them
            features["train"] = WithUnlabeled(train.features, marked(task.train_features(extra)))
            report.applied["unlabeled"] = {"file": cfg.data.unlabeled, "rows": len(unlabeled), "features": len(extra)}
        # the untrained model scored (main process; its replies written once the folder is claimed), then the method
        # applied and checked — its settings, what trains, a resumed checkpoint's shapes — before anything is written
        with ExitStack() as held:  # the untrained, validation and final scores at the run's precision (autocast)
            held.enter_context(precision_scope(resolve_precision(cfg.train.precision, state.device)))
            baseline = _baseline(cfg, task, model, tokenizer, splits, features, state, out)
            model = _applied(method, model, task, cfg, resume_from, "validation" in splits, len(features["train"]))

            def claim() -> None:  # the main process: under the lock for the whole run
                held.enter_context(RunDirLock(out))
                check_out(locked=True)  # again, now that no other run can write it: one may have since the first check
                start_run_dir(out, config_yaml, resume_from if own else None)

            on_main(claim)
            return _train(cfg, state, out, task, method, model, tokenizer, splits, features, report, resume_from,
                          on_eval, t0, distill, baseline)


def _applied(method: Method, model: torch.nn.Module, task: Task, cfg: RunConfig, resume_from: Path | None,
             evaluates: bool, rows: int) -> torch.nn.Module:
    """`model` with the method applied, what trains checked (layer-wise lr decay, gradient checkpointing; a resumed
    checkpoint's names, shapes and step, within the run's steps over its `rows` training features): before the run
    claims its output_dir."""
    cfg.train.check_evaluations(evaluates)
    model = method.apply(model, trained_heads(resume_from, task.head_modules(model)), task.new_token_ids)
    check_layer_decay(model, cfg.train.layer_lr_decay)
    if cfg.train.gradient_checkpointing:  # (a model class, or an adapter, whose layers cannot be recomputed)
        check_recompute(model)
    if resume_from is not None:
        check_fits(resume_from, model)
        check_steps(resume_from, cfg.train, rows)
        check_resumed_best(resume_from, cfg.train, Path(cfg.output_dir), evaluates)
    return model


Baseline = tuple[dict[str, Any] | None, list[tuple[Path, list[dict[str, Any]]]]]


def _baseline(cfg: RunConfig, task: Task, model: torch.nn.Module, tokenizer: Any,
              splits: dict[str, list[dict[str, Any]]], features: dict[str, Any], state: PartialState,
              out: Path) -> Baseline:
    """The untrained model on validation (train.baseline_eval; default: the task's own; the `features` training scores),
    on the main process: its metrics, and its replies' files (written by `_train` into the claimed output_dir)."""
    want = task.baseline_eval if cfg.train.baseline_eval is None else cfg.train.baseline_eval
    if not (want and "validation" in splits and state.is_main_process):
        return None, []
    pending: list[tuple[Path, list[dict[str, Any]]]] = []
    metrics = evaluate(task, model.to(state.device), tokenizer, splits["validation"], cfg.train.eval_batch_size,
                       features["validation"])
    metrics.update(final_generation(task, model, tokenizer, {"validation": splits["validation"]},
                                    cfg.train.eval_batch_size, out, prefix="baseline-", pending=pending
                                    ).get("validation", {}))
    return metrics, pending


def _distill_loss(cfg: RunConfig, task: Task, tokenizer: Any) -> DistillLoss | None:
    """The training loss of a `distill:` run: the teacher loaded, checked to share the task, labels and vocabulary."""
    if cfg.distill is None:
        return None
    task.check_distillable()
    teacher_dir = teacher_model_dir(cfg.distill.teacher)
    teacher_task, teacher, teacher_tok = load_model(teacher_dir)
    if teacher_task.cfg.name != task.cfg.name or teacher_task.metadata() != task.metadata():
        raise ConfigError(f"config: distill.teacher: {teacher_dir} is a {teacher_task.cfg.name} model with other "
                          "labels than this run's; the teacher must be tuned for the same task and labels")
    if not same_vocabulary(teacher_tok, tokenizer):
        raise ConfigError(f"config: distill.teacher: {teacher_dir} and model {cfg.model} have different vocabularies; "
                          "the student must share the teacher's tokenizer")
    return DistillLoss(task, teacher, task.loss_fn(), cfg.distill.temperature, cfg.distill.alpha, cfg.distill.loss)


def _unsharded(cfg: RunConfig, task: Task, method: Method, train_rows: list[dict[str, Any]],
               state: dict[str, torch.Tensor], resume_from: Path | None) -> torch.nn.Module:
    """The model built as for training (task head, method; a resumed run's heads), holding the full weights gathered
    from the shards."""
    with whole_models():
        model, _ = task.build_model(resolve_model(cfg.model), train_rows)
        model = continued(method, model, None if cfg.model.startswith(STUDENT_LAYERS) else resolve_model(cfg.model))
        model = method.apply(model, trained_heads(resume_from, task.head_modules(model)), task.new_token_ids)
    own = model.state_dict()
    unexpected = model.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in state.items()},
                                       strict=False).unexpected_keys
    if unexpected:
        raise TunelabError(f"train: the gathered weights do not fit the model ({unexpected[:3]})")
    return model


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
        _check_resumed_config(out, cfg)
    elif resume_from is not None and resume_from.parent.name == "checkpoints":
        _check_resumed_config(resume_from.parent.parent, cfg, "train without --resume")


def _check_resumed_config(out: Path, cfg: RunConfig, otherwise: str = "start a new output_dir") -> None:
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
            and not (k in (*DATA_FILES, "data.augment.synonyms", "model") and _same_file(old.get(k), new.get(k)))
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


def longest_input(features: dict[str, Sequence[dict[str, Any]]], longest_train: int = 0) -> int:
    """The longest encoded input of `features` (and the training split's, `longest_train`, when its features are
    not among them: packing would hide it)."""
    return max([longest_train, *(len(f["input_ids"]) for feats in features.values() for f in feats)])


def _train(cfg: RunConfig, state: PartialState, out: Path, task: Task, method: Method, model: torch.nn.Module,
           tokenizer: Any, splits: dict[str, list[dict[str, Any]]], features: dict[str, Sequence[dict[str, Any]]],
           report: DataReport, resume_from: Path | None, on_eval: Callable[[int, dict[str, Any]], None] | None,
           t0: float, distill: DistillLoss | None, baseline_run: Baseline) -> dict[str, Any]:
    """The run once its output_dir is claimed (the method applied): training, export, final evaluation, report."""
    baseline, replies = baseline_run
    if state.is_main_process:
        report.write(out, splits)
        for path, rows in replies:  # the untrained model's, generated before the folder was claimed
            write_jsonl_atomic(path, rows)
    params = count_parameters(model)

    def score(m: torch.nn.Module, split: str = "validation") -> dict[str, Any]:
        return evaluate(task, m, tokenizer, splits[split], cfg.train.eval_batch_size, features[split])

    collate = partial(task.collate, pad_id=tokenizer.pad_token_id)
    collate = flag_unlabeled(collate) if isinstance(features["train"], WithUnlabeled) else collate
    result = engine.train(
        model, features["train"], collate, cfg.train,
        lr=cfg.train.lr, out_dir=out,
        evaluate=score if "validation" in splits else None, resume_from=resume_from,
        loss_fn=distill or rdrop_loss(task, cfg.train.rdrop) or task.loss_fn(),
        on_eval=on_eval, loss_units=task.loss_units,
    )
    if not state.is_main_process:  # the main process exports and scores; the others are done
        state.wait_for_everyone()
        return {}
    if result.full_state is not None:  # fsdp / deepspeed: an unsharded model of the same build takes the weights
        model = _unsharded(cfg, task, method, splits["train"], result.full_state, resume_from)
    model = save_model(model, tokenizer, task, method, cfg, out)
    # sft with task.generation.eval_generate: replies scored, RUN/predictions/<split>.generations.jsonl
    generated = final_generation(task, model, tokenizer, splits, cfg.train.eval_batch_size, out)
    metrics: dict[str, Any] = {  # + per-example records: RUN/predictions/<split>.jsonl
        name: {**evaluate_and_record(task, model, tokenizer, splits[name], cfg.train.eval_batch_size,
                                     out / "predictions" / f"{name}.jsonl", features[name]), **generated.get(name, {})}
        for name in splits if name != "train"}
    if baseline is not None:  # the untrained model, scored before training (task.baseline_eval)
        metrics["baseline"] = baseline
    metrics["train"] = {
        "loss": result.train_loss, "steps": result.steps, "epochs": result.epochs,
        "wall_s": round(result.wall_s, 2), "real_tokens": result.real_tokens,
        "real_tokens_per_s": round(result.real_tokens_per_s, 1),
        "padding_pct": round(100 * (1 - result.real_tokens / max(result.padded_tokens, 1)), 2),
        "precision": result.precision, "parameters": params,
        "rows": {name: len(ex) for name, ex in splits.items()},
        "hardware": {"device": "cuda" if torch.cuda.is_available() else "cpu",
                     "threads": torch.get_num_threads(), "machine": platform.machine(),
                     "processes": state.num_processes},
        "total_wall_s": round(time.perf_counter() - t0, 2),
    }
    if result.best_step is not None:
        metrics["train"]["best"] = {"metric": result.best_metric, "value": result.best_value, "step": result.best_step,
                                    "selected_step": result.selected_step, "stopped_early": result.stopped_early}
    if result.resumed_from:
        metrics["train"]["resumed_from"] = result.resumed_from
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "model" / "README.md", model_card(cfg, task, metrics))
    state.wait_for_everyone()
    with (out / "metrics.jsonl").open("a", encoding="utf-8") as f:
        for name, m in metrics.items():
            if name != "train":
                f.write(json.dumps({"step": result.steps, "final": name,
                                    **scalars(m)}) + "\n")
    if cfg.train.report:  # RUN/report.html (train.report: false for many small runs)
        write_run_report(out, task=task, model=model, tokenizer=tokenizer, splits=splits)
    finish_run_dir(out)
    return metrics
