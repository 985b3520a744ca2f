"""LoRA with peft. The task head stays fully trainable (`modules_to_save`) and is saved with the
adapter — forgetting this is a known peft pitfall that leaves a random head in the exported model.
Tokens the task added to the vocabulary (e.g. SFT's ChatML markers) train their embedding rows, and their
output rows when the head is not tied, through peft's trainable tokens (`trainable_token_indices`): only those
rows, not the whole matrix.

Export: the adapter goes to `RUN/adapter/` and the merged weights to `RUN/model/`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from tunelab.config.sections import MethodConfig
from tunelab.errors import ConfigError
from tunelab.methods.base import Method
from tunelab.progress import say
from tunelab.registry import METHODS


def adaptable() -> tuple[type[torch.nn.Module], ...]:
    """What peft's LoRA adapts (the layer types its `target_modules` may name)."""
    from transformers.pytorch_utils import Conv1D  # (transformers' model code: imported once a model is checked)

    return (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, Conv1D,
            torch.nn.MultiheadAttention)


class LoraConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Module names to adapt (a list, e.g. [query, value]; one name or `query,value` "
        "as a string), all-linear (every Linear except the head), or a regular expression as peft takes a string "
        "(one with any of `\\^$|?*+()[]{}`), matched in full against each module's full name: `.*\\.(query|value)`."
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        """`--set method.target_modules=query` (or `query,value`): a list of those names. A string with a regular
        expression's characters stays a string, which peft matches in full against each module's full name."""
        if isinstance(value, str) and value != "all-linear" and not is_regex(value):
            names = [name.strip() for name in value.split(",") if name.strip()]
            if not names:
                raise ValueError("names no module (a list of names, all-linear, or a regular expression)")
            return names
        return value

    @field_validator("target_modules")
    @classmethod
    def _list(cls, value: list[str] | str) -> list[str] | str:
        """A list of names, none empty (`''` would name the whole model), none two run together by a Chinese input
        method's comma (`[query，value]` is valid YAML for the one name `query，value`)."""
        if isinstance(value, list) and (not value or any(not str(name).strip() for name in value)):
            raise ValueError("names no module (a list of names, all-linear, or a regular expression)")
        for name in value if isinstance(value, list) else ():
            parts = [part for part in re.split(r"\s*[，、]\s*", name) if part]
            if len(parts) > 1:
                raise ValueError(f"{name!r} is one name: names are separated by an ASCII comma, not '，' or '、' (a "
                                 f"Chinese input method's; write [{', '.join(parts)}], or {','.join(parts)} in --set)")
        return value

    @field_validator("target_modules")
    @classmethod
    def _regex(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str) and value != "all-linear":
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"{value} is not a regular expression ({e})") from None
        return value


# a string with any of these is a regular expression (peft's full match over module names), else names by commas
REGEX_CHARS = frozenset("\\^$|?*+()[]{}")


def is_regex(value: str) -> bool:
    return any(c in REGEX_CHARS for c in value)


def _within(name: str, modules: Sequence[str]) -> bool:
    """Whether the module `name` is one of `modules` (the task head's: the full name or its last dotted parts), or
    inside one."""
    return any(name == m or name.endswith(f".{m}") or name.startswith(f"{m}.") or f".{m}." in name for m in modules)


def token_rows(model: torch.nn.Module, new_tokens: Sequence[int]) -> dict[str, list[int]]:
    """peft's `trainable_token_indices`: the new ids in the input embedding and, unless tied to it (peft
    follows tied weights itself), the output embedding. A head with a bias (Phi, GPT-J) keeps its rows frozen:
    peft's trainable-token head drops the bias."""
    if not new_tokens:
        return {}
    names = {module: name for name, module in model.named_modules()}
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    rows = {names[embed]: list(new_tokens)}
    if isinstance(head, torch.nn.Linear) and head.weight is not embed.weight and head.bias is None:
        rows[names[head]] = list(new_tokens)
    return rows


@METHODS.register("lora")
class Lora(Method):
    Config = LoraConfig
    default_lr = 2e-4
    cfg: LoraConfig
    use_dora = False

    def check_model(self, model: torch.nn.Module, heads: Sequence[str] = (), new_tokens: Sequence[int] = ()) -> None:
        """`target_modules` (a list, or a regular expression) must name some of the model's layers as peft matches
        them (the full name or its last dotted parts; a regular expression: the full name, in full), each one a layer
        LoRA adapts, none the task head (it trains whole) nor an embedding whose added tokens' rows train
        (`token_rows`): else peft fails after the run has started, with a traceback."""
        targets = self.cfg.target_modules
        if targets == "all-linear":
            return
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) and not _within(name, heads)})
        layers = f"its linear layers: {', '.join(linear[:20])}; or all-linear"
        if isinstance(targets, str):  # (as peft matches a string: re.fullmatch over each full name)
            said = targets
            named = {name: m for name, m in model.named_modules() if name and re.fullmatch(targets, name)}
            example = next((n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)), "")
            nothing = (f"the regular expression {targets} matches no module's full name in full (e.g. {example}; "
                       f"{layers})")
        else:
            said = ", ".join(targets)
            named = {name: m for name, m in model.named_modules()  # (as peft matches them)
                     if any(name == t or name.endswith(f".{t}") for t in targets)}
            nothing = f"no module of the model is named {said} ({layers})"
            missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in named)]
            for name in missing if named else ():  # peft adapts the others and says nothing of these: said here (a
                # note, not a refusal: a run trained so by an older tunelab resumes)
                why = (" (in a list it is a name to peft, not a regular expression: write the regular expression as "
                       "the whole value)") if is_regex(name) else ""
                say(f"note: method.target_modules: no module of the model is named {name}{why}; LoRA adapts "
                    f"{', '.join(t for t in targets if t not in missing)}")
        if not named:
            raise ConfigError(f"config: method.target_modules: {nothing}")
        adapted = {name: m for name, m in named.items() if not _within(name, heads)}
        if not adapted:
            raise ConfigError(f"config: method.target_modules: {said} name only the task head "
                              f"({', '.join(heads)}), which trains whole and is saved with the adapter; name the "
                              f"layers LoRA adapts ({layers})")
        kinds = adaptable()
        odd = next((n for n, m in adapted.items() if not isinstance(m, kinds)), None)
        if odd is not None:
            raise ConfigError(f"config: method.target_modules: {odd} is a {type(adapted[odd]).__name__}, not a layer "
                              f"LoRA adapts (Linear, Embedding, Conv); name the layers it adapts ({layers})")
        rows = next((n for n in token_rows(model, new_tokens) if n in adapted), None)
        if rows is not None:
            raise ConfigError(f"config: method.target_modules: {rows} trains the rows of the tokens the task added to "
                              f"the vocabulary (peft's trainable tokens), and peft cannot adapt it with LoRA too; "
                              f"leave it out ({layers})")

    def apply(self, model: torch.nn.Module, heads: list[str], new_tokens: Sequence[int] = ()) -> torch.nn.Module:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        peft_cfg = PeftLoraConfig(
            r=self.cfg.r, lora_alpha=self.cfg.alpha, lora_dropout=self.cfg.dropout,
            target_modules=self.cfg.target_modules, modules_to_save=heads or None,
            exclude_modules=heads or None, use_dora=self.use_dora,
            trainable_token_indices=token_rows(model, new_tokens) or None,
        )
        return get_peft_model(model, peft_cfg)

    def export(self, model: torch.nn.Module, model_dir: Path, adapter_dir: Path) -> torch.nn.Module:
        model.save_pretrained(adapter_dir)
        merged = model.merge_and_unload()
        merged.save_pretrained(model_dir)
        return merged
