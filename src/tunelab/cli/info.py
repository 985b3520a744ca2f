"""Commands that inspect rather than train: models, env, schema, report, data check, data augment, data cache."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunelab.cli.common import app, data_app, user_errors
from tunelab.errors import TunelabError


@app.command()
def models() -> None:
    """List the embedded model aliases: parameters, languages, whether installed."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from tunelab.models import ALIASES

    table = RichTable(title="embedded models (any local directory or hub id org/name also works)")
    for col in ("alias", "kind", "params", "languages", "licence", "installed", "package"):
        table.add_column(col, no_wrap=col == "alias")
    for a in ALIASES.values():
        table.add_row(a.name, a.kind, a.params, a.languages, a.licence, "yes" if a.installed() else "no",
                      f"{a.package} (make {a.extra})")
    Console().print(table)


@app.command()
@user_errors
def report(run_dir: Path = typer.Argument(..., help="A finished training run (its OUTPUT_DIR).")) -> None:
    """Rebuild RUN/report.html from the run's files, e.g. after `tunelab baseline` or `tunelab curve` added to it."""
    from tunelab.config.run import build_config, read_config_file
    from tunelab.data.load import run_splits
    from tunelab.data.report import DataReport
    from tunelab.errors import TunelabError
    from tunelab.export.save import load_model
    from tunelab.report import build_report
    from tunelab.training.layout import list_checkpoints

    if not (run_dir / "config.yaml").is_file():
        raise TunelabError(f"report: {run_dir} is not a run directory (no config.yaml; tunelab train writes it)")
    if not (run_dir / "model").is_dir():  # the report scores the run's model again
        saved = list_checkpoints(run_dir / "checkpoints")
        again = (f"; tunelab train --resume (its config) from its newest checkpoint (step {saved[-1][0]}) writes it "
                 "again, and the report at its end" if saved else "")
        raise TunelabError(f"report: {run_dir} has no model/: " + (
            f"it finished, and model/ was removed since{again}" if (run_dir / "metrics.json").is_file() else
            f"it has not finished (its newest checkpoint: step {saved[-1][0]}); finish it with tunelab train --resume "
            "(its config), which writes the report at its end" if saved else
            "it did not finish, or model/ was removed; the report scores the run's model"))
    cfg = build_config(read_config_file(run_dir / "config.yaml"), saved=True)
    task, model, tokenizer = load_model(run_dir / "model")
    splits = run_splits(run_dir, cfg.data, task, cfg.train.seed, DataReport())  # data paths as the run read them
    path = build_report(run_dir / "report.html", run_dir, task=task, model=model, tokenizer=tokenizer, splits=splits)
    typer.echo(f"report: wrote {path}", err=True)


@app.command()
@user_errors
def env(
    config: Path | None = typer.Argument(None, help="A run config, to show its seed and resolved precision."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, as for train."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON on stdout."),
) -> None:
    """Versions (python, torch, transformers, peft, accelerate, tunelab), CPU/GPU, threads, bf16, seed."""
    from tunelab.training.environment import environment

    cfg = None
    if config is not None or set_:
        from tunelab.config.run import load_config

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
    from tunelab.config.reference import config_reference

    typer.echo(config_reference(), nl=False)


@data_app.command("check")
@user_errors
def data_check(
    files: list[Path] = typer.Argument(None, help="One or more files (e.g. train and validation); with --config: "
                                       "the config's data.train / validation / test unless given."),
    config: Path | None = typer.Option(None, "--config", help="A run config (YAML): its task, model and data "
                                       "settings (max_length, truncation, fields ...), as train reads them; "
                                       "--task, --model and --set still override."),
    task: str | None = typer.Option(None, help="Task whose format the rows must have (default classification, or "
                                    "the config's; --set task=NAME says the same)."),
    model: str | None = typer.Option(None, help="Model whose tokenizer measures lengths (default minilm, or the "
                                     "config's)."),
    set_: list[str] = typer.Option([], "--set", help="data.* and task.* overrides, e.g. --set "
                                   "data.text_field=review; train.seed=N: the seed train holds validation rows out "
                                   "with."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Rows, labels, token lengths, truncation at max_length, duplicates and overlap between files."""
    from tunelab.config.run import errors_located, load_config, parse_overrides
    from tunelab.data.check import print_report, run_check

    # a bad setting named where it came from (its --set, the config's line), as train names it
    with errors_located(config, set_):
        cfg = load_config(config) if config is not None else None
        report = run_check([str(f) for f in files or []], cfg, task, model, parse_overrides(set_))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_report(report)
    if report.get("refused"):  # the report shows every row train refuses; exit 2 with train's line for the first
        raise TunelabError(report["refused"])


@data_app.command("augment")
@user_errors
def data_augment(
    file: Path = typer.Argument(..., help="Labelled (or unlabelled) file to augment."),
    output: Path = typer.Option(..., "--output", help="JSONL to write: the rows, then their augmented copies."),
    set_: list[str] = typer.Option([], "--set", help="data.* overrides, e.g. --set data.augment.ops=[delete,swap]."),
    model: str | None = typer.Option(None, "--model", help="Model whose input-embedding neighbours are synonyms."),
    seed: int = typer.Option(42, "--seed", help="Seed (train.seed in a run)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
) -> None:
    """Write augmented copies (each with `augmented_from`: the original's line; file:line for a folder of several
    files) to inspect data.augment."""
    from tunelab.data.augment import augment_file

    stats = augment_file(str(file), str(output), set_, model, seed, overwrite)
    typer.echo(f"wrote {stats['rows']} rows + {stats['copies_added']} augmented copies to {output} "
               f"(by op: {stats['by_op']}; unchanged, not added: {stats['unchanged_not_added']})", err=True)


@data_app.command("cache")
@user_errors
def data_cache(
    clear: bool = typer.Option(False, "--clear", help="Delete every entry (runs re-tokenise on their next start)."),
) -> None:
    """The tokenised training splits kept on disk (data.cache): where, which, how large."""
    from tunelab.data.feature_store import cache_entries, cache_root, clear_cache

    if clear:
        n, mb = clear_cache()
        typer.echo(f"deleted {n} cached feature sets ({mb} MB) from {cache_root()}")
        return
    entries = cache_entries()
    typer.echo(f"{cache_root()}: {len(entries)} cached feature sets, {sum(e['mb'] for e in entries):.1f} MB")
    for e in entries:
        typer.echo(f"  {e['key']}  {e['task']:<14} {e['examples']:>9} examples  {e['mb']:>8} MB  "
                   f"last used {e['last_used']}")
