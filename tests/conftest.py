"""Shared fixtures: offline guard, tiny random models built from configs, tiny data files."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TUNELAB_NO_PROGRESS"] = "1"

WORDS = [
    "good",
    "great",
    "fine",
    "nice",
    "happy",
    "love",
    "excellent",
    "bad",
    "awful",
    "poor",
    "sad",
    "hate",
    "terrible",
    "boring",
    "movie",
    "film",
    "plot",
    "actor",
    "story",
    "scene",
    "music",
    "the",
    "a",
    "is",
    "was",
    "very",
    "not",
    "really",
    "quite",
    "it",
    "this",
    "that",
    "and",
    "but",
]
POS, NEG = WORDS[:7], WORDS[7:14]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection to a non-loopback address fails the test."""
    real = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else str(address)
        if (
            isinstance(host, str)
            and not (host.startswith("127.") or host in ("localhost", "::1"))
            and self.family in (socket.AF_INET, socket.AF_INET6)
        ):
            raise OSError(f"network access blocked in tests: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def _tokenizer(vocab_words: list[str], bert: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if bert else ["<pad>", "<unk>", "<s>", "</s>"]
    chars = sorted({c for w in vocab_words for c in w})
    vocab = {t: i for i, t in enumerate(specials + vocab_words + [c for c in chars if c not in vocab_words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[1]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_input_names=["input_ids", "attention_mask"],
    )


def make_tiny_bert(path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)  # the same tiny model in every session

    tok = _tokenizer(WORDS, bert=True)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_tiny_llama(path: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)

    tok = _tokenizer(WORDS, bert=False)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def sentiment_rows(n: int, seed: int = 0, labels: tuple[str, ...] = ("negative", "positive")) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lab = labels[i % len(labels)]
        pool = POS if lab == "positive" else NEG if lab == "negative" else WORDS[14:20]
        words = [rng.choice(pool) for _ in range(rng.randint(2, 6))] + rng.sample(WORDS[14:], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": lab})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def sentiment_files(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, 0)),
        write_jsonl(tmp_path / "validation.jsonl", sentiment_rows(16, 1)),
    )
