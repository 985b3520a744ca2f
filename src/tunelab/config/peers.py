"""`tunelab config import`: a LLaMA-Factory training YAML (`llamafactory-cli train x.yaml`), or the keys of HF
`TrainingArguments` in a JSON / YAML file, as a tunelab config.

Each key is read by the one table of other tools' names (config/suggest.py `PEER_NAMES`: `learning_rate` →
`train.lr`; a key tunelab's train section names alike, `seed`, `max_steps`, `train.seed`) and written as tunelab's
key; a key no tunelab setting holds (`do_train`, `plot_loss`) is said as
`not carried: KEY (why)` (suggest.py `NOT_CARRIED`), and a key neither table knows as one line naming it, never
dropped silently. `dataset` is looked up in `dataset_dir/dataset_info.json` (LLaMA-Factory's registry): its
`file_name` becomes `data.train` (`eval_dataset`: `data.validation`; several, `a,b`: the file their rows are joined
into, config/peer_data.py), and its `formatting` / `columns` / `tags` the
settings of the task that reads them (`Task.peer_dataset`, a hook: the sft task's row formats); a registry entry
the task cannot read as written is refused in one line naming dataset_info.json, the line and the key. `optim` and
AdamW's `adam_*` keys are read by config/peer_optim.py's tables (8-bit / paged AdamW: adamw, said);
`gradient_checkpointing` / `disable_gradient_checkpointing` by config/peer_recompute.py (LLaMA-Factory's default: on).
LLaMA-Factory's own defaults are written where tunelab's differ: no validation hold-out without `val_size`
(tunelab holds out 0.1), LoRA rank 8, alpha twice the rank, dropout 0, every linear layer; `cutoff_len` 2048,
`learning_rate` 5e-5 (HF's), `per_device_train_batch_size` 8 (`DEFAULTS`, each said as `not set: KEY`). HF's
"not set" values are read as absent (`max_steps: -1`, `fsdp: ""` / `[]`, `deepspeed: ""`, `warmup_steps: 0`
beside `warmup_ratio`: HF's rule, warmup_steps above 0 wins).

The config is validated (`build_config`) as it will be read back before it is written; an error of a value is
said at the peer file's key and line (`x.yaml:14: lr_scheduler_type: ... (tunelab's train.scheduler)`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.fields import yaml_text, yaml_value
from tunelab.config.located import key_lines
from tunelab.config.peer_data import Joined, read_datasets
from tunelab.config.peer_kinds import refuse_other_kind
from tunelab.config.peer_optim import ADAM, SWITCHES, carry_adam, read_optim, read_switch
from tunelab.config.peer_recompute import read_recompute
from tunelab.config.run import build_config, read_config_file
from tunelab.config.sections import TrainConfig
from tunelab.config.suggest import NOT_CARRIED, PEER_NAMES
from tunelab.errors import ConfigError
from tunelab.registry import TASKS

METHODS = {"lora": "lora", "full": "full", "freeze": "freeze"}  # finetuning_type → method.name
TRACKERS = ("tensorboard", "mlflow", "wandb")  # report_to values tunelab writes to
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")
METHOD_KEYS = {"lora": LORA_KEYS, "dora": LORA_KEYS, "qlora": LORA_KEYS, "freeze": ("k",), "full": ()}
# LLaMA-Factory's (HF's) defaults where tunelab's differ: the key, tunelab's, the value (num_train_epochs: 3, alike)
DEFAULTS = (("cutoff_len", "data.max_length", 2048), ("learning_rate", "train.lr", 5e-5),
            ("per_device_train_batch_size", "train.batch_size", 8))
# keys of LLaMA-Factory's alone: a file without `stage` that has one is LLaMA-Factory's (stage sft, its default);
# one with none is HF TrainingArguments, which names no task (--task)
LF_KEYS = frozenset(("dataset", "eval_dataset", "dataset_dir", "template", "finetuning_type", "cutoff_len",
                     "lora_target", "lora_rank", "disable_gradient_checkpointing"))
FILES = {"data.train": "--train", "data.validation": "--validation"}  # the data files given beside the file
_KEY = re.compile(r"([a-z_]+(?:\.[a-z_]+)*)(?: \(task \w+\))?")  # a PEER_NAMES value that is a key alone


@dataclass
class Imported:
    """The tunelab config (as written), the lines said on stderr, and the config's text; the files to write the rows
    of several datasets into before it (`joins`), and the task whose `peer_row` hook converts them."""

    tree: dict[str, Any]
    notes: list[str]
    text: str
    joins: list[Joined] = field(default_factory=list)
    task: type[Any] | None = None


@dataclass
class _Peer:
    path: Path
    raw: dict[str, Any]
    lines: dict[str, int]
    tree: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # tunelab key → the peer key it came from
    notes: list[str] = field(default_factory=list)
    later: dict[str, Any] = field(default_factory=dict)  # keys read once all are (stage, dataset, finetuning_type)

    def where(self, key: str, path: Path | None = None, lines: dict[str, int] | None = None) -> str:
        line = (self.lines if lines is None else lines).get(key)
        return f"{path or self.path}:{line}" if line else str(path or self.path)

    def refuse(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {key}: {why}")

    def set(self, dotted: str, value: Any, src: str) -> None:
        node = self.tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        self.origin[dotted] = src

    def skip(self, key: str, why: str) -> None:
        self.notes.append(f"not carried: {key} ({why})")


def _later(p: _Peer, key: str, value: Any) -> None:
    p.later[key] = value


def _precision(p: _Peer, key: str, value: Any) -> None:
    if value is True:
        p.set("train.precision", key, key)
    else:
        p.skip(key, f"{value!r}: tunelab's train.precision auto picks")


def _report_to(p: _Peer, key: str, value: Any) -> None:
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else [value]
    kept = [n for n in names if n in TRACKERS]
    if kept:
        p.set("train.report_to", kept, key)
    for n in names:
        if n not in TRACKERS and n != "none":
            p.skip(f"{key}: {n}", f"tunelab writes to {', '.join(TRACKERS)} only")


def _val_size(p: _Peer, key: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        raise p.refuse(key, f"{value} rows: tunelab holds out a fraction of data.train (data.validation_split, "
                       "below 1); write the fraction, or register the rows as eval_dataset")
    p.set("data.validation_split", value, key)


def _strategy(p: _Peer, key: str, value: Any) -> None:
    """eval_strategy / save_strategy: steps (with eval_steps / save_steps) and epoch are what tunelab does; a
    save_strategy of no is train.save_steps: 0 (no checkpoints)."""
    if key == "save_strategy" and value == "no":
        p.set("train.save_steps", 0, key)
    elif value not in ("steps", "epoch"):
        p.skip(key, f"{value}: tunelab scores the validation split once an epoch, or every train.eval_steps")


def _distributed(p: _Peer, key: str, value: Any) -> None:
    """deepspeed (its JSON file: ZeRO stage 2 / 3, offload) or fsdp → train.distributed; an empty one (HF's `fsdp: ""`
    / `[]`, `deepspeed: ""`) is not set."""
    if not value:
        return
    if key == "fsdp":
        p.set("train.distributed", {"strategy": "fsdp"}, key)
        return
    setting: dict[str, Any] = {"strategy": "deepspeed"}
    try:
        zero = json.loads(Path(value).read_text(encoding="utf-8")).get("zero_optimization", {})
    except (OSError, ValueError, AttributeError, TypeError):
        p.skip(f"{key}: {value}", "not read here: zero_stage and offload left at tunelab's defaults")
        zero = {}
    if zero.get("stage") in (2, 3):
        setting["zero_stage"] = zero["stage"]
    if any((zero.get(k) or {}).get("device") == "cpu" for k in ("offload_optimizer", "offload_param")):
        setting["offload"] = True
    p.set("train.distributed", setting, key)


def _lora_target(p: _Peer, key: str, value: Any) -> None:
    p.set("method.target_modules", "all-linear" if value == "all" else value, key)


SPECIAL = {"stage": _later, "warmup_ratio": _later, "warmup_steps": _later,
           "finetuning_type": _later, "use_dora": _later, "quantization_bit": _later,
           "gradient_checkpointing": _later, "disable_gradient_checkpointing": _later,
           "dataset": _later, "eval_dataset": _later, "dataset_dir": _later, "mix_strategy": _later,
           "bf16": _precision, "fp16": _precision, "report_to": _report_to, "val_size": _val_size,
           "eval_strategy": _strategy, "evaluation_strategy": _strategy, "save_strategy": _strategy,
           "optim": read_optim, "deepspeed": _distributed, "fsdp": _distributed, "lora_target": _lora_target,
           "output_dir": lambda p, k, v: p.set(k, v, k), **dict.fromkeys(ADAM, _later),
           **dict.fromkeys(SWITCHES, read_switch)}


def _read_keys(p: _Peer) -> None:
    for key, value in p.raw.items():
        if key == "max_steps" and type(value) is float and value.is_integer():  # (10.0: 10 steps, as HF reads it)
            value = int(value)
        if value is None or (key == "max_steps" and type(value) is int and value <= 0):  # (HF's "not set")
            continue
        target = _KEY.fullmatch(PEER_NAMES.get(key, "-"))
        if key in SPECIAL:
            SPECIAL[key](p, key, value)
        elif key in NOT_CARRIED:
            p.skip(key, NOT_CARRIED[key])
        elif target is not None:  # (a data file named by the file: absolute, as --train's; a hub id as it is)
            local = target[1] in ("data.train", "data.validation", "data.test") and isinstance(value, str) \
                and not value.startswith("hf:")
            p.set(target[1], os.path.abspath(os.path.expanduser(value)) if local else value, key)
        elif key in TrainConfig.model_fields:  # (HF's and tunelab's name alike: seed, max_steps, eval_steps, ...)
            p.set(f"train.{key}", value, key)
        elif key in PEER_NAMES:
            p.skip(key, f"tunelab's {PEER_NAMES[key]}")
        else:
            p.notes.append(f"not carried: {key} ({_unread(key)})")


def _unread(key: str) -> str:
    """Why a key of no table is not carried: an HF Trainer argument tunelab has no setting for (torch_compile, ...), or
    a key it does not know — a LLaMA-Factory one among them (use_galore, ...): either may change training."""
    from transformers import Seq2SeqTrainingArguments

    if key in Seq2SeqTrainingArguments.__dataclass_fields__:
        return "an HF Trainer argument tunelab has no setting for: the run trains without it"
    return "a key tunelab does not read: the run trains without it"


def _known(key: str) -> bool:
    """Whether import reads or says `key` (a LLaMA-Factory / HF Trainer key of its tables)."""
    return key in SPECIAL or key in NOT_CARRIED or key in PEER_NAMES or key in TrainConfig.model_fields


def _task(p: _Peer, named: str | None) -> type[Any]:
    """The task: LLaMA-Factory's `stage` (sft where a LLaMA-Factory file has none), else `--task` (`named`); the
    settings the stage implies (`Task.peer_task`); a setting of another task the file names (packing) said as not
    carried (`Task.peer_said`)."""
    if named is not None and named not in TASKS.names():
        raise ConfigError(f"--task: {named!r} is not a tunelab task; choose one of {', '.join(TASKS.names())}")
    if "stage" not in p.later and named is None and not LF_KEYS & set(p.raw):
        raise ConfigError(f"{p.path}: names no task (no LLaMA-Factory stage: HF TrainingArguments?): pass --task "
                          f"{' | '.join(TASKS.names())}")
    if "stage" in p.later or named is None:
        stage = p.later.get("stage", "sft")  # (LLaMA-Factory's default)
        if "stage" not in p.later:
            p.notes.append("not set: stage (LLaMA-Factory's default, sft, written: task sft)")
        found = [cls for _, cls in TASKS.items() if cls.peer_stage == stage]
        if not found:
            stages = sorted(cls.peer_stage for _, cls in TASKS.items() if cls.peer_stage)
            raise p.refuse("stage", f"{stage}: not carried: tunelab imports stage {', '.join(stages)}")
        task = found[0]
    else:
        task = TASKS.get(named)
    name = task.Config.model_fields["name"].default
    if named is not None and named != name:
        raise p.refuse("stage", f"{p.later['stage']} is tunelab's task {name}, and --task names {named}: drop --task "
                       "(the file's stage decides), or change stage")
    p.tree["task"] = {"name": name, **p.tree.get("task", {})}
    p.origin["task"] = "--task" if named and "stage" not in p.later else "stage"
    if p.origin["task"] == "stage":  # (what the stage implies: LLaMA-Factory's pt is clm; --task pretrain: auto)
        for dotted, value in task.peer_task.items():
            p.set(dotted, value, p.origin["task"])
    for was, now in task.peer_renamed.items():  # (the data setting this task reads by another key)
        if was in p.origin:
            section, _, leaf = was.partition(".")
            p.set(now, p.tree[section].pop(leaf), p.origin.pop(was))
    for dotted in [d for d in p.origin if d.startswith("task.") and d[5:] not in task.Config.model_fields]:
        del p.tree["task"][dotted[5:]]
        p.skip(p.origin.pop(dotted), task.peer_said.get(dotted, f"tunelab's {dotted} is not a setting of task {name}"))
    return task


def _files(p: _Peer, files: dict[str, Path]) -> None:
    """--train / --validation: data.train / data.validation (absolute: the config is run from anywhere), in place of
    the file's train_file / validation_file (said); beside a LLaMA-Factory dataset, refused."""
    for target, path in files.items():
        flag = FILES[target]
        key = "dataset" if target == "data.train" else "eval_dataset"
        if key in p.later:
            raise p.refuse(key, f"and {flag} {path} both name the data; drop one")
        if not path.exists():
            raise ConfigError(f"{flag}: {path} not found")
        if target in p.origin:
            p.skip(p.origin[target], f"{flag} {path} given")
        p.set(target, str(Path(os.path.abspath(path))), flag)


def _method(p: _Peer) -> None:
    lf = bool(LF_KEYS & set(p.raw) or "stage" in p.later)
    kind = p.later.get("finetuning_type", "lora" if lf else "full")  # (LLaMA-Factory's default; HF's Trainer: full)
    if "finetuning_type" not in p.later:
        p.notes.append("not set: finetuning_type (LLaMA-Factory's default, lora, written: method lora)" if lf else
                       "not set: method (HF's Trainer trains every weight, written: method full)")
    if kind not in METHODS:
        raise p.refuse("finetuning_type", f"{kind}: not carried: tunelab imports {', '.join(METHODS)}")
    name, bits = METHODS[kind], p.later.get("quantization_bit")
    if bits is not None and name != "lora":  # (LLaMA-Factory refuses it too)
        raise p.refuse("quantization_bit", f"{bits} with finetuning_type {kind}: tunelab quantizes the base model of "
                       "LoRA only (method qlora); drop quantization_bit, or use finetuning_type lora")
    if bits is not None and bits != 4:
        raise p.refuse("quantization_bit", f"{bits}: tunelab's qlora quantizes to 4 bits (NF4) only; write 4, or "
                       "drop it for LoRA on the unquantized model")
    if bits is not None and p.later.get("use_dora"):
        raise p.refuse("use_dora", "with quantization_bit: tunelab's dora does not quantize the base model, and its "
                       "qlora is LoRA; drop one")
    if name == "lora" and p.later.get("use_dora"):
        name = "dora"
    elif bits is not None:
        name = "qlora"
        p.notes.append("note: method qlora trains on a CUDA GPU with bitsandbytes only (pip install 'tunelab[qlora]')")
    p.set("method.name", name, "quantization_bit" if name == "qlora" else "finetuning_type")
    if name != "lora" and "use_dora" in p.later and name != "dora":
        p.skip("use_dora", f"only with finetuning_type lora (method {name})")
    method = p.tree["method"]
    if name in ("lora", "dora", "qlora"):  # LLaMA-Factory's LoRA defaults, where tunelab's differ
        method.setdefault("r", 8)
        method.setdefault("alpha", 2 * method["r"] if isinstance(method["r"], int) else 16)
        method.setdefault("dropout", 0.0)
        method.setdefault("target_modules", "all-linear")
    for key in [k for k in method if k != "name" and k not in METHOD_KEYS[name]]:  # (another method's setting)
        p.skip(p.origin.pop(f"method.{key}"), f"a {'freeze' if key == 'k' else 'LoRA'} setting; method {name}")
        del method[key]
    k = method.get("k")
    if type(k) is int and k < 0:  # (LLaMA-Factory: the first -k layers train)
        raise p.refuse(p.origin["method.k"], f"{k}: LLaMA-Factory trains the first {-k} layers (a count below 0); "
                       "tunelab's freeze trains the top method.k layers (and the head) only; write a count above 0")


def _warmup(p: _Peer) -> None:
    """HF's rule: warmup_steps above 0 wins, else warmup_ratio (tunelab's train.warmup reads either: a fraction below
    1, else steps). A warmup_ratio of 1 (every step warms up), which tunelab would read as one step, is written as the
    file's max_steps, or refused where the file gives none to count by; one above 1 is refused, as HF refuses it."""
    steps, ratio = p.later.get("warmup_steps"), p.later.get("warmup_ratio")
    if steps is not None and (not isinstance(steps, int | float) or isinstance(steps, bool) or steps > 0):
        p.set("train.warmup", steps, "warmup_steps")
    elif isinstance(ratio, int | float) and not isinstance(ratio, bool) and ratio >= 1:
        if ratio > 1:
            raise p.refuse("warmup_ratio", f"{ratio}: a fraction of the training steps, 0 to 1 (HF's Trainer "
                           "refuses it too)")
        total = p.tree.get("train", {}).get("max_steps")
        if type(total) is float:  # (a whole number was read as an int: _read_keys)
            raise p.refuse("max_steps", f"{total} is not a whole number (a count of optimizer steps)")
        if type(total) is not int or total < 1:
            raise p.refuse("warmup_ratio", f"{ratio}: every step warms up, and tunelab's train.warmup reads 1 and "
                           "above as a step count (1.0: one step); the file gives no max_steps to count them by: "
                           "set max_steps, or write warmup_ratio below 1")
        p.set("train.warmup", total, "warmup_ratio")
        p.notes.append(f"note: warmup_ratio {ratio} (every step warms up) written as train.warmup {total}, max_steps "
                       "(tunelab reads a warmup of 1 and above as a step count)")
    elif ratio is not None:
        p.set("train.warmup", ratio, "warmup_ratio")


def _defaults(p: _Peer) -> None:
    """LLaMA-Factory's (HF's) defaults where tunelab's differ, written and said; per_device_train_batch_size said as
    per device where the config is for several GPUs."""
    lf = bool(LF_KEYS & set(p.raw) or "stage" in p.later)
    for key, dotted, value in DEFAULTS:
        if dotted not in p.origin and (lf or key != "cutoff_len"):  # (HF's Trainer has no length: tunelab's)
            p.set(dotted, value, key)
            whose = "LLaMA-Factory's" if lf else "HF Trainer's"
            p.notes.append(f"not set: {key} ({whose} default, {value}, written: {dotted} {value})")
    read_recompute(p, lf)  # (LLaMA-Factory's default: on)
    if "train.distributed" in p.origin:
        p.notes.append(f"note: {p.origin['train.batch_size']} {p.tree['train']['batch_size']} is per GPU; tunelab's "
                       "train.batch_size is over all processes: multiply it by the number of GPUs")


def import_peer(path: str | Path, join_to: dict[str, Path] | None = None, task: str | None = None,
                files: dict[str, Path] | None = None) -> Imported:
    """The tunelab config of a LLaMA-Factory / HF Trainer file, validated; the lines to say beside it. Several
    datasets of `dataset` (`eval_dataset`) are to be joined into `join_to["data.train"]` (`["data.validation"]`;
    default: beside the file, FILE.tunelab.train.jsonl), the `joins` returned. `task`: the task of a file without
    LLaMA-Factory's `stage` (--task); `files`: data.train / data.validation given beside it (--train, --validation)."""
    path = Path(path)
    if join_to is None:
        join_to = {t: path.with_name(f"{path.stem}.tunelab.{t.split('.')[1]}.jsonl")
                   for t in ("data.train", "data.validation")}
    raw = read_config_file(path)  # (not YAML / JSON, not UTF-8: one line naming the file and line)
    p = _Peer(path, raw, key_lines(path))
    refuse_other_kind(path, raw, p.lines, _known, LF_KEYS)  # (an accelerate / chat / export config: one line)
    _read_keys(p)
    carry_adam(p)  # (once optim is read: AdamW's betas and epsilon beside AdamW only)
    found = _task(p, task)
    _method(p)
    _warmup(p)
    _defaults(p)
    _files(p, files or {})
    joins = read_datasets(p, found, join_to)
    if "model" not in p.tree:
        raise p.refuse("model_name_or_path", "missing: the model to tune (an alias, a local directory, a hub id)")
    order = ("task", "model", "method", "output_dir", "data", "train")  # (as tunelab's own configs read)
    p.tree = {k: p.tree[k] for k in sorted(p.tree, key=lambda k: order.index(k) if k in order else len(order))}
    p.tree["method"] = {"name": p.tree["method"].pop("name"), **p.tree["method"]}
    text = f"# imported from {path} by tunelab config import\n" + yaml_text(p.tree)
    try:
        build_config(yaml_value(text), here=False)  # as `tunelab train` will read it (where it trains)
    except ConfigError as exc:
        raise _located(p, exc) from None
    return Imported(p.tree, p.notes, text, joins, found)


def _located(p: _Peer, exc: ConfigError) -> ConfigError:
    """A config error of a key the peer file gave, at that key of the file (`x.yaml:9: optim: ...`)."""
    m = re.match(r"config: ([\w.]+): (.*)", str(exc))
    if m is None:
        return exc
    parts = m[1].split(".")
    dotted = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in p.origin),
                  f"{m[1]}.name" if f"{m[1]}.name" in p.origin else None)  # (`method: ...`: where its name came from)
    if dotted is None:
        return exc
    src = p.origin[dotted]
    return ConfigError(f"{p.where(src)}: {src}: {m[2]} (tunelab's {m[1]})")

