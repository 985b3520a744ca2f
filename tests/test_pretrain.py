"""Continued pretraining: .txt paragraphs, CLM packing (eos between documents, nothing lost), MLM masking
(15 %, 80/10/10, whole words, Chinese by character, special tokens never), fixed evaluation masks, the
before/after perplexity of a run, predict, and an MLM checkpoint fine-tuned further as a classifier."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import WORDS, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import run_config_class
from tunelab.config.sections import DataConfig
from tunelab.data.readers import Record, Table, read_rows, read_table
from tunelab.errors import ConfigError, DataError

run_config_class()
from tunelab.tasks.pretrain import Pretrain, PretrainConfig, resolve_objective  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _table(texts: list[str]) -> Table:
    return Table("d.jsonl", [Record("d.jsonl", i + 1, {"text": t}) for i, t in enumerate(texts)])


def _task(objective: str, max_length: int = 16, **kw: object) -> Pretrain:
    task = Pretrain(PretrainConfig(objective=objective, **kw), DataConfig(max_length=max_length))
    task._set_objective(objective)
    return task


def _wordpiece_tokenizer():
    """BERT-style WordPiece whose pre-tokenizer splits on whitespace only: `unbelievable` is three pieces
    and `我爱北京` one word of four pieces (only the CJK rule makes them four words)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = ["un", "##believ", "##able", "good", "movie", "play", "##ing", "##s", "the", "我", "##爱", "##北", "##京"]
    vocab = {t: i for i, t in enumerate(SPECIALS + pieces)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


# ------------------------------------------------------------------------------------------- data
def test_txt_paragraphs_and_empty_documents(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes("\ufefffirst line\r\nsame paragraph\r\n\r\n   \n\nsecond 第二\n\n\nthird\n".encode())
    table = read_table(path)
    assert [(r.line, r.data["text"]) for r in table.records] == [
        (1, "first line\nsame paragraph"), (6, "second 第二"), (9, "third")]
    ex = _task("clm").parse(table)
    assert [e["text"] for e in ex][2] == "third" and ex[1]["line"] == 6
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(DataError, match="empty file"):
        read_table(tmp_path / "blank.txt")
    bad = write_jsonl(tmp_path / "docs.jsonl", [{"text": "fine"}, {"text": "  "}])
    with pytest.raises(DataError, match=r"docs.jsonl:2: text: empty text$"):
        _task("clm").parse(read_table(bad))
    other = write_jsonl(tmp_path / "body.jsonl", [{"body": "fine"}])
    task = Pretrain(PretrainConfig(), DataConfig(text_field="body"))
    assert task.parse(read_table(other))[0]["text"] == "fine"
    # a .txt with data.text_field other than text: read whole (train, eval) and a line a text (predict) alike
    assert [e["text"] for e in task.parse(read_table(path))][2] == "third"
    rows = task.parse(read_rows(path, "body"), labelled=False)  # was `corpus.txt:1: text: missing field`
    assert [e["text"] for e in rows] == ["first line", "same paragraph", "second 第二", "third"]
    (tmp_path / "mixed.txt").write_text('a line\n{"body": "an object"}\n{"other": 1}\n')
    with pytest.raises(DataError, match=r"mixed.txt:3: body: missing field"):
        task.parse(read_rows(tmp_path / "mixed.txt", "body"), labelled=False)


def test_data_check_reads_documents(tiny_bert: Path, tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("good movie\n\nbad plot\nthe end\n")
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "c.txt"), "--task", "pretrain", "--model",
                                   str(tiny_bert), "--json", "--set", "data.max_length=64"])  # the tiny BERT: 128
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"][str(tmp_path / "c.txt")]["rows"] == 2


def test_objective_auto_and_refused_options(tiny_llama: Path, tiny_bert: Path, tmp_path: Path) -> None:
    assert resolve_objective("auto", str(tiny_llama)) == "clm"
    assert resolve_objective("auto", str(tiny_bert)) == "mlm"
    assert resolve_objective("clm", str(tiny_bert)) == "clm"
    with pytest.raises(ConfigError, match=r"^config: data.augment: not supported by task pretrain"):
        Pretrain(PretrainConfig(), DataConfig(augment=True))
    task = Pretrain(PretrainConfig(whole_word_mask=True), DataConfig())
    with pytest.raises(ConfigError, match=r"^config: task.whole_word_mask: applies to objective mlm only"):
        task.build_model(str(tiny_llama), [])
    with pytest.raises(ConfigError, match=r"^config: task.objective: mlm needs a tokenizer with a mask token"):
        Pretrain(PretrainConfig(objective="mlm"), DataConfig()).build_model(str(tiny_llama), [])
    from transformers import AutoTokenizer  # an encoder whose tokenizer has an eos: its clm would see ahead

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    tok.eos_token = "[SEP]"
    tok.save_pretrained(tmp_path)
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((tiny_bert / name).read_bytes())
    with pytest.raises(ConfigError, match=r"^config: model: task.objective clm trains a causal LM, and .* "
                                          r"\(BertLMHeadModel\) attends to the tokens after each position"):
        Pretrain(PretrainConfig(objective="clm"), DataConfig(max_length=64)).build_model(str(tmp_path), [])


# ------------------------------------------------------------------------------------------- CLM
def test_clm_packing_keeps_every_token(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    rng = random.Random(0)
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(40)]
    task = _task("clm", max_length=16)
    feats = task.encode(task.parse(_table(docs)), tok)
    want = [t for d in docs for t in [*tok(d)["input_ids"], tok.eos_token_id]]  # <s> doc </s>, doc after doc
    got = [t for f in feats for t in f["input_ids"]]
    assert got == want  # nothing lost, nothing reordered, eos closes every document
    assert got.count(tok.eos_token_id) == len(docs)
    assert all(2 <= len(f["input_ids"]) <= 16 for f in feats) and all(f["labels"] == f["input_ids"] for f in feats)
    assert len(feats) == math.ceil(len(want) / 16) and len(feats[-1]["input_ids"]) == len(want) - 16 * (len(feats) - 1)
    # a 1-token tail (nothing to predict) takes the last token of the block before
    n = 16 + 1 - (len(tok("good")["input_ids"]) + 1)
    one = task.encode(task.parse(_table(["good", " ".join(["movie"] * (n - 2))])), tok)
    lens = [len(f["input_ids"]) for f in one]
    assert sum(lens) == 17 and lens == [15, 2], lens


def test_the_corpus_is_tokenised_in_chunks_with_the_same_blocks(tiny_llama: Path, tiny_bert: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokenised 3 documents per call instead of all at once: the same blocks, units numbered across the chunks."""
    from transformers import AutoTokenizer

    from tunelab.tasks import base

    rng = random.Random(1)
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(1, 9))) for _ in range(20)]
    for model, objective, kw in ((tiny_llama, "clm", {}), (tiny_bert, "mlm", {}),
                                 (tiny_bert, "mlm", {"whole_word_mask": True})):
        tok = AutoTokenizer.from_pretrained(model)
        task = _task(objective, max_length=16, **kw)
        examples = task.parse(_table(docs))
        whole = task.encode(examples, tok)
        monkeypatch.setattr(base, "TOKENIZE_CHUNK", 3)
        assert task.encode(examples, tok) == whole, (objective, kw)
        monkeypatch.undo()


def test_packing_a_stream_in_chunks_gives_the_blocks_of_the_whole() -> None:
    """`pack_stream` on chunks of any size (empty ones too) equals `pack_blocks` on the whole stream, the tail
    rule's borrowing from the block before included, and carries at most two blocks between chunks."""
    from tunelab.data.lm import pack_blocks, pack_stream

    rng = random.Random(2)
    for trial in range(300):
        size = rng.randint(1, 9)
        # odd trials: units anywhere; even: nothing maskable, so the last block always borrows as far as it may
        units = [rng.choice([-1, -1, 0, 1]) if trial % 2 else -1 for _ in range(rng.randint(0, 60))]
        stream = {"input_ids": list(range(len(units))), "units": units}
        whole = [{k: v[b] for k, v in stream.items()}
                 for b in pack_blocks(len(units), size, lambda s, u=units: any(x >= 0 for x in u[s:]))]
        cuts = sorted(rng.sample(range(len(units) + 1), min(len(units) + 1, rng.randint(0, 8))))
        chunks = [{k: v[a:b] for k, v in stream.items()} for a, b in zip([0, *cuts], [*cuts, len(units)], strict=True)]
        held: list[int] = []

        def ok(carried: dict, start: int, held: list[int] = held) -> bool:
            held.append(len(carried["units"]))
            return any(u >= 0 for u in carried["units"][start:])

        parts = list(pack_stream(iter(chunks), size, ok))
        assert [b for part in parts for b in part] == whole, (trial, size, units, cuts)
        assert all(part for part in parts) and all(n <= 2 * size for n in held)


# ------------------------------------------------------------------------------------------- MLM
def _masked_stats(task: Pretrain, feats: list[dict], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = task._masked(feats, [rng] * len(feats))
    ids = np.concatenate([f["input_ids"] for f in feats])
    masked = np.concatenate([o["input_ids"] for o in out])
    labels = np.concatenate([o["labels"] for o in out])
    return ids, masked, labels


def test_mlm_masking_rate_replacements_and_special_tokens(tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    rng = random.Random(1)
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(3, 15))) for _ in range(2000)]
    task = _task("mlm", max_length=64)
    feats = task.encode(task.parse(_table(docs)), tok)
    ids, masked, labels = _masked_stats(task, feats)
    special = np.isin(ids, tok.all_special_ids)
    chosen = labels != -100
    assert not (chosen & special).any() and (masked[special] == ids[special]).all()
    assert (labels[chosen] == ids[chosen]).all() and (masked[~chosen] == ids[~chosen]).all()
    assert abs(chosen.sum() / (~special).sum() - 0.15) < 0.01
    as_mask = (masked[chosen] == tok.mask_token_id).mean()
    kept = (masked[chosen] == ids[chosen]).mean()
    assert abs(as_mask - 0.8) < 0.03 and 0.07 < kept < 0.15  # kept: the 10 % plus random draws of the same id
    assert not np.isin(masked[chosen & (masked != tok.mask_token_id)], tok.all_special_ids).any()
    # training masks differ per batch (dynamic), and come from torch's seeded RNG
    torch.manual_seed(0)
    a = task.collate(feats[:4], tok.pad_token_id)
    b = task.collate(feats[:4], tok.pad_token_id)
    torch.manual_seed(0)
    assert torch.equal(a["labels"], task.collate(feats[:4], tok.pad_token_id)["labels"])
    assert not torch.equal(a["labels"], b["labels"])


def test_whole_word_and_chinese_character_masking() -> None:
    tok = _wordpiece_tokenizer()
    assert tok.tokenize("unbelievable 我爱北京") == ["un", "##believ", "##able", "我", "##爱", "##北", "##京"]
    docs = ["unbelievable good playing movies 我爱北京 the"] * 300
    task = _task("mlm", max_length=60, whole_word_mask=True)  # 4 documents per block: no word is cut
    feats = task.encode(task.parse(_table(docs)), tok)
    ids, _, labels = _masked_stats(task, feats)
    chosen = labels != -100
    n = len(tok(docs[0])["input_ids"])  # [CLS] 13 pieces [SEP]
    assert n == 15 and all(len(f["input_ids"]) == 60 for f in feats)
    rows = chosen.reshape(-1, n)
    words = [(1, 4), (4, 5), (5, 7), (7, 9), (9, 10), (10, 11), (11, 12), (12, 13), (13, 14)]
    for row in rows:
        assert not row[0] and not row[-1]  # [CLS] / [SEP]
        for a, b in words:  # a word's pieces are masked together; each Chinese character on its own
            assert row[a:b].all() or not row[a:b].any()
    assert rows[:, 9].sum() > 0 and (rows[:, 9] != rows[:, 10]).any()  # 我 and 爱 are separate units
    assert abs(chosen.sum() / (~np.isin(ids, tok.all_special_ids)).sum() - 0.15) < 0.03
    # without whole words, pieces are masked on their own
    plain = _task("mlm", max_length=60)
    _, _, labels2 = _masked_stats(plain, plain.encode(plain.parse(_table(docs)), tok))
    r2 = (labels2 != -100).reshape(-1, n)
    assert (r2[:, 1:4].any(1) & ~r2[:, 1:4].all(1)).any()


def test_evaluation_masks_are_fixed(tiny_bert: Path) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert)
    task = _task("mlm", max_length=16)
    feats = task.encode(task.parse(_table([" ".join(WORDS[i: i + 9]) for i in range(20)])), tok)
    torch.manual_seed(1)
    first = task.logits(model, feats, task.collate, 8)
    torch.manual_seed(2)
    second = task.logits(model, feats, task.collate, 3)
    np.testing.assert_allclose(first, second, rtol=1e-5)
    m = task.metrics(first, [])
    assert m["tokens"] == int(first[:, 1].sum()) > 0 and m["perplexity"] == pytest.approx(math.exp(m["loss"]))


# ------------------------------------------------------------------------------------------- runs
def _repetitive(tmp_path: Path) -> tuple[Path, Path]:
    paras = ["the movie is very good\nthe plot is very good"] * 30
    (tmp_path / "train.txt").write_text("\n\n".join(paras) + "\n")
    (tmp_path / "val.txt").write_text("\n\n".join(paras[:6]) + "\n")
    return tmp_path / "train.txt", tmp_path / "val.txt"


def _train(args: list[str]) -> None:
    res = CliRunner().invoke(app, ["train", *[a for s in args for a in ("--set", s)]])
    assert res.exit_code == 0, res.output


def test_clm_run_before_after_perplexity_and_predict(tiny_llama: Path, tmp_path: Path) -> None:
    train, val = _repetitive(tmp_path)
    out = tmp_path / "run"
    _train(["task=pretrain", f"model={tiny_llama}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={out}", "data.max_length=32", "train.max_steps=12", "train.lr=1e-2", "train.batch_size=4",
            "train.save_steps=0", "task.max_new_tokens=3"])
    m = json.loads((out / "metrics.json").read_text())
    before, after = m["baseline"], m["validation"]
    assert before["tokens"] == after["tokens"] > 0
    assert after["loss"] < 0.5 * before["loss"], (before, after)
    assert after["perplexity"] == pytest.approx(math.exp(after["loss"]))
    assert json.loads((out / "model" / "tunelab.json").read_text())["objective"] == "clm"
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(val)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1])["loss"] == pytest.approx(after["loss"], rel=1e-4)
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", "-"], input="the movie is\n")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["text"] == "the movie is" and row["continuation"].startswith("very good")


def test_clm_predict_of_a_text_that_fills_a_learned_position_table_names_its_line(tmp_path: Path) -> None:
    """GPT-2 (learned positions, 16) trained at data.max_length=16: a text of 16 tokens passes data.max_length but
    leaves no position for the continuation. It was refused as `generate: prompt 1 of 1 is 16 tokens; ...` (no file,
    no line); now the input's file:line: field, as a text over data.max_length is; one token fewer is continued."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from conftest import _tokenizer

    torch.manual_seed(0)
    tok, model = _tokenizer(WORDS, bert=False), tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=16, n_layer=1, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)).save_pretrained(model)
    tok.save_pretrained(model)
    train = tmp_path / "train.txt"
    train.write_text("the movie is very good\n\nthe plot is very good\n")
    _train(["task=pretrain", f"model={model}", f"data.train={train}", "data.validation_split=0",
            f"output_dir={tmp_path / 'run'}", "data.max_length=16", "train.max_steps=1", "train.save_steps=0",
            "task.max_new_tokens=2"])
    fifteen = " ".join(WORDS[14:29])  # 15 words, 16 tokens with <s>
    texts = tmp_path / "in.txt"
    texts.write_text(f"the movie\n{fifteen}\n")
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run" / "model"), "--input", str(texts)])
    assert (res.exit_code, res.stdout) == (2, ""), res.output
    assert res.stderr == (f"error: {texts}:2: text: 16 tokens; the model has 16 positions and the continuation "
                          "needs one at least: at most 15\n")
    texts.write_text(f"{fifteen.rsplit(' ', 1)[0]}\n")  # 15 tokens: continued, within the positions
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run" / "model"), "--input", str(texts)])
    assert res.exit_code == 0 and "continuation" in json.loads(res.stdout), res.output


def test_mlm_run_then_classification_on_top(tiny_bert: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, BertModel

    train, val = _repetitive(tmp_path)
    out = tmp_path / "mlm"
    _train(["task=pretrain", f"model={tiny_bert}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={out}", "data.max_length=32", "train.max_steps=6", "train.lr=1e-2", "train.batch_size=4",
            "train.save_steps=0", "task.whole_word_mask=true"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["validation"]["loss"] < m["baseline"]["loss"]
    mlm = AutoModelForMaskedLM.from_pretrained(out / "model")
    base = BertModel.from_pretrained(tiny_bert)
    # the checkpoint's pooler travels through MLM training, so a classifier does not start from a random one
    clf, info = AutoModelForSequenceClassification.from_pretrained(out / "model", num_labels=2,
                                                                   output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert torch.equal(clf.bert.pooler.dense.weight, base.pooler.dense.weight)
    assert torch.equal(clf.bert.embeddings.word_embeddings.weight, mlm.bert.embeddings.word_embeddings.weight)
    assert not torch.equal(clf.bert.encoder.layer[0].attention.self.query.weight,
                           base.encoder.layer[0].attention.self.query.weight)  # MLM training moved it
    # predict: fill [MASK]
    res = CliRunner().invoke(app, ["predict", str(out / "model"), "--input", "-"], input="the movie is very [MASK]\n")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert len(row["masks"]) == 1 and len(row["masks"][0]) == 5 and row["filled"].startswith("the movie is very ")
    res = CliRunner().invoke(app, ["predict", str(out / "model"), "--input", "-"], input="no mask here\n")
    assert res.exit_code == 2 and "<stdin>:1: text: no [MASK] token to fill" in res.output
    # the MLM model continues as a classifier
    ctr = write_jsonl(tmp_path / "c.jsonl", sentiment_rows(24))
    cva = write_jsonl(tmp_path / "v.jsonl", sentiment_rows(8, 1))
    _train(["task=classification", f"model={out / 'model'}", f"data.train={ctr}", f"data.validation={cva}",
            f"output_dir={tmp_path / 'clf'}", "train.max_steps=2", "train.save_steps=0"])
    assert "accuracy" in json.loads((tmp_path / "clf" / "metrics.json").read_text())["validation"]
