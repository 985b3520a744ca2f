"""`tunelab distill TEACHER_RUN --student layers:0,2,4|MODEL`: a student run configured from the teacher's own config
(same task, data and labels; `model:` the student, `method: full` unless --set says otherwise, a `distill:` section
naming the teacher), trained by the pipeline like any run, then scored beside the teacher on the student's
validation split: size, parameters, metric, label agreement with the teacher, latency and throughput at batch 1
and 32 (STUDENT/distill.json). A student is a new model, not a copy: no parity gate applies; its run's metrics do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.run import configured, parse_overrides, read_config_file
from tunelab.data.load import load_splits, run_data_section
from tunelab.errors import TunelabError
from tunelab.export.artifact import PARITY_ROWS, next_token_parity
from tunelab.export.parity import measure_fp32
from tunelab.export.save import load_model
from tunelab.io import write_json_atomic
from tunelab.pipeline import run as run_pipeline
from tunelab.training.distill import teacher_model_dir
from tunelab.training.run_dir import check_inputs_apart

REPORT = "distill.json"


@dataclass
class DistillResult:
    output: Path
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]


def distill_config(teacher: Path, student: str, temperature: float, alpha: float, output: Path | None,
                   sets: list[str], unlabeled: Path | None = None) -> Any:
    """The student's RunConfig: the teacher run's config.yaml with the student, the distill section, the
    unlabelled rows and --set."""
    teacher = Path(teacher)
    if not (teacher / "config.yaml").is_file() or not (teacher_model_dir(str(teacher)) / "tunelab.json").is_file():
        raise TunelabError(f"{teacher}: not a finished run directory (config.yaml and model/); pass the teacher's "
                           "output_dir")
    tree = read_config_file(teacher / "config.yaml")
    # its data files as the teacher's training read them (relative paths: from the folder it ran in); a config that
    # does not load is left as it is: `configured` says why, with the --set values applied
    if (data := run_data_section(teacher, tree)) is not None:
        tree["data"] = data.model_dump(mode="json")
    tree.pop("search", None)
    tree.setdefault("train", {})["rdrop"] = 0.0  # the teacher's R-Drop is not the student's (they do not combine)
    tree.update({"model": student, "method": {"name": "full"},
                 "distill": {"teacher": str(teacher), "temperature": temperature, "alpha": alpha},
                 "output_dir": str(output if output is not None else teacher.with_name(teacher.name + "-distilled"))})
    if unlabeled is not None:
        tree.setdefault("data", {})["unlabeled"] = str(unlabeled)
    return configured(tree, parse_overrides(sets))  # an error of a --set key names it: `--set data.max_length: ...`


def distill_run(teacher: Path, student: str, temperature: float = 2.0, alpha: float = 0.5, output: Path | None = None,
                sets: list[str] | None = None, overwrite: bool = False, batch_size: int = 64,
                unlabeled: Path | None = None) -> DistillResult:
    cfg = distill_config(teacher, student, temperature, alpha, output, sets or [], unlabeled)
    inputs = [("the teacher run", Path(teacher))]  # what the student learns from: never its output
    if Path(student).expanduser().is_dir():
        inputs.append(("the --student model", Path(student).expanduser()))
    if unlabeled is not None:
        inputs.append(("the --unlabeled file", Path(unlabeled)))
    check_inputs_apart(Path(cfg.output_dir), inputs, "--output")
    metrics = run_pipeline(cfg, overwrite=overwrite)
    out = Path(cfg.output_dir)
    rows: list[dict[str, Any]] = []
    reference = None
    teacher_module = None
    for name, model_dir in (("teacher", teacher_model_dir(str(teacher))), ("student", out / "model")):
        task, module, tokenizer = load_model(model_dir)
        if not rows:
            examples = load_splits(cfg.data, task, cfg.train.seed).get("validation") or []
            if not examples:
                break
            features = task.encode(examples, tokenizer)
        row, predictions = measure_fp32(name, task, module, tokenizer, examples, features, model_dir, batch_size,
                                        reference)
        reference = reference or predictions
        if task.generates_replies:  # replies: agreement of the greedy next token over the first rows' reply tokens
            if teacher_module is None:
                teacher_module = module
            else:
                row["agreement"], row["max_abs_logit_diff"], row["positions"] = next_token_parity(
                    teacher_module, module, features[:PARITY_ROWS])
        rows.append(row)
    settings = cfg.distill  # what the student trained with: the --set distill.* values over the options
    write_json_atomic(out / REPORT, {"teacher": str(teacher), "student": cfg.model,
                                     "temperature": settings.temperature, "alpha": settings.alpha,
                                     "loss": settings.loss, "rows": rows})
    return DistillResult(out, metrics, rows)
