"""`tunelab data check`: what a data file holds before you train on it."""

from __future__ import annotations

import copy
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError
from rich.table import Table
from rich.text import Text
from transformers.utils import logging as hf_logging

from tunelab.config.run import (
    RunConfig,
    apply_override,
    check_label_field,
    fitting,
    format_validation_error,
)
from tunelab.config.sections import DataConfig, TrainConfig
from tunelab.data.advice import conversation_order, look_alike_labels, unknown_tokens, unseen_labels
from tunelab.data.dedup import dedup_across, without_digests
from tunelab.data.feature_store import RowSequence
from tunelab.data.load import RowTask, _check_left, _check_named, deduplicated, parse_cleaned
from tunelab.data.report import DataReport
from tunelab.data.splits import split_validation
from tunelab.data.windows import check_window_room
from tunelab.errors import ConfigError, DataError, flag, option
from tunelab.models import load_named
from tunelab.models.positions import positions_at
from tunelab.progress import Steps, table_console
from tunelab.registry import TASKS

Overrides = list[tuple[list[str], Any]]  # --set values, parsed (`config.run.parse_overrides`): (keys, value)
SPLITS = ("train", "validation", "test")  # the files' roles, in data check's order, as train's dedup ranks them
SEED = TrainConfig.model_fields["seed"].default  # train.seed, where no run config gives it
CHAT_CHUNK = 8192  # conversations encoded at once by data check (as Task.in_chunks does for training)


def config_base(cfg: RunConfig, task_name: str | None = None, files_given: bool = False,
                ) -> tuple[dict[str, Any], list[str], str, int]:
    """`data check --config RUN.yaml`: the run config's task and data settings (the tree the --set values go on),
    its data files (train first, as data check reads its first file as the training file; each there, as train
    checks before reading), its model and its train.seed (the validation hold-out's). `--task` another than the
    config's replaces it, with its settings."""
    task = {**cfg.task.model_dump(exclude_unset=True), "name": cfg.task.name}
    if task_name is not None and task_name != cfg.task.name:
        task = {}
    if not files_given:
        _check_named(cfg.data, training=False)
    files = [f for f in (cfg.data.train, cfg.data.validation, cfg.data.test) if f]
    return {"task": task, "data": cfg.data.model_dump(exclude_unset=True)}, files, cfg.model, cfg.train.seed


def train_seed(overrides: Overrides, seed: int = SEED) -> tuple[Overrides, int]:
    """`data check`'s `--set train.seed=N` (or `train={seed: N}`): the seed train holds validation rows out with, so
    that the check names the rows `train --set train.seed=N` holds out; the other --set values returned as given. A
    train key other than the seed is refused, naming the one data check takes."""
    rest, tree = [], {}
    for keys, value in overrides:
        if keys[0] != "train":
            rest.append((keys, value))
            continue
        apply_override(tree, keys, value)
        train = tree["train"]
        other = sorted(set(train) - {"seed"}) if isinstance(train, dict) else [""]
        if other:
            raise ConfigError(f"config: {'.'.join(filter(None, ('train', str(other[0]))))}: data check takes only "
                              "data.* and task.* keys, and train.seed (the seed of its validation hold-out)")
    if "train" in tree:
        seed = _section("train", TrainConfig, tree["train"]).seed
    return rest, seed


def _configs(task_name: str | None, overrides: Overrides, command: str = "data check",
             fixed: bool = False, base: dict[str, Any] | None = None) -> tuple[RowTask, DataConfig]:
    """The task and data config of `command` from `task_name` (None: `--set task=NAME`, else classification) and the
    --set values (data.* and task.*) over `base` (a run config's, `config_base`). `--set task=NAME` (or
    task.name=NAME) names the task as it does for train; a name other than an explicit `task_name` is refused
    (`fixed`: the command reads only that task's rows)."""
    tree: dict[str, Any] = copy.deepcopy(base or {})
    for keys, value in overrides:
        apply_override(tree, keys, value)
    unknown = set(tree) - {"data", "task"}
    if unknown:
        raise ConfigError(f"config: {sorted(unknown)[0]}: {command} takes only data.* and task.* keys")
    task_tree = tree.get("task", {})
    if isinstance(task_tree, str):  # --set task=ner: the task's name, as for train
        task_tree = {"name": task_tree}
    elif not isinstance(task_tree, dict):
        raise ConfigError(f"config: task: expected a task name ({option('--set task=NAME', 'task=NAME')}) or "
                          f"task.* keys, got {task_tree!r}")
    data_tree = tree.get("data", {})
    if not isinstance(data_tree, dict):
        example = option("--set data.text_field=review", "**{'data.text_field': 'review'}")
        raise ConfigError(f"config: data: expected data.* keys (e.g. {example}), got {data_tree!r}")
    named = task_tree.pop("name", None)
    if named is not None and not isinstance(named, str):
        raise ConfigError(f"config: task.name: expected a task name, got {named!r}")
    if named is not None and task_name is not None and named != task_name:
        raise ConfigError(f"config: task: {named}: {command} reads {task_name} rows" if fixed else
                          f"config: task: {named}: {flag('task')} says {task_name}; give the task once")
    name = task_name or named or "classification"
    cls = TASKS.get(name)
    task_cfg = _section("task", cls.Config, {**task_tree, "name": name})
    data_cfg = _section("data", DataConfig, data_tree)
    check_label_field(task_cfg, data_cfg)
    return cls(task_cfg, data_cfg), data_cfg


def _section(name: str, section: type[BaseModel], tree: dict[str, Any]) -> Any:
    """A config section built from the --set values (`tree`), its problems named by their full path
    (`data.max_length`)."""
    def build(values: dict[str, Any]) -> Any:
        return section(**values)

    try:
        return build(tree)
    except ValidationError as err:
        said = format_validation_error(err, set(), fitting(build, tree), section, name)
        raise ConfigError(said.replace("config: ", f"config: {name}.", 1)) from None


def _chat_lengths(task: RowTask, examples: list[dict[str, Any]], path: str, tokenizer: Any) -> dict[str, Any]:
    """A task that answers conversations: token lengths as its chat template renders them (not cut), assistant
    tokens, and, of the rows over max_length as the task's encode fits them (`reply_cuts`), replies cut, prompts
    that lose a middle (data.truncation: head+tail) and refused rows that head+tail would keep (data.truncation: head).
    Encoded `CHAT_CHUNK` conversations at a time: their features are lists of Python ints (whole, 200,000 alpaca
    conversations took 1,054 MB of `data check`'s peak RSS at once)."""
    uncut = type(task)(task.cfg, task.data.model_copy(update={"max_length": 1 << 30}))
    cap = task.length_cap()  # a turn's head only: beyond it every token is past max_length anyway
    limit = task.data.max_length
    lengths: list[int] = []
    trained: list[int] = []
    partly, fully, middles, saved, refused = 0, [], 0, 0, []
    for start in range(0, len(examples), CHAT_CHUNK):
        part = examples[start : start + CHAT_CHUNK]
        capped = [{**ex, "messages": [{**m, "content": m["content"][:cap]} for m in ex["messages"]]} for ex in part]
        feats = uncut.encode(capped, tokenizer)
        over = [j for j, f in enumerate(feats) if len(f["input_ids"]) > limit]  # fitted as training fits them
        fitted = dict(zip(over, task.reply_cuts([capped[j] for j in over], tokenizer), strict=True))
        for j, (ex, f) in enumerate(zip(part, feats, strict=True)):
            marked = sum(t != -100 for t in f["labels"])
            lengths.append(len(f["input_ids"]))
            trained.append(marked)
            kept, middle, saves = fitted.get(j, (marked, False, False))
            partly += 0 <= kept < marked
            middles += middle
            saved += saves
            if kept < 0:
                fully.append(f"{ex.get('source') or path}:{ex['line']}")
                refused.append(start + j)
    return {
        "lengths": np.asarray(lengths),
        "turns": dict(Counter(m["role"] for ex in examples for m in ex["messages"]).most_common()),
        "assistant_tokens": {"total": sum(trained), "p50": int(np.percentile(trained, 50)), "max": max(trained)},
        "replies_partly_cut": partly,
        "replies_fully_cut": fully,
        "prompts_middle_cut": middles,  # data.truncation: head+tail
        "head_tail_would_keep": saved,  # of replies_fully_cut (data.truncation: head), the rows head+tail would train
        "refused_at": refused,  # their indices (`check_files` says the first train refuses, with train's line)
    }


def _refusal(task: RowTask, examples: Sequence[dict[str, Any]], cut: list[int], held: set[int],
             tokenizer: Any) -> str:
    """The line train refuses the first of the rows at `cut` with (those it cannot fit into data.max_length): its own
    encode's, of the row train encodes first: the training rows left after the validation hold-out (`held`, as
    `_held_out`) before the held-out ones, each in file order."""
    for j in sorted(cut, key=lambda j: (j in held, j)):
        try:
            task.encode([examples[j]], tokenizer)
        except DataError as e:
            return str(e)
    return ""


def _check_labels(task: RowTask, examples: Sequence[dict[str, Any]], where: str, path: str, data: DataConfig,
                  seed: int, holds_out: bool) -> None:
    """A label the model will not have (`Task.check_labels`): refused as train refuses it, naming the row train
    encodes first: of a training file it holds rows out of (`holds_out`), the rows left for training before the
    held-out ones (it had named the first in file order, a held-out row where one came first)."""
    try:
        task.check_labels(examples, where)
    except DataError:
        if not holds_out:
            raise
        task.check_labels(_in_train_order(examples, _held_out(examples, path, task, data, seed)), where)
        raise


def _in_train_order(examples: Sequence[dict[str, Any]], held: set[int]) -> Sequence[dict[str, Any]]:
    """The rows in the order train encodes them: those left after the validation hold-out (`held`, as
    `_held_out`), then the held-out ones, each in file order (a view of a spilled file's rows: nothing copied)."""
    if not held:
        return examples
    out = np.zeros(len(examples), dtype=bool)
    out[list(held)] = True
    order = np.concatenate([np.flatnonzero(~out), np.flatnonzero(out)])
    return examples.take(order) if isinstance(examples, RowSequence) else [examples[int(j)] for j in order]


def _held_out(examples: Sequence[dict[str, Any]], path: str, task: RowTask, data: DataConfig, seed: int) -> set[int]:
    """The indices of the training file's rows train holds out for validation (`data.validation_split` without a
    `data.validation` file): `load_splits`' `split_validation`, same seed and keys, on the rows' positions."""
    if not data.validation_split:
        return set()
    _, held, _ = split_validation(list(range(len(examples))), data.validation_split, seed,
                                  lambda j: task.stratify_key(examples[j]), lambda j: task.group_key(examples[j]),
                                  source=path,
                                  group_name=task.grouped_by)
    return set(held)


def _key_hashes(task: RowTask, examples: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct 64-bit hashes of the rows' exact and normalised duplicate keys (`Task.dedup_keys`). Counting
    hashes instead of holding every key string in two Counters and a set took this step's memory at 1 M SST-2 rows
    from +227 MB to +71 MB (the whole `data check`'s peak RSS: 1,415 → 1,256 MB). Python's string hash has 64 bits:
    two different keys share one with probability ~n²/2⁶⁵ (3 × 10⁻⁶ at 10 M rows), and every comparison is within
    this process, so the hash's per-process salt does not matter."""
    exact, normal = np.empty(len(examples), np.int64), np.empty(len(examples), np.int64)
    for i, ex in enumerate(examples):
        e, n = task.dedup_keys(ex)
        exact[i], normal[i] = hash(e), hash(n)
    return np.unique(exact), np.unique(normal)


def run_check(files: list[str], cfg: RunConfig | None, task_name: str | None, model: str | None,
              overrides: Overrides) -> dict[str, Any]:
    """`tunelab data check` / `tunelab.check_data`: the files (none: the run config's data files) checked as train
    reads them under the run config `cfg` (None: the --set values alone), `check_files`' report."""
    if cfg is None and not files:
        raise ConfigError(f"data check: give the files to check, or {option('--config RUN.yaml', 'config=RUN.yaml')}"
                          " (its data.train / validation / test)")
    if cfg is None:
        return check_files(files, task_name, model or "minilm", overrides)
    base, named, given, seed = config_base(cfg, task_name, bool(files))
    return check_files(files or named, task_name, model or given, overrides, base, seed)


def check_files(files: list[str], task_name: str | None, model: str, overrides: Overrides,
                base: dict[str, Any] | None = None, seed: int = SEED) -> dict[str, Any]:
    """Validate every file (first error raises) and summarise each, plus pairwise overlap. `task_name`: --task
    (None: `--set task=NAME`, else classification); `base`: a run config's settings under the --set values; `seed`:
    its train.seed (`--set train.seed=N` overrides it, `train_seed`). `refused` (only where a row is): train's line
    for the first row it refuses."""
    overrides, seed = train_seed(overrides, seed)
    task, data = _configs(task_name, overrides, base=base)
    hf_logging.set_verbosity_error()  # "sequence longer than the model" is what we measure, not a warning
    # the tokenizer the task encodes with (sft: its chat template), and the model's positions (train's check)
    tokenizer, (positions, learned), where = load_named(
        flag("model"), model, lambda where: (task.load_tokenizer(where), positions_at(where), where))
    report: dict[str, Any] = {"model": model, "max_length": data.max_length, "truncation": data.truncation,
                              "length_cap": task.length_cap(),
                              "files": {}, "overlap": []}
    keys: dict[str, np.ndarray] = {}
    # train holds rows of the training file out for validation where no file is one (the second is the config's test)
    holds_out = not data.validation and (len(files) == 1 or files[1] == data.test)
    train_labels: Counter[str] = Counter()
    # five steps a file (read, then labels and token lengths, advice, duplicates): a large file shows progress
    with Steps("data check", 5 * len(files), "steps", now=f"reading {files[0]}") as progress:
        read, removed = _read_files(files, task, data, lambda i, path: progress.update(i, now=f"reading {path}"))
        progress.update(len(files), now="labels")  # every file read (and cleaned / deduplicated as train does)
        for i, path in enumerate(files):
            examples, changed = read[i]
            _check_labels(task, examples, where, path, data, seed, i == 0 and holds_out)
            progress.update(len(files) + 4 * i + 1, now=f"token lengths of {len(examples):,} rows")
            chat: dict[str, Any] = {}
            if task.generates_replies:  # lengths as the chat template renders them, replies cut
                chat = _chat_lengths(task, examples, path, tokenizer)
                lengths = chat.pop("lengths")
                cut = chat.pop("refused_at")
                # the training file's remainder is encoded before its held-out rows (no data.validation file)
                held = _held_out(examples, path, task, data, seed) if cut and i == 0 and holds_out else set()
                # the first file's first, as train encodes them; no key where none is refused (as for every task)
                if cut and not report.get("refused") and (line := _refusal(task, examples, cut, held, tokenizer)):
                    report["refused"] = line
            else:  # untruncated model-input lengths (QA: over max_length = the context needs several windows)
                lengths = np.asarray(task.token_lengths(tokenizer, examples) or [0])
                if data.truncation == "sliding_window" and data.text_pair_field:  # what encoding would refuse
                    check_window_room(tokenizer, examples, data.max_length, data.window_stride, data.text_pair_field)
            task.check_positions(positions, learned, int(lengths.max()))  # as train does
            progress.update(len(files) + 4 * i + 2, now="tokenizer coverage, labels")
            labels = task.label_counts(examples)
            train_labels = labels if i == 0 else train_labels
            warnings = [w for w in (
                unknown_tokens(tokenizer, examples, task.example_text, model, task.length_cap()),
                look_alike_labels(labels),
                unseen_labels(labels, train_labels, files[0]) if i else None,
            ) if w] + (conversation_order(examples, path) if task.generates_replies else [])
            progress.update(len(files) + 4 * i + 3, now="duplicates")
            exact, normal = _key_hashes(task, examples)
            keys[path] = normal
            report["files"][path] = {
                "rows": removed[i][0],  # as read; what follows is of the rows data.clean / data.dedup leave
                **({"removed": removed[i][1], "rows_used": len(examples)} if removed[i][1] else {}),
                "labels": dict(labels.most_common()),
                # the shares' whole: the rows, or the spans counted (NER: entities, none or several a row)
                "labels_of": {"unit": task.label_spans or "rows",
                              "total": sum(labels.values()) if task.label_spans else len(examples)},
                "token_length": {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)}
                | {"max": int(lengths.max())},
                # rows whose length is counted from their first length_cap() characters, scaled (not exact)
                "token_length_estimated": sum(len(task.example_text(ex)) > task.length_cap() for ex in examples),
                "over_max_length": int((lengths > data.max_length).sum()),
                "truncation_rate": round(float((lengths > data.max_length).mean()), 4),
                # what becomes of those rows: cut, or (windows, blocks) read whole
                "over_max_length_is": ("split into windows, nothing cut" if data.truncation == "sliding_window"
                                       else task.over_length),
                "duplicates_exact": len(examples) - len(exact),
                "duplicates_normalised": len(examples) - len(normal),
                **({"changed_as_read": {k: n for k, (n, _) in changed.items()},
                    "changed_as_read_notes": [said for _, said in changed.values()]} if changed else {}),
                **chat,
                "warnings": warnings,
            }
            progress.update(len(files) + 4 * i + 4, now="-")
    for i, a in enumerate(files):
        for b in files[i + 1 :]:
            shared = np.intersect1d(keys[a], keys[b], assume_unique=True)
            report["overlap"].append({"a": a, "b": b, "shared_texts": len(shared)})
    return report


def _read_files(files: list[str], task: RowTask, data: DataConfig, reading: Callable[[int, str], None],
                ) -> tuple[list[tuple[Sequence[dict[str, Any]], dict[str, tuple[int, str]]]],
                           list[tuple[int, dict[str, int]]]]:
    """Each file's rows (and what reading changed) as train prepares its splits (data/load.py): parsed, cleaned by
    `data.clean` (length limits on the first file, the training one), deduplicated by `data.dedup` within each
    file and then across them (the first loses rows a later file has: train, validation, test), the same rows
    refused (no rows left, the training file's checks again). Also each file's (rows read, {reason: rows removed})."""
    names = [*SPLITS, *(f"file {n}" for n in range(len(SPLITS) + 1, len(files) + 1))][: len(files)]
    dropped = DataReport()
    read: list[tuple[Sequence[dict[str, Any]], dict[str, tuple[int, str]]]] = []
    for i, (path, split) in enumerate(zip(files, names, strict=True)):
        reading(i, path)
        # a large file is spilled as parsed, as train spills its training file (deduplicated: that one only)
        examples, changed = parse_cleaned(path, split, data, task, dropped, stream=i == 0 or not data.dedup)
        examples = deduplicated(examples, path, split, data, dropped)
        if i == 0:  # the first file is the training file: the checks train runs on it
            task.check_train(examples)
        read.append((examples, changed))
    if data.dedup and len(files) > 1:
        kept = dedup_across({split: rows for split, (rows, _) in zip(names, read, strict=True)}, dropped)
        for i, (path, split) in enumerate(zip(files, names, strict=True)):
            _check_left(kept[split], path, split, dropped)
            read[i] = (kept[split], read[i][1])
        task.check_train(read[0][0])
    read[0] = (without_digests(read[0][0]), read[0][1])
    counts = dropped.removed_counts()
    return read, [(dropped.rows_read.get(split, 0), counts.get(split, {})) for split in names]


def print_report(report: dict[str, Any]) -> None:
    """The report as tables on stdout; labels, texts and file names printed as written (`table_console`)."""
    console = table_console(sys.stdout)
    for path, r in report["files"].items():
        t = Table(title=f"{path}  ({report['model']}, max_length {report['max_length']})", show_header=False)
        t.add_row("rows", str(r["rows"]))
        if r.get("removed"):
            t.add_row("removed", f"{sum(r['removed'].values())} by data.clean / data.dedup, as train drops them ("
                      + ", ".join(f"{k}: {v}" for k, v in r["removed"].items()) + f"); {r['rows_used']} rows left")
        if r["labels"]:
            whole = r["labels_of"]
            of = "" if whole["unit"] == "rows" else f" — % of all {whole['unit']} ({whole['total']})"
            t.add_row("labels", ", ".join(f"{k}: {v} ({100 * v / whole['total']:.1f}%)"
                                          for k, v in r["labels"].items()) + of)
        if "turns" in r:  # sft
            t.add_row("turns", ", ".join(f"{k}: {v}" for k, v in r["turns"].items()))
            t.add_row("assistant tokens", "  ".join(f"{k} {v}" for k, v in r["assistant_tokens"].items()))
            cut, partly = r["replies_fully_cut"], r["replies_partly_cut"]
            where = ", ".join(cut[:3]) + (" ..." if len(cut) > 3 else "")
            saves = r.get("head_tail_would_keep", 0)
            out = (f"; data.truncation: head+tail, which cuts the middle of their prompt, would keep {saves} of them"
                   if saves else "")
            t.add_row("replies cut", f"{partly} partly; {len(cut)} entirely (training refuses these: {where}{out})"
                      if cut else f"{partly} partly, none entirely")
            if r.get("prompts_middle_cut"):
                t.add_row("prompts cut", f"{r['prompts_middle_cut']} lose the middle of a prompt message "
                          f"(data.truncation: {report['truncation']})")
        t.add_row("token length", "  ".join(f"{k} {v}" for k, v in r["token_length"].items()) + (
            f"  ({r['token_length_estimated']} row(s) of over {report['length_cap']:,} characters: estimated from "
            "their head)" if r.get("token_length_estimated") else ""))
        t.add_row("over max_length", f"{r['over_max_length']} ({100 * r['truncation_rate']:.2f}%: "
                                     f"{r['over_max_length_is']})")
        t.add_row("duplicates",
                  f"{r['duplicates_exact']} exact, {r['duplicates_normalised']} after case/space normalisation")
        if r.get("changed_as_read_notes"):
            t.add_row("changed as read", "; ".join(r["changed_as_read_notes"]))
        console.print(t)
        for w in r["warnings"]:
            console.print(Text.assemble(("warning", "yellow"), f": {path}: {w}"), highlight=False)
    for o in report["overlap"]:
        console.print(f"overlap {o['a']} ↔ {o['b']}: {o['shared_texts']} shared texts (normalised)")
