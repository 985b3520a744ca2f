"""`tunelab export RUN --format torch --quantize int8`: the model stays a PyTorch module, its encoder's linear layers
quantised by torchao (`Int8DynamicActivationInt8WeightConfig`: int8 weights per channel, activations quantised per
call; the successor of the deprecated `torch.ao.quantization.quantize_dynamic`). On this project's 2-core AVX-512
CPU it ran MiniLM at batch 32 in 57 ms instead of 102 ms (fp32) but at batch 1 in 10.4 ms instead of 4.6: it serves
CPU batches, not single requests (onnxruntime int8 serves both; docs/compress.md). The task head stays fp32, as in
the ONNX int8 export.

Saved as `model.pt` (the quantised state dict; `torch.load(weights_only=True)` reads torchao's tensors) next to the
run's config.json; loading builds the model from the config (cut as tunelab.json records for a head-pruned model),
quantises it the same way and assigns the weights.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import transformers

from tunelab.errors import TunelabError, first_line, require
from tunelab.export.prune import apply_pruned_heads
from tunelab.io import read_json
from tunelab.models.aliases import META_FILE
from tunelab.tasks.base import Task

TORCH_FILE = "model.pt"
INSTALL_HINT = "pip install 'tunelab[torchao]' (or pip install torchao)"


def _config() -> Any:
    quantization = require("torchao.quantization", f"torchao is not installed; {INSTALL_HINT}")
    return quantization.quantize_, quantization.Int8DynamicActivationInt8WeightConfig()


def require_torchao() -> None:
    _config()


def quantize_int8(task: Task, model: torch.nn.Module) -> torch.nn.Module:
    """The encoder's nn.Linear layers → torchao int8 (in place); the task head and pooler stay fp32."""
    quantize_, config = _config()
    head = tuple(task.head_modules(model))

    def encoder_linear(module: torch.nn.Module, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and not fqn.startswith(head) and "pooler" not in fqn

    quantize_(model.float().eval(), config, filter_fn=encoder_linear)
    return model


def save_int8(model: torch.nn.Module, out: Path) -> Path:
    path = out / TORCH_FILE
    torch.save(model.state_dict(), path)
    return path


def load_int8(task: Task, path: Path) -> torch.nn.Module:
    """The int8 model of PATH/model.pt: built from PATH/config.json, cut as PATH/tunelab.json records (a head-pruned
    model's `pruned_heads`), quantised alike, the saved weights assigned."""
    config = transformers.AutoConfig.from_pretrained(str(path))
    model = getattr(transformers, task.auto_model_class).from_config(config)
    meta = read_json(path / META_FILE) if (path / META_FILE).is_file() else {}
    if isinstance(meta, dict) and meta.get("pruned_heads"):
        apply_pruned_heads(model, meta["pruned_heads"])
    quantize_int8(task, model)
    try:
        state = torch.load(path / TORCH_FILE, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:  # a truncated zip: PytorchStreamReader
        raise TunelabError(f"{path / TORCH_FILE}: not a readable PyTorch file (truncated or damaged?): "
                           f"{first_line(e).split('. ')[0]}") from None
    if not isinstance(state, dict):
        raise TunelabError(f"{path / TORCH_FILE}: not a state dict (a {type(state).__name__}); export the run again")
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as e:  # other shapes than config.json (and tunelab.json's cut) give them
        raise TunelabError(f"{path / TORCH_FILE}: the weights do not have the shapes config.json and {META_FILE} "
                           f"give them: {first_line(e).rstrip(':. ')}; export the model again") from None
    return model.eval()
