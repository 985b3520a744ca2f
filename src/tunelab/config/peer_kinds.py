"""What kind of file `tunelab config import` was given, before any key is read (config/peers.py): LLaMA-Factory's
`examples/` folder holds beside its training YAMLs files that train nothing, and each is refused in one line naming
the key that tells it, what the file is and the tunelab command that does its work — rather than imported as an
sft run with no data (a chat or export config), or told to pass --task (an accelerate config):

- an accelerate config (`compute_environment` / `distributed_type`: `accelerate launch --config_file`);
- a LLaMA-Factory v1 config (`model:` with `train_dataset` / `peft_config` / `model_class` ...: `USE_V1=1`), whose
  keys and dataset files are not the v0 training YAML's that import reads;
- an export config (`export_dir`: `llamafactory-cli export`, merges or quantizes a model);
- a prediction config (a LLaMA-Factory file, one with `stage` or a key of its alone, with `do_predict: true`
  without `do_train`: LLaMA-Factory predicts and trains nothing; an HF TrainingArguments dump's `do_predict` is
  a flag for HF's example scripts, and the file imports);
- a chat config (`infer_backend` without `do_train` / `dataset`: `llamafactory-cli chat / api / webchat`);
- a file none of whose keys is a training setting (a tokens map, ...)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError

ACCELERATE = ("distributed_type", "compute_environment")
V1 = ("train_dataset", "peft_config", "model_class", "dist_config", "kernel_config", "micro_batch_size",
      "quant_config", "sample_backend")
TRAINS = "tunelab config import reads training configs (llamafactory-cli train FILE, or HF TrainingArguments)"


def refuse_other_kind(path: Path, raw: dict[str, Any], lines: dict[str, int], known: Callable[[str], bool],
                      lf_keys: Collection[str]) -> None:
    """A ConfigError (file:line: key: what the file is) where `raw` is not a training config; `known`: whether a key
    is one import reads or says (a LLaMA-Factory / HF Trainer key); `lf_keys`: the keys of LLaMA-Factory's alone."""

    def refuse(key: str, why: str) -> ConfigError:
        line = lines.get(key)
        return ConfigError(f"{path}:{line}: {key}: {why}" if line else f"{path}: {key}: {why}")

    trains = raw.get("do_train") is True or "dataset" in raw
    acc = next((k for k in ACCELERATE if k in raw), None)
    if acc is not None and "model_name_or_path" not in raw:
        raise refuse(acc, f"{raw[acc]}: an accelerate config (accelerate launch --config_file FILE), not a training "
                     "config: tunelab train --nproc N starts the processes itself, with train.distributed: "
                     "{strategy: ddp | fsdp | deepspeed} in the run config; import the training YAML it launches")
    v1 = [k for k in V1 if k in raw]
    if "model" in raw and "model_name_or_path" not in raw and v1:
        raise refuse("model", f"with {', '.join(v1[:3])}: a LLaMA-Factory v1 config (USE_V1=1), which import "
                     "does not read: it reads LLaMA-Factory's training YAMLs as llamafactory-cli train reads them "
                     "without USE_V1 (model_name_or_path, stage, dataset of dataset_info.json, finetuning_type, ...)")
    if "export_dir" in raw and not trains:
        raise refuse("export_dir", "an export config (llamafactory-cli export: merges an adapter or quantizes the "
                     f"model), not a training config; {TRAINS}; tunelab export RUN --merge merges a tunelab run's "
                     "adapter")
    # (HF TrainingArguments has do_predict too: a flag for the example scripts, which Trainer itself never reads)
    llama_factory = "stage" in raw or any(k in raw for k in lf_keys)
    if llama_factory and raw.get("do_predict") is True and raw.get("do_train") is not True:
        raise refuse("do_predict", "true without do_train: a prediction config (LLaMA-Factory predicts "
                     f"eval_dataset and trains nothing), not a training config; {TRAINS}; tunelab predict RUN FILE "
                     "generates a tuned model's replies, tunelab eval RUN FILE scores them")
    if "infer_backend" in raw and not trains:
        raise refuse("infer_backend", f"{raw['infer_backend']}: a chat config (llamafactory-cli chat / api / "
                     f"webchat), not a training config; {TRAINS}; tunelab chat RUN, tunelab serve RUN talk to a "
                     "tuned model")
    if raw and not any(known(k) or k in lf_keys for k in raw):
        shown = ", ".join(str(k) for k in list(raw)[:5]) + (f", ... {len(raw)} in all" if len(raw) > 5 else "")
        raise ConfigError(f"{path}: none of its keys is a training setting (it has: {shown}): not a training "
                          f"config; {TRAINS}: model_name_or_path, stage, dataset, learning_rate, ...")
