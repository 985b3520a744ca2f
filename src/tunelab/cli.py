"""The `tunelab` command line: a thin shell over the library (typer + rich)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from tunelab.errors import TunelabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune pretrained language models: data → train → evaluate → export.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and augment data files.")
app.add_typer(data_app, name="data")


def _quiet_transformers() -> None:
    """Our own progress bar and tables replace transformers' load bars and reports."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes become one line on stderr and exit code 2 — never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _quiet_transformers()
            return fn(*args, **kwargs)
        except TunelabError as exc:
            _fail(str(exc))
        except FloatingPointError as exc:
            _fail(str(exc), code=1)

    return wrapper


class _OptionalResumeValue(TyperCommand):
    """`--resume` alone (last, or before another option or the config file) means `--resume=auto`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--":
                break
            following = args[i + 1] if i + 1 < len(args) else None
            if arg == "--resume" and (following is None or following.startswith("-") or Path(following).is_file()):
                args[i] = "--resume=auto"
        return super().parse_args(ctx, args)


@app.command(cls=_OptionalResumeValue)
@user_errors
def train(
    config: Path | None = typer.Argument(None, help="YAML config; optional when --set gives every required key."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set train.lr=1e-4 (repeatable)."),
    resume: str | None = typer.Option(
        None, "--resume", metavar="[PATH]",
        help="Continue from the newest complete checkpoint in OUTPUT_DIR, or from PATH (a checkpoint or run dir).",
    ),
) -> None:
    """Fine-tune a model; writes OUTPUT_DIR with config.yaml, metrics, checkpoints and model/."""
    from tunelab.config import load_config

    cfg = load_config(config, set_)
    from tunelab.evaluate import print_metrics
    from tunelab.pipeline import run

    metrics = run(cfg, resume=resume)
    if not metrics:  # a non-main process of a distributed run
        return
    print_metrics({k: v for k, v in metrics.items() if k != "train"})
    t = metrics["train"]
    typer.echo(f"trained {t['steps']} steps in {t['wall_s']} s ({t['real_tokens_per_s']} real tok/s, "
               f"{t['precision']}); model: {Path(cfg.output_dir) / 'model'}", err=True)


@app.command()
@user_errors
def tune(
    config: Path = typer.Argument(..., help="YAML config with a `search` section (metric, direction, space)."),
    trials: int = typer.Option(..., "--trials", min=1, help="Trials in the study in all: finished (complete or "
                               "pruned) trials count, so rerunning continues up to this many."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, as for train."),
    storage: str | None = typer.Option(None, "--storage", help="Optuna storage: a SQLite file path or a database "
                                       "URL (default: OUTPUT_DIR/tune/study.db)."),
    study: str | None = typer.Option(None, "--study", help="Study name in the storage (default: tunelab)."),
) -> None:
    """Hyperparameter search with Optuna (TPE, median pruning); resumable; writes OUTPUT_DIR/tune/best.yaml."""
    from tunelab.config import load_config
    from tunelab.search import run_search

    run_search(load_config(config, set_), trials, storage=storage, study_name=study)


@app.command()
@user_errors
def cv(
    config: Path = typer.Argument(..., help="YAML config; data.train is split into folds."),
    folds: int = typer.Option(5, "--folds", min=2, help="Number of folds."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, as for train."),
) -> None:
    """k-fold cross-validation over data.train: OUTPUT_DIR/cv/fold-k runs and cv.json (mean ± std)."""
    from tunelab.config import load_config
    from tunelab.crossval import print_cv, run_cv

    cfg = load_config(config, set_)
    result = run_cv(cfg, folds)
    print_cv(result)
    typer.echo(f"cv: {result['folds']} folds; results: {Path(cfg.output_dir) / 'cv' / 'cv.json'}", err=True)


@app.command("eval")
@user_errors
def eval_(
    model_dir: Path = typer.Argument(..., help="A tuned model directory (RUN/model)."),
    data: Path = typer.Option(..., "--data", help="Labelled file to score."),
    batch_size: int = typer.Option(64, help="Examples per forward pass."),
) -> None:
    """Score a tuned model: metrics as one JSON object on stdout, a table on stderr."""
    from tunelab.data.readers import read_table
    from tunelab.evaluate import evaluate, print_metrics
    from tunelab.export import load_model

    task, model, tokenizer = load_model(model_dir)
    metrics = evaluate(task, model, tokenizer, task.parse(read_table(data)), batch_size)
    print_metrics({str(data): metrics})
    typer.echo(json.dumps(metrics, ensure_ascii=False))


def _stdin_rows(field: str) -> list[dict[str, Any]]:
    return [{field: line.rstrip("\r\n")} for line in sys.stdin if line.strip()]


@app.command()
@user_errors
def predict(
    model_dirs: list[Path] = typer.Argument(..., help="A tuned model directory (RUN/model)."),
    input_: str = typer.Option(..., "--input", help="File to label, or - for one text per line on stdin."),
    output: Path | None = typer.Option(None, "--output", help="Output JSONL (default: stdout)."),
    batch_size: int = typer.Option(64, help="Examples per forward pass."),
) -> None:
    """Label new rows: each output row is the input row plus `label` and `scores`."""
    from tunelab.data.readers import Record, Table, read_table
    from tunelab.evaluate import logits_for
    from tunelab.export import load_model

    if len(model_dirs) != 1:
        raise TunelabError("predict: pass one model directory")
    task, model, tokenizer = load_model(model_dirs[0])
    if input_ == "-":
        rows = _stdin_rows(task.data.text_field)
        if not rows:
            raise TunelabError("<stdin>: empty input: no texts")
        table = Table("<stdin>", [Record("<stdin>", i, r) for i, r in enumerate(rows, start=1)])
    else:
        table = read_table(input_)
    examples = task.parse(table, labelled=False)
    rows_out = task.predictions(logits_for(task, model, tokenizer, examples, batch_size), examples)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_out)
    if output is None:
        sys.stdout.write(lines)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text(lines, encoding="utf-8")
        tmp.replace(output)
        typer.echo(f"wrote {len(rows_out)} rows to {output}", err=True)


@app.command()
def models() -> None:
    """List the embedded model aliases: parameters, languages, whether installed."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from tunelab.models import ALIASES

    table = RichTable(title="embedded models (any local directory or hub id org/name also works)")
    for col in ("alias", "kind", "params", "languages", "installed", "package"):
        table.add_column(col)
    for a in ALIASES.values():
        table.add_row(a.name, a.kind, a.params, a.languages, "yes" if a.installed() else "no",
                      f"{a.package} (make {a.extra})")
    Console().print(table)


@app.command()
@user_errors
def env(
    config: Path | None = typer.Argument(None, help="A run config, to show its seed and resolved precision."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, as for train."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON on stdout."),
) -> None:
    """Versions (python, torch, transformers, peft, accelerate, tunelab), CPU/GPU, threads, bf16, seed."""
    from tunelab.envinfo import environment

    cfg = None
    if config is not None or set_:
        from tunelab.config import load_config

        cfg = load_config(config, set_)
    info = environment(cfg)
    if as_json:
        typer.echo(json.dumps(info, ensure_ascii=False, indent=2))
    else:
        for key, value in info.items():
            typer.echo(f"{key:16} {', '.join(value) if isinstance(value, list) else value}")


@app.command()
def schema() -> None:
    """Print the config reference (Markdown) generated from the schema."""
    from tunelab.config_docs import config_reference

    typer.echo(config_reference(), nl=False)


@data_app.command("check")
@user_errors
def data_check(
    files: list[Path] = typer.Argument(..., help="One or more files (e.g. train and validation)."),
    task: str = typer.Option("classification", help="Task whose format the rows must have."),
    model: str = typer.Option("minilm", help="Model whose tokenizer measures lengths."),
    set_: list[str] = typer.Option([], "--set", help="data.* overrides, e.g. --set data.text_field=review."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Rows, labels, token lengths, truncation at max_length, duplicates and overlap between files."""
    from tunelab.data.check import check_files, print_report

    report = check_files([str(f) for f in files], task, model, set_)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_report(report)


@data_app.command("augment")
@user_errors
def data_augment(
    file: Path = typer.Argument(..., help="Labelled (or unlabelled) file to augment."),
    output: Path = typer.Option(..., "--output", help="JSONL to write: the rows, then their augmented copies."),
    set_: list[str] = typer.Option([], "--set", help="data.* overrides, e.g. --set data.augment.ops=[delete,swap]."),
    model: str | None = typer.Option(None, "--model", help="Model whose input-embedding neighbours are synonyms."),
    seed: int = typer.Option(42, "--seed", help="Seed (train.seed in a run)."),
) -> None:
    """Write augmented copies (each with `augmented_from`: the original's line) to inspect data.augment."""
    from tunelab.data.augment import augment_file

    stats = augment_file(str(file), str(output), set_, model, seed)
    typer.echo(f"wrote {stats['rows']} rows + {stats['copies_added']} augmented copies to {output} "
               f"(by op: {stats['by_op']}; unchanged, not added: {stats['unchanged_not_added']})", err=True)


if __name__ == "__main__":
    app()
