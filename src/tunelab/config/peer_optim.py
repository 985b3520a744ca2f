"""HF TrainingArguments' `optim` (LLaMA-Factory passes it on to HF's Trainer) and AdamW's `adam_beta1` / `adam_beta2` /
`adam_epsilon`, read for `tunelab config import` (config/peers.py) as tunelab's `train.optimizer` and `train.adam_*`.

Each name of transformers 5.x's `OptimizerNames` is one of three, by its own table (never by how it starts: an
`adamw_` prefix once carried AdamW with 8-bit state as adamw without a word, while `paged_adamw_8bit` was refused):
- the same optimizer as one of tunelab's (`SAME`: adamw_torch, adamw_torch_fused, ... → adamw; adafactor; sgd),
  carried as it is;
- AdamW whose state is kept another way (`STATE`: 8-bit or 4-bit moments, moments paged to CPU memory), carried as
  adamw — the same update — with a line saying which state is not kept: tunelab's AdamW is fused, its moments fp32;
- another optimizer (`OTHER`: Lion, AdEMAMix, GaLore, ...), refused in one line naming it, as is a name HF's
  Trainer does not know.
The adam_* keys are written where the optimizer is AdamW; beside adafactor or sgd, which HF's Trainer builds without
them too, each is said as not carried."""

from __future__ import annotations

from typing import Any

SAME = {"adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adamw_torch_xla": "adamw",
        "adamw_torch_npu_fused": "adamw", "adamw_hf": "adamw", "adamw_apex_fused": "adamw",  # (the last two: 4.x's)
        "adafactor": "adafactor", "sgd": "sgd"}
# AdamW's update, its state kept another way: the state tunelab's fused AdamW (fp32 moments) does not keep
STATE = {"adamw_8bit": "8-bit moments (bitsandbytes)", "adamw_bnb_8bit": "8-bit moments (bitsandbytes)",
         "paged_adamw_8bit": "8-bit moments, paged to CPU memory (bitsandbytes)",
         "paged_adamw_32bit": "moments paged to CPU memory (bitsandbytes)",
         "paged_adamw": "moments paged to CPU memory (bitsandbytes)",
         "adamw_torch_8bit": "8-bit moments (torchao)", "adamw_torch_4bit": "4-bit moments (torchao)",
         "adamw_anyprecision": "moment dtypes and Kahan summation of optim_args (torchdistx)"}
# other optimizers, by the start of their names
OTHER = {"ademamix": "AdEMAMix", "paged_ademamix": "AdEMAMix", "lion": "Lion", "paged_lion": "Lion",
         "adagrad": "Adagrad", "rmsprop": "RMSprop", "galore_": "GaLore (gradients projected to a low rank)",
         "apollo_": "APOLLO", "lomo": "LOMO", "adalomo": "AdaLomo", "grokadamw": "GrokAdamW",
         "schedule_free_": "a schedule-free optimizer", "stable_adamw": "StableAdamW (AdamW with update clipping)"}
ADAM = ("adam_beta1", "adam_beta2", "adam_epsilon")
# LLaMA-Factory's switches that train with another optimizer whatever `optim` says
SWITCHES = {"use_galore": "GaLore (gradients projected to a low rank)", "use_apollo": "APOLLO",
            "use_badam": "BAdam (block-coordinate Adam)", "use_muon": "Muon", "use_adam_mini": "Adam-mini"}


def read_switch(p: Any, key: str, value: Any) -> None:
    """`use_galore: true` (and the other SWITCHES): refused as another optimizer is; false (LLaMA-Factory's default)
    changes nothing."""
    if value is True:
        raise p.refuse(key, f"true: not carried: LLaMA-Factory then trains with {SWITCHES[key]} in place of AdamW, not "
                       "one of tunelab's optimizers (train.optimizer adamw, adafactor or sgd); drop it (AdamW)")
    if value is not False:
        raise p.refuse(key, f"{value!r}: expected true or false")


def other(name: str) -> str | None:
    """What another optimizer of HF's is (`lion_8bit`: Lion), or None."""
    return next((what for start, what in OTHER.items() if name.startswith(start)), None)


def read_optim(p: Any, key: str, value: Any) -> None:
    """`optim` → train.optimizer, by the tables above; `p` is config/peers.py's `_Peer`."""
    name = value if isinstance(value, str) else None  # (as HF reads it: `AdamW` is no name of its)
    if name in SAME:
        p.set("train.optimizer", SAME[name], key)
    elif name in STATE:
        p.set("train.optimizer", "adamw", key)
        p.notes.append(f"note: {key} {value} written as train.optimizer adamw (AdamW's update): its {STATE[name]} "
                       "are not kept; tunelab's fused AdamW holds fp32 moments in the training device's memory")
    else:
        what = other(name) if name else None
        raise p.refuse(key, f"{value}: not carried: " + (f"{what}, not one of" if what else "not an optimizer of HF's "
                       "Trainer (transformers' OptimizerNames), nor one of") + " tunelab's (train.optimizer adamw, "
                       "adafactor or sgd; HF's adamw_torch*, adamw_8bit, adamw_bnb_8bit and paged_adamw_* are written "
                       "as adamw); write one of them, or drop optim (AdamW)")


def carry_adam(p: Any) -> None:
    """adam_beta1 / adam_beta2 / adam_epsilon (kept in `p.later` as config/peers.py reads the keys) → train.adam_*
    where the optimizer written is AdamW (the file's optim, else HF's default); beside another, said as not carried."""
    optimizer = p.tree.get("train", {}).get("optimizer", "adamw")
    for key in (k for k in ADAM if k in p.later):
        if optimizer == "adamw":
            p.set(f"train.{key}", p.later[key], key)
        else:
            p.skip(key, f"AdamW's: optim {p.raw.get('optim')} is tunelab's train.optimizer {optimizer}, which does "
                   "not read it, nor does HF's Trainer")
