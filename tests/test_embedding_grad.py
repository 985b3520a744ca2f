"""FastEmbeddingGrad: the same gradients and weights as PyTorch's dense embedding backward (padding row included),
across gradient accumulation and optimizer steps, and the module's own forward back after `restore()`."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from tunelab.training.embedding_grad import use_fast_embedding_grad


def _train(model_dir: Path, fast: bool) -> tuple[list[float], dict[str, torch.Tensor], torch.nn.Module]:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=2, hidden_dropout_prob=0.0,
                                                               attention_probs_dropout_prob=0.0)
    handle = use_fast_embedding_grad(model, 1) if fast else None
    assert (handle is not None) == fast
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for step in range(6):
        for _ in range(2):  # two accumulated passes per optimizer step
            ids = torch.randint(1, model.config.vocab_size, (4, 5 + step), generator=gen)
            ids[:, -2:] = model.config.pad_token_id  # padding rows get no gradient
            loss = model(input_ids=ids, labels=torch.randint(0, 2, (4,), generator=gen)).loss
            loss.backward()
            losses.append(float(loss))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if handle is not None:
        handle.restore()
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, model


def test_same_training_as_the_dense_backward(tiny_bert: Path) -> None:
    dense_losses, dense, _ = _train(tiny_bert, fast=False)
    fast_losses, fast, model = _train(tiny_bert, fast=True)
    assert max(abs(a - b) for a, b in zip(dense_losses, fast_losses, strict=True)) < 1e-5  # float summation order
    assert max(float((dense[k] - fast[k]).abs().max()) for k in dense) < 1e-5
    assert "forward" not in model.get_input_embeddings().__dict__  # restored


def test_not_used_where_unsafe(tiny_bert: Path, tiny_llama: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    assert use_fast_embedding_grad(model, 2) is None  # several processes: DDP hooks autograd's gradients
    model.get_input_embeddings().weight.requires_grad_(False)
    assert use_fast_embedding_grad(model, 1) is None  # frozen
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    tied = lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    assert (use_fast_embedding_grad(lm, 1) is None) == tied
