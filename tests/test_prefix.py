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


@pytest.mark.parametrize("method", ["prefix", "prompt"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_replies_are_those_of_the_trained_forward_pass(method: str, arch: str, tiny_llama: Path) -> None:
    """generate() (eval, predict), the chat stream and the server's batcher reply as the model was trained: each
    greedy token is the argmax of peft's own forward pass over the virtual tokens + prompt + reply so far. peft's
    generate() (peft 0.21, transformers 5.25) gave other tokens from the second on (prompt; a GPT-2 ran out of
    positions after a few) or from the first (prefix); rotary (llama) and learned positions (gpt2), left padding."""
    import io
    import threading

    from peft import PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tunelab.models.generate import generate_ids
    from tunelab.serve.chat_batcher import ChatBatcher, Job
    from tunelab.tasks.generation import GenerationConfig, generate
    from tunelab.tasks.streaming import stream_reply

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    base = (AutoModelForCausalLM.from_pretrained(tiny_llama) if arch == "llama" else
            GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=32, n_layer=2, n_head=2)))
    config = (PrefixTuningConfig if method == "prefix" else PromptTuningConfig)(task_type=TaskType.CAUSAL_LM,
                                                                                num_virtual_tokens=3)
    model = get_peft_model(base, config).eval()
    with torch.no_grad():  # weights and virtual tokens of some size: replies that depend on them
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 1.0 if p.requires_grad else 0.5)

    def trained(prompt: list[int], new: int, penalty: float = 1.0, no_repeat_bigrams: bool = False) -> list[int]:
        seq = list(prompt)
        with torch.no_grad():
            for _ in range(new):
                logits = model(input_ids=torch.tensor([seq]), attention_mask=torch.ones(1, len(seq))).logits[0, -1]
                seen = torch.tensor(seq)  # (transformers' repetition penalty: over what the sequence holds)
                logits[seen] = torch.where(logits[seen] < 0, logits[seen] * penalty, logits[seen] / penalty)
                if no_repeat_bigrams:  # no token that would repeat a pair the sequence holds
                    logits[[b for a, b in zip(seq, seq[1:], strict=False) if a == seq[-1]]] = -float("inf")
                seq.append(int(logits.argmax()))
        return seq[len(prompt):]

    prompts, new, none = [[5, 7, 9, 11, 13], [6, 8]], 12, 10**6  # (`none`: no stop id ends a reply early)
    want = [trained(p, new) for p in prompts]
    cfg = GenerationConfig(max_new_tokens=new)
    assert generate(model, tok, prompts, cfg, batch_size=2, stop_ids=[none]) == want
    out = io.StringIO()
    info: dict = {}
    stream_reply(model, tok, prompts[0], cfg, [none], out, info=info)
    assert info["tokens"] == new and out.getvalue().strip() == tok.decode(want[0], skip_special_tokens=True).strip()
    jobs = [Job(p, cfg, lambda _: None, threading.Event()) for p in prompts]
    ChatBatcher(model, tok, stop=[none])._generate(jobs)
    assert [j.tokens for j in jobs] == want
    # a repetition penalty (a model's generation_config.json may set one) over the prompt and reply only: the virtual
    # tokens' stand-ins in generate()'s sequence are not a pad or stop id it would penalise
    one = (torch.tensor([prompts[0]]), torch.ones(1, 5, dtype=torch.long))
    got = generate_ids(model, *one, max_new_tokens=6, do_sample=False, repetition_penalty=1.5,
                       pad_token_id=tok.eos_token_id, eos_token_id=[none])
    assert got[0, 5:].tolist() == trained(prompts[0], 6, penalty=1.5)
    got = generate_ids(model, *one, max_new_tokens=12, do_sample=False, no_repeat_ngram_size=2,
                       pad_token_id=tok.eos_token_id, eos_token_id=[none])
    assert got[0, 5:].tolist() == trained(prompts[0], 12, no_repeat_bigrams=True)


def test_continuing_a_prefix_runs_model_trains_its_adapter(tiny_llama: Path, tmp_path: Path) -> None:
    """`model: RUN/model` of a prefix run holds the base and, in adapter/, the prefix: a prefix run from it trains on
    that prefix (it started from a fresh one, silently); another method, or other num_virtual_tokens, would drop it
    and is refused in one line."""
    from safetensors.torch import load_file

    train = write_jsonl(tmp_path / "t.jsonl", [{"prompt": f"say {w}", "completion": w} for w in WORDS[:8]])

    def run(out: str, model: Path, *extra: str) -> object:
        sets = ["task=sft", f"model={model}", f"data.train={train}", "data.validation_split=0", "method=prefix",
                "method.num_virtual_tokens=4", f"output_dir={tmp_path / out}", "train.max_steps=2",
                "train.batch_size=4", "train.save_steps=0", "train.report=false", *extra]
        return CliRunner().invoke(app, ["train", *[x for s in sets for x in ("--set", s)]])

    def prefix(out: str) -> torch.Tensor:
        return load_file(str(tmp_path / out / "model" / "adapter" / "adapter_model.safetensors"))["prompt_embeddings"]

    assert run("first", tiny_llama, "train.lr=5e-2").exit_code == 0
    res = run("again", tmp_path / "first" / "model", "train.lr=1e-12")
    assert res.exit_code == 0, res.output
    assert torch.allclose(prefix("again"), prefix("first"), atol=1e-6)
    for extra, said in ((["method=lora"], "--set method: lora would train"),
                        (["method=prompt"], "continue it with method=prefix, or start from the base model it was "
                                            f"tuned from ({tiny_llama})"),
                        (["method.num_virtual_tokens=8"], "--set method.num_virtual_tokens: 8 where the prefix "
                                                          "adapter it continues")):
        res = run("refused", tmp_path / "first" / "model", *extra)
        assert res.exit_code == 2 and said in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "refused").exists()
