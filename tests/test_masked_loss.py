"""The masked-LM loss projects only the masked positions to the vocabulary (tasks/masked_loss.py): the loss and the
gradients are the model's own, with LoRA too, and a head that mixes positions falls back to the full logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM

from tunelab.tasks.masked_loss import masked_lm_loss, masked_nll, position_wise


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, vocab, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0
    labels = torch.full_like(ids, -100)
    for row, cols in ((0, [1, 4, 9]), (1, [2]), (2, [3, 6])):
        labels[row, cols] = ids[row, cols]
        ids[row, cols] = 4  # [MASK]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _same_as_the_models_own(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    model.zero_grad()
    own = model(**batch).loss
    own.backward()
    want = _grads(model)
    model.zero_grad()
    got = masked_lm_loss(model, batch)
    got.backward()
    assert got.item() == pytest.approx(own.item(), rel=1e-5)
    grads = _grads(model)
    assert grads.keys() == want.keys() and want
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_only_the_masked_positions_reach_the_head(tiny_bert: Path) -> None:
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()  # eval: no dropout, comparable runs
    batch = _batch(model.config.vocab_size)
    seen: list[tuple[int, ...]] = []
    model.cls.register_forward_hook(lambda _m, args, _o: seen.append(tuple(args[0].shape)))
    _same_as_the_models_own(model, batch)
    assert position_wise(model)
    assert seen[-1] == (1, 6, model.config.hidden_size), seen  # the 6 masked positions, not 3 x 11
    sums, counts = masked_nll(model, batch)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"], reduction="none")
    torch.testing.assert_close(sums, nll.sum(1).double(), rtol=1e-5, atol=1e-6)
    assert counts.tolist() == [3, 1, 2]


def test_lora_and_a_head_that_mixes_positions(tiny_bert: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    batch = _batch(model.config.vocab_size)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False))
    _same_as_the_models_own(lora, batch)
    assert position_wise(lora.get_base_model())
    mixing = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    head = mixing.cls.forward
    mixing.cls.forward = lambda h: head(h.cumsum(1))  # each position's logits depend on the ones before it
    assert not position_wise(mixing)
    _same_as_the_models_own(mixing, batch)
