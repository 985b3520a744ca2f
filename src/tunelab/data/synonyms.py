"""Synonym sources for augmentation: a user's synonym file, or nearest neighbours in a model's own
input-embedding space. Each is a callable `word -> [synonyms]` (empty when it knows none)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tunelab.data.json_keys import duplicate_key, twice
from tunelab.data.jsonl import BAD_JSON, json_error
from tunelab.errors import DataError
from tunelab.text import is_cjk


class SynonymTable:
    """`word<TAB>syn1,syn2` lines (blank lines and `#` comments skipped) or a JSON object {word: [...]}.
    Lookups try the word as written, then lower-cased."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        for word, syns in list(table.items()):
            self.table.setdefault(word.lower(), syns)

    def __call__(self, word: str) -> list[str]:
        syns = self.table.get(word) or self.table.get(word.lower()) or []
        return [s for s in syns if s.lower() != word.lower()]

    @classmethod
    def load(cls, path: str | Path) -> SynonymTable:
        p = Path(path)
        if not p.is_file():
            raise DataError(str(p), None, "synonyms", "synonym file not found (data.augment.synonyms)")
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            raise DataError(str(p), raw.count(b"\n", 0, exc.start) + 1, "synonyms", "not valid UTF-8") from None
        return cls(_parse_json(p, text) if text.lstrip().startswith("{") else _parse_lines(p, text))


def _parse_json(path: Path, text: str) -> dict[str, list[str]]:
    try:
        obj = json.loads(text)
    except BAD_JSON as exc:
        raise DataError(str(path), getattr(exc, "lineno", None), "synonyms", f"invalid JSON ({json_error(exc)})") \
            from None
    if (dup := duplicate_key(text, obj)) is not None:  # a word's synonyms given twice: json.loads keeps the last
        raise DataError(str(path), None, "synonyms", twice(dup[1], dup[0]))
    out = {}
    for word, syns in obj.items():
        if isinstance(syns, str):
            syns = syns.split(",")
        if not isinstance(syns, list) or not all(isinstance(s, str) for s in syns):
            raise DataError(str(path), None, word, "expected a list of synonym strings")
        out[word] = [s.strip() for s in syns if s.strip()]
    return out


def _parse_lines(path: Path, text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" not in line:
            raise DataError(str(path), number, "synonyms", "expected word<TAB>synonym,synonym,...")
        word, rest = line.split("\t", 1)
        syns = [s.strip() for s in rest.split(",") if s.strip()]
        if not word.strip() or not syns:
            raise DataError(str(path), number, "synonyms", "expected a word and at least one synonym")
        out.setdefault(word.strip(), []).extend(syns)
    return out


def whole_word_tokens(tokenizer: Any) -> dict[str, int]:
    """Vocabulary entries that are whole words: not WordPiece continuations (`##x`), and for
    SentencePiece / byte-level BPE only word-initial pieces (`▁x`, `Ġx`), markers removed. Letters only,
    two or more (a single CJK character is a word); special tokens left out."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    special = set(getattr(tokenizer, "all_special_tokens", []))
    tokens = list(vocab)
    marker = ""
    for m in ("\u2581", "\u0120"):  # ▁ (SentencePiece), Ġ (byte-level BPE)
        if sum(t.startswith(m) for t in tokens) > 0.1 * len(tokens):
            marker = m
            break
    out: dict[str, int] = {}
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        if token in special or token.startswith("##") or (marker and not token.startswith(marker)):
            continue
        word = token[len(marker):]
        if word.isalpha() and (len(word) > 1 or is_cjk(word)):
            out.setdefault(word, idx)
    return out


class EmbeddingNeighbours:
    """Synonyms = the `k` whole-word tokens nearest to a word by cosine similarity of the model's
    input embeddings. Computed per word on first use and cached."""

    def __init__(self, tokenizer: Any, embeddings: torch.Tensor, k: int = 5) -> None:
        words = {w: i for w, i in whole_word_tokens(tokenizer).items() if i < embeddings.shape[0]}
        self.words = list(words)
        self.index = {w: n for n, w in enumerate(self.words)}
        with torch.no_grad():
            rows = embeddings.detach()[torch.tensor(list(words.values()), dtype=torch.long)].float().cpu()
            self.matrix = torch.nn.functional.normalize(rows, dim=-1)
        self.k = k
        self.cache: dict[str, list[str]] = {}

    def __call__(self, word: str) -> list[str]:
        key = word if word in self.index else word.lower()
        if key not in self.index:
            return []
        if key not in self.cache:
            with torch.no_grad():
                sims = self.matrix @ self.matrix[self.index[key]]
            top = torch.topk(sims, min(len(self.words), self.k * 2 + 1)).indices.tolist()
            near = [self.words[i] for i in top if self.words[i].lower() != key.lower()]
            self.cache[key] = near[: self.k]
        return self.cache[key]


def synonym_source(synonyms: str | None, neighbours: int, tokenizer: Any = None,
                   model: torch.nn.Module | None = None) -> tuple[Any, str | None]:
    """(lookup, description): the file when given, else the model's embedding neighbours, else (None, None)."""
    if synonyms:
        return SynonymTable.load(synonyms), f"file {synonyms}"
    if model is not None and tokenizer is not None:
        return EmbeddingNeighbours(tokenizer, model.get_input_embeddings().weight, neighbours), \
            f"input-embedding neighbours (k={neighbours})"
    return None, None
