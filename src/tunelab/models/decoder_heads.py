"""Token-classification and extractive-QA heads for decoder-only models that transformers ships
without them (Gemma-3 text, and any other causal LM), and bidirectional attention for token-level tasks.

The heads are transformers' own generic mixins on the model's base stack: `GenericForTokenClassification`
(dropout + a linear `score` on every position) and `GenericForQuestionAnswering` (a linear `qa_outputs`
giving start and end logits), so a causal-LM checkpoint's `model.*` weights load into them unchanged and
only the head is new. `load_head` loads through the Auto class after registering such a head for the
checkpoint's config class when the Auto class has none. Importing this module registers the Gemma-3 text
heads, so a saved model reloads with plain transformers after `import tunelab.models.decoder_heads`.

`make_bidirectional` lifts the causal mask of a decoder: every token also attends to the tokens after it
(padding stays masked; sliding-window layers see the window on both sides).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    Gemma3TextConfig,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_layers import GenericForQuestionAnswering, GenericForTokenClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING
from transformers.models.gemma3.modeling_gemma3 import Gemma3PreTrainedModel

from tunelab.errors import ConfigError
from tunelab.models.aliases import as_named

_MIXINS: dict[str, tuple[type, str, str]] = {  # mixin, class-name suffix, what it is
    "AutoModelForTokenClassification": (GenericForTokenClassification, "ForTokenClassification",
                                        "token-classification"),
    "AutoModelForQuestionAnswering": (GenericForQuestionAnswering, "ForQuestionAnswering", "question-answering"),
}


class Gemma3TextForTokenClassification(GenericForTokenClassification, Gemma3PreTrainedModel):
    """Gemma-3 text stack + per-token linear classifier (`score`)."""

    config_class = Gemma3TextConfig
    input_modalities = ("text",)


class Gemma3TextForQuestionAnswering(GenericForQuestionAnswering, Gemma3PreTrainedModel):
    """Gemma-3 text stack + start/end span logits (`qa_outputs`)."""

    config_class = Gemma3TextConfig
    input_modalities = ("text",)


def _auto(auto_class: str) -> Any:
    return getattr(transformers, auto_class)


def generic_head(auto_class: str, config_class: type[PretrainedConfig]) -> type[PreTrainedModel]:
    """A head class for a causal LM's config class: the generic mixin on the model family's pretrained base."""
    mixin, suffix, what = _MIXINS[auto_class]
    causal = MODEL_FOR_CAUSAL_LM_MAPPING.get(config_class, None)
    if causal is None or config_class not in MODEL_MAPPING or getattr(config_class(), "is_encoder_decoder", False):
        raise ConfigError(f"config: model: {config_class.model_type!r} has no {what} head in transformers "
                          "and is not a decoder-only causal LM tunelab can put one on")
    base = next(c for c in causal.__mro__[1:] if issubclass(c, PreTrainedModel) and c is not PreTrainedModel)
    name = base.__name__.removesuffix("PreTrainedModel") + suffix
    attrs = {"config_class": config_class, "base_model_prefix": causal.base_model_prefix,
             "input_modalities": ("text",), "__module__": __name__, "__doc__": f"{name}: generic {what} head"}
    return type(name, (mixin, base), attrs)


def register_head(auto_class: str, config_class: type[PretrainedConfig]) -> None:
    """Give `auto_class` a head for `config_class` if it has none (Gemma-3 text: the classes above)."""
    auto = _auto(auto_class)
    if config_class in auto._model_mapping:
        return
    if issubclass(config_class, Gemma3TextConfig):
        head = (Gemma3TextForTokenClassification if auto_class == "AutoModelForTokenClassification"
                else Gemma3TextForQuestionAnswering)
    else:
        head = generic_head(auto_class, config_class)
    # exist_ok: transformers silently skips registering its own config classes otherwise
    auto.register(config_class, head, exist_ok=True)


def load_head(auto_class: str, path: str, **kwargs: Any) -> PreTrainedModel:
    """`transformers.<auto_class>.from_pretrained(path, **kwargs)`; for token classification and QA with a
    generic head where transformers has none."""
    if auto_class not in _MIXINS:
        return _auto(auto_class).from_pretrained(path, **kwargs)
    register_head(auto_class, type(AutoConfig.from_pretrained(path)))
    model, info = _auto(auto_class).from_pretrained(path, output_loading_info=True, **kwargs)
    prefix = model.base_model_prefix
    if any(k.startswith(prefix + ".") for k in info["missing_keys"]):
        # the head class names its base differently from the checkpoint (LlamaForQuestionAnswering:
        # `transformer` vs a causal LM's `model`): transformers would leave the base at random
        # initialisation; load it from the checkpoint's base model instead
        base = AutoModel.from_pretrained(path)
        getattr(model, prefix).load_state_dict(base.state_dict())
    return model


def make_bidirectional(model: torch.nn.Module) -> torch.nn.Module:
    """Non-causal attention in every layer of a decoder model (in place; returns the model). Padding stays
    masked. transformers 5 reads `config.is_causal`: false builds bidirectional masks (sliding-window layers:
    the window on both sides) and tells the attention kernels not to add a causal mask. Gemma configs also
    get `use_bidirectional_attention: true`, their own switch, so a saved model rebuilds non-causal attention
    modules on load; other models' attention modules have their `is_causal` flags reset here (this function
    runs again on every tunelab load). A model without causal attention layers is a config error."""
    layers = [m for m in model.modules() if getattr(m, "is_causal", None) is True]
    already = getattr(getattr(model, "config", None), "is_causal", True) is False  # a reloaded bidirectional model
    if not layers and not already:
        raise ConfigError("config: task.bidirectional: the model has no causal attention layers "
                          "(encoders such as BERT already attend in both directions)")
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if isinstance(cfg, PretrainedConfig):
            cfg.is_causal = False
            if hasattr(cfg, "use_bidirectional_attention"):
                cfg.use_bidirectional_attention = True
    for m in layers:
        m.is_causal = False
    return model


def causal_lm(model_path: str, needs: str, instead: str) -> torch.nn.Module:
    """`AutoModelForCausalLM.from_pretrained(model_path)`, refused in one line where its positions attend to the
    tokens after them: an encoder (BERT loads as a `BertLMHeadModel` that stays bidirectional without `is_decoder`),
    or a decoder made bidirectional. Trained on next tokens it would read each token it is taught to predict (the
    loss falls to ~0 and it generates nothing it learnt). Measured once on the loaded model: two short sequences that
    differ in their last token only must give the same outputs before it."""
    model = AutoModelForCausalLM.from_pretrained(model_path)
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        vocab = model.get_input_embeddings().num_embeddings
        ids = torch.randint(0, vocab, (1, 6), generator=torch.Generator().manual_seed(0))
        other = ids.clone()
        other[0, -1] = (ids[0, -1] + 1) % vocab
        with torch.no_grad(), torch.autocast(param.device.type, enabled=False):
            first, second = (model(input_ids=x.to(param.device), use_cache=False).logits[0, :-1] for x in (ids, other))
    finally:
        model.train(was_training)
    if not torch.allclose(first.float(), second.float(), atol=1e-4 if param.dtype == torch.float32 else 1e-2, rtol=0):
        raise ConfigError(f"config: model: {needs} trains a causal LM, and {as_named(model_path)} "
                          f"({type(model).__name__}) attends to the tokens after each position, so it would read "
                          f"every token it is taught to predict; {instead}")
    return model


for _auto_class in _MIXINS:  # a saved Gemma-3 model reloads with plain transformers after importing this
    register_head(_auto_class, Gemma3TextConfig)
