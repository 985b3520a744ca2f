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


@app.command()
@user_errors
def curve(
    config: Path = typer.Argument(..., help="YAML config; data.train is subsampled, validation stays fixed."),
    fractions: str = typer.Option("0.1,0.3,1", "--fractions", help="Fractions of the training rows, e.g. 0.1,0.3,1."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, as for train."),
) -> None:
    """Learning curve: one run per training fraction in OUTPUT_DIR/curve/frac-F; curve.json and curve.png."""
    from tunelab.config import load_config
    from tunelab.curve import parse_fractions, print_curve, run_curve

    cfg = load_config(config, set_)
    result = run_curve(cfg, parse_fractions(fractions))
    print_curve(result)
    typer.echo(f"curve: {len(result['points'])} runs; results: {Path(cfg.output_dir) / 'curve' / 'curve.json'}",
               err=True)


@app.command()
@user_errors
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories; the first is the baseline."),
    split: str = typer.Option("validation", "--split", help="Evaluation split to compare (validation, test)."),
    output: Path = typer.Option(Path("compare.html"), "--output", help="HTML report; a .txt is written next to it."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
    resamples: int = typer.Option(2000, "--resamples", help="Paired bootstrap resamples (non-classification)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the paired bootstrap."),
) -> None:
    """Compare runs on the same examples: metric table, significance vs the first run, curves (HTML + text)."""
    from tunelab.compare import compare_runs, print_tables, write_outputs

    result, runs = compare_runs(run_dirs, split, resamples, seed)
    result["output"] = write_outputs(result, runs, output)
    print_tables(result)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
    typer.echo(f"compare: wrote {result['output']['html']} and {result['output']['text']}", err=True)


@app.command()
@user_errors
def baseline(
    config: Path | None = typer.Argument(None, help="YAML run config; the splits are loaded as training loads them."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, as for train."),
    zero_shot_model: str | None = typer.Option(None, "--zero-shot-model", help="Causal LM for the zero-shot LLM "
                                               "baseline (alias or path), e.g. smollm2-135m."),
    embedding_model: str | None = typer.Option(None, "--embedding-model", help="Encoder for the zero-shot "
                                               "embedding baseline (alias or path), e.g. minilm."),
    label_descriptions: Path | None = typer.Option(None, "--label-descriptions", help="JSON {label: description} "
                                                   "used by the zero-shot baselines instead of bare label names."),
    analyzer: str = typer.Option("auto", "--analyzer", help="TF-IDF features: auto | word | char."),
    llm_limit: int | None = typer.Option(None, "--llm-limit", help="Score the LLM on a seeded sample of this "
                                         "many rows per split."),
    ngram_order: int = typer.Option(5, "--ngram-order", help="Order of the character n-gram LM (sft, pretrain)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Texts per forward pass (zero-shot)."),
) -> None:
    """Baselines to beat: TF-IDF + NB / LogReg, zero-shot (embedding, LLM), char n-gram LM; writes baselines.json."""
    from tunelab.baselines import print_baselines, run_baselines
    from tunelab.config import load_config

    cfg = load_config(config, set_)
    result = run_baselines(cfg, zero_shot_model=zero_shot_model, embedding_model=embedding_model,
                           label_descriptions=label_descriptions, analyzer=analyzer, llm_limit=llm_limit,
                           ngram_order=ngram_order, batch_size=batch_size)
    print_baselines(result)
    typer.echo(json.dumps(result, ensure_ascii=False))
    typer.echo(f"baseline: wrote {Path(cfg.output_dir) / 'baselines.json'}", err=True)


@app.command("eval")
@user_errors
def eval_(
    model_dirs: list[Path] = typer.Argument(..., help="A tuned model directory (RUN/model); several: an "
                                            "ensemble (classification, probabilities averaged)."),
    data: Path = typer.Option(..., "--data", help="Labelled file to score."),
    batch_size: int = typer.Option(64, help="Examples per forward pass."),
    report: Path | None = typer.Option(None, "--report", help="Also write an HTML report here (and the "
                                       "per-example records as <report stem>.predictions.jsonl)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N rows (one model)."),
    generate: bool | None = typer.Option(None, "--generate/--no-generate", help="SFT: also generate each last "
                                         "assistant reply and score it (exact match, BLEU, chrF, ROUGE); default on."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="SFT: most tokens per reply "
                                              "(default: the model's task.generation)."),
    num_beams: int | None = typer.Option(None, "--num-beams", min=1, help="SFT: beam search width."),
    temperature: float | None = typer.Option(None, "--temperature", help="SFT: 0 = greedy; above 0: sampling."),
    top_p: float | None = typer.Option(None, "--top-p", help="SFT: nucleus sampling mass (with --temperature)."),
    predictions: Path | None = typer.Option(None, "--predictions", help="SFT: replies file (JSONL; default "
                                            "RUN/predictions/eval-<data stem>.generations.jsonl next to MODEL_DIR)."),
) -> None:
    """Score a tuned model: metrics as one JSON object on stdout, a table on stderr."""
    from tunelab.data.readers import read_table
    from tunelab.evaluate import evaluate, print_metrics
    from tunelab.export import load_model

    if report is not None and len(model_dirs) > 1:
        raise TunelabError("eval: --report takes one model directory")
    if (report is not None or len(model_dirs) > 1) and (limit or generate or predictions):
        raise TunelabError("eval: --limit, --generate and --predictions take one model directory and no --report")
    if report is not None:
        from tunelab.report import evaluation_report

        metrics = evaluation_report(model_dirs[0], data, report, batch_size)
        typer.echo(f"eval: wrote {report}", err=True)
    elif len(model_dirs) > 1:
        from tunelab.ensemble import Ensemble

        metrics = Ensemble(model_dirs).evaluate(read_table(data), batch_size)
    else:
        from tunelab.generation import eval_generation

        task, model, tokenizer = load_model(model_dirs[0])
        examples = task.parse(read_table(data))[:limit]
        metrics = evaluate(task, model, tokenizer, examples, batch_size)
        gen, path = eval_generation(task, model, tokenizer, examples, batch_size, model_dirs[0], data,
                                    generate=generate, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                    temperature=temperature, top_p=top_p, predictions=predictions)
        metrics.update(gen)
        if path is not None:
            typer.echo(f"eval: {gen['generated']} replies with their scores in {path}", err=True)
    print_metrics({str(data): metrics})
    typer.echo(json.dumps(metrics, ensure_ascii=False))


def _stdin_rows(field: str) -> list[dict[str, Any]]:
    return [{field: line.rstrip("\r\n")} for line in sys.stdin if line.strip()]


@app.command()
@user_errors
def predict(
    model_dirs: list[Path] = typer.Argument(..., help="A tuned model directory (RUN/model); several: an "
                                            "ensemble (classification, probabilities averaged)."),
    input_: str = typer.Option(..., "--input", help="File to label, or - for one text per line on stdin."),
    output: Path | None = typer.Option(None, "--output", help="Output JSONL (default: stdout)."),
    batch_size: int = typer.Option(64, help="Examples per forward pass."),
) -> None:
    """Label new rows: each output row is the input row plus `label` and `scores`."""
    from tunelab.data.readers import Record, Table, read_table
    from tunelab.evaluate import logits_for
    from tunelab.export import load_model

    ensemble = None
    if len(model_dirs) > 1:
        from tunelab.ensemble import Ensemble

        ensemble = Ensemble(model_dirs)  # checks the members' task and label map before any weights load
        task = ensemble.task
    else:
        task, model, tokenizer = load_model(model_dirs[0])
    if input_ == "-":
        rows = _stdin_rows(task.data.text_field)
        if not rows:
            raise TunelabError("<stdin>: empty input: no texts")
        table = Table("<stdin>", [Record("<stdin>", i, r) for i, r in enumerate(rows, start=1)])
    else:
        table = read_table(input_)
    if ensemble is not None:
        rows_out = ensemble.predict(table, batch_size)
    else:
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
@user_errors
def chat(
    model_dir: Path = typer.Argument(..., help="A model tuned with task sft (RUN/model)."),
    system: str | None = typer.Option(None, "--system", help="System message that opens the conversation."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="Most tokens per reply "
                                              "(default: the model's task.generation)."),
    temperature: float | None = typer.Option(None, "--temperature", help="0 = greedy; above 0: sampling at it "
                                             "(default: the model's task.generation)."),
) -> None:
    """Talk to a tuned chat model in the terminal; replies stream as they are generated. exit / Ctrl-D ends."""
    from tunelab.chat import run_chat

    run_chat(model_dir, system=system, max_new_tokens=max_new_tokens, temperature=temperature)


@app.command()
@user_errors
def export(
    path: Path = typer.Argument(..., help="A LoRA / DoRA run directory (or its model/ or adapter/)."),
    merge: bool = typer.Option(False, "--merge", help="Merge RUN/adapter into the base weights (required)."),
    output: Path | None = typer.Option(None, "--output", help="Directory to write (default: RUN/merged)."),
    tolerance: float = typer.Option(1e-4, "--tolerance", min=0.0, help="Largest allowed |logit| difference "
                                    "between the merged model and the adapter model (and RUN/model)."),
) -> None:
    """Merge a run's adapter into plain transformers weights, checked on sample inputs before writing."""
    from tunelab.merge import ParityError, merge_run

    if not merge:
        raise TunelabError("export: say what to export: --merge (merge the adapter into the base weights)")
    try:
        r = merge_run(path, output, tolerance)
    except ParityError as exc:
        _fail(str(exc), code=1)
        return
    typer.echo(f"export: merged {r.adapter} into {r.base}; max |Δlogit| on {r.samples} samples: "
               f"{r.max_diff_adapter:.3g} vs the adapter model, {r.max_diff_saved:.3g} vs "
               f"{r.adapter.parent / 'model'} (tolerance {tolerance:g}); wrote {r.output}", err=True)


# the inspecting commands live in cli_info.py (imported for its registrations)
from tunelab import cli_info  # noqa: E402,F401

if __name__ == "__main__":
    app()
