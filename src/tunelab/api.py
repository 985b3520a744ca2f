"""The public Python API: `tunelab.train` runs a config and returns the `Run`; `tunelab.load` opens a tuned model of
any task as a `Model` that predicts and evaluates. The command line is a shell over these functions.
`tunelab.RunConfig` is the type of every config; build one with `make_config` (a path, a mapping or a RunConfig).

    import tunelab
    run = tunelab.train("run.yaml", **{"train.epochs": 1})   # or a dict / RunConfig; overrides are dotted keys
    model = tunelab.load(run.dir)                            # a run directory or its model/
    model.predict(["great film", "dull"])                   # the rows of `tunelab predict`
    model.evaluate("validation.jsonl")                      # the metrics of `tunelab eval` (sft: replies scored)

Every mistake in a call is one `tunelab.errors.TunelabError` (an argument of the wrong type or value:
`ArgumentError`), its message naming options as this API spells them (`overwrite=True`, not `--overwrite`).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from tunelab.config.run import RunConfig, configured, read_config_file
from tunelab.data.objects import check_count, check_flag, check_number, check_path, model_table
from tunelab.data.readers import Table
from tunelab.errors import ArgumentError, ConfigError, DataRefused, surface
from tunelab.evaluation.evaluate import evaluate, logits_for, predictions_by_row
from tunelab.export.save import load_model
from tunelab.models.aliases import model_dir_of
from tunelab.progress import quiet_transformers
from tunelab.tasks.base import Example, Task
from tunelab.tasks.model_rows import model_examples

ConfigSource = str | Path | Mapping[str, Any] | RunConfig | None
Inputs = str | Path | Table | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | Any  # Any: a DataFrame
F = TypeVar("F", bound=Callable[..., Any])


def _entry(*, quiet: bool = True) -> Callable[[F], F]:
    """An API entry point: its errors name options as the API spells them (`errors.surface`); with `quiet`,
    transformers' weight-loading bars and load reports stay off the terminal, as on the command line, and the
    caller's own transformers verbosity and progress-bar setting are restored afterwards."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with surface("api"):
                if not quiet:
                    return fn(*args, **kwargs)
                with quiet_transformers():
                    return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return wrap


@_entry(quiet=False)
def make_config(config: ConfigSource = None, **overrides: Any) -> RunConfig:
    """A validated `RunConfig` from a YAML path, a mapping or a RunConfig, with dotted-key overrides
    (`**{"train.lr": 1e-4}`; values are Python values, not YAML text). Errors are ConfigError naming the key: an
    override's as `config: train.lr: ...`, a key of a YAML file by its line (`run.yaml:7: train.lr: ...`)."""
    path: str | Path | None = None
    if isinstance(config, RunConfig):
        tree: dict[str, Any] = config.model_dump(mode="json", exclude={"search"} if config.search is None else set())
    elif isinstance(config, Mapping):
        tree = _plain(config)  # a deep copy, so the caller's mapping is not changed
    elif config is None:
        tree = {}
    elif isinstance(config, str | Path):
        tree, path = read_config_file(config), config
    else:
        raise ConfigError(f"config: expected a YAML path, a mapping or a RunConfig, got {type(config).__name__}")
    return configured(tree, _overrides(overrides), path)


def _overrides(overrides: Mapping[str, Any]) -> list[tuple[list[str], Any]]:
    """Dotted-key overrides (`{"train.lr": 1e-4}`) as the config reads `--set` values: (keys, plain value) pairs."""
    for key in overrides:
        if not all(part.strip() for part in key.split(".")):
            raise ConfigError(f"config: {key!r}: expected a dotted key such as train.lr")
    return [(key.split("."), _plain(value)) for key, value in overrides.items()]


def _plain(value: Any) -> Any:
    """A Python value as its config would hold it, alike in a mapping and in an override: a path as its string, a
    tuple or set as a list (a set sorted), a numpy scalar as its number, mappings and lists copied."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return [_plain(v) for v in sorted(value, key=str)]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        narrow = getattr(getattr(value, "dtype", None), "itemsize", 8) < 8 and isinstance(item(), float)
        return float(str(value)) if narrow else item()  # float32 1e-4 as 0.0001, not 9.999999747378752e-05
    return value


@dataclass(frozen=True)
class Run:
    """A finished run: its directory (config.yaml, metrics, model/), the config it used and its final metrics."""

    dir: Path
    config: RunConfig
    metrics: dict[str, Any] = field(repr=False)

    @property
    def model_dir(self) -> Path:
        """The run's tuned model: `dir / "model"`, the directory `tunelab.load`, `eval` and `predict` take."""
        return self.dir / "model"

    def load(self) -> Model:
        """The run's tuned model, loaded: `tunelab.load(run.model_dir)`."""
        return load(self.model_dir)

    def export(self, format: str | None = None, **options: Any) -> Path:
        """The run's model exported (or its adapter merged: `merge=True`): `tunelab.export_model(run.dir, format,
        **options)`; returns the folder written."""
        return export_model(self.dir, format, **options)

    def compress(self, prune: str, **options: Any) -> Path:
        """The run's model pruned: `tunelab.compress_model(run.dir, prune, **options)`; returns the folder written."""
        return compress_model(self.dir, prune, **options)


@_entry()
def train(config: ConfigSource = None, *, resume: str | Path | bool | None = None, overwrite: bool = False,
          **overrides: Any) -> Run:
    """Train, evaluate and export one run, as `tunelab train`. `resume`: `"auto"` (or True, as the CLI's bare
    `--resume`: the run's newest intact checkpoint in output_dir) or a checkpoint path; `overwrite`: replace what
    output_dir holds (else only a finished run of the same config is replaced, anything else refused).
    Under a multi-process launch the processes other than the main one return a Run with empty metrics."""
    if resume is True:
        resume = "auto"
    elif resume is False:
        resume = None
    elif resume is not None and not isinstance(resume, str | Path):
        raise ArgumentError(f"resume: expected \"auto\" (or True), a checkpoint path or None, got "
                            f"{type(resume).__name__}")
    check_flag("overwrite", overwrite)
    # the training stack (accelerate, peft, the loop): ~1 s predict never needs
    from tunelab.pipeline import run as run_pipeline
    from tunelab.training.run_checks import resolved

    cfg = resolved(make_config(config, **overrides))
    metrics = run_pipeline(cfg, resume=None if resume is None else str(resume), overwrite=overwrite)
    return Run(Path(cfg.output_dir), cfg, metrics)


class Model:
    """A tuned model of any task with its tokenizer and task settings (label map, data fields, max_length)."""

    def __init__(self, path: Path, task: Task, module: torch.nn.Module, tokenizer: Any) -> None:
        """A loaded model: `tunelab.load(path)` makes one (this is its constructor: `path`, the model directory;
        `task`, its task with the saved settings; `module`, the network in eval mode; `tokenizer`, its tokenizer)."""
        self.path, self.task, self.module, self.tokenizer = path, task, module, tokenizer

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, task={self.task.cfg.name!r})"

    @_entry()
    def predict(self, inputs: Inputs, batch_size: int = 64) -> list[dict[str, Any]]:
        """One output row per input row, as `tunelab predict` writes them: the row, its fields all kept (an id is
        echoed back), plus the prediction (`pred_label` and `scores`, ...). Always a list, one input or many.

        `inputs`: a str is ONE TEXT (it fills the model's text field; a file is a Path); a mapping is one row with
        the data fields (`text`, `text_pair` for a model trained on pairs, `question` and `context`, `tokens`,
        `messages`, ...); a list (or other iterable) of texts and rows; a file as a Path (or a read Table); a pandas
        DataFrame (its records). A field the model would not read as an input (`text_pair` for a model of single
        texts) is an error, not ignored. `batch_size`: examples per forward pass, at least 1."""
        return self.predict_examples(self.parse_inputs(inputs), batch_size)

    def parse_inputs(self, inputs: Inputs, *, labelled: bool = False) -> list[Example]:
        """The task's examples of `inputs`, as `predict` (`labelled`: `evaluate`) reads them, or the task's
        one-line error (a DataError naming `<input>:N` and the field) for a row it cannot read; nothing runs through
        the model."""
        return model_examples(self.task, model_table(inputs, self.task.data.text_field, files=False,
                                                     conll_txt=self.task.txt_as_conll),
                              labelled=labelled)

    def predict_examples(self, examples: Sequence[Example], batch_size: int = 64, *,
                         by_row: bool = False) -> list[dict[str, Any]]:
        """`predict` of examples `parse_inputs` read (those of several calls together: `tunelab serve`'s batches),
        without reading the rows again. `by_row`: a row whose outputs are NaN or infinite answers with `error`
        instead of its prediction, the others predicted (else NaN or infinite outputs are one error for them all)."""
        check_count("batch_size", batch_size)
        examples = list(examples)
        logits = logits_for(self.task, self.module, self.tokenizer, examples, batch_size, nan_ok=by_row)
        if by_row:
            return predictions_by_row(self.task, logits, examples)
        return self.task.predictions(logits, examples)

    @_entry()
    def evaluate(self, data: Inputs, batch_size: int = 64, limit: int | None = None, *,
                 generate: bool | None = None, max_new_tokens: int | None = None, num_beams: int | None = None,
                 temperature: float | None = None, top_p: float | None = None,
                 predictions: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
        """The task's metrics on labelled rows, as `tunelab eval` prints them.

        `data`: a str or Path is a FILE (unlike `predict`, where a str is one text); a mapping is one row, a list of
        mappings (or a pandas DataFrame) rows, each with the data and label fields. `limit`: score only the first
        `limit` rows (at least 1; None: all). `batch_size`: examples per forward pass, at least 1.

        A model that answers conversations (sft) also generates each row's last assistant reply from the turns before
        it and scores it (`exact_match`, `bleu`, `chrf`, `rouge1` / `rouge2` / `rougeL`, `generated`), as `tunelab
        eval` does: `generate=False` for the loss and perplexity only; `max_new_tokens`, `num_beams`, `temperature`,
        `top_p` instead of the model's `task.generation`. `predictions`: a JSONL file to write the replies with their
        scores to (none is written without it; an existing file only with `overwrite=True`; never the data, a file of
        the model directory or of its run's own: metrics.json, report.html, ...)."""
        check_count("batch_size", batch_size)
        if limit is not None:
            check_count("limit", limit)
        check_flag("overwrite", overwrite)
        _check_generation_types(generate, max_new_tokens, num_beams, temperature, top_p, predictions)
        from tunelab.evaluation.generation import eval_generation, eval_generation_config
        from tunelab.io import Read, check_outputs
        from tunelab.training.layout import model_reads

        gen = eval_generation_config(self.task, getattr(self.module, "config", None), generate=generate,
                                     max_new_tokens=max_new_tokens, num_beams=num_beams, temperature=temperature,
                                     top_p=top_p, predictions=predictions)  # checked before the data is read
        if predictions is not None:  # (after the options: a model that writes no replies says so first)
            reads = model_reads(self.path)  # its files, and its run's own (metrics.json, report.html, ...)
            reads += [Read("the data file", Path(data))] if isinstance(data, str | Path) else []
            check_outputs("predictions", [Path(predictions)], reads, overwrite, "predictions")
        table = model_table(data, self.task.data.text_field, files=True, name="data", conll_txt=self.task.txt_as_conll)
        table = replace(table, records=table.records[:limit])  # the rows after the limit are not read
        examples = model_examples(self.task, table, labelled=True)
        metrics = evaluate(self.task, self.module, self.tokenizer, examples, batch_size)
        metrics.update(eval_generation(self.task, self.module, self.tokenizer, examples, batch_size, gen, predictions))
        return metrics


def _check_generation_types(generate: Any, max_new_tokens: Any, num_beams: Any, temperature: Any, top_p: Any,
                            predictions: Any) -> None:
    """`Model.evaluate`'s generation options of the wrong type: one ArgumentError naming it (their ranges are the
    generation settings' to check)."""
    if generate is not None:
        check_flag("generate", generate)
    for name, value in (("max_new_tokens", max_new_tokens), ("num_beams", num_beams)):
        if value is not None:
            check_count(name, value)
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ArgumentError(f"{name}: expected a number, got {value!r}")
    if predictions is not None and not isinstance(predictions, str | Path):
        raise ArgumentError(f"predictions: expected a file path (a str or Path), got {predictions!r}")


@_entry()
def load(path: str | Path) -> Model:
    """A tuned model from a run directory or its model/ directory (any task)."""
    model_dir = model_dir_of(check_path("path", path, "a run directory or its model/"))  # else load_model says why
    task, module, tokenizer = load_model(model_dir)
    return Model(model_dir, task, module, tokenizer)


@_entry()
def check_data(*files: str | Path, config: ConfigSource = None, task: str | None = None, model: str | None = None,
               **overrides: Any) -> dict[str, Any]:
    """What `tunelab data check` finds in data files before you train on them: the report its `--json` prints (per
    file: rows, labels, token lengths, rows over max_length, duplicates, warnings; the overlap between the files).

    `files`: the files, the training file first (none: the config's data.train / validation / test); `config` (a
    YAML path, a mapping or a RunConfig): a run config whose task, model and data settings are read as train reads
    them; `task`, `model`: the rows' task and the model whose tokenizer measures them (default classification and
    minilm, or the config's); `overrides`: data.* and task.* keys and train.seed (`**{"data.text_field": "review"}`).
    Rows train refuses raise `tunelab.errors.DataRefused`: train's line for the first, the report as its `report`."""
    if len(files) == 1 and isinstance(files[0], list | tuple):
        raise ArgumentError(f"files: expected data files (each a str or Path), got a {type(files[0]).__name__}; "
                            "pass several as check_data(a, b)")
    paths = [str(check_path("files", f, "a data file")) for f in files]
    for name, value in (("task", task), ("model", model)):
        if value is not None and not isinstance(value, str):
            raise ArgumentError(f"{name}: expected a name (a str), got {type(value).__name__}")
    from tunelab.config.located import located
    from tunelab.data.check import run_check

    try:  # a bad setting named as train names it: an override's key, a key of the config file by its line
        report = run_check(paths, None if config is None else make_config(config), task, model, _overrides(overrides))
    except ConfigError as exc:
        raise located(exc, config if isinstance(config, str | Path) else None, list(overrides)) from None
    if report.get("refused"):
        raise DataRefused(report["refused"], report)
    return report


@_entry()
def export_model(path: str | Path, format: str | None = None, *, merge: bool = False, quantize: str | None = None,
                 output: str | Path | None = None, data: str | Path | None = None, min_agreement: float | None = None,
                 max_drop: float | None = None, force: bool = False, batch_size: int | None = None,
                 tolerance: float | None = None, overwrite: bool = False) -> Path:
    """`tunelab export`: a run's model (a run directory, its model/ or a compressed model's folder) exported to
    `format` "onnx", "gguf" or "torch", loaded back, scored beside the original and written only past the parity
    gate; or, with `merge=True`, the run's LoRA / DoRA adapter merged into its base weights. Returns the folder
    written (default RUN/exports/<format>-<quantize or fp32>; a merge: RUN/merged).

    The options are the CLI's: `quantize`; `data` (labelled rows to check on; default the run's validation split);
    `min_agreement` (a percentage: 98, not 0.98), `max_drop` (default 0.5), `force`, `batch_size` (default 64) for
    a format; `tolerance` (default 1e-4) for a merge — one the kind of export does not read is refused. `output`
    takes a folder of others' files only with `overwrite=True`. Refused by its check: `tunelab.errors.ParityError`,
    nothing written."""
    _check_export_types(format, quantize, merge, force, overwrite)
    options = {"quantize": quantize, "data": data, "min_agreement": min_agreement, "max_drop": max_drop,
               "force": force or None, "batch_size": batch_size, "tolerance": tolerance}  # (force: a switch)
    _check_gate(min_agreement, 0.0 if max_drop is None else max_drop)
    if batch_size is not None:
        check_count("batch_size", batch_size)
    if tolerance is not None:
        check_number("tolerance", tolerance)
    from tunelab.export.request import BATCH_SIZE, MAX_DROP, TOLERANCE
    from tunelab.export.request import export_model as run_export

    return run_export(check_path("path", path, "a run or model directory"), format, merge, quantize=quantize,
                      output=check_path("output", output, "a folder", True),
                      data=check_path("data", data, "a file of labelled rows", True), min_agreement=min_agreement,
                      max_drop=MAX_DROP if max_drop is None else max_drop, force=force,
                      batch_size=batch_size or BATCH_SIZE, tolerance=TOLERANCE if tolerance is None else tolerance,
                      overwrite=overwrite, given=[name for name, value in options.items() if value is not None]).output


def _check_export_types(fmt: Any, quantize: Any, merge: Any, force: Any, overwrite: Any) -> None:
    for name, value in (("format", fmt), ("quantize", quantize)):
        if value is not None and not isinstance(value, str):
            raise ArgumentError(f"{name}: expected a name (a str), got {type(value).__name__}")
    for name, value in (("merge", merge), ("force", force), ("overwrite", overwrite)):
        check_flag(name, value)


def _check_gate(min_agreement: Any, max_drop: Any) -> None:
    """The parity gate's options, as the CLI's ranges take them: a percentage, and points of at least 0."""
    if min_agreement is not None:
        check_number("min_agreement", min_agreement, 0, 100)
    check_number("max_drop", max_drop)


@_entry()
def compress_model(path: str | Path, prune: str, *, recover_epochs: float = 1.0, output: str | Path | None = None,
                   data: str | Path | None = None, min_agreement: float = 99.0, max_drop: float = 0.5,
                   force: bool = False, overwrite: bool = False) -> Path:
    """`tunelab compress`: a run's model (classification, ner, qa on a BERT-family encoder) pruned — `prune`
    "heads:0.3" (the least important 30 % of attention heads removed) or "magnitude:0.5" (the smallest 50 % of the
    encoder's weights zeroed) —, fine-tuned `recover_epochs` on the run's training data (0: not), and written only
    past the parity gate (`data`, `min_agreement` a percentage, `max_drop`, `force`: as `export_model`'s). Returns
    the folder written (default RUN/exports/<kind>-<fraction>), a model directory `tunelab.load` takes."""
    if not isinstance(prune, str):
        raise ArgumentError(f"prune: expected \"heads:<fraction>\" or \"magnitude:<fraction>\", got {prune!r}")
    check_number("recover_epochs", recover_epochs)
    _check_gate(min_agreement, max_drop)
    check_flag("force", force)
    check_flag("overwrite", overwrite)
    from tunelab.export.compress import compress_run
    from tunelab.export.parity import gate_of

    return compress_run(check_path("path", path, "a run directory"), prune, float(recover_epochs),
                        check_path("output", output, "a folder", True),
                        check_path("data", data, "a file of labelled rows", True), gate_of(min_agreement, max_drop),
                        force, overwrite=overwrite).output
