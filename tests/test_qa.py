"""Extractive QA: SQuAD / CMRC metrics, n-best span decoding over windows, stride windows and answer
positions, SQuAD JSON and JSONL readers, answer-offset errors, unanswerable questions, and
train → eval → predict from the CLI on a tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import POS, WORDS, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table, read_table
from tunelab.errors import ConfigError, DataError
from tunelab.metrics.qa import cmrc_style, normalize_answer, qa_metrics, score, segments, style
from tunelab.registry import TASKS
from tunelab.tasks.qa import answer_positions, best_span

FILL = [w for w in WORDS[14:] if w not in ("the", "a")]  # never answers: articles vanish in normalisation


def _task(tiny: Path | str = "minilm", task: dict | None = None, **data: object):
    cfg = build_config({"task": {"name": "qa", **(task or {})}, "model": str(tiny), "data": data})
    return TASKS.get("qa")(cfg.task, cfg.data)


def _table(rows: list[dict], source: str = "t.jsonl") -> Table:
    return Table(source, [Record(source, i + 1, r) for i, r in enumerate(rows)])


def _row(words: list[str], k: int, n: int = 1, **extra: object) -> dict:
    """A row whose answer is words[k : k + n], with its exact character offset."""
    ctx = " ".join(words)
    start = len(" ".join(words[:k])) + (1 if k else 0)
    ans = " ".join(words[k : k + n])
    assert ctx[start : start + len(ans)] == ans
    return {"context": ctx, "question": "good", "answers": {"text": [ans], "answer_start": [start]}, **extra}


# -- metrics -------------------------------------------------------------------------------------
def test_squad_normalisation_em_f1() -> None:
    assert normalize_answer("  The Cat,  sat!  ") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"
    assert score("the cat", ["A cat!"]) == (1.0, 1.0)
    em, f1 = score("black cat sat", ["the cat", "dog"])  # max over golds: 'cat' → P 1/3, R 1
    assert em == 0.0 and f1 == pytest.approx(0.5)
    assert score("", ["cat"]) == (0.0, 0.0)


def test_chinese_character_f1() -> None:
    assert segments("2018年，北京!") == ["2018", "年", "北", "京", "!"]  # the official script keeps ASCII `!`
    assert score("北京。", ["北京"], scoring="cmrc") == (1.0, 1.0)  # its marks dropped
    em, f1 = score("北京大学", ["北京", "上海"], scoring="cmrc")  # LCS 2 of 4 predicted, 2 gold
    assert em == 0.0 and f1 == pytest.approx(2 * 0.5 * 1 / 1.5)
    # without the Chinese rule the whole string is one token and scores 0
    assert score("北京大学", ["北京"], scoring="squad") == (0.0, 0.0)


# the official CMRC 2018 script (ymcui/cmrc2018 baseline/cmrc2018_evaluate.py), its scoring functions as written there
_SP = ['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=', '，', '。', '：', '？', '！', '“', '”',
       '；', '’', '《', '》', '……', '·', '、', '「', '」', '（', '）', '－', '～', '『', '』']


def _official_cmrc(answers: list[str], prediction: str) -> tuple[int, float]:
    import re

    from nltk.tokenize import NLTKWordTokenizer  # nltk.word_tokenize per sentence (an answer is one)

    def mixed_segmentation(in_str: str) -> list[str]:
        segs_out, temp_str = [], ""
        for char in in_str.lower().strip():
            if char in _SP:
                continue
            if re.search(r"[\u4e00-\u9fa5]", char):
                if temp_str != "":
                    segs_out.extend(NLTKWordTokenizer().tokenize(temp_str))
                    temp_str = ""
                segs_out.append(char)
            else:
                temp_str += char
        if temp_str != "":
            segs_out.extend(NLTKWordTokenizer().tokenize(temp_str))
        return segs_out

    def remove_punctuation(in_str: str) -> str:
        return "".join(c for c in in_str.lower().strip() if c not in _SP)

    f1s = []
    for ans in answers:
        a, p = mixed_segmentation(ans), mixed_segmentation(prediction)
        m = [[0] * (len(p) + 1) for _ in range(len(a) + 1)]
        lcs = 0
        for i in range(len(a)):
            for j in range(len(p)):
                if a[i] == p[j]:
                    m[i + 1][j + 1] = m[i][j] + 1
                    lcs = max(lcs, m[i + 1][j + 1])
        f1s.append(0.0 if lcs == 0 else 2 * (lcs / len(p)) * (lcs / len(a)) / (lcs / len(p) + lcs / len(a)))
    return int(any(remove_punctuation(a) == remove_punctuation(prediction) for a in answers)), max(f1s)


def test_chinese_scores_equal_the_official_cmrc_script() -> None:
    """tunelab dropped every punctuation mark (Unicode's and ASCII's) where the official script drops only its 32
    marks and counts the rest (`.`, `"`, `(`, `%`, `…`) as segments, and split non-Chinese text by a regex, not nltk:
    a span that ended one mark short or long scored higher than the official script, and `北京.` matched `北京`."""
    rng = random.Random(0)
    chars = list("北京大学上海年月abXZ019 .,()\"%&<>!?'-:/+…") + list("，。：？！“”；’《》·、「」（）")
    cases = [("北京.", ["北京"]), ("50", ["50%"]), ("诗人王子\"。1", ["1960年被选为“诗人王子\""]),
             ("Kids）AMPM", ["ME&CITY（包括ME&CITY Kids）"]), ("don't 北京…", ["do not 北京"]),
             ("U.S. Army 北", ["the u.s. army"])]
    cases += [("".join(rng.choice(chars) for _ in range(rng.randint(0, 10))),
               ["".join(rng.choice(chars) for _ in range(rng.randint(1, 10))) for _ in range(rng.randint(1, 3))])
              for _ in range(300)]
    checked = 0
    for pred, golds in cases:
        if not all(g.strip() and any(c not in _SP for c in g.strip()) for g in golds):
            continue  # a gold of marks only: dropped as SQuAD v2 does (the official CMRC script has none)
        em, f1 = _official_cmrc(golds, pred)
        assert score(pred, golds, scoring="cmrc") == (em, pytest.approx(f1, abs=1e-9)), (pred, golds)
        checked += 1
    assert checked > 200
    assert score("北京.", ["北京"], scoring="cmrc") == (0.0, pytest.approx(0.8))  # `.` a segment of its own: P 2/3, R 1


def test_a_chinese_answer_in_a_mostly_english_context_is_scored_by_character() -> None:
    """The rule was the context's language (≥ 30 % CJK): a Chinese answer in a mostly English context was one SQuAD
    word, so a partly right prediction scored 0 in metrics and in the records."""
    context = "Founder: 王五先生, born in 1990 in Shenzhen; the company TCL makes televisions and phones."
    start = context.index("王五先生")
    lg = np.zeros((3, 2), dtype=np.float32)
    lg[1] = 9.0  # the one context token (the predicted span) starts and ends the answer
    logits = np.empty(1, dtype=object)
    logits[0] = [(lg, [None, (start, start + 4), None])]
    examples = [{"context": context, "question": "Who founded it?", "answers": [("王五", start)]}]
    task = _task()
    f1 = 2 * (2 / 4) * 1 / (2 / 4 + 1)  # CMRC: LCS 2 of the 4 predicted characters, of the 2 gold
    m = task.metrics(logits, examples)
    assert m["f1"] == pytest.approx(f1) and m["exact_match"] == 0.0
    (rec,) = task.records(logits, examples)
    assert rec["prediction"] == "王五先生" and rec["score"] == pytest.approx(f1)
    # decided per question, from the golds (and a Chinese context), never from the prediction: two models' answers
    # to one question are scored by one rule
    assert qa_metrics(["the Beatles", "北京大学"], [["Beatles"], ["北京"]]) == pytest.approx(
        {"f1": (1 + f1) / 2, "exact_match": 0.5, "n": 2})
    assert score("北京大学", ["北京"]) == (0.0, pytest.approx(f1))
    assert score("Tokyo (東京", ["Tokyo"]) == (0.0, pytest.approx(2 / 3))  # SQuAD: `東京` one more word
    assert cmrc_style(["Tokyo"], "东京是日本的首都，人口约一千四百万。") and not cmrc_style(["Tokyo"], "Tokyo is big.")


def test_a_japanese_answer_is_scored_per_character_as_jsquad() -> None:
    """Any kana answer went to CMRC scoring, which splits only U+4E00–U+9FA5 into characters: a kana run was one nltk
    word, so a partly right answer scored 0 (`ひらがなです` for `ひらがな`: F1 0.0). Japanese is scored per character as
    JGLUE's JSQuAD evaluation does (spaces out, a final `。` dropped, F1 over the bag of characters), decided by the
    golds or a Japanese context; a Chinese one stays CMRC's."""
    assert style(["ひらがな"]) == "jsquad" and score("ひらがなです", ["ひらがな"]) == (0.0, pytest.approx(2 * 4 / 10))
    assert score("とうきょう と", ["とうきょう"]) == (0.0, pytest.approx(2 * 5 / 11))
    assert score("アメリカ合衆国。", ["アメリカ"]) == (0.0, pytest.approx(2 * 4 / 11))  # 7 characters, 4 right
    assert score("東京タワー。", ["東京 タワー"]) == (1.0, 1.0)
    context = "東京は日本の首都であり、人口は約千四百万人である。"  # a kanji-only answer in Japanese text
    assert style(["東京"], context) == "jsquad" and score("東京都", ["東京"], style(["東京"], context))[1] == \
        pytest.approx(0.8)
    chinese = "北京是中华人民共和国的首都，也是全国的政治和文化中心，索尼（ソニー）在此设有分公司。"  # kana: a name
    assert style(["北京"]) == "cmrc" and style(["北京"], chinese) == "cmrc"
    assert style(["Tokyo"], "Tokyo is big.") == "squad"
    # an English passage naming a Japanese word (SQuAD's Wikipedia passages): scored as SQuAD's script scores it
    pokemon = "Pokémon (Japanese: ポケモン, Hepburn: Pokemon) is a media franchise managed by the capital company."
    assert style(["the capital"], pokemon) == "squad"
    assert score("capital", ["the capital"], style(["the capital"], pokemon)) == (1.0, 1.0)
    # and Japanese with much Latin (CJK under a third of it) is still Japanese
    linux = ("Linux（リナックス）は、1991年にLinus Torvaldsが開発したUNIX系OSのカーネル。"
             "GNU General Public License v2の下で配布。")
    assert style(["開発"], linux) == "jsquad"
    assert qa_metrics(["ひらがなです"], [["ひらがな"]]) == pytest.approx({"f1": 0.8, "exact_match": 0.0, "n": 1})


def test_unanswerable_metrics() -> None:
    m = qa_metrics(["", "cat", "dog", ""], [[], [], ["dog"], ["a cat"]], ["squad"] * 4)
    assert m["n"] == 4 and m["exact_match"] == pytest.approx(0.5) and m["f1"] == pytest.approx(0.5)
    assert m["no_answer_f1"] == pytest.approx(0.5) and m["has_answer_f1"] == pytest.approx(0.5)
    assert m["no_answer_n"] == 2 and m["has_answer_n"] == 2
    assert "no_answer_f1" not in qa_metrics(["cat"], [["cat"]], ["squad"])
    assert list(qa_metrics(["cat"], [["cat"]], ["squad"]))[:3] == ["f1", "exact_match", "n"]
    # as the official SQuAD v2 script: a gold that normalises to nothing is dropped (an empty answer to an answerable
    # question scores 0), a prediction that normalises to nothing answers an unanswerable one, and a kind of
    # question the set does not hold has no keys
    assert score("", ["Paris", "The"]) == (0.0, 0.0) and score("the", []) == (1.0, 1.0)
    assert set(qa_metrics(["", "x"], [[], []], ["squad", "squad"])) == {
        "f1", "exact_match", "n", "no_answer_f1", "no_answer_exact_match", "no_answer_n"}
    assert "no_answer_n" not in qa_metrics(["Paris", "the"], [["Paris"], ["The"]], ["squad", "squad"])  # answers given


# -- decoding ------------------------------------------------------------------------------------
def _window(n: int, ctx_from: int = 2, chars: int = 4) -> tuple[np.ndarray, list]:
    """A window of n tokens: [CLS], question, then context tokens covering chars*k .. chars*k+3."""
    offsets = [None] * ctx_from + [(chars * k, chars * k + 3) for k in range(n - ctx_from - 1)] + [None]
    return np.zeros((n, 2), dtype=np.float32), offsets


CONTEXT = " ".join(f"w{k:02d}" for k in range(40))  # token k of _window covers CONTEXT[4k : 4k+3]


def test_best_span_is_best_valid_pair_not_two_argmaxes() -> None:
    lg, off = _window(12)
    lg[7, 0], lg[3, 1] = 9.0, 8.0  # independent argmaxes: start 7 after end 3 (invalid)
    lg[4, 0], lg[5, 1] = 5.0, 6.0  # best valid: start token 4, end token 5
    lg[1, 0] = lg[1, 1] = 20.0  # a question token: never part of an answer
    out = best_span([(lg, off)], CONTEXT, n_best=5, max_answer_length=30)
    assert (out["start"], out["end"]) == (8, 15) and out["answer"] == CONTEXT[8:15] == "w02 w03"
    assert 0 < out["score"] <= 1
    # too long for max_answer_length=1: of the single-token spans token 3 (0 + 8) beats 5 (0 + 6) and 4 (5 + 0)
    out = best_span([(lg, off)], CONTEXT, n_best=5, max_answer_length=1)
    assert out["answer"] == "w01" and out["start"] == 4
    # n_best=1 sees only the top start (7) and the top end (3): no valid pair
    assert best_span([(lg, off)], CONTEXT, n_best=1, max_answer_length=30)["answer"] == ""


def test_best_span_picks_the_best_window() -> None:
    a, off_a = _window(10)
    b, _ = _window(10)
    off_b = [None, None] + [(4 * k, 4 * k + 3) for k in range(6, 13)] + [None]  # a later window
    a[3, 0], a[3, 1] = 2.0, 2.0
    b[4, 0], b[5, 1] = 3.0, 4.0
    out = best_span([(a, off_a), (b, off_b)], CONTEXT, n_best=3, max_answer_length=5)
    assert out["answer"] == "w08 w09" and CONTEXT[out["start"] : out["end"]] == out["answer"]


def test_null_answer_only_when_unanswerable_allowed() -> None:
    lg, off = _window(8)
    lg[0] = 6.0  # [CLS] start + end = 12
    lg[3, 0], lg[3, 1] = 5.0, 5.0  # best span 10
    assert best_span([(lg, off)], CONTEXT, 5, 30)["answer"] == "w01"  # SQuAD 1.1: always a span
    out = best_span([(lg, off)], CONTEXT, 5, 30, null_threshold=0.0)
    assert out == {"answer": "", "score": out["score"], "start": None, "end": None} and out["score"] > 0.5
    assert best_span([(lg, off)], CONTEXT, 5, 30, null_threshold=3.0)["answer"] == "w01"
    # the lowest [CLS] score over the windows counts: a window sure of an answer wins
    other, _ = _window(8)
    other[0] = -5.0
    assert best_span([(lg, off), (other, off)], CONTEXT, 5, 30, null_threshold=0.0)["answer"] == "w01"


# -- windows and positions -----------------------------------------------------------------------
def test_stride_windows_answer_at_boundary(tiny_bert: Path) -> None:
    task = _task(tiny_bert, {"doc_stride": 4, "max_question_length": 4}, max_length=16)
    words = (FILL * 2)[:30]
    # window 1 holds context tokens 0-11, window 2 tokens 8-19: the answer (tokens 11-12) straddles the end of 1
    ex = task.parse(_table([_row(words, 11, 2)]))
    tok = task.build_model(str(tiny_bert), ex)[1]
    feats = task.encode(ex, tok)
    assert len(feats) == 4 and {f["example_index"] for f in feats} == {0}
    ctx = ex[0]["context"]
    for f in feats:  # offsets map context tokens back to the exact words; others are None
        toks = [ctx[o[0] : o[1]] for o in f["offset_mapping"] if o is not None]
        assert toks and all(t in words for t in toks)
        assert f["offset_mapping"][0] is None and len(f["offset_mapping"]) == len(f["input_ids"])
    assert (feats[0]["start_positions"], feats[0]["end_positions"]) == (0, 0)  # answer cut: [CLS]
    s, e = feats[1]["start_positions"], feats[1]["end_positions"]
    off = feats[1]["offset_mapping"]
    assert s > 0 and ctx[off[s][0] : off[e][1]] == ex[0]["answers"][0][0] == "really quite"
    # decoding from the window that holds it finds it exactly
    lg = np.zeros((len(feats[1]["input_ids"]), 2), dtype=np.float32)
    lg[s, 0] = lg[e, 1] = 5.0
    windows = [(np.zeros((len(f["input_ids"]), 2), dtype=np.float32), f["offset_mapping"]) for f in feats]
    windows[1] = (lg, off)
    assert task.decode(windows, ctx)["answer"] == "really quite"
    batch = task.collate(feats, tok.pad_token_id)  # offsets and example indices never reach the model
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}


def test_answer_positions_inside_tokens() -> None:
    offsets = [None, None, (0, 5), (6, 11), (11, 12), None]  # "hello world!" as hello / world / !
    assert answer_positions([("world", 6)], offsets) == (3, 3)
    assert answer_positions([("world!", 6)], offsets) == (3, 4)
    assert answer_positions([("ello", 1)], offsets) == (2, 2)  # inside a token: that token
    assert answer_positions([("far", 40)], offsets) == (0, 0)  # outside this window
    assert answer_positions([], offsets) == (0, 0) and answer_positions([("x", -1)], offsets) == (0, 0)


# -- readers and errors --------------------------------------------------------------------------
def _squad(tmp_path: Path, answers: list, pretty: bool = True) -> Path:
    doc = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [
        {"context": "The cat sat on the mat.", "qas": [
            {"id": "a1", "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0}]},
            {"id": "a2", "question": "Where?", "answers": [], "plausible_answers": [], "is_impossible": True}]},
        {"context": "Dogs bark loudly.", "qas": [{"id": "b1", "question": "What do dogs do?", "answers": answers}]},
    ]}]}
    p = tmp_path / "squad.json"
    p.write_text(json.dumps(doc, indent=2 if pretty else None), encoding="utf-8")
    return p


def test_squad_json_reader(tmp_path: Path) -> None:
    table = read_table(_squad(tmp_path, [{"text": "bark", "answer_start": 5}], pretty=False))
    assert [r.data["id"] for r in table.records] == ["a1", "a2", "b1"]
    assert table.records[0].data == {"id": "a1", "title": "T", "context": "The cat sat on the mat.",
                                     "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0}]}
    assert table.records[1].data["answers"] == []
    assert table.records[2].source.endswith("squad.json: data[0].paragraphs[1].qas[0]")
    ex = _task().parse(table)
    assert [e["answers"] for e in ex] == [[("The cat", 0)], [], [("bark", 5)]]
    # the same v2 question flattened to JSONL, `is_impossible` and no answers: unanswerable as the nested form reads
    # it (it was `answers: missing field`); a row with neither is still refused
    flat = {"context": "The cat sat on the mat.", "question": "Where?", "is_impossible": True}
    assert _task().parse(_table([flat]))[0]["answers"] == []
    with pytest.raises(DataError, match=r"t.jsonl:1: answers: missing field"):
        _task().parse(_table([{**flat, "is_impossible": False}]))


def test_answer_offset_mismatch_names_the_place(tmp_path: Path) -> None:
    table = read_table(_squad(tmp_path, [{"text": "bark", "answer_start": 4}]))
    where = r"squad.json: data\[0\].paragraphs\[1\].qas\[0\]: answers: "
    with pytest.raises(DataError, match=where + r"answer 1 'bark' does not match the context at answer_start 4 "
                                                r"\(the context there: ' bar'\) \(the answer is at 5, \+1 from "
                                                r"answer_start\); fix the offset"):
        _task().parse(table)
    p = write_jsonl(tmp_path / "t.jsonl", [_row(FILL[:5], 1), {**_row(FILL[:5], 2), "answers": {
        "text": ["plot"], "answer_start": [3]}}])
    with pytest.raises(DataError, match=r"t.jsonl:2: answers: answer 1 'plot' does not match"):
        _task().parse(read_table(p))
    bad = {**_row(FILL[:5], 2), "answers": {"text": ["plot"], "answer_start": []}}
    with pytest.raises(DataError, match=r"t.jsonl:1: answers: 1 answer texts for 0 answer_start values"):
        _task().parse(_table([bad]))


def test_answer_start_minus_one_only_outside_training(tiny_bert: Path) -> None:
    row = {"context": "cats and dogs", "question": "who?", "answers": {"text": ["Cats"], "answer_start": [-1]}}
    task = _task()
    ex = task.parse(_table([_row(FILL[:5], 1), row]))  # an evaluation file: fine
    assert ex[1]["answers"] == [("Cats", -1)]
    with pytest.raises(DataError, match=r"t.jsonl:2: answers: answer_start -1 .* allowed only outside training"):
        task.check_train(ex)
    # scored on text only: 'cats' matches 'Cats'
    task = _task(tiny_bert, {"doc_stride": 4, "max_question_length": 4}, max_length=16)
    ex = task.parse(_table([row]))
    tok = task.build_model(str(tiny_bert), task.parse(_table([_row(FILL[:5], 1)])))[1]
    (f,) = task.encode(ex, tok)
    assert (f["start_positions"], f["end_positions"]) == (0, 0)
    lg = np.zeros((len(f["input_ids"]), 2), dtype=np.float32)
    k = next(i for i, o in enumerate(f["offset_mapping"]) if o is not None)
    lg[k] = 5.0
    assert task.metrics(_one([(lg, f["offset_mapping"])]), ex)["exact_match"] == 1.0
    # unanswerable questions in training: the model may answer "" from then on (saved with the model)
    no_answer = {**_row(FILL[:5], 1), "answers": {"text": [], "answer_start": []}}
    task.build_model(str(tiny_bert), task.parse(_table([_row(FILL[:5], 1), no_answer])))
    assert task.unanswerable and task.metadata() == {"unanswerable": True}
    lg[0] = 9.0  # [CLS] wins
    assert task.predictions(_one([(lg, f["offset_mapping"])]), ex)[0]["answer"] == ""


def _one(windows: list) -> np.ndarray:
    out = np.empty(1, dtype=object)
    out[0] = windows
    return out


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match=r"task.doc_stride: 128 leaves windows no room .* = 60"):
        _task(max_length=128)
    with pytest.raises(ConfigError, match=r"data.dedup: not supported by task qa"):
        _task(dedup=True)
    with pytest.raises(ConfigError, match=r"data.truncation"):
        _task(truncation="tail")


def test_a_model_whose_inputs_are_cut_to_its_positions_cuts_its_windows_stride(tiny_bert: Path,
                                                                                  tmp_path: Path) -> None:
    """A run at the default max_length 256 / doc_stride 128 on a model of 128 positions trains (its rows fit); loaded,
    its inputs are cut to 128 and the stride with them (was: every load, eval and predict refused the run's own
    doc_stride)."""
    import shutil

    from tunelab.export.save import load_task

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    (model / "tunelab.json").write_text(json.dumps({"task": {"name": "qa"}, "data": {"max_length": 256}}))
    task = load_task(model)
    assert task.data.max_length == 128 and task.cfg.doc_stride == 30  # room 128 - 64 - 4 = 60, half of it
    with pytest.raises(ConfigError, match="doc_stride"):  # a config of the user's own is still refused
        _task(max_length=128)


def test_lora_keeps_the_qa_head_trainable(tiny_bert: Path) -> None:
    from tunelab.registry import METHODS

    task = _task(tiny_bert, {"doc_stride": 4, "max_question_length": 4}, max_length=16)
    model, _ = task.build_model(str(tiny_bert), task.parse(_table([_row(FILL[:5], 1)])))
    assert task.head_modules(model) == ["qa_outputs"]
    method = METHODS.get("lora")(build_config({"task": "qa", "model": "minilm", "method": "lora"}).method)
    model = method.apply(model, task.head_modules(model))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("qa_outputs" in n and "modules_to_save" in n for n in trainable), sorted(trainable)


# -- end to end ----------------------------------------------------------------------------------
def _qa_rows(n: int, seed: int) -> list[dict]:
    """Learnable: the answer is the one positive word among filler words; up to 40 words, so a context
    often spans two windows of 32 tokens."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(FILL) for _ in range(rng.randint(6, 40))]
        k = rng.randrange(len(words))
        words[k] = rng.choice(POS)
        rows.append({"id": f"q{seed}-{i}", **_row(words, k)})
    return rows


def test_cli_train_eval_predict(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", _qa_rows(40, 0))
    val = tmp_path / "val.json"  # validation as a SQuAD JSON file
    val.write_text(json.dumps({"data": [{"title": "synthetic", "paragraphs": [
        {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "answers": [
            {"text": r["answers"]["text"][0], "answer_start": r["answers"]["answer_start"][0]}]}]}
        for r in _qa_rows(24, 1)]}]}), encoding="utf-8")
    out = tmp_path / "run"
    runner = CliRunner()
    sets = ["task={name: qa, doc_stride: 8, max_question_length: 4, n_best: 5}", f"model={tiny_bert}",
            f"data.train={train}", f"data.validation={val}", f"output_dir={out}", "data.max_length=32",
            "train.epochs=3", "train.lr=1e-2", "train.batch_size=8", "train.save_steps=0"]
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())["validation"]
    assert set(m) == {"f1", "exact_match", "n"} and m["n"] == 24
    assert m["exact_match"] >= 0.9, m
    meta = json.loads((out / "model" / "tunelab.json").read_text())
    assert meta["task"]["doc_stride"] == 8 and meta["unanswerable"] is False
    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(val)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1])["exact_match"] == m["exact_match"]
    unlabelled = write_jsonl(tmp_path / "ask.jsonl", [{k: r[k] for k in ("id", "context", "question")}
                                                      for r in _qa_rows(6, 2)])
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(unlabelled)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["id"] for r in rows] == [f"q2-{i}" for i in range(6)]
    for r in rows:
        assert {"answer", "score", "start", "end", "context", "question"} <= set(r)
        assert r["context"][r["start"] : r["end"]] == r["answer"] and r["answer"] in POS
    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(write_jsonl(tmp_path / "bad.jsonl", [
        {**_qa_rows(1, 3)[0], "answers": {"text": ["zzz"], "answer_start": [0]}}]))])
    assert res.exit_code == 2 and "bad.jsonl:1: answers: answer 1 'zzz' does not match" in res.output


def _unpaired_checkpoint(tiny_bert: Path, out: Path) -> Path:
    """The tiny BERT as a checkpoint pretrained without sentence pairs: token-type row 0 trained (std 0.08),
    row 1 still at its initialisation (std 0.02), as in m3e-small."""
    import shutil

    import torch
    from transformers import BertModel

    shutil.copytree(tiny_bert, out)
    model = BertModel.from_pretrained(out)
    torch.manual_seed(1)
    table = model.embeddings.token_type_embeddings.weight
    with torch.no_grad():
        table[0].normal_(0.0, 0.08)
        table[1].copy_(_at_init(table[1]))
    model.save_pretrained(out)
    return out


def _at_init(row):
    """A row as a fresh N(0, 0.02) initialisation of a wide model looks: mean 0, std 0.02 (32 random values alone
    stray up to 25 % from it; a real table's 384–768 values about 4 %)."""
    import torch

    row = torch.randn_like(row)
    return (row - row.mean()) / row.std() * 0.02


def _train_qa(model: Path, train: Path, out: Path, *extra: str) -> str:
    """`tunelab train` of a short QA run (train = validation); its console output."""
    sets = ["task={name: qa, doc_stride: 8, max_question_length: 4}", f"model={model}", f"data.train={train}",
            f"data.validation={train}", f"output_dir={out}", "data.max_length=32", "train.epochs=1",
            "train.batch_size=8", "train.save_steps=0", "train.report=false", *extra]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return res.output


def test_untrained_segment_row_starts_from_row_zero(tiny_bert: Path, tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForQuestionAnswering

    from tunelab.models.segments import reseed_as_trained, seed_untrained_segments

    path = _unpaired_checkpoint(tiny_bert, tmp_path / "unpaired")
    model = AutoModelForQuestionAnswering.from_pretrained(path)
    table = model.bert.embeddings.token_type_embeddings.weight
    row0 = table[0].detach().clone()
    line = seed_untrained_segments(model)
    assert line is not None and "row 1 (std 0.0200)" in line
    assert torch.equal(table[1], row0) and torch.equal(table[0], row0)
    assert model.config.seeded_token_type_rows == [1]  # saved in config.json: what adapters' bases repeat
    assert seed_untrained_segments(model) is None  # now both rows look trained: nothing more to do
    trained = AutoModelForQuestionAnswering.from_pretrained(tiny_bert)  # two rows of one spread: left alone
    table = trained.bert.embeddings.token_type_embeddings.weight
    for row1 in (table[1].detach().clone(), _at_init(table[1]) * 2):  # a small row, but not at initialisation
        with torch.no_grad():
            table[0].normal_(0.0, 0.08)
            table[1].copy_(row1)
        before = table.detach().clone()
        assert seed_untrained_segments(trained) is None
        assert torch.equal(table, before)
    reseed_as_trained(trained, trained.config)  # a run that recorded no seeded rows: rebuilt as it was
    assert torch.equal(table, before)
    trained.config.seeded_token_type_rows = [1]
    reseed_as_trained(trained, trained.config)
    assert torch.equal(table[1], table[0])
    decoder = AutoModelForCausalLM.from_pretrained(tiny_llama)  # no token-type table at all
    assert seed_untrained_segments(decoder) is None


def test_training_reports_the_seeded_segment_row(tiny_bert: Path, tmp_path: Path) -> None:
    path = _unpaired_checkpoint(tiny_bert, tmp_path / "unpaired")
    train = write_jsonl(tmp_path / "train.jsonl", _qa_rows(16, 0))
    out = tmp_path / "run"
    assert "token-type embedding row 1" in _train_qa(path, train, out)
    applied = json.loads((out / "data_summary.json").read_text())["applied"]
    assert applied["segment_embeddings"].startswith("token-type embedding row 1 (std 0.0200)")
    # a tuned model whose row 1 looks untrained (a run from before the seeding existed) trains on as it is
    import torch
    from transformers import AutoModelForQuestionAnswering

    old = AutoModelForQuestionAnswering.from_pretrained(out / "model")
    row1 = old.bert.embeddings.token_type_embeddings.weight[1]
    with torch.no_grad():
        row1.copy_(_at_init(row1))
    old.save_pretrained(out / "model")
    assert "token-type" not in _train_qa(out / "model", train, tmp_path / "run2")
    assert json.loads((tmp_path / "run2" / "data_summary.json").read_text())["applied"]["segment_embeddings"] is None


def test_a_lora_run_on_it_merges_and_serves_as_trained(tiny_bert: Path, tmp_path: Path) -> None:
    """LoRA leaves the token-type rows out of the adapter: `export --merge` and the shared-base server rebuild the
    base, and must seed its untrained row as training did, or every context token would shift."""
    import torch
    from transformers import AutoTokenizer

    import tunelab
    from tunelab.export.merge import merge_run
    from tunelab.serve.adapters import load_group

    path = _unpaired_checkpoint(tiny_bert, tmp_path / "unpaired")
    train = write_jsonl(tmp_path / "train.jsonl", _qa_rows(16, 0))
    out = tmp_path / "run"
    _train_qa(path, train, out, "method=lora", "method.r=4")
    row = _qa_rows(1, 5)[0]
    enc = AutoTokenizer.from_pretrained(out / "model")(row["question"], row["context"], return_tensors="pt")
    assert enc["token_type_ids"].max() == 1  # the context is the second segment
    with torch.no_grad():
        trained = tunelab.load(out).module(**enc).start_logits
        merged = merge_run(out).output
        again = tunelab.load(merged).module(**enc).start_logits
        served = load_group([out])[0].module(**enc).start_logits
    assert torch.allclose(again, trained, atol=1e-5) and torch.allclose(served, trained, atol=1e-5)
