"""The public Python API: `tunelab.train` runs a config and returns the `Run`; `tunelab.load` opens a tuned model of
any task as a `Model` that predicts and evaluates. The command line is a shell over these functions.
`tunelab.RunConfig` is the type of every config; build one with `make_config` (a path, a mapping or a RunConfig).

    import tunelab
    run = tunelab.train("run.yaml", **{"train.epochs": 1})   # or a dict / RunConfig; overrides are dotted keys
    model = tunelab.load(run.dir)                            # a run directory or its model/
    model.predict(["great film", "dull"])                   # the rows of `tunelab predict`
    model.evaluate("validation.jsonl")                      # the metrics of `tunelab eval`
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunelab.config.run import RunConfig, apply_override, build_config, read_config_file
from tunelab.data.readers import Table, read_rows, read_table, rows_table
from tunelab.errors import ConfigError, TunelabError
from tunelab.evaluation.evaluate import evaluate, logits_for
from tunelab.export.save import load_model
from tunelab.models.aliases import model_dir_of
from tunelab.pipeline import resolved
from tunelab.pipeline import run as run_pipeline
from tunelab.tasks.base import Example, Task

ConfigSource = str | Path | Mapping[str, Any] | RunConfig | None


def make_config(config: ConfigSource = None, **overrides: Any) -> RunConfig:
    """A validated `RunConfig` from a YAML path, a mapping or a RunConfig, with dotted-key overrides
    (`**{"train.lr": 1e-4}`; values are Python values, not YAML text). Errors are ConfigError naming the key."""
    if isinstance(config, RunConfig):
        tree: dict[str, Any] = config.model_dump(mode="json", exclude={"search"} if config.search is None else set())
    elif isinstance(config, Mapping):
        tree = json.loads(json.dumps(config, default=str))  # a deep copy, so the caller's mapping is not changed
    elif config is None:
        tree = {}
    elif isinstance(config, str | Path):
        tree = read_config_file(config)
    else:
        raise ConfigError(f"config: expected a YAML path, a mapping or a RunConfig, got {type(config).__name__}")
    for key, value in overrides.items():
        apply_override(tree, key.split("."), value)
    return build_config(tree)


@dataclass(frozen=True)
class Run:
    """A finished run: its directory (config.yaml, metrics, model/), the config it used and its final metrics."""

    dir: Path
    config: RunConfig
    metrics: dict[str, Any] = field(repr=False)

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    def load(self) -> Model:
        return load(self.model_dir)


def train(config: ConfigSource = None, *, resume: str | None = None, overwrite: bool = False,
          **overrides: Any) -> Run:
    """Train, evaluate and export one run, as `tunelab train`. `resume`: `auto` or a checkpoint path; `overwrite`:
    replace what output_dir holds (else only a finished run of the same config is replaced, anything else refused).
    Under a multi-process launch the processes other than the main one return a Run with empty metrics."""
    cfg = resolved(make_config(config, **overrides))
    metrics = run_pipeline(cfg, resume=resume, overwrite=overwrite)
    return Run(Path(cfg.output_dir), cfg, metrics)


class Model:
    """A tuned model of any task with its tokenizer and task settings (label map, data fields, max_length)."""

    def __init__(self, path: Path, task: Task, module: torch.nn.Module, tokenizer: Any) -> None:
        self.path, self.task, self.module, self.tokenizer = path, task, module, tokenizer

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, task={self.task.cfg.name!r})"

    def predict(self, inputs: str | Path | Table | Sequence[str | Mapping[str, Any]], batch_size: int = 64,
                ) -> list[dict[str, Any]]:
        """One output row per input, as `tunelab predict` writes them. `inputs`: texts (each fills the
        model's text field), rows with the data fields (`text`, `text_pair`, `question`, `context`, `messages`,
        ...), one text as a str, or a file as a Path (or a read Table)."""
        return self.predict_examples(self.parse_inputs(inputs), batch_size)

    def parse_inputs(self, inputs: str | Path | Table | Sequence[str | Mapping[str, Any]]) -> list[Example]:
        """The task's examples of `inputs`, as `predict` reads them, or the task's one-line error (TunelabError,
        naming `<input>:N` and the field) for a row it cannot read; nothing runs through the model."""
        return self.task.parse(self._table(inputs), labelled=False)

    def predict_examples(self, examples: Sequence[Example], batch_size: int = 64) -> list[dict[str, Any]]:
        """`predict` of examples `parse_inputs` read (those of several calls together: `tunelab serve`'s batches),
        without reading the rows again."""
        examples = list(examples)
        return self.task.predictions(logits_for(self.task, self.module, self.tokenizer, examples, batch_size),
                                     examples)

    def evaluate(self, data: str | Path | Sequence[Mapping[str, Any]], batch_size: int = 64,
                 limit: int | None = None) -> dict[str, Any]:
        """The task's metrics on labelled rows: a file (path) or rows with the data and label fields; `limit`
        scores only the first rows."""
        table = read_table(data) if isinstance(data, str | Path) else self._table(data)
        examples = self.task.parse(table)[:limit]
        return evaluate(self.task, self.module, self.tokenizer, examples, batch_size)

    def _table(self, inputs: Any) -> Table:
        if isinstance(inputs, Table):
            return inputs
        if isinstance(inputs, Path):
            return read_rows(inputs, self.task.data.text_field)
        if isinstance(inputs, str):
            inputs = [inputs]
        rows = [{self.task.data.text_field: x} if isinstance(x, str) else dict(x) for x in inputs]
        if not rows:
            raise TunelabError("<input>: empty input: no rows")
        return rows_table(rows)


def load(path: str | Path) -> Model:
    """A tuned model from a run directory or its model/ directory (any task)."""
    path = Path(path)
    model_dir = model_dir_of(path)  # else load_model says why
    task, module, tokenizer = load_model(model_dir)
    return Model(model_dir, task, module, tokenizer)
