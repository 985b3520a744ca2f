"""`data.*` config → parsed, validated, cleaned and deduplicated examples per split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq
from pydantic import ValidationError

from tunelab.config.sections import CleanConfig, DataConfig, TaskConfig
from tunelab.data.dedup import dedup_across, dedup_within, without_digests
from tunelab.data.hygiene import clean_split
from tunelab.data.readers import Record, Table, hub_dataset, read_table, row_stream, streamable
from tunelab.data.records import FRESH_READ, SAY_CHANGES, read_again
from tunelab.data.report import DATA_FOLDER, DataReport, read_summary, summary_rules, training_fingerprint
from tunelab.data.rerun_checks import changed_why, check_counts, check_found
from tunelab.data.row_spill import spill_anywhere
from tunelab.data.splits import split_validation, split_validation_legacy
from tunelab.data.tabular import folder_files
from tunelab.errors import ConfigError, DataError, TunelabError
from tunelab.io import exists
from tunelab.models.aliases import ALIASES
from tunelab.progress import say
from tunelab.text import text_rules

STREAM_BYTES = 64 << 20  # a training file this large is spilled as it is parsed (SST-2 as JSONL: ≈ 750 k rows)
STREAM_ROWS = 500_000  # a Parquet training file of this many rows is too (1 M SST-2 rows read whole: 1.5 GB)
PARSE_CHUNK = 65_536  # rows parsed at a time then


class RowTask(Protocol):
    """What the data stage asks of a task (tunelab.tasks.base.Task provides it; data sits below tasks)."""

    cfg: TaskConfig
    data: DataConfig

    def parse(self, table: Table, *, labelled: bool = True) -> list[dict[str, Any]]: ...

    def check_unlabeled(self) -> None: ...

    def stratify_key(self, example: dict[str, Any]) -> Hashable | None: ...

    grouped_by: str
    txt_as_conll: bool

    def group_key(self, example: dict[str, Any]) -> Hashable | None: ...

    def check_train(self, examples: list[dict[str, Any]]) -> None: ...

    def check_labels(self, examples: Sequence[dict[str, Any]], model_path: str) -> None: ...

    def read_counts(self) -> dict[str, tuple[int, str]]: ...

    def configure_loss(self, train: Any, examples: list[dict[str, Any]]) -> dict[str, Any]: ...

    def encode(self, examples: Sequence[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]: ...

    # what `data check` asks too
    generates_replies: bool

    def load_tokenizer(self, model_path: str) -> Any: ...

    def token_lengths(self, tokenizer: Any, examples: Sequence[dict[str, Any]]) -> list[int] | None: ...

    def label_counts(self, examples: Sequence[dict[str, Any]] = ()) -> Counter[str]: ...

    def dedup_keys(self, example: dict[str, Any]) -> tuple[str, str]: ...

    def example_text(self, example: dict[str, Any]) -> str: ...

    def length_cap(self) -> int: ...

    # a task that `generates_replies`: its labelled rows over data.max_length as its encode fits them (trained tokens,
    # -1 where refused; whether a prompt message lost its middle; whether data.truncation head+tail would keep a row
    # that head refuses)
    def reply_cuts(self, examples: Sequence[dict[str, Any]], tokenizer: Any) -> list[tuple[int, bool, bool]]: ...


Tidy = Callable[[], Callable[[list[dict[str, Any]]], list[dict[str, Any]]]]


def parse_file(path: str, task: RowTask, *, stream: bool = False, tidy: Tidy | None = None,
               ) -> Sequence[dict[str, Any]]:
    """`task.parse` of a file's rows. With `stream`, a file or dataset folder that `readers.row_stream` reads a row at a
    time (JSONL, a JSON array, a SQuAD `.json`, CSV / TSV, Parquet, Arrow / Feather, CoNLL, plain text, a folder of
    Parquet or Arrow files, an `hf:` dataset) of at least `STREAM_BYTES` (Parquet and `hf:` also: `STREAM_ROWS`) is
    parsed `PARSE_CHUNK` rows at a time, each part spilled to disk as it is parsed (data/row_spill.py; in the feature
    cache's folder unless `data.cache: false`, else the system's temporary one), so neither its records nor its examples
    are ever held whole: parsed whole, a row costs ≈ 0.6 KB of Python objects (SST-2; 10 M rows ≈ 6 GB), spilled ≈ 0.1
    KB of disk. The rows and their order are the same either way; of several bad rows the streamed parse names the first
    in the file (the whole parse reads every row before it checks any row's fields). `tidy` makes a function applied to
    each parsed part (`data.clean`), a new one for each attempt (a spill that cannot be written starts again in the next
    folder)."""
    hub = path.startswith("hf:")
    task.read_counts()  # (what an earlier read counted: the caller asks for this file's after it)
    if stream and (hub or Path(path).exists()) and streamable(path) and _large(path):
        parsed = [0]

        def attempt() -> Iterator[list[dict[str, Any]]]:
            parsed[0] = 0
            task.read_counts()  # (an attempt started again counts again)
            return _parts(path, task, tidy() if tidy is not None else None, parsed)

        rows = spill_anywhere(attempt, task.data.cache is not False)
        if rows is not None:  # else neither folder could be written: parsed in memory
            if not parsed[0]:
                what = "file" if Path(path).is_file() else "dataset"
                raise DataError(path if hub else str(Path(path)), None, None, f"empty {what}: no data rows")
            return rows
    examples = task.parse(read_table(path, task.txt_as_conll))
    return tidy()(examples) if tidy is not None else examples


def _large(path: str) -> bool:
    """At least `STREAM_BYTES`, a dataset folder's files together; Parquet and a hub dataset at least `STREAM_ROWS`
    rows or `STREAM_BYTES` uncompressed (compressed, its file size says little)."""
    if path.startswith("hf:"):
        ds = hub_dataset(path)
        return ds.num_rows >= STREAM_ROWS or ds.data.nbytes >= STREAM_BYTES
    p = Path(path)
    try:
        files = folder_files(p) if p.is_dir() else [p]
    except DataError:  # a DatasetDict, a folder without data: the whole read says so
        return False
    rows, size = None, 0  # rows: Parquet's, from its metadata
    for f in files:
        if f.suffix.lower() not in (".parquet", ".pq"):
            size += f.stat().st_size
            continue
        try:
            meta = pq.ParquetFile(f).metadata
        except Exception:  # pyarrow raises several types for corrupt files: the whole read names the error
            return False
        rows = (rows or 0) + meta.num_rows
        size += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return (rows is not None and rows >= STREAM_ROWS) or size >= STREAM_BYTES


def _parts(path: str, task: RowTask, step: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None,
           parsed: list[int]) -> Iterator[list[dict[str, Any]]]:
    """The file's examples a part at a time, each through `step`; `parsed[0]` counts them before it."""
    columns, records = row_stream(path, task.txt_as_conll)
    source = path if path.startswith("hf:") else str(Path(path))  # as `read_table` names it
    for chunk in _batched(records, PARSE_CHUNK):
        part = task.parse(Table(source, chunk, columns))
        parsed[0] += len(part)
        yield step(part) if step is not None else part


def _cleaner(clean: CleanConfig, split: str, attempts: list[DataReport]) -> Tidy:
    """`data.clean` for `parse_file`, a part at a time; each attempt counts into a report of its own (`attempts`)."""

    def make() -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        counted = DataReport()
        attempts.append(counted)

        def step(part: list[dict[str, Any]]) -> list[dict[str, Any]]:
            counted.read(split, len(part))
            return clean_split(part, clean, split, counted, filter_length=split == "train")

        return step

    return make


def _batched(records: Iterator[Record], n: int) -> Iterator[list[Record]]:
    while chunk := list(islice(records, n)):
        yield chunk


def _read(path: str, split: str, data: DataConfig, task: RowTask, report: DataReport) -> Sequence[dict[str, Any]]:
    """Parse one file, then clean it and drop its duplicates (before any validation hold-out). A large training
    file is spilled as it is parsed (`parse_file`), cleaned a part at a time and deduplicated from the spill
    (data/dedup.py); the other splits, and rows held out of it for validation, stay in memory (evaluation writes
    into their rows: NER's word ids)."""
    examples, changed = parse_cleaned(path, split, data, task, report, stream=split == "train")
    for kind, (n, said) in changed.items():  # what reading changed (NER: words split): said once a file
        if FRESH_READ.get() and SAY_CHANGES.get():  # (not again for a finished run's report, nor in a study's sub-run)
            say(f"{path}: {said}")
        report.changed[split][kind] += n
    return deduplicated(examples, path, split, data, report)


def parse_cleaned(path: str, split: str, data: DataConfig, task: RowTask, report: DataReport, stream: bool,
                  ) -> tuple[Sequence[dict[str, Any]], dict[str, tuple[int, str]]]:
    """One file parsed (spilled as parsed where `stream`) and cleaned by `data.clean` a part at a time, what it
    read and dropped counted into `report`; with what reading changed (`Task.read_counts`). Train's and data
    check's reading alike."""
    attempts: list[DataReport] = []  # what cleaning counted, per parse attempt: the last one is kept
    examples = parse_file(path, task, stream=stream,
                          tidy=_cleaner(data.clean, split, attempts) if data.clean is not None else None)
    if attempts:
        report.merge(attempts[-1])
    else:
        report.read(split, len(examples))
    return examples, task.read_counts()


def deduplicated(examples: Sequence[dict[str, Any]], path: str, split: str, data: DataConfig, report: DataReport,
                 ) -> Sequence[dict[str, Any]]:
    """`data.dedup` within the file, then refused where no row is left."""
    if data.dedup:
        examples = dedup_within(examples, split, report)
    _check_left(examples, path, split, report)
    return examples


def _check_left(examples: list[dict[str, Any]], path: str, split: str, report: DataReport) -> None:
    if not examples:
        why = ", ".join(f"{reason}: {n}" for reason, n in report.removed_counts().get(split, {}).items())
        raise DataError(path, None, None, f"no rows left after data.clean / data.dedup ({why})")


def load_splits(data: DataConfig, task: RowTask, seed: int, report: DataReport | None = None, *,
                legacy_split: bool = False, training: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Read and validate every configured file. Without `data.validation`, a stratified, seeded
    `data.validation_split` of train is held out instead, of the rows `data.dedup` leaves (a training row that repeats
    a validation or test row is dropped first, so a class's row kept in train stays there); `applied.validation_split`
    records its size and its rows' `training_fingerprint` (`rows_sha256`), which `run_splits` checks. `legacy_split`:
    the hold-out of an older tunelab (`split_validation_legacy`, made before that dedup), for a run trained then.
    `data.clean` / `data.dedup` drop rows into `report` (see data/report.py). `training`: what training reads
    next, `data.unlabeled` and augment's synonyms, is checked with these; a finished run's re-read reads neither."""
    report = report if report is not None else DataReport()
    report.applied["clean"] = data.clean.model_dump() if data.clean is not None else None
    report.applied["dedup"] = data.dedup
    if not data.train:
        raise ConfigError("config: data.train: required key is missing")
    if data.unlabeled is not None:  # refused before any file is read
        task.check_unlabeled()
    _check_named(data, training)
    train = _read(data.train, "train", data, task, report)
    task.check_train(train)
    splits: dict[str, Any] = {}
    if data.validation:
        splits["validation"] = _read(data.validation, "validation", data, task, report)
    elif legacy_split:  # as then: held out before the rows found in data.test were dropped
        train, held = split_validation_legacy(train, data.validation_split, seed, task.stratify_key)
        report.held_out = len(held)
        if held:
            splits["validation"] = held
    if data.test:
        splits["test"] = _read(data.test, "test", data, task, report)
    if data.dedup and splits:
        splits = dedup_across({"train": train, **splits}, report)
        for split, rows in splits.items():
            _check_left(rows, getattr(data, split) or data.train, split, report)
        task.check_train(splits["train"])
        train = splits.pop("train")
    train = without_digests(train)  # (dedup_across drops them too: where it did not run)
    if not data.validation and not legacy_split:
        train, held, note = split_validation(train, data.validation_split, seed, task.stratify_key, task.group_key,
                                             source=data.train, group_name=task.grouped_by)
        report.applied["validation_split"] = {"fraction": data.validation_split, "rows": len(held), "note": note,
                                              "rows_sha256": training_fingerprint(held)}
        report.held_out = len(held)
        if note:
            say(f"note: {note}")
        if held:
            splits = {"validation": held, **splits}
    return {"train": train, **splits}


def _check_named(data: DataConfig, training: bool) -> None:
    """Each data file the config names is there, before any is read: one line naming its key (by `located`:
    `run.yaml:4: data.test: ...`, `--set data.test: ...`) and the folder a relative path is read from (the current
    one, not the config file's); it named the file alone, and a test file only once the others were read.
    `data.unlabeled` and augment's synonyms only where training reads them next (`training`). A URL is not read."""
    for key, path in data.files():
        try:
            missing = ((training or key not in ("unlabeled", "augment.synonyms")) and not path.startswith("hf:")
                       and not Path(path).exists())
        except (OSError, ValueError):  # not to be asked about (no permission, a name too long): reading says why
            missing = False
        if missing:
            where = (" (a file: URL; give its path)" if path.startswith("file:") else " (a URL is not read; give a "
                     "local path or hf:org/name)" if "://" in path else "" if Path(path).is_absolute()
                     else f" (a relative path is read from the current folder, {Path.cwd()})")
            raise ConfigError(f"config: data.{key}: {path}: file not found{where}")


def load_unlabeled(data: DataConfig, task: RowTask, report: DataReport) -> list[dict[str, Any]]:
    """`data.unlabeled`: rows with the task's input fields only (distillation's soft targets), cleaned by
    `data.clean` as the other splits are (what it drops is in `report`)."""
    if data.unlabeled is None:
        return []
    examples = task.parse(read_table(data.unlabeled, task.txt_as_conll), labelled=False)
    report.read("unlabeled", len(examples))
    if data.clean is not None:
        examples = clean_split(examples, data.clean, "unlabeled", report, filter_length=False)
    _check_left(examples, data.unlabeled, "unlabeled", report)
    return examples


def from_run_folder(folder: str | None, path: str) -> str:
    """A run's relative `path` (a data file, a teacher run) as the folder training ran in (data_summary.json's
    `data_folder`) reads it; as given where that folder has no such file but the current one does (the project moved
    or was copied), and where no folder was recorded (an older tunelab). Hub ids and absolute paths as they are."""
    if folder is None or path.startswith("hf:") or Path(path).is_absolute():
        return path
    there = Path(folder) / path
    return path if not exists(there) and exists(Path(path)) else str(there)


def run_model(summary: dict[str, Any], model: str) -> str:
    """A run's relative local `model` folder as the folder training ran in reads it (its data_summary.json's
    `data_folder`, in `summary`): resumed (or merged) from another folder, `../base` may name another model, or none.
    An alias, a hub id, an absolute path, or a folder not there: as given."""
    folder = summary.get(DATA_FOLDER)
    if (not isinstance(folder, str) or not model or model in ALIASES or Path(model).is_absolute()
            or not (Path(folder) / model).is_dir()):  # (an alias names its model wherever a folder of that name is)
        return model
    return str(Path(folder) / model)


def run_data(run_dir: Path, data: DataConfig, summary: dict[str, Any] | None = None) -> DataConfig:
    """A finished run's `data` section (its config.yaml's) with each relative file path joined to the folder training
    read it from (RUN/data_summary.json's `data_folder`), so the run's own files are read, whatever the current folder:
    what report, export, compress, distill and the --output checks read of a run. Where that folder no longer holds
    the file (the project was moved or copied) but the current folder does, the path is read from here, as before
    (`run_splits` checks its rows against the run's). A run that did not record it (an
    older tunelab) keeps its paths as they are, read from the current folder (`run_splits` checks them)."""
    folder = (read_summary(run_dir) if summary is None else summary).get(DATA_FOLDER)  # `summary`: read by the caller
    if not isinstance(folder, str):
        return data

    def joined(path: str) -> str:
        return from_run_folder(folder, path)

    update: dict[str, Any] = {key: joined(value) for key in ("train", "validation", "test", "unlabeled")
                              if (value := getattr(data, key))}
    if data.augment is not None and data.augment.synonyms:
        update["augment"] = data.augment.model_copy(update={"synonyms": joined(data.augment.synonyms)})
    return data.model_copy(update=update)


def run_data_section(run_dir: Path, tree: dict[str, Any]) -> DataConfig | None:
    """The `data` section alone of a run's config tree (its config.yaml), its files as training read them
    (`run_data`): a model path elsewhere in the config that does not resolve from here is no reason to lose them;
    None when the section itself does not load (said where the whole config is read)."""
    try:
        return run_data(run_dir, DataConfig.model_validate(tree.get("data") or {}))
    except (TunelabError, ValidationError, AttributeError):
        return None


def run_splits(run_dir: Path, data: DataConfig, task: RowTask, seed: int, report: DataReport | None = None,
               hint: str = "") -> dict[str, list[dict[str, Any]]]:
    """A finished run's splits read again from its config (report, export, compress): its files as training read them
    (`run_data`), checked against the rows the run used (RUN/data_summary.json: each split's count, the held-out
    validation rows' hash) — a file that changed since is one error line, not a check on other rows. A summary
    without `applied.validation_split` (the tunelab before today's hold-out) gets that tunelab's hold-out. An older
    run's relative paths are read from the current folder, which can name other files: said so then. `hint`: another
    way out the caller offers (", or pass --data FILE")."""
    summary = read_summary(run_dir)
    data = run_data(run_dir, data, summary)
    applied = summary.get("applied")
    held_then = applied.get("validation_split") if isinstance(applied, dict) else None
    # a hold-out made by a tunelab before applied.validation_split was recorded: its algorithm, its rows
    legacy = bool(summary) and not data.validation and not isinstance(held_then, dict)
    check_found(run_dir, data, ("train", "validation", "test"), hint)
    with read_again(), text_rules(summary_rules(summary)):  # trained already: a field its config did not read cannot
        splits = load_splits(data, task, seed, report, legacy_split=legacy)  # be taken up now; its rows its rules
    check_counts(run_dir, data, summary, splits, hint)
    sha = held_then.get("rows_sha256") if isinstance(held_then, dict) and not data.validation else None
    if isinstance(sha, str) and sha != training_fingerprint(splits.get("validation", [])):
        raise DataError(data.train, None, "validation", f"the rows held out now are not those the run {run_dir} "
                        f"validated on: {changed_why(data.train)}{hint}")
    return splits


def run_validation(run_dir: Path, data: DataConfig, task: RowTask, seed: int,
                   hint: str = "") -> list[dict[str, Any]] | None:
    """A finished run's validation rows (None: it had none), as `run_splits` gives them; where `data.validation` is
    a file of its own, that file alone (with `data.test` under `data.dedup`: it loses its rows to it) is read,
    cleaned and checked against the rows the run validated on: the training file may have changed or gone since."""
    if not data.validation:
        return run_splits(run_dir, data, task, seed, hint=hint).get("validation")
    summary = read_summary(run_dir)
    data = run_data(run_dir, data, summary)
    read = ("validation", "test") if data.dedup else ("validation",)  # test's rows matter only to dedup
    check_found(run_dir, data, read, hint)
    report = DataReport()
    with read_again(), text_rules(summary_rules(summary)):  # as run_splits reads them
        splits = {split: _read(path, split, data, task, report) for split in read if (path := getattr(data, split))}
    if data.dedup and len(splits) > 1:
        splits = dict(dedup_across(splits, report))
        _check_left(splits["validation"], data.validation, "validation", report)
    check_counts(run_dir, data, summary, {"validation": splits["validation"]}, hint)
    return list(splits["validation"])
