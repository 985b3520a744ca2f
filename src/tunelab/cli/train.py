"""Commands that train: train, tune, cv, curve, compare, baseline."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tunelab.cli.common import _OptionalResumeValue, app, user_errors
from tunelab.cli.launch import MASTER_PORT, Launch, run_launch, shell_line, torchrun_command
from tunelab.errors import ConfigError

if TYPE_CHECKING:
    from tunelab.config.run import RunConfig


@app.command(cls=_OptionalResumeValue)
@user_errors
def train(
    config: Path | None = typer.Argument(None, help="YAML config; optional when --set gives every required key."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set train.lr=1e-4 (repeatable)."),
    resume: str | None = typer.Option(
        None, "--resume", metavar="[PATH]",
        help="Continue from the newest complete checkpoint in OUTPUT_DIR, or from PATH (a checkpoint or run dir).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace what OUTPUT_DIR holds (by default only a "
                                   "finished run of the same config is replaced; anything else is refused)."),
    nproc: int | None = typer.Option(None, "--nproc", min=1, help="Train with N processes on this machine (one per "
                                     "GPU, or CPU processes over gloo), relaunched under torchrun; "
                                     "train.distributed picks ddp / fsdp / deepspeed."),
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="Machines in the run (each runs the same command)."),
    node_rank: int = typer.Option(0, "--node-rank", min=0, help="This machine's index, 0 .. nnodes-1."),
    master_addr: str | None = typer.Option(None, "--master-addr", help="Address of the node-rank 0 machine."),
    master_port: int | None = typer.Option(None, "--master-port", min=1, max=65535, help="Its port for the "
                                           "rendezvous (default 29500)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the torchrun command that --nproc runs; run nothing."),
) -> None:
    """Fine-tune a model; writes OUTPUT_DIR with config.yaml, metrics, checkpoints and model/."""
    from tunelab.config.run import errors_located, load_config

    cfg = load_config(config, set_)
    if nproc is None and nnodes == 1:  # one process, no launcher: a launch flag would be silently ignored
        given = [f for f, v in (("--dry-run", dry_run), ("--node-rank", node_rank), ("--master-addr", master_addr),
                                ("--master-port", master_port is not None)) if v]
        if given:
            raise ConfigError(f"{given[0]}: a launch setting, for --nproc N (processes on this machine) and --nnodes "
                              "M (machines)")
        from tunelab.training.distributed import launched

        if cfg.train.distributed.strategy != "ddp" and not launched():
            typer.echo(f"note: train.distributed.strategy {cfg.train.distributed.strategy} applies to a launch "
                       "(--nproc N, or torchrun); this run is one process without it", err=True)
    if nproc is not None or nnodes > 1:
        with errors_located(config, set_):
            _launch(cfg, config, set_, resume, overwrite,
                    Launch(nproc or 1, nnodes, node_rank, master_addr, master_port), dry_run)
        return
    try:
        with errors_located(config, set_):  # (a check made once the config is read names the key's line too)
            if resume is None:  # the run's first checks before the training stack loads: a refused output_dir
                # in ~3 s, not ~7 s (a resume's are the run's own: its checkpoint's files are hashed once)
                from tunelab.training.run_checks import open_run

                open_run(cfg, None, overwrite)
            from tunelab import api  # (not before: a launch's processes import the training stack; its launcher none)

            run = api.train(cfg, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        from tunelab.progress import speaks

        if speaks():  # (under a launcher every process has the Ctrl-C: the first of each machine says it)
            typer.echo(interrupted_line(Path(cfg.output_dir), config, set_), err=True)
        raise typer.Exit(130) from None
    metrics = run.metrics
    if not metrics:  # a non-main process of a distributed run
        return
    evaluated = {k: v for k, v in metrics.items() if k != "train"}
    if evaluated:  # no validation and no test split: nothing evaluated, no empty table
        from tunelab.evaluation.evaluate import print_metrics

        print_metrics(evaluated)
    t = metrics["train"]
    typer.echo(f"trained {t['steps']} steps in {t['wall_s']} s ({t['real_tokens_per_s']} real tok/s, "
               f"{t['precision']}); model: {Path(cfg.output_dir) / 'model'}", err=True)


def _launch(cfg: RunConfig, config: Path | None, sets: list[str], resume: str | None, overwrite: bool,
            launch: Launch, dry_run: bool) -> None:
    """Check what can be checked here (the config, the strategy), then run (or print) the torchrun command."""
    from tunelab.training.distributed import check_strategy

    launch.check()
    check_strategy(cfg.train, cfg.method.name, cfg.distill is not None)
    cmd = torchrun_command(launch, config, sets, resume, overwrite)
    if dry_run:
        typer.echo(shell_line(cmd, launch.nproc))
        return
    code = run_launch(cmd, launch.nproc)
    if code:
        raise typer.Exit(code)


def _launched_as() -> list[str]:
    """The `--nproc` (and `--nnodes` ...) flags of the launch this process runs under (torchrun's variables), so that
    the command a Ctrl-C prints resumes as it ran: FSDP's or DeepSpeed's checkpoint needs its launcher."""
    env = os.environ
    if "RANK" not in env or "LOCAL_WORLD_SIZE" not in env:
        return []
    nproc = int(env["LOCAL_WORLD_SIZE"])
    nnodes = max(1, int(env.get("WORLD_SIZE", nproc)) // max(nproc, 1))
    flags = ["--nproc", str(nproc)]
    if nnodes > 1:
        flags += ["--nnodes", str(nnodes), "--node-rank", env.get("GROUP_RANK", "0"), "--master-addr",
                  env.get("MASTER_ADDR", ""), "--master-port", env.get("MASTER_PORT", str(MASTER_PORT))]
    return flags


def interrupted_line(out: Path, config: Path | None, sets: list[str]) -> str:
    """Ctrl-C: where the run stopped, and the command that continues it."""
    from shlex import join

    from tunelab.training.checkpoint import newest_intact
    from tunelab.training.run_dir import replaced_note

    named = any(s.split("=", 1)[0].strip() == "output_dir" for s in sets)  # else a config without one gets a new dir
    command = ["tunelab", "train", *([str(config)] if config else []), *(x for s in sets for x in ("--set", s)),
               *([] if named else ["--set", f"output_dir={out}"]), *_launched_as()]
    newest, kept = newest_intact(out / "checkpoints"), replaced_note(out)
    if newest is None:
        return (f"interrupted before the first checkpoint (train.save_steps); start again with: "
                f"{join([*command, '--overwrite'])}{kept}")
    return f"interrupted: the newest checkpoint is {newest}; continue with: {join([*command, '--resume'])}{kept}"


@contextmanager
def study_interrupted(command: str, config: Path, sets: list[str], options: list[str], out: Path) -> Iterator[None]:
    """Ctrl-C in a study (tune, cv, curve): one line saying what of it is kept and the command that continues it (the
    same one; output_dir named, as a config without one gets a new one each time), exit code 130."""
    try:
        yield
    except KeyboardInterrupt as exc:
        from shlex import join

        from tunelab.errors import StudyInterrupted

        kept = exc.kept if isinstance(exc, StudyInterrupted) else "it stopped before its runs began"
        named = any(s.split("=", 1)[0].strip() == "output_dir" for s in sets)
        again = ["tunelab", command, str(config), *options, *(x for s in sets for x in ("--set", s)),
                 *([] if named else ["--set", f"output_dir={out}"])]
        typer.echo(f"{command}: interrupted; {kept}; the same command continues it: {join(again)}", err=True)
        raise typer.Exit(130) from None


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
    from tunelab.config.run import errors_located, load_config
    from tunelab.studies.tune import run_search

    cfg = load_config(config, set_)
    named = [*(["--storage", storage] if storage is not None else []), *(["--study", study] if study else [])]
    with study_interrupted("tune", config, set_, ["--trials", str(trials), *named], Path(cfg.output_dir)), \
            errors_located(config, set_):
        run_search(cfg, trials, storage=storage, study_name=study)


@app.command()
@user_errors
def cv(
    config: Path = typer.Argument(..., help="YAML config; data.train is split into folds."),
    folds: int = typer.Option(5, "--folds", min=2, help="Number of folds."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, as for train."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the folds of another cv in OUTPUT_DIR/cv (by "
                                   "default a cv of another config or other rows there is refused; the folds of "
                                   "this one that finished are kept)."),
) -> None:
    """k-fold cross-validation over data.train: OUTPUT_DIR/cv/fold-k runs and cv.json (mean ± std)."""
    from tunelab.config.run import errors_located, load_config
    from tunelab.studies.cv import print_cv, run_cv

    cfg = load_config(config, set_)
    with study_interrupted("cv", config, set_, ["--folds", str(folds), *(["--overwrite"] if overwrite else [])],
                           Path(cfg.output_dir)), errors_located(config, set_):
        result = run_cv(cfg, folds, overwrite=overwrite)
    print_cv(result)
    typer.echo(f"cv: {result['folds']} folds; results: {Path(cfg.output_dir) / 'cv' / 'cv.json'}", err=True)


@app.command()
@user_errors
def curve(
    config: Path = typer.Argument(..., help="YAML config; data.train is subsampled, validation stays fixed."),
    fractions: str = typer.Option("0.1,0.3,1", "--fractions", help="Fractions of the training rows, e.g. 0.1,0.3,1."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, as for train."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the points of another curve in "
                                   "OUTPUT_DIR/curve (by default a curve of another config or other rows there is "
                                   "refused; the points of this one that finished are kept), and remove the points "
                                   "of fractions not asked for that are of another config or other rows (by default "
                                   "kept, not read)."),
) -> None:
    """Learning curve: one run per training fraction in OUTPUT_DIR/curve/frac-F; curve.json and curve.svg."""
    from tunelab.config.run import errors_located, load_config
    from tunelab.studies.curve import parse_fractions, print_curve, run_curve

    cfg = load_config(config, set_)
    with study_interrupted("curve", config, set_, ["--fractions", fractions, *(["--overwrite"] if overwrite else [])],
                           Path(cfg.output_dir)), errors_located(config, set_):
        result = run_curve(cfg, parse_fractions(fractions), overwrite=overwrite)
    print_curve(result)
    typer.echo(f"curve: {len(result['points'])} runs; results: {Path(cfg.output_dir) / 'curve' / 'curve.json'}",
               err=True)


@app.command()
@user_errors
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories; the first is the baseline."),
    split: str = typer.Option("validation", "--split", help="Evaluation split to compare (validation, test)."),
    output: Path = typer.Option(Path("compare.html"), "--output", help="HTML report; a .txt is written next to it. "
                                "Neither may exist (see --overwrite)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
    resamples: int = typer.Option(2000, "--resamples", min=1, help="Paired bootstrap resamples (non-classification)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the paired bootstrap."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file and the .txt "
                                   "beside it."),
) -> None:
    """Compare runs on the same examples: metric table, significance vs the first run, curves (HTML + text)."""
    from tunelab.io import check_outputs
    from tunelab.studies.compare import check_request, compare_runs, output_paths, print_tables, write_outputs
    from tunelab.training.layout import run_read

    check_request(run_dirs, resamples)
    check_outputs("--output", output_paths(output), [run_read(d) for d in run_dirs], overwrite)
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
    llm_limit: int | None = typer.Option(None, "--llm-limit", min=1, help="Score the LLM on a seeded sample of this "
                                         "many rows per split."),
    ngram_order: int = typer.Option(5, "--ngram-order", min=1, help="Order of the character n-gram LM (sft, "
                                    "pretrain)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Texts per forward pass (zero-shot)."),
) -> None:
    """Baselines to beat: TF-IDF + NB / LogReg, zero-shot (embedding, LLM), char n-gram LM; writes baselines.json."""
    from tunelab.config.run import errors_located, load_config
    from tunelab.studies.baselines import print_baselines, run_baselines

    cfg = load_config(config, set_)
    with errors_located(config, set_):
        result = run_baselines(cfg, zero_shot_model=zero_shot_model, embedding_model=embedding_model,
                               label_descriptions=label_descriptions, analyzer=analyzer, llm_limit=llm_limit,
                               ngram_order=ngram_order, batch_size=batch_size)
    print_baselines(result)
    typer.echo(json.dumps(result, ensure_ascii=False))
    typer.echo(f"baseline: wrote {Path(cfg.output_dir) / 'baselines.json'}", err=True)


@app.command()
@user_errors
def distill(
    teacher: Path = typer.Argument(..., help="The teacher: a finished run directory (classification, ner, qa, sft)."),
    student: str = typer.Option(..., "--student", help="layers:0,2,4 (the teacher with only those layers) or a "
                                "model (alias, directory, hub id) that shares the teacher's tokenizer."),
    temperature: float = typer.Option(2.0, "--temperature", min=0.01, help="Softmax temperature of the soft "
                                      "targets."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Weight of the soft targets; 1 - alpha "
                                "weighs the gold labels."),
    output: Path | None = typer.Option(None, "--output", help="The student's run directory (default: "
                                       "TEACHER-distilled); never the teacher's run, a folder inside it or another "
                                       "input."),
    unlabeled: Path | None = typer.Option(None, "--unlabeled", help="Rows without labels (input fields only) the "
                                          "student also learns from, on the teacher's soft targets alone "
                                          "(data.unlabeled)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key of the student's config, as for train "
                                   "(e.g. train.epochs=3)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace what the output directory holds."),
) -> None:
    """Train a smaller student on a teacher's soft targets and the gold labels; a run, plus distill.json beside."""
    from tunelab.export.parity import print_rows
    from tunelab.studies.distill import distill_run

    r = distill_run(teacher, student, temperature, alpha, output, set_, overwrite, unlabeled=unlabeled)
    if r.rows:
        print_rows(r.rows, "teacher and student on the validation split")
    typer.echo(f"distill: student run {r.output} (model: {r.output / 'model'})", err=True)
