"""tunelab.leakage.near_duplicates: planted near-duplicates are found, distractors are not, and the
filtered search returns exactly what comparing every pair returns."""

from __future__ import annotations

import random

import pytest

from tunelab.data import leakage
from tunelab.data.leakage import near_duplicates
from tunelab.errors import TunelabError
from tunelab.text import levenshtein, normalize


def normalized_levenshtein(a: str, b: str) -> float:
    """The similarity near_duplicates reports: 1 - distance / the longer length (1.0 for two empty strings)."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest

VOCAB = [
    "movie", "film", "story", "actor", "scene", "music", "plot", "drama", "comedy", "script", "camera", "light",
    "sound", "voice", "city", "river", "garden", "window", "winter", "summer", "letter", "doctor", "teacher", "captain",
]
ZH = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你"


def _distractors(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 4 == 0:
            out.append("".join(rng.choice(ZH) for _ in range(rng.randint(10, 30))))
        else:
            out.append(" ".join(rng.choice(VOCAB) for _ in range(rng.randint(5, 14))))
    return out


PLANTED = [  # (train text, eval text): small edits, similarity >= 0.9
    ("the quick brown fox jumps over the lazy dog near the river bank", "the quick brown fox leaps over the lazy dog near the river bank"),  # noqa: E501 - a changed word
    ("Hello, world! This is a small test sentence.", "Hello world. This is a small test sentence"),  # punctuation
    ("THE MOVIE WAS GREAT FUN FROM START TO END", "the movie was great fun from start to end"),  # case
    ("这家酒店的服务非常好，房间也很干净", "这家酒店的服务非常差，房间也很干净"),  # one Chinese character changed
    ("an exact duplicate sentence appears in both splits", "an exact duplicate sentence appears in both splits"),
    ("short text", "short  text"),  # whitespace only
]
NEAR_MISS = ("the acting is wonderful and the music is lovely", "the acting is terrible and the music is awful")


def test_planted_near_duplicates_are_found_and_nothing_else() -> None:
    train = _distractors(400, 0)
    evals = _distractors(80, 1)
    rng = random.Random(2)
    planted_at = {}
    for k, (t, e) in enumerate([*PLANTED, NEAR_MISS]):
        ti, ei = rng.randrange(len(train) + 1), rng.randrange(len(evals) + 1)
        train.insert(ti, t)
        evals.insert(ei, e)
        planted_at[k] = (t, e)
    assert normalized_levenshtein(*NEAR_MISS) < 0.9  # the control really is below the threshold
    found = near_duplicates(train, evals, threshold=0.9)
    pairs = {(r["train_text"], r["eval_text"]) for r in found}
    assert pairs == set(PLANTED)
    for r in found:
        assert train[r["train_index"]] == r["train_text"] and evals[r["eval_index"]] == r["eval_text"]
        assert r["similarity"] == pytest.approx(normalized_levenshtein(normalize(r["eval_text"]),
                                                                       normalize(r["train_text"])), abs=1e-6)
    sims = [r["similarity"] for r in found]
    assert sims == sorted(sims, reverse=True)
    by_eval = {r["eval_text"]: r["similarity"] for r in found}
    assert by_eval[PLANTED[2][1]] == 1.0 and by_eval[PLANTED[4][1]] == 1.0 and by_eval[PLANTED[5][1]] == 1.0
    assert 0.9 <= by_eval[PLANTED[3][1]] < 1.0  # 1 of 17 characters
    # a lower threshold does reach the near miss
    assert NEAR_MISS in {(r["train_text"], r["eval_text"]) for r in near_duplicates(train, evals, threshold=0.6)}


def _mutants(n: int, seed: int) -> list[str]:
    """Many strings close to a few seeds: lots of pairs on both sides of any threshold."""
    rng = random.Random(seed)
    seeds = ["abcabcabcabcabc", "hello world again", "北京欢迎你北京欢迎你", "xy", "", "a", "the cat sat on the mat"]
    out = []
    for _ in range(n):
        s = list(rng.choice(seeds))
        for _ in range(rng.randint(0, 4)):
            op = rng.random()
            pos = rng.randrange(len(s) + 1)
            if op < 0.4 and s and pos < len(s):
                s[pos] = rng.choice("abcx北 ")
            elif op < 0.7:
                s.insert(pos, rng.choice("abcx北 "))
            elif s and pos < len(s):
                del s[pos]
        out.append("".join(s))
    return out


@pytest.mark.parametrize("threshold", [1.0, 0.9, 0.8, 0.7, 0.5, 0.3])
def test_same_pairs_as_comparing_every_pair(threshold: float, monkeypatch: pytest.MonkeyPatch) -> None:
    train, evals = _mutants(150, 0), _mutants(60, 1)
    got = near_duplicates(train, evals, threshold=threshold, top_k=1000)
    monkeypatch.setattr(leakage, "_TRAIN_CHUNK", 16)  # the training texts 16 at a time: the same result
    assert near_duplicates(train, evals, threshold=threshold, top_k=1000) == got
    expected = set()
    for i, e in enumerate(evals):
        for j, t in enumerate(train):
            if normalized_levenshtein(normalize(e), normalize(t)) >= threshold - 1e-9:
                expected.add((i, j))
    assert {(r["eval_index"], r["train_index"]) for r in got} == expected
    assert expected  # the data really has matches at every threshold


def test_top_k_keeps_the_most_similar_per_eval_text() -> None:
    train = ["abcdefghijklmnopqrst", "abcdefghijklmnopqrsX", "abcdefghijklmnopqrXY", "unrelated text here"]
    got = near_duplicates(train, ["abcdefghijklmnopqrst"], threshold=0.85, top_k=2)
    assert [(r["train_index"], r["similarity"]) for r in got] == [(0, 1.0), (1, 0.95)]
    assert near_duplicates(train, [], threshold=0.9) == [] and near_duplicates([], ["x"]) == []


@pytest.mark.parametrize(("threshold", "top_k"), [(0.0, 1), (1.5, 1), (0.9, 0)])
def test_bad_arguments_are_one_line_errors(threshold: float, top_k: int) -> None:
    with pytest.raises(TunelabError):
        near_duplicates(["a"], ["a"], threshold=threshold, top_k=top_k)


def test_report_scores_rows_with_and_without_a_training_near_duplicate() -> None:
    """The report's leakage part scores the evaluation rows apart: those with a training near-duplicate and the
    others (the closer estimate for held-out data), from the split's records, whatever the task."""
    from tunelab.config.sections import DataConfig
    from tunelab.registry import TASKS
    from tunelab.report.analysis import _near_duplicates, seen_unseen_scores
    from tunelab.report.context import Context

    train = [{"text": f"a long enough training sentence number {w}", "label": "pos"} for w in ("one", "two", "three")]
    evals = [{"text": "a long enough training sentence number two", "label": "pos"},  # seen (identical)
             {"text": "a long enough training sentence number one!", "label": "pos"},  # seen (one edit)
             {"text": "something else entirely, never trained on", "label": "neg"},
             {"text": "and one more row that no training row resembles", "label": "neg"}]
    records = [{"index": i, "correct": c, "score": float(c)} for i, c in enumerate([True, True, False, True])]
    scores = seen_unseen_scores(records, {0, 1})
    assert scores == {"all": {"rows": 4, "correct": 0.75, "score": 0.75}, "seen": {"rows": 2, "correct": 1.0,
                      "score": 1.0}, "unseen": {"rows": 2, "correct": 0.5, "score": 0.5}}
    assert seen_unseen_scores([], {0}) == {} and "unseen" not in seen_unseen_scores(records, {0, 1, 2, 3})
    cls = TASKS.get("classification")
    task = cls(cls.Config(name="classification"), DataConfig())
    html = _near_duplicates(Context(title="t", task=task, task_name="classification",
                                  splits={"train": train, "validation": evals}, records={"validation": records}))
    assert html is not None and "2 of 4 rows (50.0 %) have a training row" in html
    row = html.split("rows without one (the closer estimate for held-out data)</td>", 1)[1].split("</tr>", 1)[0]
    assert [c for c in (x.split(">")[-1] for x in row.split("</td>")) if c] == ["2", "50.00", "0.5000"]
    no_records = _near_duplicates(Context(title="t", task=task, task_name="classification",
                                        splits={"train": train, "validation": evals}))
    assert no_records is not None and "closer estimate" not in no_records
