"""A labelled head that continues a tuned model (`model: RUN/model`, incremental fine-tuning): classification's and
NER's. The loaded model's labels (its config's `id2label`, where it has this task's head) stay in their order, each
on the head row it trained; labels the new data adds are appended, and the head grows by their rows (the old rows
kept exactly). Rebuilding the label map from the new data instead would put the old rows under other names, or
fail to load a head of another size. A model tuned with another task's head (a classification model continued
for NER) has that head dropped: a new one is initialised, whatever its size."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

LABELLED_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
HEAD_NAMES = ("pre_classifier", "classifier", "score", "qa_outputs")  # (a model that is not transformers')


def head_modules(model: torch.nn.Module) -> list[str]:
    """The task head's modules: what the head class adds around its backbone (the child named by transformers'
    `base_model_prefix`), every module of it with weights — `classifier` / `score` / `qa_outputs`, and DistilBERT's
    `pre_classifier`, DeBERTa's `pooler` (not in a pretrained checkpoint: new), ModernBERT's `head` before its
    `classifier` (which is also its QA span head). They train whole and are saved with an adapter: LoRA over a
    module left out would train a low-rank update of its random weights, which the adapter does not hold."""
    from transformers import PreTrainedModel  # (transformers' model code: imported once a model is loaded)

    backbone = getattr(model, "base_model_prefix", "") if isinstance(model, PreTrainedModel) else ""
    return [name for name, module in model.named_children()
            if name in HEAD_NAMES or (backbone and hasattr(model, backbone) and name != backbone
                                      and next(module.parameters(), None) is not None)]


def tuned_labels(model_path: str, head: str) -> list[str]:
    """The labels of the model at `model_path`, in its head's order, where it is a model with this task's head (an
    architecture ending in `head`, e.g. `ForTokenClassification`: a tuned model); else [] (a base model, or a head
    never tuned: transformers' default names `LABEL_0`, `LABEL_1`, ... only)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith(head) for a in archs):
        return []
    labels = [str(config.id2label[i]) for i in range(len(config.id2label))]
    return [] if all(re.fullmatch(r"LABEL_\d+", label) for label in labels) else labels


def continued_head(load: Callable[..., torch.nn.Module], model_path: str, head: str, wanted: Sequence[str],
                   head_modules: Callable[[torch.nn.Module], list[str]]) -> tuple[torch.nn.Module, list[str]]:
    """(model, its labels): `load(num_labels=, id2label=, label2id=)` with the head the model at `model_path` has
    (`tuned_labels`; a base model: `wanted`'s), grown (`grow_head` on `head_modules(model)`) by the labels of
    `wanted` it lacks, which follow its own."""
    old = tuned_labels(model_path, head)
    labels = old + [label for label in wanted if label not in old]
    start = old or labels
    foreign = foreign_head(model_path, head)
    model = load(num_labels=len(start), id2label=dict(enumerate(start)), label2id={n: i for i, n in enumerate(start)},
                 **({"ignore_mismatched_sizes": True} if foreign else {}))
    if foreign:  # the same module names (`classifier`, `score`), another task's rows: never reused
        std = getattr(model.config, "initializer_range", 0.02)
        with torch.no_grad():
            for layer in (m for name in head_modules(model) for m in model.get_submodule(name).modules()):
                if isinstance(layer, torch.nn.Linear):  # as transformers initialises a head (its own
                    layer.weight.normal_(std=std)  # `_init_weights` skips weights it loaded)
                    if layer.bias is not None:
                        layer.bias.zero_()
    if len(labels) > len(start):
        grow_head(model, head_modules(model), len(labels))
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {n: i for i, n in enumerate(labels)}
    return model, labels


def foreign_head(model_path: str, head: str) -> bool:
    """The model at `model_path` was tuned with another task's labelled head (its architecture ends in one of
    LABELLED_HEADS, not in `head`): e.g. a sentiment classifier continued for NER."""
    from transformers import AutoConfig

    archs = getattr(AutoConfig.from_pretrained(model_path), "architectures", None) or []
    return not any(a.endswith(head) for a in archs) and any(a.endswith(h) for a in archs for h in LABELLED_HEADS)


def grow_head(model: torch.nn.Module, heads: list[str], num_labels: int) -> None:
    """Append rows for new labels to the final Linear of the head (the last one of `heads` with a row a label:
    `classifier` or its `out_proj`, not DistilBERT's `pre_classifier` or DeBERTa's `pooler` before it); old rows are
    kept exactly."""
    linears = [(f"{name}.{sub}".rstrip("."), m) for name in heads
               for sub, m in model.get_submodule(name).named_modules()
               if isinstance(m, torch.nn.Linear) and m.out_features == model.config.num_labels]
    for full, old in linears[-1:]:
        new = torch.nn.Linear(old.in_features, num_labels, bias=old.bias is not None)
        torch.nn.init.normal_(new.weight, std=0.02)
        with torch.no_grad():
            new.weight[: old.out_features] = old.weight
            if old.bias is not None:
                new.bias.zero_()
                new.bias[: old.out_features] = old.bias
        model.set_submodule(full, new)
    model.config.num_labels = num_labels
    model.num_labels = num_labels
