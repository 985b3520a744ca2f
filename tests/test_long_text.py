"""Long texts in classification: head / tail / head+tail token selection, sliding windows (one training
row per window, logits combined by mean or max), and the options saved with the model."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import WORDS, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError
from tunelab.evaluation.evaluate import logits_for
from tunelab.models.inference import forward_logits
from tunelab.registry import TASKS
from tunelab.tasks.truncation import _share, aggregate_windows, cut_tokens

TEXT = " ".join(WORDS[:20])  # 20 words, one token each


def _task(tiny: Path, **data: object):
    cfg = build_config({"task": "classification", "model": str(tiny), "data": data})
    return TASKS.get("classification")(cfg.task, cfg.data)


def _tok(tiny: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny))


def _words(tok, ids: list[int]) -> list[str]:
    return tok.convert_ids_to_tokens(ids)


def test_head_tail_head_plus_tail_exact(tiny_bert: Path) -> None:
    tok = _tok(tiny_bert)
    w = WORDS[:20]
    for mode, want in [
        ("head", w[:6]),
        ("tail", w[-6:]),
        ("head+tail", w[:3] + w[-3:]),  # budget 8 - [CLS] - [SEP] = 6: first 3 and last 3
    ]:
        out = cut_tokens(tok, [TEXT, "good bad"], None, 8, mode)
        assert _words(tok, out["input_ids"][0]) == ["[CLS]", *want, "[SEP]"], mode
        assert _words(tok, out["input_ids"][1]) == ["[CLS]", "good", "bad", "[SEP]"]  # short rows stay whole
    # odd budget (9 - 2 = 7): the head gets the smaller half
    out = cut_tokens(tok, [TEXT], None, 9, "head+tail")
    assert _words(tok, out["input_ids"][0]) == ["[CLS]", *w[:3], *w[-4:], "[SEP]"]
    # head through cut_tokens is exactly the tokenizer's own truncation
    assert cut_tokens(tok, [TEXT], None, 8, "head")["input_ids"] == tok([TEXT], truncation=True,
                                                                      max_length=8)["input_ids"]


def test_pairs_cut_the_longer_text_first(tiny_bert: Path) -> None:
    assert _share(20, 3, 10) == (7, 3) and _share(3, 20, 10) == (3, 7)
    assert _share(20, 20, 9) == (5, 4) and _share(4, 3, 10) == (4, 3)
    tok = _tok(tiny_bert)
    out = cut_tokens(tok, [TEXT], ["movie film plot"], 13, "tail")  # 13 - 3 specials = 10: 7 + 3
    assert _words(tok, out["input_ids"][0]) == ["[CLS]", *WORDS[13:20], "[SEP]", "movie", "film", "plot", "[SEP]"]
    assert out["token_type_ids"][0] == [0] * 9 + [1] * 4


def test_encode_modes_through_the_task(tiny_bert: Path) -> None:
    tok = _tok(tiny_bert)
    rows = [{"text": TEXT, "label": "positive"}, {"text": "bad movie", "label": "negative"}]
    table = Table("m.jsonl", [Record("m.jsonl", i + 1, r) for i, r in enumerate(rows)])
    task = _task(tiny_bert, max_length=8, truncation="tail")
    task.labels = ["negative", "positive"]
    feats = task.encode(task.parse(table), tok)
    assert [_words(tok, f["input_ids"]) for f in feats] == [["[CLS]", *WORDS[14:20], "[SEP]"],
                                                           ["[CLS]", "bad", "movie", "[SEP]"]]
    assert [f["labels"] for f in feats] == [1, 0] and "example_index" not in feats[0]


def test_long_row_becomes_n_windows(tiny_bert: Path) -> None:
    tok = _tok(tiny_bert)
    rows = [{"text": TEXT, "label": "positive"}, {"text": "bad movie", "label": "negative"}]
    table = Table("m.jsonl", [Record("m.jsonl", i + 1, r) for i, r in enumerate(rows)])
    task = _task(tiny_bert, max_length=8, truncation="sliding_window", window_stride=2)
    task.labels = ["negative", "positive"]
    feats = task.encode(task.parse(table), tok)
    # 6 text tokens per window, advancing 4: 0-5, 4-9, 8-13, 12-17, 16-19
    assert [f["example_index"] for f in feats] == [0, 0, 0, 0, 0, 1]
    assert [f["labels"] for f in feats] == [1, 1, 1, 1, 1, 0]
    assert _words(tok, feats[1]["input_ids"]) == ["[CLS]", *WORDS[4:10], "[SEP]"]
    assert _words(tok, feats[4]["input_ids"]) == ["[CLS]", *WORDS[16:20], "[SEP]"]
    with pytest.raises(ConfigError, match=r"data.window_stride: 5 is more than half of data.max_length \(8\)"):
        _task(tiny_bert, max_length=8, truncation="sliding_window", window_stride=5)


def test_aggregate_windows_mean_and_max() -> None:
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.0, 5.0], [2.0, 2.0]], dtype=np.float32)
    owners = [0, 0, 1, 0]
    np.testing.assert_allclose(aggregate_windows(logits, owners, "mean"), [[2.0, 0.0], [0.0, 5.0]])
    np.testing.assert_allclose(aggregate_windows(logits, owners, "max"), [[3.0, 2.0], [0.0, 5.0]])


@pytest.mark.parametrize("how", ["mean", "max"])
def test_evaluation_combines_windows(tiny_bert: Path, how: str) -> None:
    rows = [{"text": TEXT, "label": "positive"}, {"text": "bad movie", "label": "negative"},
            {"text": " ".join(WORDS[5:17]), "label": "negative"}]
    table = Table("m.jsonl", [Record("m.jsonl", i + 1, r) for i, r in enumerate(rows)])
    task = _task(tiny_bert, max_length=8, truncation="sliding_window", window_stride=2, window_aggregate=how)
    examples = task.parse(table)
    model, tok = task.build_model(str(tiny_bert), examples)
    feats = task.encode(examples, tok)
    per_window = forward_logits(model, feats, partial(task.collate, pad_id=tok.pad_token_id), 4)
    got = logits_for(task, model, tok, examples)
    assert got.shape == (3, 2)
    owners = np.asarray([f["example_index"] for f in feats])
    for i in range(3):
        want = per_window[owners == i].mean(0) if how == "mean" else per_window[owners == i].max(0)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
    assert len(task.predictions(got, examples)) == 3 and set(task.metrics(got, examples)) >= {"accuracy"}


def test_cli_sliding_window_saved_with_the_model(tiny_bert: Path, tmp_path: Path) -> None:
    long_rows = [{"text": r["text"] + " " + " ".join(WORDS[14:34]), "label": r["label"]} for r in sentiment_rows(24)]
    train = write_jsonl(tmp_path / "train.jsonl", long_rows)
    out = tmp_path / "run"
    sets = [f"model={tiny_bert}", f"data.train={train}", f"output_dir={out}", "task=classification",
            "data.max_length=16", "data.truncation=sliding_window", "data.window_stride=4",
            "data.window_aggregate=max", "train.max_steps=2", "train.batch_size=8", "train.save_steps=0"]
    runner = CliRunner()
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "model" / "tunelab.json").read_text())["data"]
    assert (meta["truncation"], meta["window_stride"], meta["window_aggregate"]) == ("sliding_window", 4, "max")
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(train)])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == len(long_rows)  # one row per input row, not per window


@pytest.mark.parametrize("truncation", ["head", "head+tail", "sliding_window"])
def test_encoding_in_chunks_is_encoding_at_once(tiny_bert: Path, truncation: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokenising in chunks (bounded peak memory) gives the features of one call, window owners included."""
    import tunelab.tasks.base as base

    tok = _tok(tiny_bert)
    rows = [{"text": TEXT if i % 3 == 0 else f"bad movie {i}", "label": ("negative", "positive")[i % 2]}
            for i in range(7)]
    table = Table("m.jsonl", [Record("m.jsonl", i + 1, r) for i, r in enumerate(rows)])
    task = _task(tiny_bert, max_length=8, truncation=truncation, window_stride=2)
    task.labels = ["negative", "positive"]
    examples = task.parse(table)
    whole = task.encode(examples, tok)
    lengths = task.token_lengths(tok, examples)
    monkeypatch.setattr(base, "TOKENIZE_CHUNK", 2)
    assert task.encode(examples, tok) == whole
    assert task.token_lengths(tok, examples) == lengths
    if truncation == "sliding_window":
        assert sorted({f["example_index"] for f in whole}) == list(range(7))


def test_a_pair_that_leaves_windows_no_room_is_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    """Windows slide over `text` and the pair repeats in each: a 27-token pair at max_length 32 leaves 2 text tokens a
    window, under window_stride 4. Training crashed (rc 1: the tokenizer's Rust panic "`stride` must be strictly less
    than `max_len`", or "Sequence to truncate too short" for a longer pair) and `data check` said nothing; now both
    name the row in one line, exit 2. A row short enough not to be cut still trains."""
    pair = " ".join(["good"] * 27)
    rows = [{"text": "bad", "question": pair, "label": "neg"}, {"text": "nice movie", "label": "pos", "question": "a"},
            {"text": " ".join(WORDS[:20]), "question": pair, "label": "pos"}, {"text": "x", "question": "y",
                                                                                "label": "neg"}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    want = (f"{train}:3: question: 27 tokens leave 2 for text; window_stride 4 needs more: shorten the pair or "
            "lower data.window_stride")
    data = ["data.max_length=32", "data.truncation=sliding_window", "data.window_stride=4",
            "data.text_pair_field=question"]
    sets = [f"model={tiny_bert}", f"data.train={train}", f"output_dir={tmp_path / 'run'}", "task=classification",
            "data.validation_split=0", "train.max_steps=1", "train.save_steps=0", *data]
    runner = CliRunner()
    for args in (["train", *[a for s in sets for a in ("--set", s)]],
                 ["data", "check", str(train), "--model", str(tiny_bert), *[a for s in data for a in ("--set", s)]]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and res.output.strip().splitlines() == [f"error: {want}"], res.output
    longer = write_jsonl(tmp_path / "long.jsonl", [rows[1], {**rows[2], "question": " ".join(["good"] * 40)}, rows[3]])
    res = runner.invoke(app, ["data", "check", str(longer), "--model", str(tiny_bert),
                              *[a for s in data for a in ("--set", s)]])
    assert res.exit_code == 2 and f"{longer}:2: question: 40 tokens leave 0 for text; window_stride 4" in res.output
