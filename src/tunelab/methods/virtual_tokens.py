"""Prefix tuning and prompt tuning with peft (`method: prefix`, `method: prompt`): the base model stays frozen;
only `num_virtual_tokens` trainable vectors are learnt — per layer as attention keys/values (prefix) or as
input embeddings put before the text (prompt). For causal LMs only (tasks sft and pretrain with objective clm):
peft's prefix tuning needs past key values, which transformers 5 encoders (BERT) no longer take, and prompt
tuning would push the virtual tokens in front of an encoder's [CLS], the position its classifier reads.

Export: peft cannot merge virtual tokens into weights, so `RUN/model` holds the base model (as trained: e.g.
with the ChatML tokens SFT added), the tokenizer and the adapter in `RUN/model/adapter/` (also in
`RUN/adapter/`); `tunelab eval / predict` load both. Plain transformers users:
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("RUN/model"), "RUN/model/adapter")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field

from tunelab.config.sections import MethodConfig
from tunelab.errors import ConfigError, first_line
from tunelab.io import read_json
from tunelab.methods.base import PROMPT_ADAPTER, Method, settings_kind, warn_untrained_tokens
from tunelab.registry import METHODS


class PrefixConfig(MethodConfig):
    name: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(20, ge=1, description="Virtual key/value positions learnt in every layer.")


class PromptConfig(MethodConfig):
    name: Literal["prompt"] = "prompt"
    num_virtual_tokens: int = Field(20, ge=1, description="Learnt input embeddings put before every text.")


def require_causal_lm(model: torch.nn.Module, method: str) -> None:
    """A one-line ConfigError unless `model` is a transformers causal LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = type(model).__name__
    if name not in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()):
        raise ConfigError(f"config: method: {method} tuning works with causal LMs only (task sft, or pretrain with "
                          f"objective clm); this run builds a {name}; use lora")


class _VirtualTokens(Method):
    """Shared by prefix and prompt tuning: a peft prompt-learning adapter on a frozen causal LM."""

    kind: ClassVar[str]
    cfg: PrefixConfig | PromptConfig

    def peft_config(self) -> object:
        raise NotImplementedError

    def check_model(self, model: torch.nn.Module, heads: Sequence[str] = (), new_tokens: Sequence[int] = ()) -> None:
        require_causal_lm(model, self.kind)

    def continue_adapter(self, model: torch.nn.Module, adapter: Path) -> torch.nn.Module:
        """A prefix / prompt run's model trains on with its virtual tokens (same kind, same num_virtual_tokens)."""
        settings = read_json(adapter / "adapter_config.json")  # (read once: its kind and its settings)
        if settings_kind(settings) != self.kind:
            return super().continue_adapter(model, adapter)
        saved = settings.get("num_virtual_tokens")
        if saved != self.cfg.num_virtual_tokens:
            raise ConfigError(f"config: method.num_virtual_tokens: {self.cfg.num_virtual_tokens} where the {self.kind} "
                              f"adapter it continues ({adapter}) has {saved}; set method.num_virtual_tokens={saved}")
        from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
        from peft.utils import load_peft_weights

        try:  # (peft loads a prompt-learning adapter for inference only: its settings and weights, trainable)
            config = PeftConfig.from_pretrained(str(adapter))
            config.inference_mode = False
            peft_model = get_peft_model(model, config)
            set_peft_model_state_dict(peft_model, load_peft_weights(str(adapter)))
            return peft_model
        except (OSError, ValueError, RuntimeError) as e:  # weights missing, cut, or of another model's shapes
            raise ConfigError(f"config: model: cannot load the {self.kind} adapter {adapter}: "
                              f"{first_line(e)}") from None

    def apply(self, model: torch.nn.Module, heads: list[str], new_tokens: Sequence[int] = ()) -> torch.nn.Module:
        from peft import PeftModel, get_peft_model

        if isinstance(model, PeftModel):  # its tuned model's adapter, continued (continue_adapter)
            return model
        self.check_model(model)
        warn_untrained_tokens(self.kind, new_tokens)
        return get_peft_model(model, self.peft_config())

    def export(self, model: torch.nn.Module, model_dir: Path, adapter_dir: Path) -> torch.nn.Module:
        model.save_pretrained(adapter_dir)
        model.save_pretrained(model_dir / PROMPT_ADAPTER)
        model.get_base_model().save_pretrained(model_dir)
        return model


@METHODS.register("prefix")
class Prefix(_VirtualTokens):
    Config = PrefixConfig
    kind = "prefix"
    default_lr = 1e-2

    def peft_config(self) -> object:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.cfg.num_virtual_tokens)


@METHODS.register("prompt")
class Prompt(_VirtualTokens):
    Config = PromptConfig
    kind = "prompt"
    default_lr = 3e-2

    def peft_config(self) -> object:
        from peft import PromptTuningConfig, PromptTuningInit

        # initialised from randomly chosen vocabulary embeddings: the scale of real input embeddings
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.cfg.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
