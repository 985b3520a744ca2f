"""QLoRA: LoRA (same options) on a base model quantised to 4-bit NF4 with bitsandbytes (double quantisation,
bf16 compute), prepared with peft's `prepare_model_for_kbit_training`. Needs a CUDA GPU and bitsandbytes; on
any other machine the config is refused before anything loads (use `lora`). The task head stays unquantised
and fully trainable.

Export: the adapter goes to `RUN/adapter/`; `RUN/model/` holds it merged into the unquantised base weights
(plain transformers weights, as with LoRA).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import ValidationInfo, model_validator

from tunelab.errors import ConfigError
from tunelab.methods.lora import Lora, LoraConfig
from tunelab.registry import METHODS


def qlora_missing() -> str | None:
    """What this machine lacks for QLoRA (None when it has a CUDA GPU and bitsandbytes)."""
    found = [f"CUDA GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no CUDA GPU",
             "bitsandbytes installed" if importlib.util.find_spec("bitsandbytes") else "no bitsandbytes"]
    ok = torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None
    return None if ok else ", ".join(found)


def output_embeddings(model: torch.nn.Module) -> list[str]:
    """The module name of the model's output embeddings (a causal LM's lm_head, a masked LM's decoder), kept out of
    4-bit: its weight is tied to the input embeddings, and bitsandbytes loses a tied 4-bit weight's quantisation
    state (seen on an H200: a BERT MLM decoder failed its first forward; transformers skips only `lm_head`-style
    names by default)."""
    get = getattr(model, "get_output_embeddings", None)
    out = get() if callable(get) else None
    return [name for name, module in model.named_modules() if out is not None and module is out]


def require_qlora() -> None:
    missing = qlora_missing()
    if missing:
        raise ConfigError(f"config: method: qlora needs a CUDA GPU and bitsandbytes (found: {missing}); "
                          "use lora on CPU (GPU: pip install 'tunelab[qlora]')")


class QloraConfig(LoraConfig):
    name: Literal["qlora"] = "qlora"  # type: ignore[assignment]

    @model_validator(mode="after")
    def _needs_gpu(self, info: ValidationInfo) -> QloraConfig:
        if (info.context or {}).get("here", True):  # (not for a config written for another machine)
            require_qlora()
        return self


@METHODS.register("qlora")
class Qlora(Lora):
    Config = QloraConfig
    cfg: QloraConfig

    def apply(self, model: torch.nn.Module, heads: list[str], new_tokens: Sequence[int] = ()) -> torch.nn.Module:
        """Reload the task's model (head, resized embeddings and all) in 4-bit NF4 on the GPU, then add LoRA."""
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        require_qlora()
        self._full = Path(tempfile.mkdtemp(prefix="tunelab-qlora-"))  # the unquantised weights, for export
        model.save_pretrained(self._full)
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16,
                                   llm_int8_skip_modules=[*heads, *output_embeddings(model)] or None)
        model = type(model).from_pretrained(self._full, quantization_config=quant, device_map={"": 0})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return super().apply(model, heads, new_tokens)

    def export(self, model: torch.nn.Module, model_dir: Path, adapter_dir: Path) -> torch.nn.Module:
        from peft import PeftModel

        model.save_pretrained(adapter_dir)
        base = type(model.get_base_model()).from_pretrained(self._full)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(model_dir)
        shutil.rmtree(self._full, ignore_errors=True)
        return merged.to(next(model.parameters()).device)
