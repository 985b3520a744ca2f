"""The first-token-only last layer gives the same logits and gradients as the full layer."""

from __future__ import annotations

from pathlib import Path

import torch

from tunelab.models.first_token import first_token_only


def _pair(tiny_bert: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    a = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    b = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    b.load_state_dict(a.state_dict())
    return a, b


def test_same_logits_and_gradients(tiny_bert: Path) -> None:
    full, fast = _pair(tiny_bert)
    assert first_token_only(fast)
    assert "forward" in vars(fast.bert.encoder.layer[-1]) and "forward" not in vars(full.bert.encoder.layer[-1])
    assert full.state_dict().keys() == fast.state_dict().keys()
    ids = torch.randint(5, 30, (4, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 2:] = 0
    labels = torch.tensor([0, 1, 2, 1])
    for m in (full, fast):
        m.train()
        m.config.hidden_dropout_prob = 0.0
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        m(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    full.eval()
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(input_ids=ids, attention_mask=mask).logits,
                                   full(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)
    for (n, p), (_, q) in zip(full.named_parameters(), fast.named_parameters(), strict=True):
        if p.grad is None:
            assert q.grad is None or q.grad.abs().max() == 0, n
            continue
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_skips_other_models(tiny_llama: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=2)
    assert not first_token_only(model)
