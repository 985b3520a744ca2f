"""What to say after `KEY: unknown key`: the name tunelab gives a setting that HF Trainer, PEFT, LLaMA-Factory or
Axolotl users write under their own (`learning_rate` → `train.lr`), a near spelling of a key of the same section
(`train.epoch` → `train.epochs`), the section a key belongs to (`train.max_length` → `data.max_length`), or the
methods / tasks whose section holds it (`r` under `method: {name: freeze}`: a key of lora, dora, qlora).

The keys are read from the config classes themselves (pydantic fields, through the task / method unions), so a new
field is suggested without a change here; only the peers' names are a table.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Union

from pydantic import BaseModel

# other tools' names → tunelab's key (the value is said as written: a key, or a key with the value that does it)
PEER_NAMES: dict[str, str] = {
    # HF TrainingArguments (and TRL's SFTConfig)
    "learning_rate": "train.lr", "num_train_epochs": "train.epochs", "per_device_train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "train.eval_batch_size", "gradient_accumulation_steps": "train.grad_accum",
    "warmup_ratio": "train.warmup", "warmup_steps": "train.warmup", "lr_scheduler_type": "train.scheduler",
    "logging_steps": "train.log_steps", "metric_for_best_model": "train.best_metric",
    "load_best_model_at_end": "train.select_best", "early_stopping_patience": "train.early_stopping.patience",
    "label_smoothing_factor": "train.label_smoothing", "optim": "train.optimizer", "bf16": "train.precision: bf16",
    "fp16": "train.precision: fp16", "eval_strategy": "train.eval_steps (default: once an epoch)",
    "evaluation_strategy": "train.eval_steps (default: once an epoch)",
    "save_strategy": "train.save_steps (default: once an epoch)", "max_seq_length": "data.max_length",
    "dataset_text_field": "data.text_field", "resume_from_checkpoint": "the --resume option of tunelab train",
    "deepspeed": "train.distributed: {strategy: deepspeed}", "fsdp": "train.distributed: {strategy: fsdp}",
    "model_name_or_path": "model", "neftune_noise_alpha": "train.neftune_alpha",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "disable_gradient_checkpointing": "train.gradient_checkpointing: false",
    # LLaMA-Factory
    "cutoff_len": "data.max_length", "dataset": "data.train", "eval_dataset": "data.validation",
    "val_size": "data.validation_split", "finetuning_type": "method.name", "stage": "task",
    "lora_rank": "method.r", "lora_target": "method.target_modules", "template": "task.template (task sft)",
    "freeze_trainable_layers": "method.k", "use_dora": "method.name: dora", "quantization_bit": "method.name: qlora",
    "packing": "task.packing (task sft)",
    # PEFT's LoraConfig / Axolotl
    "lora_r": "method.r", "lora_alpha": "method.alpha", "lora_dropout": "method.dropout",
    "lora_target_modules": "method.target_modules", "base_model": "model", "sequence_len": "data.max_length",
    "val_set_size": "data.validation_split", "num_epochs": "train.epochs", "micro_batch_size": "train.batch_size",
    "lr_scheduler": "train.scheduler", "sample_packing": "task.packing (task sft)", "adapter": "method.name",
    # HF's example scripts
    "mlm_probability": "task.mlm_probability (task pretrain)",
    "label": "data.label_field", "train_file": "data.train", "validation_file": "data.validation",
    "test_file": "data.test", "text_column": "data.text_field", "label_column": "data.label_field",
    "text_column_name": "data.text_field", "label_column_name": "data.label_field",
}

# other tools' keys that no tunelab setting holds: why (`tunelab config import` says each as not carried)
NOT_CARRIED: dict[str, str] = {
    "do_train": "tunelab train trains", "do_eval": "tunelab train scores the validation split as it trains",
    "do_predict": "tunelab predict does", "plot_loss": "RUN/report.html draws the loss curve",
    "overwrite_output_dir": "the --overwrite option of tunelab train",
    "overwrite_cache": "tunelab's feature cache knows the data and settings it was made from",
    "ddp_timeout": "no tunelab setting", "preprocessing_num_workers": "tunelab reads rows in its own process",
    "dataloader_num_workers": "no tunelab setting", "save_only_model": "tunelab's checkpoints keep what --resume needs",
    "trust_remote_code": "tunelab loads a model's own transformers classes only",
    "flash_attn": "tunelab picks the attention kernel (sdpa)", "max_samples": "tunelab trains on every "
    "row of data.train: cut the file to train on fewer", "template": "tunelab renders with the model's own chat "
    "template; task.template chatml or gemma for a model without one", "logging_dir": "tunelab logs into the run "
    "directory", "run_name": "the run directory names the run", "push_to_hub": "no tunelab setting",
    "gradient_checkpointing_kwargs": "tunelab checkpoints non-reentrant (use_reentrant: false): the same gradients",
    "use_reentrant_gc": "tunelab checkpoints non-reentrant (use_reentrant: false): the same gradients",
    "use_unsloth_gc": "no tunelab setting: train.gradient_checkpointing keeps layer inputs where the model is",
    "interleave_probs": "read with mix_strategy interleave_* only; tunelab joins datasets one after another",
    # LLaMA-Factory's (hparams/finetuning_args.py, model_args.py, data_args.py)
    "quantization_method": "tunelab's qlora quantizes with bitsandbytes, 4-bit NF4",
    "freeze_trainable_modules": "tunelab's freeze trains every module of the top method.k layers",
    "freeze_extra_modules": "tunelab's freeze trains the top method.k layers, the head and the final norm only",
    "pure_bf16": "tunelab's train.precision bf16 is autocast over fp32 weights, not bf16 weights",
    "use_rslora": "tunelab's LoRA scales by alpha / r (rsLoRA's alpha / sqrt(r) trains differently): set "
    "method.alpha to carry the scale", "train_on_prompt": "tunelab trains on the replies only (loss on the prompt "
    "trains differently)", "mask_history": "tunelab trains every reply of a conversation, history's too (LLaMA-"
    "Factory's mask_history trains the last only)", "additional_target": "no tunelab setting: LoRA adapts "
    "method.target_modules", "lora_bias": "no tunelab setting: LoRA's bias stays frozen",
    "pissa_init": "no tunelab setting: LoRA starts from peft's default init",
    "loraplus_lr_ratio": "no tunelab setting: LoRA's A and B train at train.lr", "use_unsloth": "no tunelab setting",
    "upcast_layernorm": "no tunelab setting",
    "enable_liger_kernel": "no tunelab setting", "use_cache": "no tunelab setting",
    "neat_packing": "no tunelab setting: task.packing packs rows without it", "tokenized_path": "tunelab's feature "
    "cache knows the data and settings it was made from", "streaming": "tunelab reads every row of data.train",
    "cache_dir": "transformers' cache (HF_HOME)", "print_param_status": "tunelab train says the trainable "
    "parameters", "hub_token": "no tunelab setting", "local_rank": "tunelab train --nproc starts the processes",
}


def _models(annotation: Any) -> tuple[list[type[BaseModel]], bool]:
    """The config classes an annotation holds (through Optional / Union / Annotated), and whether a dict's key comes
    before them in a location (`search.space.NAME.type`)."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], False
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if origin is dict:
        return _models(typing.get_args(annotation)[1])[0], True
    if origin in (Union, types.UnionType):
        out: list[type[BaseModel]] = []
        keyed = False
        for arg in typing.get_args(annotation):
            found, k = _models(arg)
            out += found
            keyed |= k
        return out, keyed
    return [], False


def _tag(model: type[BaseModel]) -> str | None:
    """A task / method config's name (its `name: Literal[...]`)."""
    field = model.model_fields.get("name")
    args = typing.get_args(field.annotation) if field is not None else ()
    return args[0] if field is not None and typing.get_origin(field.annotation) is Literal and args else None


def _section(root: type[BaseModel], loc: Sequence[str]) -> type[BaseModel] | None:
    """The config class at pydantic's location `loc` (which holds a union's tag and a dict's key), or None."""
    model, i = root, 0
    while i < len(loc):
        field = model.model_fields.get(loc[i])
        if field is None:
            return None
        found, keyed = _models(field.annotation)
        i += 1 + keyed
        if len(found) > 1:  # a tagged union: the tag comes next
            model = next((m for m in found if i < len(loc) and _tag(m) == loc[i]), None)  # type: ignore[assignment]
            i += 1
        else:
            model = found[0] if found else None  # type: ignore[assignment]
        if model is None:
            return None
    return model


def _paths(model: type[BaseModel], prefix: str = "", tag: str | None = None) -> Iterator[tuple[str, str | None]]:
    """Every key below `model` as a dotted path, with the task / method name whose section holds it."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, tag
        found, _ = _models(field.annotation)
        for sub in found:
            yield from _paths(sub, path + ".", _tag(sub) if len(found) > 1 else tag)


def unknown_key_hint(root: type[BaseModel], loc: Sequence[Any], shown: str, prefix: str = "") -> str:
    """What to add to `SHOWN: unknown key` for pydantic's location `loc` of it below `root` (`prefix`: the path of
    `root` in the whole config, for a section checked alone); "" when there is nothing likely to say."""
    leaf = str(loc[-1])
    if (why := NOT_CARRIED.get(leaf.lower())) is not None:
        return f"; not a tunelab setting: {why}"
    if (peer := PEER_NAMES.get(leaf.lower())) is not None and peer.partition(" ")[0] != shown:
        return f"; tunelab's name for it is {peer}"
    section = _section(root, [str(p) for p in loc[:-1]])
    where = shown.rpartition(".")[0]
    if section is not None and (near := difflib.get_close_matches(leaf, list(section.model_fields), 1, 0.7)):
        return f"; did you mean {where + '.' if where else ''}{near[0]}?"
    every = list(_paths(root, prefix + "." if prefix else ""))
    holders = list(dict.fromkeys(t for p, t in every if p == shown and t is not None))
    if holders:  # a key of another method / task (`r`, `alpha` of a freeze method: not distill.alpha)
        return f"; {leaf} is a key of {shown.partition('.')[0]} {', '.join(holders)}"
    same = [(p, t) for p, t in every if p.rpartition(".")[2] == leaf and p != shown]
    if elsewhere := list(dict.fromkeys(p for p, t in same if t is None)):  # (before a key of one task or method)
        return f"; did you mean {' or '.join(elsewhere)}?"
    if elsewhere := list(dict.fromkeys(f"{p} ({p.partition('.')[0]} {t})" for p, t in same)):
        return f"; did you mean {' or '.join(elsewhere)}?"
    leaves = {p.rpartition(".")[2]: p for p, t in every if t is None}
    if near := difflib.get_close_matches(leaf, list(leaves), 1, 0.85):
        return f"; did you mean {leaves[near[0]]}?"
    if near := difflib.get_close_matches(leaf.lower(), list(PEER_NAMES), 1, 0.85):  # (`lerning_rate`)
        return f"; did you mean {near[0]}? tunelab's name for it is {PEER_NAMES[near[0]]}"
    return ""
