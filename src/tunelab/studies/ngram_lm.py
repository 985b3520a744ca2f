"""A character n-gram language model with interpolated Kneser-Ney smoothing (pure Python; none of the kept
dependencies has one, and nltk.lm would be a new dependency for the baseline's ~90 lines).

Each text is one sequence: `order - 1` start symbols, its characters, one end symbol. The highest order
uses raw counts, lower orders continuation counts (the number of distinct characters seen before the
n-gram), each order discounted by D = n1 / (n1 + 2·n2) of its own counts, and the unigram level is
interpolated with a uniform distribution over the training characters, the end symbol and one unknown
symbol (which every character unseen in training becomes), so every probability is positive.
Perplexity is per character: 2 ** (bits / symbols), where the end symbol of every text counts as one
symbol.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

BOS, EOS, UNK = "\x02", "\x03", "\x04"


class CharNgramLM:
    """`fit(texts)` then `perplexity(texts)`; `order` is the n-gram length (context = order - 1 chars)."""

    def __init__(self, order: int = 5) -> None:
        if order < 1:
            raise ValueError("order must be at least 1")
        self.order = order
        self.vocab: set[str] = set()
        # per n (1..order): n-gram → (continuation) count; context → (total count, distinct followers)
        self.counts: list[dict[str, int]] = []
        self.contexts: list[dict[str, tuple[int, int]]] = []
        self.discounts: list[float] = []

    def _symbols(self, text: str) -> str:
        return BOS * (self.order - 1) + "".join(c if c in self.vocab else UNK for c in text) + EOS

    def fit(self, texts: list[str]) -> CharNgramLM:
        self.vocab = {c for t in texts for c in t} | {EOS, UNK}
        top: Counter[str] = Counter()
        n = self.order
        for t in texts:
            s = BOS * (n - 1) + t + EOS
            top.update(s[i - n + 1: i + 1] for i in range(n - 1, len(s)))
        levels: list[dict[str, int]] = [dict(top)]
        for _ in range(n - 1):  # continuation counts: distinct left extensions of each shorter n-gram
            cont: Counter[str] = Counter(g[1:] for g in levels[-1])
            levels.append(dict(cont))
        self.counts = levels[::-1]  # index k holds (k + 1)-grams
        self.contexts, self.discounts = [], []
        for grams in self.counts:
            ctx: dict[str, list[int]] = {}
            for g, c in grams.items():
                entry = ctx.setdefault(g[:-1], [0, 0])
                entry[0] += c
                entry[1] += 1
            self.contexts.append({h: (tot, types) for h, (tot, types) in ctx.items()})
            of = Counter(c for c in grams.values() if c <= 2)
            n1, n2 = of.get(1, 0), of.get(2, 0)
            self.discounts.append(n1 / (n1 + 2 * n2) if n1 + n2 else 0.5)
        return self

    def prob(self, history: str, symbol: str) -> float:
        """P(symbol | the last order - 1 symbols of history)."""
        p = 1.0 / len(self.vocab)
        for k in range(self.order):  # from unigrams up: p is the lower-order estimate
            h = history[len(history) - k:] if k else ""
            ctx = self.contexts[k].get(h)
            if ctx is None:
                continue  # unseen context: the lower order's estimate stands
            total, types = ctx
            d = self.discounts[k]
            c = self.counts[k].get(h + symbol, 0)
            p = max(c - d, 0.0) / total + d * types / total * p
        return p

    def score(self, text: str) -> tuple[float, int, int]:
        """(bits, symbols incl. the end symbol, characters unseen in training) of one text."""
        s = self._symbols(text)
        n = self.order
        bits = 0.0
        for i in range(n - 1, len(s)):
            bits -= math.log2(self.prob(s[i - n + 1: i], s[i]))
        return bits, len(s) - (n - 1), sum(c not in self.vocab for c in text)

    def perplexity(self, texts: list[str]) -> dict[str, Any]:
        """Per-character perplexity and bits per character over `texts`, with counts."""
        bits, symbols, oov = 0.0, 0, 0
        for t in texts:
            b, n, u = self.score(t)
            bits, symbols, oov = bits + b, symbols + n, oov + u
        bpc = bits / symbols if symbols else float("nan")
        return {"perplexity_per_char": 2.0 ** bpc, "bits_per_char": bpc, "characters": symbols - len(texts),
                "texts": len(texts), "unseen_char_rate": oov / max(symbols - len(texts), 1), "order": self.order,
                "unit": "character (the end of each text counts as one symbol)"}
