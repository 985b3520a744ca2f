"""Task x method matrix on tiny random models: a few steps train what they should, freeze what they
should, and the exported model reloads and predicts exactly like the trained one."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import sentiment_rows
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.evaluation.evaluate import logits_for
from tunelab.export.save import load_model, save_model
from tunelab.methods import METHODS
from tunelab.models.precision import resolve_precision
from tunelab.tasks import TASKS
from tunelab.training import batching, engine

CASES = [
    ("bert", "full", {}),
    ("bert", "freeze", {"k": 1}),
    ("bert", "freeze", {"k": 0}),
    ("bert", "lora", {"r": 4}),
    ("bert", "dora", {"r": 4}),
    ("llama", "full", {}),
    ("llama", "lora", {"r": 4}),
]


def _table(rows: list[dict]) -> Table:
    return Table("mem.jsonl", [Record("mem.jsonl", i + 1, r) for i, r in enumerate(rows)])


@pytest.mark.parametrize(("arch", "method", "options"), CASES)
def test_train_freeze_export(
    arch: str, method: str, options: dict, tiny_bert: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    model_path = str(tiny_bert if arch == "bert" else tiny_llama)
    cfg = build_config(
        {
            "task": "classification",
            "model": model_path,
            "output_dir": str(tmp_path),
            "method": {"name": method, **options},
            "train": {"max_steps": 3, "batch_size": 8, "lr": 1e-2, "save_steps": 0},
        }
    )
    engine.seed_everything(0)
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(_table(sentiment_rows(24)))
    model, tok = task.build_model(model_path, examples)
    m = METHODS.get(method)(cfg.method)
    model = m.apply(model, task.head_modules(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    assert any("classifier" in n or "score" in n for n in trainable), "the head must train"
    if method == "freeze":
        assert not any("embed" in n for n in trainable)
    if method in ("lora", "dora"):
        assert all("lora_" in n or "modules_to_save" in n for n in trainable), sorted(trainable)

    feats = task.encode(examples, tok)
    result = engine.train(model, feats, partial(task.collate, pad_id=tok.pad_token_id), cfg.train, lr=1e-2)
    assert result.steps == 3 and math.isfinite(result.train_loss)
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)}"
    moved = {n for n in trainable if "lora_A" not in n}  # lora_A is not guaranteed to move first
    assert len(changed & moved) >= len(moved) // 2, f"trainable parameters barely moved: {sorted(moved - changed)}"

    want = logits_for(task, model, tok, examples)
    saved = save_model(model, tok, task, m, cfg, tmp_path)
    assert (tmp_path / "model" / "tunelab.json").is_file()
    assert (tmp_path / "adapter").is_dir() == (method in ("lora", "dora"))
    task2, model2, tok2 = load_model(tmp_path / "model")
    got = logits_for(task2, model2, tok2, task2.parse(_table(sentiment_rows(24)), labelled=False))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert saved is not None


def test_adapter_holds_the_head(tiny_bert: Path, tmp_path: Path) -> None:
    """The LoRA adapter saved under RUN/adapter includes the trained classification head."""
    from safetensors.torch import load_file

    cfg = build_config(
        {
            "task": "classification",
            "model": str(tiny_bert),
            "output_dir": str(tmp_path),
            "method": "lora",
            "train": {"max_steps": 1, "save_steps": 0},
        }
    )
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(_table(sentiment_rows(8)))
    model, tok = task.build_model(str(tiny_bert), examples)
    m = METHODS.get("lora")(cfg.method)
    model = m.apply(model, task.head_modules(model))
    save_model(model, tok, task, m, cfg, tmp_path)
    keys = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")).keys()
    assert any("classifier" in k for k in keys), sorted(keys)


def test_batch_order_groups_and_covers() -> None:
    lengths = [int(x) for x in np.random.default_rng(0).integers(2, 100, size=1000)]
    order = batching.batch_order(lengths, 16, seed=3, group_by_length=True)
    assert sorted(i for b in order for i in b) == list(range(1000))
    assert order == batching.batch_order(lengths, 16, seed=3, group_by_length=True)
    assert order != batching.batch_order(lengths, 16, seed=4, group_by_length=True)
    pad = sum(len(b) * max(lengths[i] for i in b) for b in order)
    plain = batching.batch_order(lengths, 16, seed=3, group_by_length=False)
    pad_plain = sum(len(b) * max(lengths[i] for i in b) for b in plain)
    assert pad < 0.7 * pad_plain
    assert max(lengths[i] for i in order[0]) == max(lengths)  # longest first: OOM shows at step 1


def test_resolve_precision_auto_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"  # TUNELAB_PRECISION=fp32 (conftest)
    monkeypatch.delenv("TUNELAB_PRECISION")
    p = resolve_precision("auto", torch.device("cpu"))
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert p == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
