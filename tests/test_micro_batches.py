"""train.micro_batch_tokens and train.grad_accum: a batch run as several forward/backward passes, or accumulated
from smaller batches, gives the whole batch's gradient (weighted by its loss units: rows, or trained tokens)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import sentiment_rows
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.registry import METHODS, TASKS
from tunelab.training import batching, engine


def _rows(n: int, width: int = 10) -> list[dict]:
    return [{"input_ids": [1] * width} for _ in range(n)]


def test_split_batch_bounds_padded_tokens() -> None:
    assert [len(p) for p in batching.split_batch(_rows(8, 512), 2048)] == [4, 4]
    assert [len(p) for p in batching.split_batch(_rows(5, 512), 2048)] == [4, 1]
    assert [len(p) for p in batching.split_batch(_rows(8, 512), None)] == [8]
    # rows x longest row of the part; a row longer than the budget is a part of its own
    rows = [{"input_ids": [1] * n} for n in (30, 10, 10, 10, 10, 5)]
    assert [[len(f["input_ids"]) for f in p] for p in batching.split_batch(rows, 25)] == [[30], [10, 10], [10, 10], [5]]
    assert batching.pass_weights([3, 1], [2, 2]) == [0.75, 0.25]
    assert batching.pass_weights([0, 0], [3, 1]) == [0.75, 0.25]  # no trained units: by rows


def test_auto_budget_is_cpu_only() -> None:
    assert batching.micro_batch_tokens("auto", torch.device("cpu")) == 1024
    assert batching.micro_batch_tokens("auto", torch.device("cuda")) is None
    assert batching.micro_batch_tokens(512, torch.device("cuda")) == 512


def _sft(tiny_llama: Path, budget: int | None, batch: int = 8, accum: int = 1):
    cfg = build_config({"task": "sft", "model": str(tiny_llama), "method": "full",
                        "train": {"epochs": 1, "batch_size": batch, "grad_accum": accum, "max_steps": 1,
                                  "optimizer": "sgd", "lr": 0.5, "save_steps": 0, "max_grad_norm": None,
                                  "micro_batch_tokens": budget}})
    task = TASKS.get("sft")(cfg.task, cfg.data)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    g = torch.Generator().manual_seed(0)
    feats = []
    for n in (7, 12, 5, 20, 9, 3, 15, 11):  # unequal trained tokens per row: weighting by rows would differ
        ids = torch.randint(5, model.config.vocab_size, (n,), generator=g).tolist()
        feats.append({"input_ids": ids, "labels": [-100] * (n - n // 3) + ids[n - n // 3:]})
    return cfg, task, model, feats, partial(task.collate, pad_id=0)


def _classification(tiny_bert: Path, budget: int | None, batch: int = 8, accum: int = 1):
    cfg = build_config({"task": "classification", "model": str(tiny_bert), "method": "full",
                        "train": {"epochs": 1, "batch_size": batch, "grad_accum": accum, "max_steps": 1,
                                  "optimizer": "sgd", "lr": 0.5, "save_steps": 0, "max_grad_norm": None,
                                  "dropout": 0.0, "micro_batch_tokens": budget}})
    task = TASKS.get("classification")(cfg.task, cfg.data)
    rows = sentiment_rows(8)
    examples = task.parse(Table("m.jsonl", [Record("m.jsonl", i + 1, r) for i, r in enumerate(rows)]))
    torch.manual_seed(0)
    model, tok = task.build_model(str(tiny_bert), examples)
    model = METHODS.get("full")(cfg.method).apply(model, task.head_modules(model))
    return cfg, task, model, task.encode(examples, tok), partial(task.collate, pad_id=tok.pad_token_id)


# (micro_batch_tokens, batch_size, grad_accum): one step over the same 8 rows each way
WAYS = {"split": (24, 8, 1), "accumulated": (None, 4, 2), "accumulated and split": (24, 2, 4)}


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("kind", ["sft", "classification"])
def test_split_passes_give_the_whole_batch_update(kind: str, way: str, tiny_llama: Path, tiny_bert: Path) -> None:
    """grad_accum weighed each accumulated batch alike: an SFT step of rows with unequal trained tokens moved
    down_proj 110 % away from the whole batch's update (HF Trainer divides by all the step's trained tokens)."""
    setup = partial(_sft, tiny_llama) if kind == "sft" else partial(_classification, tiny_bert)
    trained = {}
    for name, args in (("whole", (None, 8, 1)), (way, WAYS[way])):
        cfg, task, model, feats, collate = setup(*args)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        result = engine.train(model, feats, collate, cfg.train, lr=cfg.train.lr, loss_fn=task.loss_fn(),
                              loss_units=task.loss_units)
        assert result.steps == 1
        trained[name] = (result.train_loss, {n: p.detach() - before[n] for n, p in model.named_parameters()})
    (loss_one, upd_one), (loss_split, upd_split) = trained["whole"], trained[way]
    assert len(batching.split_batch(feats, 24)) > 2
    assert loss_split == pytest.approx(loss_one, abs=1e-5)
    moved = [n for n, u in upd_one.items() if u.abs().max() > 0]
    assert len(moved) > 5
    for name in moved:
        torch.testing.assert_close(upd_split[name], upd_one[name], atol=1e-6, rtol=1e-4, msg=name)


def test_split_passes_weighted_by_rows_would_differ(tiny_llama: Path) -> None:
    """The negative case: the rows' trained-token counts differ, so the unit weighting is what makes it exact."""
    cfg, task, model, feats, collate = _sft(tiny_llama, 24)
    with torch.no_grad():
        parts = [collate(p) for p in batching.split_batch(feats, 24)]
        losses = [task.loss_fn()(model, b).item() for b in parts]
        whole = task.loss_fn()(model, collate(feats)).item()
    by_units = batching.pass_weights([task.loss_units(b) for b in parts], [len(b["input_ids"]) for b in parts])
    by_rows = batching.pass_weights([0] * len(parts), [len(b["input_ids"]) for b in parts])
    assert sum(w * v for w, v in zip(by_units, losses, strict=True)) == pytest.approx(whole, abs=1e-5)
    assert abs(sum(w * v for w, v in zip(by_rows, losses, strict=True)) - whole) > 1e-3
