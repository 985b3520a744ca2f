"""The run's `model/` directory: plain-transformers weights (LoRA merged), tokenizer, label map
and `tunelab.json`; and loading it back for eval / predict."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers
from peft import PeftModel
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors

from tunelab import __version__
from tunelab.config.run import RunConfig
from tunelab.config.sections import DataConfig
from tunelab.data.report import read_summary, summary_rules
from tunelab.errors import TunelabError, first_line
from tunelab.export.gguf import read_back_config
from tunelab.export.prune import apply_pruned_heads
from tunelab.export.torch_int8 import TORCH_FILE, load_int8
from tunelab.io import atomic_dir, commit_dir, open_permissions, read_json
from tunelab.methods.base import PROMPT_ADAPTER, Method
from tunelab.models.aliases import META_FILE, model_dir_of
from tunelab.models.decoder_heads import load_head
from tunelab.models.onnx_module import ONNX_FILE, OnnxModule
from tunelab.models.positions import cut_to_positions
from tunelab.models.precision import keep_trained_precision, resolve_precision
from tunelab.models.tokenizer_save import save_tokenizer
from tunelab.registry import TASKS
from tunelab.tasks.base import Task
from tunelab.text import rules_version

GGUF_FILE = "model.gguf"  # written by tunelab.export.gguf
EXPORT_FILES = {"onnx": ONNX_FILE, "gguf": GGUF_FILE, "torch": TORCH_FILE}  # tunelab.json's export.format: its file


def save_model(
    model: torch.nn.Module, tokenizer: Any, task: Task, method: Method, cfg: RunConfig, run_dir: Path
) -> torch.nn.Module:
    """Write RUN/model (and RUN/adapter for adapter methods) atomically; return the saved module."""
    model_tmp, adapter_tmp = atomic_dir(run_dir / "model"), atomic_dir(run_dir / "adapter")
    try:
        saved = method.export(model, model_tmp, adapter_tmp)
        save_tokenizer(tokenizer, model_tmp, run_dir / "model")  # rebuilt-from kwargs kept; checked
        meta = {"tunelab_version": __version__, "task": cfg.task.model_dump(mode="json"),
                "data": cfg.data.model_dump(mode="json", include={"text_field", "text_pair_field", "label_field",
                                                                  "max_length", "truncation", "window_stride",
                                                                  "window_aggregate", "clean"}),
                "method": cfg.method.model_dump(mode="json"), "base_model": cfg.model,
                "precision": resolve_precision(cfg.train.precision, next(saved.parameters()).device),  # trained at
                "text_rules": rules_version(),  # its rows read by (its inputs are, at eval / predict / serve)
                **task.metadata()}
        (model_tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for adapter_config in [*adapter_tmp.glob("adapter_config.json"), *model_tmp.glob("*/adapter_config.json")]:
            name_base_model(adapter_config, cfg.model)
        for tmp in (model_tmp, adapter_tmp):
            open_permissions(tmp)
        commit_dir(model_tmp, run_dir / "model")
        if any(adapter_tmp.iterdir()):
            commit_dir(adapter_tmp, run_dir / "adapter")
    finally:
        for tmp in (model_tmp, adapter_tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return saved


def name_base_model(adapter_config: Path, model: str) -> None:
    """peft records the base model as the directory it was loaded from (for an alias, a path inside
    site-packages); the adapter names what the run config named instead: the alias, hub id or directory."""
    data = json.loads(adapter_config.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = model
    adapter_config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_task(model_dir: str | Path) -> Any:
    """The task (config, data settings, label map) of a tunelab model directory or of a run directory's model/; no
    weights are loaded."""
    path = model_dir_of(model_dir)
    return _task_of(path, _meta_of(path))


def _meta_of(path: Path) -> Any:
    meta_path = path / META_FILE
    if not path.exists():
        raise TunelabError(f"{path}: no such directory; pass a run directory or its model/ (RUN_DIR/model)")
    if not path.is_dir():
        raise TunelabError(f"{path}: is a file, not a tunelab model directory; pass a run directory or its model/")
    if not meta_path.is_file():
        raise TunelabError(f"{path}: not a tunelab model directory (no {META_FILE}); {_what_instead(path)}")
    return read_json(meta_path)  # not JSON: BrokenFileError, one line


def _what_instead(path: Path) -> str:
    """What to pass instead of a folder without a model: a checkpoint or a run that has none yet says so."""
    run = path.parent.parent if path.parent.name == "checkpoints" else path
    if run is not path and (run / "model" / META_FILE).is_file():  # a finished run that kept its checkpoints
        return f"a training checkpoint; the run's model is {run / 'model'}"
    if run is not path or (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        config = run / "config.yaml"
        resumed = f"; resume it: tunelab train {config} --resume" if config.is_file() else ""
        what = "a training checkpoint" if run is not path else "a run"
        return f"{what} whose model is written when its training ends (RUN_DIR/model){resumed}"
    return "pass RUN_DIR/model"


def _task_of(path: Path, meta: Any) -> Any:
    meta_path = path / META_FILE
    try:
        task_cls = TASKS.get(meta["task"]["name"])
        # inputs cut at the model's learned positions where the run's max_length is above them (serve, predict)
        task = task_cls(task_cls.Config(**meta["task"]), cut_to_positions(DataConfig(**meta["data"]), str(path)))
        task.load_metadata(meta)
        task.text_rules = saved_rules(path, meta)
    except (ValueError, KeyError, TypeError) as e:  # a key missing, a field pydantic refuses
        what = f"no {e}" if isinstance(e, KeyError) else first_line(e)
        raise TunelabError(f"{meta_path}: not a valid {META_FILE} ({what}); pass RUN_DIR/model as tunelab "
                           "wrote it") from None
    return task


def saved_rules(path: Path, meta: dict[str, Any]) -> int:
    """The text rules a saved model's rows were read by: its tunelab.json's `text_rules`; for a model saved before
    they were recorded there, its run's (RUN/data_summary.json, of RUN/model or RUN/exports/NAME: 1 where that
    records none, `data.report.summary_rules`), else `UNRECORDED_RULES`."""
    rules = meta.get("text_rules")
    if isinstance(rules, int) and not isinstance(rules, bool):
        return rules
    run = path.parent.parent if path.parent.name == "exports" else path.parent
    summary = read_summary(run) if (run / "model" / META_FILE).is_file() else {}
    return summary_rules(summary) if summary else UNRECORDED_RULES


# A model folder of no run whose tunelab.json records no rules was saved by a tunelab of rules 1–4, which read every
# model's input by its own rules: such a model goes on being read as the last of them read it (4), not as the oldest.
UNRECORDED_RULES = 4


def load_gguf(task: Task, path: Path) -> torch.nn.Module:
    """The model of PATH/model.gguf as transformers reads it (weights dequantised to float32), in eval mode; one line
    (TunelabError) when the file does not parse (truncated, damaged)."""
    try:
        with _no_gguf_bar():
            config = {"config": c} if (c := read_back_config(path, GGUF_FILE)) is not None else {}
            return getattr(transformers, task.auto_model_class).from_pretrained(str(path), gguf_file=GGUF_FILE,
                                                                                **config).eval()
    except (struct.error, ValueError, EOFError) as e:  # gguf's reader unpacks past the end of a truncated file
        raise TunelabError(f"{path / GGUF_FILE}: not a readable GGUF file (truncated or damaged?): "
                           f"{first_line(e)}") from None


@contextmanager
def _no_gguf_bar() -> Iterator[None]:
    """transformers reads a GGUF file under a tqdm bar of its own ("Converting and de-quantizing GGUF tensors..."),
    which neither TUNELAB_NO_PROGRESS nor transformers' `disable_progress_bar` turns off (it is `tqdm.auto`'s, taken
    by name into its module): the bar is disabled for the call, as the rest of an export or a load is quiet."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # another transformers layout: its bar, if any, stays
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")
RESTORE = "pass RUN_DIR/model as tunelab wrote it"


def load_tokenizer(path: Path) -> Any:
    """The tokenizer of a tunelab model directory; one line (TunelabError) naming the file that is missing where one
    is: tokenizer_config.json (`save_pretrained` always writes it: without it a tokenizer loads without its special
    tokens, a chat model's end of turn among them) or tokenizer.json (the vocabulary, where no other file holds it)
    — not transformers' "Couldn't instantiate the backend tokenizer"."""
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise TunelabError(f"{path}: no tokenizer ({', '.join(TOKENIZER_FILES[:2])}); {RESTORE}")
    if not (path / TOKENIZER_FILES[1]).is_file():
        raise TunelabError(f"{path / TOKENIZER_FILES[1]}: missing: without it the tokenizer would load without its "
                           f"special tokens; {RESTORE}")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        if not (path / TOKENIZER_FILES[0]).is_file():  # the vocabulary, where no other file holds it
            raise TunelabError(f"{path / TOKENIZER_FILES[0]}: missing: the tokenizer cannot be loaded without it; "
                               f"{RESTORE}") from None
        raise TunelabError(f"{path}: cannot load the tokenizer: {first_line(e)}") from None


def check_chat_template(task: Any, tokenizer: Any, path: Path) -> None:
    """A chat model's tokenizer must have its chat template (chat_template.jinja, written with it; in
    tokenizer_config.json before transformers 5): without it every conversation fails in transformers."""
    if getattr(task, "generates_replies", False) and not getattr(tokenizer, "chat_template", None):
        raise TunelabError(f"{path / 'chat_template.jinja'}: missing: a chat model's conversations are rendered with "
                           f"it; {RESTORE}")


def load_model(model_dir: str | Path) -> tuple[Any, torch.nn.Module, Any]:
    """(task, model, tokenizer) from a tunelab model directory (or a run directory's model/); one line (TunelabError)
    when its files cannot be read (weights or tokenizer missing, a file damaged)."""
    path = model_dir_of(model_dir)
    meta = _meta_of(path)
    task = _task_of(path, meta)
    check_labels(task, path)
    fmt = (meta.get("export") or {}).get("format") if isinstance(meta.get("export"), dict) else None
    weights = EXPORT_FILES.get(fmt)
    if weights is not None and not (path / weights).is_file():
        raise TunelabError(f"{path}: no {weights} (the model of this `tunelab export --format {fmt}` directory); "
                           "export the run again")
    tokenizer = load_tokenizer(path)  # before the weights: one line naming a tokenizer file that is missing
    try:
        task, module = _load_model(task, path, meta)
        module.tunelab_dir = path  # what a NaN output names (evaluation.evaluate.logits_for)
        keep_trained_precision(module, meta)  # trained (and its metrics scored) at fp32: `auto` scores it so too
        check_chat_template(task, tokenizer, path)  # (after the weights: a damaged GGUF file is named first)
        return task, module, tokenizer
    except (OSError, ValueError, SafetensorError) as e:  # a file missing, truncated or not what it should be
        raise TunelabError(f"{path}: cannot load the model: {first_line(e)}") from None
    except RuntimeError as e:  # transformers: weights of other shapes than config.json gives them
        if "size mismatch" not in str(e) and "ignore_mismatched_sizes" not in str(e):
            raise
        raise TunelabError(f"{path}: the weights do not have the shapes config.json gives them (a head or "
                           "vocabulary of another size); pass RUN_DIR/model as tunelab wrote it") from None


def check_labels(task: Any, path: Path) -> None:
    """The label map of tunelab.json and the head's in config.json must have as many labels (a file edited or copied
    from another model would otherwise load and then fail on the first prediction)."""
    labels = getattr(task, "labels", None)
    config = read_json(path / "config.json")  # not JSON: BrokenFileError, one line
    id2label = config.get("id2label") if isinstance(config, dict) else None
    if isinstance(labels, list) and labels and isinstance(id2label, dict) and len(id2label) != len(labels):
        raise TunelabError(f"{path}: {META_FILE} lists {len(labels)} labels but config.json's id2label has "
                           f"{len(id2label)} (the model's head); the two files do not belong together")


def _load_model(task: Any, path: Path, meta: dict[str, Any]) -> tuple[Any, torch.nn.Module]:
    if (path / ONNX_FILE).is_file():  # `tunelab export --format onnx`: run by onnxruntime
        module = OnnxModule(path / ONNX_FILE)
        width = {o.name: o.shape[-1] for o in module.session.get_outputs() if o.shape}.get("logits")
        labels = getattr(task, "labels", None)
        if isinstance(width, int) and isinstance(labels, list) and labels and width != len(labels):
            raise TunelabError(f"{path}: {META_FILE} lists {len(labels)} labels but {ONNX_FILE} scores {width}; "
                               "export the run again")
        return task, module
    if (path / GGUF_FILE).is_file():  # `tunelab export --format gguf`: dequantised by transformers
        return task, load_gguf(task, path)
    if (path / TORCH_FILE).is_file():  # `tunelab export --format torch --quantize int8`: torchao
        return task, load_int8(task, path)
    if meta.get("pruned_heads"):  # `tunelab compress --prune heads`: cut as recorded, then read the smaller weights
        model = getattr(transformers, task.auto_model_class).from_config(transformers.AutoConfig.from_pretrained(
            str(path)))
        load_safetensors(apply_pruned_heads(model, meta["pruned_heads"]), str(path / "model.safetensors"))
        return task, task.optimize(model.eval())
    model = load_head(task.auto_model_class, str(path))  # the instance's: pretrain sets it per objective
    if (path / PROMPT_ADAPTER / "adapter_config.json").is_file():  # prefix / prompt tuning: base + virtual tokens

        model = PeftModel.from_pretrained(model, str(path / PROMPT_ADAPTER))
    return task, task.optimize(model)
