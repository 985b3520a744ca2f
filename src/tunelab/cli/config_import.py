"""`tunelab config import`: a LLaMA-Factory training YAML (or HF TrainingArguments JSON / YAML) as a tunelab config
(config/peers.py); what it does not carry said on stderr, a line each."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from tunelab.cli.common import HELP, app, user_errors

config_app = typer.Typer(no_args_is_help=True, context_settings=HELP, help="Bring configs from other tools.")
app.add_typer(config_app, name="config")


@config_app.command("import")
@user_errors
def config_import(
    file: Path = typer.Argument(..., help="A LLaMA-Factory training YAML (llamafactory-cli train FILE), or HF "
                                "TrainingArguments as JSON / YAML; its dataset is looked up in dataset_dir/"
                                "dataset_info.json (several, a,b: their rows joined into OUTPUT's name with "
                                ".train.jsonl / .validation.jsonl, beside it)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="The tunelab config to write (default: FILE's "
                                       "name with .tunelab.yaml, beside it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    task: str | None = typer.Option(None, "--task", help="The task of a file that names none (HF TrainingArguments: "
                                    "no LLaMA-Factory stage); a LLaMA-Factory file's stage decides its task."),
    train: Path | None = typer.Option(None, "--train", help="The training data file (data.train), in place of the "
                                      "file's train_file."),
    validation: Path | None = typer.Option(None, "--validation", help="The validation data file (data.validation), "
                                           "in place of the file's validation_file."),
) -> None:
    """Write a tunelab config from another tool's: each key as tunelab's, the datasets resolved to their files;
    each key not carried is said on stderr with why. Then: tunelab train OUTPUT."""
    from tunelab.config.peers import import_peer
    from tunelab.data.peer_join import check_joins, write_joins
    from tunelab.errors import TunelabError
    from tunelab.io import write_text_atomic

    target = output if output is not None else file.with_name(f"{file.stem}.tunelab.yaml")
    if target.resolve() == file.resolve():
        raise TunelabError(f"--output: {target} is the file imported; name another")
    if target.exists() and not overwrite:
        raise TunelabError(f"--output: {target} exists; pass --overwrite to replace it, or name another")
    beside = Path(os.path.abspath(target))  # (the config names the joined files by absolute paths, as its data files)
    joined = {t: beside.with_name(f"{beside.stem}.{t.split('.')[1]}.jsonl") for t in ("data.train", "data.validation")}
    files = {k: v for k, v in (("data.train", train), ("data.validation", validation)) if v is not None}
    imported = import_peer(file, joined, task, files)  # (validated: nothing is written for a file it refuses)
    check_joins(imported.joins, overwrite)
    wrote = write_joins(imported.joins, imported.task)  # (several datasets: their rows, every one read first)
    for note in imported.notes:
        typer.echo(note, err=True)
    write_text_atomic(target, imported.text)
    for line in wrote:
        typer.echo(line, err=True)
    typer.echo(f"config import: wrote {target}; check its data with: tunelab data check --config {target}; run it "
               f"with: tunelab train {target}", err=True)
