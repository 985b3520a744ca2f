"""Commands that use a tuned model: eval, predict, chat, export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tunelab.cli.common import _fail, app, user_errors
from tunelab.errors import TunelabError

OVERWRITE_HELP = ("Replace an --output folder that holds files tunelab did not write (each named on stderr before "
                  "any work), or a link to a folder (the link, not what it points to); never a file, an input or "
                  "the run's own files.")
SET_HELP = ("task.KEY=VALUE: a scoring setting other than the saved one (NER: task.decoding=argmax, "
            "task.strict=true); repeatable.")

# eval's and predict's generation options (SFT models; one definition for both commands)
MaxNewTokens = Annotated[int | None, typer.Option("--max-new-tokens", min=1, help="SFT: most tokens per reply "
                                                  "(default: the model's task.generation).")]
NumBeams = Annotated[int | None, typer.Option("--num-beams", min=1, help="SFT: beam search width (1 to 32; "
                                              "--batch-size counts prompts × beams).")]
Temperature = Annotated[float | None, typer.Option("--temperature", help="SFT: 0 = greedy; above 0: sampling.")]
TopP = Annotated[float | None, typer.Option("--top-p", help="SFT: nucleus sampling mass (with --temperature).")]


def _generation_options(max_new_tokens: int | None, num_beams: int | None, temperature: float | None,
                        top_p: float | None) -> dict[str, Any]:
    """eval's / predict's generation options, their ranges checked (one line) before anything loads."""
    from tunelab.tasks.generation import GenerationConfig, with_overrides

    options = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "temperature": temperature, "top_p": top_p}
    with_overrides(GenerationConfig(), **options)
    return options


def _rescore(task: Any, sets: list[str], command: str) -> None:
    """`--set task.KEY=VALUE` applied to a loaded model's task (Task.rescore), each change named on stderr."""
    from tunelab.config.run import parse_overrides

    settings = {}
    for path, value in parse_overrides(sets):
        if len(path) != 2 or path[0] != "task":
            raise TunelabError(f"{command}: --set {'.'.join(path)}: only task.KEY=VALUE (a scoring setting)")
        settings[path[1]] = value
    for line in task.rescore(settings) if settings else []:
        typer.echo(f"{command}: {line}", err=True)


@app.command("eval")
@user_errors
def eval_(
    model_dirs: list[Path] = typer.Argument(..., help="A tuned model directory (RUN/model); several: an "
                                            "ensemble (classification, probabilities averaged)."),
    data: Path = typer.Option(..., "--data", help="Labelled file to score."),
    batch_size: int = typer.Option(64, min=1, help="Examples per forward pass."),
    report: Path | None = typer.Option(None, "--report", help="Also write an HTML report here (and the "
                                       "per-example records as <report stem>.predictions.jsonl)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N rows (one model)."),
    generate: bool | None = typer.Option(None, "--generate/--no-generate", help="SFT: also generate each last "
                                         "assistant reply and score it (exact match, BLEU, chrF, ROUGE); default on."),
    max_new_tokens: MaxNewTokens = None,
    num_beams: NumBeams = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    predictions: Path | None = typer.Option(None, "--predictions", help="SFT: replies file (JSONL; default "
                                            "RUN/predictions/eval-<data stem>.generations.jsonl next to MODEL_DIR)."),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --report (and its "
                                   ".predictions.jsonl) or --predictions file, or the default replies file beside "
                                   "a model directory that is not in a run."),
) -> None:
    """Score a tuned model: metrics as one JSON object on stdout, a table on stderr."""
    from tunelab.api import load
    from tunelab.data.readers import read_table
    from tunelab.evaluation.evaluate import print_metrics
    from tunelab.evaluation.generation import eval_generation_config
    from tunelab.report import evaluation_report
    from tunelab.studies.ensemble import Ensemble

    gen_options = _generation_options(max_new_tokens, num_beams, temperature, top_p)  # before anything loads

    if report is not None and len(model_dirs) > 1:
        raise TunelabError("eval: --report takes one model directory")
    if (report is not None or len(model_dirs) > 1) and (limit or generate or predictions):
        raise TunelabError("eval: --limit, --generate and --predictions take one model directory and no --report")
    if len(model_dirs) > 1:
        if sets:
            raise TunelabError("eval: --set takes one model directory")
        ensemble = Ensemble(model_dirs)
        eval_generation_config(ensemble.task, None, **gen_options)  # an ensemble's task generates nothing: refused
        metrics = ensemble.evaluate(read_table(data, ensemble.task.txt_as_conll), batch_size)
    else:
        default = _check_eval_outputs(model_dirs[0], data, report, predictions, overwrite, generate)
        model = load(model_dirs[0])
        _rescore(model.task, sets, "eval")
        if report is not None:
            metrics = evaluation_report(model.task, model.module, model.tokenizer, model.path, data, report,
                                        batch_size)
            typer.echo(f"eval: wrote {report}", err=True)
        else:  # the library's evaluate: the generation options checked against the model before the data is read
            path = predictions or default
            metrics = model.evaluate(data, batch_size, limit, generate=generate, predictions=path,
                                     overwrite=overwrite or path == default, **gen_options)  # (default: checked)
            if "generated" in metrics and path is not None:
                typer.echo(f"eval: {metrics['generated']} replies with their scores in {path}", err=True)
    print_metrics({str(data): metrics})
    typer.echo(json.dumps(metrics, ensure_ascii=False))


def _check_eval_outputs(model_dir: Path, data: Path, report: Path | None, predictions: Path | None,
                        overwrite: bool, generate: bool | None = None) -> Path | None:
    """eval's files checked before the model loads: never the data or a file the model directory or its run holds;
    an existing one only with --overwrite. Returns the default replies file of a model that generates them (sft)
    when --predictions is not given: RUN/predictions/eval-<data stem>.generations.jsonl (a run's export's:
    eval-<data stem>.<export>.generations.jsonl), the run's own, replaced; beside a model directory that is not in
    a run (no config.yaml next to it), an existing one is refused without --overwrite, as any other file."""
    from tunelab.evaluation.generation import default_predictions_path
    from tunelab.export.save import load_task
    from tunelab.io import Read, check_outputs
    from tunelab.models.aliases import model_dir_of
    from tunelab.report import records_path
    from tunelab.training.layout import model_reads

    model_dir = model_dir_of(model_dir)  # a run's directory names its model/
    inputs = [Read("the --data file", data), *model_reads(model_dir)]  # (the report reads the run's metrics too)
    if report is not None:
        check_outputs("--report", [report, records_path(report)], inputs, overwrite, "report")
        return None
    if predictions is not None:
        check_outputs("--predictions", [predictions], inputs, overwrite, "predictions")
        return None
    if generate is False or not load_task(model_dir).generates_replies:  # (tunelab.json only: no weights)
        return None
    default = default_predictions_path(model_dir, data)
    in_run = (default.parent.parent / "config.yaml").is_file()  # (a link to a run's model, or '.', too)
    if not (overwrite or in_run) and (default.exists() or default.is_symlink()):
        raise TunelabError(f"eval: {default} exists (the default replies file; {model_dir} is not in a run "
                           "directory): pass --overwrite to replace it, or --predictions FILE to write elsewhere")
    return default


@app.command()
@user_errors
def predict(
    model_dirs: list[Path] = typer.Argument(..., help="A tuned model directory (RUN/model); several: an "
                                            "ensemble (classification, probabilities averaged)."),
    input_: str = typer.Option(..., "--input", help="File to label (a .txt: one text per line), or - for stdin: "
                               "one text or one JSON object per line."),
    output: Path | None = typer.Option(None, "--output", help="Output JSONL (default: stdout); not an existing "
                                       "file (see --overwrite)."),
    batch_size: int = typer.Option(64, min=1, help="Examples per forward pass."),
    max_new_tokens: MaxNewTokens = None,
    num_beams: NumBeams = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
) -> None:
    """Label new rows: each output row is the input row plus the prediction (`pred_label` and `scores`, ...; an
    SFT model's generated `response`)."""
    from tunelab.api import load
    from tunelab.data.readers import lines_table, read_rows, stdin_lines
    from tunelab.evaluation.generation import eval_generation_config
    from tunelab.io import Read, check_outputs, json_line, write_jsonl_atomic
    from tunelab.studies.ensemble import Ensemble
    from tunelab.training.layout import model_reads

    gen_options = _generation_options(max_new_tokens, num_beams, temperature, top_p)  # before anything loads
    if sets and len(model_dirs) > 1:
        raise TunelabError("predict: --set takes one model directory")
    if output is not None and output.suffix.lower() in (".csv", ".tsv", ".parquet", ".xlsx"):
        raise TunelabError(f"--output: {output}: predict writes JSON Lines (each input row with its prediction); "
                           f"name it {output.with_suffix('.jsonl').name}")
    if output is not None:
        inputs = [read for d in model_dirs for read in model_reads(d)]  # a run's: its model/, its own files
        inputs += [Read("the --input file", Path(input_))] if input_ != "-" else []
        check_outputs("--output", [output], inputs, overwrite)
    ensemble = Ensemble(model_dirs) if len(model_dirs) > 1 else None  # members checked before weights load
    model = load(model_dirs[0]) if ensemble is None else None
    if model is not None:
        _rescore(model.task, sets, "predict")
    task = ensemble.task if ensemble is not None else model.task  # type: ignore[union-attr]
    if any(v is not None for v in gen_options.values()):  # eval's checks: another task refused, the reply's room
        model_config = getattr(model.module, "config", None) if model is not None else None
        gen = eval_generation_config(task, model_config, caller=("predict", "predict"), **gen_options)
        task.cfg = task.cfg.model_copy(update={"generation": gen})  # what the task's predictions generate with
    if input_ == "-":
        table = lines_table(stdin_lines(sys.stdin), "<stdin>", task.data.text_field)
    else:
        table = read_rows(input_, task.data.text_field, task.txt_as_conll)
    rows_out = ensemble.predict(table, batch_size) if ensemble is not None else model.predict(table, batch_size)
    if output is None:
        sys.stdout.write("".join(json_line(r) for r in rows_out))
    else:
        write_jsonl_atomic(output, rows_out)
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
    from tunelab.cli.chat import run_chat

    run_chat(model_dir, system=system, max_new_tokens=max_new_tokens, temperature=temperature)


@app.command()
@user_errors
def export(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A run directory (or its model/; for --merge also its adapter/)."),
    merge: bool = typer.Option(False, "--merge", help="Merge RUN/adapter into the base weights (LoRA / DoRA runs)."),
    format_: str | None = typer.Option(None, "--format", help="onnx: an onnxruntime graph (classification, ner, "
                                       "qa); gguf: one file for llama.cpp / ollama (sft, causal pretrain); torch: a "
                                       "PyTorch module (with --quantize int8: torchao). Checked beside the original "
                                       "before it is written."),
    quantize: str | None = typer.Option(None, "--quantize", help="onnx: int8 (onnxruntime dynamic quantisation, "
                                        "int8 weights per channel); gguf: f16 (default) or q8_0; torch: int8 "
                                        "(torchao)."),
    output: Path | None = typer.Option(None, "--output", help="Directory to write (default: RUN/merged; "
                                       "RUN/exports/<format>-<quantize or fp32>; for a model folder of no run, "
                                       "beside it: <folder>-<format>-<quantize or fp32>): new, empty, or an "
                                       "earlier export's, replaced whole (anything else: see --overwrite)."),
    data: Path | None = typer.Option(None, "--data", help="Labelled rows the export is checked on (default: the "
                                     "run's validation split)."),
    min_agreement: float | None = typer.Option(None, "--min-agreement", min=0.0, max=100.0, help="Parity gate: "
                                               "least % of predictions equal to the original's, a percentage (98, "
                                               "not 0.98; default onnx: 99; gguf: not gated, the loss is)."),
    max_drop: float = typer.Option(0.5, "--max-drop", min=0.0, help="Parity gate: most points the headline "
                                   "metric may fall (a loss, gguf: most % it may rise)."),
    force: bool = typer.Option(False, "--force", help="Write the export even when the parity gate refuses it."),
    batch_size: int = typer.Option(64, min=1, help="Examples per forward pass while scoring."),
    tolerance: float = typer.Option(1e-4, "--tolerance", min=0.0, help="--merge: largest allowed |logit| "
                                    "difference between the merged model and the adapter model (and RUN/model)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Merge an adapter (--merge) or export to onnx / torch int8 / gguf, checked before it is written."""
    from tunelab.export.request import FORMAT_ONLY, MERGE_ONLY, export_model

    # an option given (on the command line, even at its default value) that this kind of export does not read is
    # refused (typer's click, not necessarily `click`: the source by name)
    given = [name for name in (*MERGE_ONLY, *FORMAT_ONLY)
             if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"]
    _gated("export", lambda: export_model(path, format_, merge, quantize=quantize, output=output, data=data,
                                          min_agreement=min_agreement, max_drop=max_drop, force=force,
                                          batch_size=batch_size, tolerance=tolerance, overwrite=overwrite,
                                          given=given))


def _gated(verb: str, make: Any) -> None:
    """Run an export-like command: exit 1 with its one line when the check refuses the result, else the table (a
    merge: its logit differences) and where the result went."""
    from tunelab.export.merge import MergeReport
    from tunelab.export.parity import ParityError, print_rows

    try:
        r = make()
    except ParityError as exc:
        _fail(str(exc), code=1)
        return
    if isinstance(r, MergeReport):
        typer.echo(f"export: merged {r.adapter} into {r.base}; max |Δlogit| on {r.samples} samples: "
                   f"{r.max_diff_adapter:.3g} vs the adapter model, {r.max_diff_saved:.3g} vs "
                   f"{r.adapter.parent / 'model'} (tolerance {r.tolerance:g}); wrote {r.output}", err=True)
        return
    print_rows(r.rows, f"{verb} on {r.data}")
    note = f" although the gate refused it (--force): {r.refused}" if r.refused else ""
    typer.echo(f"{verb}: wrote {r.output}{note}", err=True)


@app.command()
@user_errors
def compress(
    path: Path = typer.Argument(..., help="A run directory (classification, ner, qa on a BERT-family encoder)."),
    prune: str = typer.Option(..., "--prune", help="heads:0.3 (the least important 30 % of attention heads, "
                              "removed from the matrices) or magnitude:0.5 (the smallest 50 % of the encoder's "
                              "weights set to zero: smaller compressed, not faster)."),
    recover_epochs: float = typer.Option(1.0, "--recover-epochs", min=0.0, help="Fine-tune on the run's training "
                                         "data after pruning (0: none)."),
    output: Path | None = typer.Option(None, "--output", help="Directory to write (default: "
                                       "RUN/exports/<kind>-<fraction>): new, empty, or an earlier export's, "
                                       "replaced whole (anything else: see --overwrite)."),
    data: Path | None = typer.Option(None, "--data", help="Labelled rows the result is checked on (default: the "
                                     "run's validation split)."),
    min_agreement: float = typer.Option(99.0, "--min-agreement", min=0.0, max=100.0, help="Parity gate: least % "
                                        "of rows predicted as the original predicts them, a percentage (98, not "
                                        "0.98)."),
    max_drop: float = typer.Option(0.5, "--max-drop", min=0.0, help="Parity gate: most points the headline "
                                   "metric may fall."),
    force: bool = typer.Option(False, "--force", help="Write the result even when the parity gate refuses it."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Prune a run's model, fine-tune it briefly to recover, and write it only past the parity gate."""
    from tunelab.export.parity import gate_of

    gate = gate_of(min_agreement, max_drop)  # (before the library loads)
    from tunelab.export.compress import compress_run

    _gated("compress", lambda: compress_run(path, prune, recover_epochs, output, data, gate, force,
                                            overwrite=overwrite))
