"""Prefix and prompt tuning (peft) on causal LMs: only the virtual tokens train, RUN/model holds base +
adapter and reloads to the same outputs; encoders are refused; qlora is refused without a GPU."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import WORDS, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError
from tunelab.evaluation.evaluate import logits_for
from tunelab.export.save import load_model, save_model
from tunelab.registry import METHODS, TASKS
from tunelab.training import engine


def _table(rows: list[dict]) -> Table:
    return Table("mem.jsonl", [Record("mem.jsonl", i + 1, r) for i, r in enumerate(rows)])


def _setup(task_name: str, model_path: Path, method: str, tmp_path: Path, rows: list[dict], **task_kw: object):
    cfg = build_config({"task": {"name": task_name, **task_kw}, "model": str(model_path),
                        "output_dir": str(tmp_path), "method": {"name": method, "num_virtual_tokens": 3},
                        "data": {"max_length": 24},
                        "train": {"max_steps": 3, "batch_size": 4, "lr": 5e-2, "save_steps": 0}})
    engine.seed_everything(0)
    task = TASKS.get(task_name)(cfg.task, cfg.data)
    examples = task.parse(_table(rows))
    model, tok = task.build_model(str(model_path), examples)
    m = METHODS.get(method)(cfg.method)
    return cfg, task, examples, m.apply(model, task.head_modules(model)), tok, m


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_virtual_tokens_train_alone_and_reload(method: str, tiny_llama: Path, tmp_path: Path) -> None:
    docs = [{"text": " ".join(WORDS[i: i + 8])} for i in range(0, 24, 2)]
    cfg, task, examples, model, tok, m = _setup("pretrain", tiny_llama, method, tmp_path, docs)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt_encoder.default.embedding.weight"}
    # prefix: keys and values of 2 layers x 2 kv heads x 8 dims per virtual token; prompt: one 32-dim embedding
    assert tuple(model.prompt_encoder["default"].embedding.weight.shape) == (3, 64 if method == "prefix" else 32)
    feats = task.encode(examples, tok)
    result = engine.train(model, feats, partial(task.collate, pad_id=tok.pad_token_id), cfg.train, lr=5e-2)
    assert result.steps == 3
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == trainable  # the virtual tokens moved, nothing of the base model did

    want_loss = logits_for(task, model, tok, examples, 8, feats)
    prompts = task.parse(_table([{"text": "the movie"}, {"text": "good plot is"}]), labelled=False)
    want = task.predictions(logits_for(task, model, tok, prompts), prompts)
    save_model(model, tok, task, m, cfg, tmp_path)
    assert (tmp_path / "model" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "model" / "adapter_config.json").exists()  # plain transformers loads the base alone
    task2, model2, tok2 = load_model(tmp_path / "model")
    assert type(model2).__name__ == "PeftModelForCausalLM"
    ex2 = task2.parse(_table(docs))
    np.testing.assert_allclose(logits_for(task2, model2, tok2, ex2, 8), want_loss, rtol=1e-5)
    p2 = task2.parse(_table([{"text": "the movie"}, {"text": "good plot is"}]), labelled=False)
    assert task2.predictions(logits_for(task2, model2, tok2, p2), p2) == want


def test_prompt_tuning_sft_reloads_to_the_same_replies(tiny_llama: Path, tmp_path: Path) -> None:
    rows = [{"prompt": f"say {w}", "completion": w} for w in WORDS[:8]]
    cfg, task, examples, model, tok, m = _setup("sft", tiny_llama, "prompt", tmp_path, rows)
    feats = task.encode(examples, tok)
    engine.train(model, feats, partial(task.collate, pad_id=tok.pad_token_id), cfg.train, lr=5e-2)
    prompts = task.parse(_table([{"text": "say good"}, {"text": "say nice"}]), labelled=False)
    want = task.predictions(logits_for(task, model, tok, prompts), prompts)
    save_model(model, tok, task, m, cfg, tmp_path)
    task2, model2, tok2 = load_model(tmp_path / "model")
    p2 = task2.parse(_table([{"text": "say good"}, {"text": "say nice"}]), labelled=False)
    assert task2.predictions(logits_for(task2, model2, tok2, p2), p2) == want


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_encoders_are_refused(method: str, tiny_bert: Path, tmp_path: Path) -> None:
    rows = [{"text": "good movie", "label": "pos"}, {"text": "bad movie", "label": "neg"}]
    with pytest.raises(ConfigError, match=rf"^config: method: {method} tuning works with causal LMs only \(task sft, "
                                          r"or pretrain with objective clm\); this run builds a "
                                          r"BertForSequenceClassification; use lora$"):
        _setup("classification", tiny_bert, method, tmp_path, rows)
    with pytest.raises(ConfigError, match="this run builds a BertForMaskedLM"):
        _setup("pretrain", tiny_bert, method, tmp_path, [{"text": "good movie"}])


def test_qlora_without_gpu_is_a_config_error(tiny_llama: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CPU refusal cannot be observed")
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "good movie"}] * 4)
    res = CliRunner().invoke(app, ["train", "--set", "task=pretrain", "--set", f"model={tiny_llama}",
                                   "--set", f"data.train={train}", "--set", "method=qlora"])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --set method: qlora needs a CUDA GPU and bitsandbytes "
                                                   "(found: no CUDA GPU, "), lines
    assert lines[0].endswith("; use lora on CPU (GPU: pip install 'tunelab[qlora]')")
