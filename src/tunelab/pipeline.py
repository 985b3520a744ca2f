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
from accelerate import PartialState

from tunelab.config.run import RunConfig
from tunelab.data.load import load_splits, load_unlabeled
from tunelab.data.prepare import prepare_training
from tunelab.data.report import DataReport
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
from tunelab.registry import TASKS
from tunelab.report import write_run_report
from tunelab.tasks.base import Task
from tunelab.tasks.feature_cache import training_features
from tunelab.text import text_rules
from tunelab.training import engine
from tunelab.training.batching import check_steps
from tunelab.training.checkpoint import Verified, check_fits, check_resumed_best, trained_heads
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
from tunelab.training.distributed import on_main, whole_models
from tunelab.training.early_stopping import tracked_field
from tunelab.training.optim import check_layer_decay
from tunelab.training.rdrop import check_rdrop, rdrop_loss
from tunelab.training.recompute import check_recompute
from tunelab.training.run_checks import check_resumed_config as _check_resumed_config
from tunelab.training.run_checks import open_run, run_config
from tunelab.training.run_dir import RunDirLock, finish_run_dir, start_run_dir

__all__ = ["_check_resumed_config", "_same_file", "run", "run_config"]  # (the names the tests read them by)


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
    opened = open_run(cfg, resume, overwrite)  # (`tunelab train` made these checks before it imported this module)
    cfg, method, out, resume_from, own = opened.cfg, opened.method, opened.out, opened.resume_from, opened.own
    state = PartialState(cpu=not torch.cuda.is_available())  # under `accelerate launch` / torchrun: one of several
    with text_rules(opened.rules):
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
                opened.check_out(locked=True)  # again, now that no other run can write it: one may have since then
                start_run_dir(out, opened.config_yaml, resume_from if own else None)

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
