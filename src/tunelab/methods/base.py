"""What every method provides: make the right parameters trainable, and export the result."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from tunelab.config.sections import MethodConfig
from tunelab.errors import ConfigError
from tunelab.io import read_json
from tunelab.models.aliases import base_model_of

PROMPT_ADAPTER = "adapter"  # RUN/model/adapter: the prefix / prompt-tuning adapter (peft cannot merge it)


class Method:
    """`apply` prepares the model for training; `export` writes plain-transformers weights."""

    Config: ClassVar[type[MethodConfig]]
    default_lr: ClassVar[float] = 5e-5

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    def check_model(self, model: torch.nn.Module, heads: Sequence[str] = (),  # noqa: B027 - optional hook
                    new_tokens: Sequence[int] = ()) -> None:
        """Refuse (ConfigError) a model this method cannot train (`heads`, `new_tokens`: as `apply` will get them);
        called right after the model loads, before the run writes anything."""

    def apply(self, model: torch.nn.Module, heads: list[str], new_tokens: Sequence[int] = ()) -> torch.nn.Module:
        """`heads`: names of task-head modules, which stay trainable under every method. `new_tokens`: ids the
        task added to the vocabulary (e.g. chat-template markers), whose embedding rows start untrained."""
        return model

    def continue_adapter(self, model: torch.nn.Module, adapter: Path) -> torch.nn.Module:
        """`model` with `adapter` (what the tuned model's folder it was loaded from holds beside its weights:
        RUN/model/adapter of prefix / prompt tuning) loaded trainable, where this method trains that kind of adapter
        with these settings; else refused in one line (ConfigError): training without it would drop what it learnt."""
        kind = adapter_kind(adapter)
        base = base_model_of(adapter.parent)
        start = f"the base model it was tuned from ({base})" if base else "its base model"
        raise ConfigError(f"config: method: {self.cfg.name} would train {adapter.parent} without the {kind} adapter it "
                          f"holds ({adapter}), losing what that learnt: continue it with method={kind}, or start "
                          f"from {start}")

    def export(self, model: torch.nn.Module, model_dir: Path, adapter_dir: Path) -> torch.nn.Module:
        """Save plain weights into `model_dir` (and adapters into `adapter_dir`); return the saved module."""
        model.save_pretrained(model_dir)
        return model


PEFT_KINDS = {"PREFIX_TUNING": "prefix", "PROMPT_TUNING": "prompt", "LORA": "lora"}  # peft_type → tunelab's method


def adapter_kind(adapter: Path) -> str:
    """The method that trained the peft adapter in `adapter` (prefix, prompt, lora...), by its adapter_config.json."""
    return settings_kind(read_json(adapter / "adapter_config.json"))  # not JSON: BrokenFileError, one line


def settings_kind(settings: Any) -> str:
    """The method of a read adapter_config.json (`adapter_kind`)."""
    kind = str(settings.get("peft_type") or "unknown") if isinstance(settings, dict) else "unknown"
    return PEFT_KINDS.get(kind, kind.lower())


def continued(method: Method, model: torch.nn.Module, model_path: str | None) -> torch.nn.Module:
    """`model`, loaded from `model_path`, with the adapter that folder holds beside its weights (RUN/model/adapter: a
    prefix / prompt tuning run's model) where it holds one: `method.continue_adapter` (trained on, or refused).
    None: a model built here (a distillation student), which holds none."""
    adapter = Path(model_path or "") / PROMPT_ADAPTER
    if model_path is None or not (adapter / "adapter_config.json").is_file():
        return model
    return method.continue_adapter(model, adapter)


def warn_untrained_tokens(method: str, new_tokens: Sequence[int]) -> None:
    """For methods that leave embedding rows frozen: the added tokens keep their initial embeddings."""
    if new_tokens:
        print(f"method {method}: the {len(new_tokens)} tokens added to the vocabulary (ids {min(new_tokens)}-"
              f"{max(new_tokens)}) keep their initial embeddings; lora, dora, qlora and full train them",
              file=sys.stderr)


def count_parameters(model: torch.nn.Module) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "trainable_pct": round(100.0 * trainable / max(total, 1), 3)}
