"""DoRA (weight-decomposed LoRA) with peft: LoRA's options, with magnitude vectors that train too.
Exported like LoRA: the adapter in `RUN/adapter/`, merged weights in `RUN/model/`."""

from __future__ import annotations

from typing import Literal

from tunelab.methods.lora import Lora, LoraConfig
from tunelab.registry import METHODS


class DoraConfig(LoraConfig):
    name: Literal["dora"] = "dora"  # type: ignore[assignment]


@METHODS.register("dora")
class Dora(Lora):
    Config = DoraConfig
    use_dora = True
