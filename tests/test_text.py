"""tunelab.text: edit distance, token overlap and embedding cosine, with hand-checked values."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from tunelab.models.embeddings import embed
from tunelab.text import (
    cjk_share,
    levenshtein,
    normalize,
    tokens,
)


def _reference(a: str, b: str) -> int:
    """Full Wagner-Fischer table."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("abc", "", 3), ("", "", 0),
    ("same", "same", 0), ("我爱北京", "我爱南京", 1), ("北京大学", "北京", 2), ("天安门", "门安天", 2),
])
def test_levenshtein_hand_checked(a: str, b: str, expected: int) -> None:
    assert levenshtein(a, b) == expected
    assert levenshtein(b, a) == expected


def test_levenshtein_matches_the_full_table_and_limit_is_exact_up_to_limit() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        a = "".join(rng.choice("ab好") for _ in range(rng.randint(0, 9)))
        b = "".join(rng.choice("ab好") for _ in range(rng.randint(0, 9)))
        d = _reference(a, b)
        assert levenshtein(a, b) == d
        k = rng.randint(0, 4)
        assert levenshtein(a, b, limit=k) == min(d, k + 1)


def test_tokens_words_and_cjk_characters() -> None:
    assert tokens("Hello, World! 我爱北京 it's 2024") == ["hello", "world", "我", "爱", "北", "京", "it", "s", "2024"]
    assert tokens("...") == []
    assert normalize("  ＡＢＣ\tdef  ") == "abc def"  # NFKC full-width, case-folded, whitespace collapsed
    assert cjk_share(["我爱 abc"]) == pytest.approx(2 / 5)
    assert cjk_share(["   "]) == 0.0


def test_embed_mean_pools_real_tokens_only(tiny_bert: Path) -> None:
    model = str(tiny_bert)
    same = embed(["good movie", "good movie"], model)
    assert float(same[0] @ same[1]) == pytest.approx(1.0, abs=1e-6)
    ab, ba = embed(["good movie", "bad plot"], model), embed(["bad plot", "good movie"], model)
    assert float(ab[0] @ ab[1]) == pytest.approx(float(ba[0] @ ba[1]), abs=1e-6)
    assert -1.0 <= float(ab[0] @ ab[1]) < 0.9999
    # padding does not change a text's vector: batched with a longer text == alone
    together = embed(["good", "good movie and a very nice story"], model)
    alone = embed(["good"], model)
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5)
    assert np.linalg.norm(together, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_a_word_segmented_chinese_row_joins_without_spaces_by_its_share_of_chinese_tokens() -> None:
    """A short word-segmented row with digits (under 30 % CJK characters) joined as English, with a space around
    every Chinese word: `2019 年 3 月`; now a row most of whose words (tokens with a letter) hold a CJK character is
    Chinese too."""
    from tunelab.text import join_tokens

    assert join_tokens(["2019", "年", "3", "月"])[0] == "2019年3月"
    assert join_tokens(["2019", "年", "3", "月", "1", "日", "发布"])[0] == "2019年3月1日发布"
    assert join_tokens(["Apple", "发布", "了", "iPhone", "15"])[0] == "Apple 发布了 iPhone 15"  # half: either reads
    assert join_tokens(["在", "Google", "工作"])[0] == "在Google工作"
    assert join_tokens(["Li", "visited", "北京", "today"])[0] == "Li visited 北京 today"  # English, a Chinese name
    assert join_tokens(["T", "C", "L", "集", "团"]) == ("TCL集团", [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)])


def test_duplicates_and_lengths_read_chinese_as_written() -> None:
    """`早餐 一般` repeats `早餐一般` (no space between Chinese characters in the compared key); a character-level
    NER row of 10 characters is 10 characters long for data.clean's min/max_chars (its tokens were joined by
    spaces: 19)."""
    from tunelab.data.dedup import normalised_key
    from tunelab.data.hygiene import text_length
    from tunelab.text import normalize

    assert normalised_key({"text": "早餐 一般"}) == normalised_key({"text": "早餐一般"})
    assert normalize("Great  Movie 好 看") == "great movie 好看"
    assert normalised_key({"text": "good movie"}) != normalised_key({"text": "goodmovie"})
    assert text_length({"tokens": list("张三在北京大学工作了")}) == 10
    assert normalised_key({"tokens": list("张三在北京")}) == normalised_key({"text": "张三在北京"})
