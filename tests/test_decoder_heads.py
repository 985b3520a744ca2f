"""Token-classification and QA heads on decoder-only bases (tiny random Gemma-3 text models), bidirectional
attention (later tokens reach earlier positions; padding stays masked), Chinese character alignment with a
Gemma-like tokenizer, and NER / QA train → save → reload with the same predictions."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import POS, WORDS, ZH, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError
from tunelab.models.decoder_heads import (
    Gemma3TextForQuestionAnswering,
    Gemma3TextForTokenClassification,
    generic_head,
    load_head,
    make_bidirectional,
)
from tunelab.registry import TASKS

FILL = [w for w in WORDS[14:] if w not in ("the", "a")]


def _task(name: str, model: Path, task: dict | None = None, **data: object):
    cfg = build_config({"task": {"name": name, **(task or {})}, "model": str(model), "data": data})
    return TASKS.get(name)(cfg.task, cfg.data), cfg


def _ner_rows(n: int, seed: int = 0) -> list[dict]:
    """English word rows and Chinese character rows: a positive word is a PER, 北京 / 上海 a LOC."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 2:
            words = [rng.choice(FILL) for _ in range(rng.randint(3, 7))]
            k = rng.randrange(len(words))
            words[k] = rng.choice(POS)
            rows.append({"tokens": words, "tags": ["B-PER" if j == k else "O" for j in range(len(words))]})
        else:
            city = rng.choice(["北京", "上海"])
            chars = list(rng.choice(["张三", "李四"]) + "在" + city + "工作")
            rows.append({"tokens": chars, "tags": ["O", "O", "O", "B-LOC", "I-LOC", "O", "O"]})
    return rows


def _qa_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(FILL) for _ in range(rng.randint(6, 20))]
        k = rng.randrange(len(words))
        words[k] = rng.choice(POS)
        ctx = " ".join(words)
        start = len(" ".join(words[:k])) + (1 if k else 0)
        rows.append({"id": f"q{seed}-{i}", "context": ctx, "question": "good",
                     "answers": {"text": [words[k]], "answer_start": [start]}})
    return rows


# -- heads ---------------------------------------------------------------------------------------
def test_gemma3_heads_load_the_causal_lm_weights(tiny_gemma3: Path) -> None:
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_gemma3)
    tc = load_head("AutoModelForTokenClassification", str(tiny_gemma3), num_labels=5)
    qa = load_head("AutoModelForQuestionAnswering", str(tiny_gemma3))
    assert type(tc) is Gemma3TextForTokenClassification and type(qa) is Gemma3TextForQuestionAnswering
    for head in (tc, qa):  # the base stack is the checkpoint's; only the head is new
        for name, p in lm.model.state_dict().items():
            assert torch.equal(head.model.state_dict()[name], p), name
    assert tc.score.out_features == 5 and qa.qa_outputs.out_features == 2
    ids = torch.tensor([[2, 5, 6, 7]])
    assert tc(input_ids=ids).logits.shape == (1, 4, 5)
    assert qa(input_ids=ids).start_logits.shape == (1, 4)


def test_llama_qa_head_gets_the_causal_lm_base(tiny_llama: Path, tmp_path: Path) -> None:
    """transformers' LlamaForQuestionAnswering calls its base `transformer`, a causal LM checkpoint `model`:
    loaded plainly, the base would stay random; load_head fills it from the checkpoint, and the saved
    model reloads as is."""
    from transformers import AutoModelForCausalLM, AutoModelForQuestionAnswering

    lm = AutoModelForCausalLM.from_pretrained(tiny_llama)
    qa = load_head("AutoModelForQuestionAnswering", str(tiny_llama))
    assert qa.base_model_prefix == "transformer"
    for name, p in lm.model.state_dict().items():
        assert torch.equal(qa.transformer.state_dict()[name], p), name
    qa.save_pretrained(tmp_path)
    again = AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    for name, p in qa.state_dict().items():
        assert torch.equal(again.state_dict()[name], p), name


def test_generic_head_for_another_decoder_without_one(tmp_path: Path) -> None:
    from transformers import AutoModelForTokenClassification, GraniteConfig, GraniteForCausalLM

    assert GraniteConfig not in AutoModelForTokenClassification._model_mapping  # transformers has none
    cfg = GraniteConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    GraniteForCausalLM(cfg).save_pretrained(tmp_path)
    model = load_head("AutoModelForTokenClassification", str(tmp_path), num_labels=3)
    assert type(model).__name__ == "GraniteForTokenClassification" and model.score.out_features == 3
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 3)
    from transformers import BertConfig

    with pytest.raises(ConfigError, match="config: model: 'bert' has no question-answering head"):
        generic_head("AutoModelForQuestionAnswering", type("NoQaBert", (BertConfig,), {"model_type": "bert"}))


# -- bidirectional attention ---------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["tiny_gemma3", "tiny_llama"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_later_token_reaches_earlier_positions_only_when_bidirectional(
    fixture: str, bidirectional: bool, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    model = load_head("AutoModelForTokenClassification", str(path), num_labels=3)
    if bidirectional:
        make_bidirectional(model)
    model.eval()
    ids = torch.tensor([[2, 5, 6, 7, 8, 9, 10, 11, 12, 13]])  # longer than tiny_gemma3's sliding window (4)
    changed = ids.clone()
    changed[0, -1] = 14
    with torch.no_grad():
        diff = (model(input_ids=ids).logits - model(input_ids=changed).logits).abs().amax(-1)[0]
    assert diff[-1] > 1e-4
    if bidirectional:
        assert (diff[:-1] > 1e-6).all(), diff  # every earlier position sees the change (position 0 included)
    else:
        assert (diff[:-1] == 0).all(), diff
    # padding stays masked: a row padded in a batch gets the logits it gets alone
    batch = torch.tensor([[2, 5, 6, 7, 8, 0, 0, 0, 0, 0], ids[0].tolist()])
    mask = torch.tensor([[1] * 5 + [0] * 5, [1] * 10])
    with torch.no_grad():
        padded = model(input_ids=batch, attention_mask=mask).logits[0, :5]
        alone = model(input_ids=batch[:1, :5]).logits[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_bidirectional_refused_for_encoders(tiny_bert: Path) -> None:
    task, _ = _task("ner", tiny_bert, {"bidirectional": True})
    with pytest.raises(ConfigError, match=r"^config: task.bidirectional: the model has no causal attention layers"):
        task.build_model(str(tiny_bert), [{"tokens": ["good"], "tags": ["B-PER"]}])


# -- Chinese characters with a Gemma-like tokenizer ---------------------------------------------
def test_chinese_character_alignment(tiny_gemma3: Path) -> None:
    task, _ = _task("ner", tiny_gemma3, max_length=32)
    rows = [{"tokens": list("张三在北京工作"), "tags": ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"]},
            {"tokens": ["the", "actor", "是", "好"], "tags": ["O", "B-PER", "O", "O"]}]  # 好: not in the vocab
    examples = [{**r, "source": "x", "line": i + 1, "row": r} for i, r in enumerate(rows)]
    _, tok = task.build_model(str(tiny_gemma3), examples)
    zh, en = task.encode(examples, tok)
    # <bos>, then one token per character: each character is its own word
    assert examples[0]["word_ids"] == [None, 0, 1, 2, 3, 4, 5, 6]
    assert zh["labels"] == [-100, *[task.labels.index(t) for t in rows[0]["tags"]]]
    assert tok.convert_ids_to_tokens(zh["input_ids"])[1:] == list("张三在北京工作")
    # English words split into several pieces: only the first carries the label; 好 becomes <unk>
    wid = examples[1]["word_ids"]
    assert wid[0] is None and sorted(set(wid[1:])) == [0, 1, 2, 3] and len(wid) > 5
    first = [i for i, w in enumerate(wid) if w is not None and w != wid[i - 1]]
    assert [en["labels"][i] for i in first] == [task.labels.index(t) for t in rows[1]["tags"]]
    assert all(en["labels"][i] == -100 for i in range(len(wid)) if i not in first)
    assert tok.unk_token_id in en["input_ids"] and "好" not in ZH


# -- train → save → reload -----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "method_name"), [("ner", "full"), ("qa", "full"), ("ner", "lora"), ("qa", "lora")])
def test_three_steps_then_save_and_reload_same_logits(
    tiny_gemma3: Path, tmp_path: Path, name: str, method_name: str
) -> None:
    from tunelab.export.save import load_model, save_model
    from tunelab.registry import METHODS

    if name == "ner":
        task, cfg = _task("ner", tiny_gemma3, {"bidirectional": True}, max_length=32)
        rows = _ner_rows(12)
    else:
        task, cfg = _task("qa", tiny_gemma3, {"bidirectional": True, "doc_stride": 8, "max_question_length": 4},
                          max_length=32)
        rows = _qa_rows(12, 0)
    examples = task.parse(Table("t.jsonl", [Record("t.jsonl", i + 1, r) for i, r in enumerate(rows)]))
    torch.manual_seed(0)
    model, tok = task.build_model(str(tiny_gemma3), examples)
    head = task.head_modules(model)
    assert head == (["score"] if name == "ner" else ["qa_outputs"])
    method = METHODS.get(method_name)(build_config({"task": name, "model": "minilm", "method": method_name}).method)
    model = method.apply(model, head)
    if method_name == "lora":  # the new head trains fully, the base through adapters
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert any(head[0] in n and "modules_to_save" in n for n in trainable), sorted(trainable)
    feats = task.encode(examples, tok)
    batch = task.collate(feats, tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(3):
        loss = model(**batch).loss
        assert math.isfinite(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    model.eval()
    with torch.no_grad():
        out = model(**inputs)
    before = out.logits if name == "ner" else torch.stack([out.start_logits, out.end_logits], -1)
    saved = save_model(model, tok, task, method, cfg, tmp_path)
    del saved
    task2, model2, tok2 = load_model(tmp_path / "model")
    assert type(model2).__name__ == ("Gemma3TextForTokenClassification" if name == "ner"
                                     else "Gemma3TextForQuestionAnswering")
    assert task2.cfg.bidirectional and all(not m.is_causal for m in model2.modules() if hasattr(m, "is_causal"))
    model2.eval()
    with torch.no_grad():
        out2 = model2(**inputs)
    after = out2.logits if name == "ner" else torch.stack([out2.start_logits, out2.end_logits], -1)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert tok2(rows[0].get("context", "x"))["input_ids"] == tok(rows[0].get("context", "x"))["input_ids"]


def _cli(args: list[str]) -> object:
    return CliRunner().invoke(app, args)


def test_cli_ner_gemma3(tiny_gemma3: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", _ner_rows(24, 0))
    val = write_jsonl(tmp_path / "val.jsonl", _ner_rows(8, 1))
    out = tmp_path / "run"
    sets = ["task={name: ner, bidirectional: true}", f"model={tiny_gemma3}", f"data.train={train}",
            f"data.validation={val}", f"output_dir={out}", "train.epochs=1", "train.batch_size=8",
            "train.save_steps=0", "train.lr=1e-3"]
    res = _cli(["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 3 and math.isfinite(metrics["train"]["loss"])
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["Gemma3TextForTokenClassification"] and config["use_bidirectional_attention"]
    res = _cli(["eval", str(out / "model"), "--data", str(val)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1]) == metrics["validation"]
    res = CliRunner().invoke(app, ["predict", str(out / "model"), "--input", "-"],
                             input="张三在北京工作\nthe actor is good\n")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [len(r["pred_tags"]) for r in rows] == [7, 4]
    assert all(r["text"][e["start"] : e["end"]] == e["text"] for r in rows for e in r["entities"])


def test_cli_qa_gemma3(tiny_gemma3: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", _qa_rows(24, 0))
    val = write_jsonl(tmp_path / "val.jsonl", _qa_rows(8, 1))
    out = tmp_path / "run"
    sets = ["task={name: qa, bidirectional: true, doc_stride: 8, max_question_length: 4, n_best: 5}",
            f"model={tiny_gemma3}", f"data.train={train}", f"data.validation={val}", f"output_dir={out}",
            "data.max_length=32", "train.epochs=1", "train.batch_size=8", "train.save_steps=0", "train.lr=1e-3"]
    res = _cli(["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["train"]["loss"]) and metrics["validation"]["n"] == 8
    res = _cli(["eval", str(out / "model"), "--data", str(val)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1]) == metrics["validation"]
    res = _cli(["predict", str(out / "model"), "--input", str(val)])
    assert res.exit_code == 0, res.output
    for r in (json.loads(line) for line in res.stdout.splitlines()):
        assert r["answer"] and r["context"][r["start"] : r["end"]] == r["answer"]
        assert not r["answer"][0].isspace()  # the ▁ of the first token's offset is not part of the answer


def test_best_span_drops_the_leading_space_of_sentencepiece_tokens() -> None:
    from tunelab.tasks.qa import best_span

    context = "the actor is good"
    offsets = [None, (0, 3), (3, 9), (9, 12), (12, 17)]  # ▁actor covers " actor"
    logits = np.zeros((5, 2), dtype=np.float32)
    logits[2, 0] = logits[2, 1] = 5.0
    assert best_span([(logits, offsets)], context, 5, 10) == {
        "answer": "actor", "score": pytest.approx(1.0, abs=0.1), "start": 4, "end": 9}


def test_bidirectional_learns_a_tag_that_depends_on_the_next_word(tiny_gemma3: Path) -> None:
    """The word before a positive word is a PER: a causal decoder cannot see the cue, a bidirectional one can."""
    def rows(n: int, seed: int) -> list[dict]:
        rng, out = random.Random(seed), []
        for _ in range(n):
            words = [rng.choice(FILL) for _ in range(rng.randint(4, 8))]
            k = rng.randrange(1, len(words))
            words[k] = rng.choice(POS)
            out.append({"tokens": words, "tags": ["B-PER" if j == k - 1 else "O" for j in range(len(words))]})
        return out

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest, and immune to a busy machine
    try:
        f1 = {b: _next_word_f1(tiny_gemma3, b, rows) for b in (False, True)}
    finally:
        torch.set_num_threads(threads)
    assert f1[True] > f1[False] + 0.2, f1


def _next_word_f1(tiny_gemma3: Path, bidirectional: bool, rows: Callable[[int, int], list[dict]]) -> float:
    """Validation entity F1 after 15 epochs on the next-word task."""
    task, _ = _task("ner", tiny_gemma3, {"bidirectional": bidirectional}, max_length=32)
    train, val = (task.parse(Table(s, [Record(s, i + 1, r) for i, r in enumerate(rows(n, seed))]))
                  for s, n, seed in (("t", 64, 0), ("v", 32, 1)))
    torch.manual_seed(0)
    model, tok = task.build_model(str(tiny_gemma3), train)
    feats, val_feats = task.encode(train, tok), task.encode(val, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(15):
        for s in range(0, len(feats), 16):
            model(**task.collate(feats[s : s + 16], tok.pad_token_id)).loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    batch = task.collate(val_feats, tok.pad_token_id)
    del batch["labels"]
    with torch.no_grad():
        logits = model(**batch).logits.numpy()
    return task.metrics([lg[: len(f["input_ids"])] for lg, f in zip(logits, val_feats, strict=True)], val)["f1"]


@pytest.mark.parametrize(("name", "bidirectional"), [("ner", True), ("qa", True), ("ner", False)])
def test_merge_of_a_gemma3_lora_run_keeps_its_attention(tiny_gemma3: Path, tmp_path: Path, name: str,
                                                        bidirectional: bool) -> None:
    """`export --merge` of a bidirectional Gemma-3 LoRA NER / QA run failed its parity check (`RUN/model differs
    from base + adapter by 0.332`): the base rebuilt for the merge attended causally. It is built as training built it
    (the task's switches), and the merged model is saved bidirectional; a causal run stays causal."""
    from tunelab.export.merge import merge_run

    rows = _ner_rows if name == "ner" else _qa_rows
    train = write_jsonl(tmp_path / "train.jsonl", rows(8, 0))
    task = (f"task={{name: ner, bidirectional: {str(bidirectional).lower()}}}" if name == "ner" else
            "task={name: qa, bidirectional: true, doc_stride: 8, max_question_length: 4}")
    sets = [task, f"model={tiny_gemma3}", f"data.train={train}", f"output_dir={tmp_path / 'run'}", "method=lora",
            "data.max_length=32", "train.max_steps=1", "train.batch_size=8", "train.save_steps=0", "train.lr=1e-3",
            "train.report=false", "train.precision=fp32"]
    res = _cli(["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    report = merge_run(tmp_path / "run")
    assert report.max_diff_saved is not None and report.max_diff_saved < 1e-4 and report.max_diff_adapter < 1e-4
    config = json.loads((report.output / "config.json").read_text())
    assert config.get("use_bidirectional_attention", False) is bidirectional, config
