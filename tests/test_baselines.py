"""tunelab baseline: TF-IDF baselines, zero-shot (embedding, LLM), the char n-gram LM, and the CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import WORDS, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.errors import TunelabError
from tunelab.studies.baselines import choose_analyzer, run_baselines
from tunelab.studies.ngram_lm import CharNgramLM
from tunelab.studies.zero_shot import build_prompt, llm_scores

runner = CliRunner()


def _cfg(train: Path, val: Path, out: Path, model: str = "minilm", **task: object) -> object:
    return build_config({"task": {"name": "classification", **task}, "model": model, "output_dir": str(out),
                         "data": {"train": str(train), "validation": str(val)}})


def test_tfidf_baselines_on_separable_data(sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = sentiment_files
    result = run_baselines(_cfg(train, val, tmp_path / "run"))
    assert set(result) == {"validation", "meta"}
    assert set(result["validation"]) == {"tfidf_nb", "tfidf_logreg"}
    for metrics in result["validation"].values():
        assert metrics["accuracy"] >= 0.9 and metrics["f1_macro"] >= 0.9 and metrics["n"] == 16
        # the same metric set as a fine-tuned run's metrics.json
        assert {"f1_micro", "roc_auc", "per_class", "confusion_matrix"} <= set(metrics)
    meta = result["meta"]
    assert meta["analyzer"] == "word" and meta["labels"] == ["negative", "positive"]
    assert meta["rows"] == {"train": 48, "validation": 16}
    assert json.loads((tmp_path / "run" / "baselines.json").read_text()) == json.loads(json.dumps(result))


def _zh_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pos, neg, filler = "好棒赞满意喜欢", "差烂糟失望讨厌", "酒店房间服务早餐位置前台"
    rows = []
    for i in range(n):
        lab = ("negative", "positive")[i % 2]
        chars = [rng.choice(pos if lab == "positive" else neg) for _ in range(3)] + rng.sample(filler, 4)
        rng.shuffle(chars)
        rows.append({"text": "".join(chars) + "。", "label": lab})
    return rows


def test_chinese_text_gets_the_character_analyzer(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", _zh_rows(40, 0))
    val = write_jsonl(tmp_path / "val.jsonl", _zh_rows(12, 1))
    result = run_baselines(_cfg(train, val, tmp_path / "run"))
    assert result["meta"]["analyzer"] == "char" and result["meta"]["features"] == "character 1-3-grams"
    assert result["validation"]["tfidf_logreg"]["accuracy"] >= 0.9
    assert choose_analyzer(["酒店很好 ok"] * 3) == "char"  # 4 of 6 characters
    assert choose_analyzer(["the hotel was 很好"] * 3) == "word"
    assert choose_analyzer(["酒店很好"], "word") == "word"
    with pytest.raises(TunelabError, match="analyzer must be one of"):
        choose_analyzer(["x"], "bpe")


def test_multi_label_one_vs_rest(tmp_path: Path) -> None:
    rng = random.Random(0)

    def rows(n: int) -> list[dict]:
        out = []
        for i in range(n):
            labs = [lab for lab, on in (("music", i % 2), ("plot", i % 3 == 0)) if on] or ["other"]
            words = [w for lab in labs for w in (["music"] * 3 if lab == "music" else ["plot"] * 3
                                                  if lab == "plot" else ["the"] * 3)] + rng.sample(WORDS[:14], 2)
            out.append({"text": " ".join(words), "label": labs})
        return out

    cfg = _cfg(write_jsonl(tmp_path / "t.jsonl", rows(60)), write_jsonl(tmp_path / "v.jsonl", rows(18)),
               tmp_path / "run", multi_label=True)
    result = run_baselines(cfg)
    assert result["meta"]["multi_label"] is True
    assert result["validation"]["tfidf_logreg"]["f1_micro"] >= 0.9
    assert "subset_accuracy" in result["validation"]["tfidf_nb"]
    with pytest.raises(TunelabError, match="zero-shot baselines need single-label"):
        run_baselines(cfg, embedding_model="minilm")


def test_zero_shot_embedding(tiny_bert: Path, tmp_path: Path) -> None:
    """A text identical to a label's description has cosine 1 with it, so it is labelled with it."""
    desc = {"negative": "bad awful poor", "positive": "good great nice"}
    val_rows = [{"text": desc[lab], "label": lab} for lab in ("negative", "positive", "positive", "negative")]
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24, 0))
    val = write_jsonl(tmp_path / "val.jsonl", val_rows)
    desc_file = tmp_path / "labels.json"
    desc_file.write_text(json.dumps(desc))
    result = run_baselines(_cfg(train, val, tmp_path / "run"), embedding_model=str(tiny_bert),
                           label_descriptions=desc_file)
    zs = result["validation"]["zero_shot_embedding"]
    assert zs["accuracy"] == 1.0 and zs["n"] == 4
    assert result["meta"]["embedding_model"] == str(tiny_bert) and result["meta"]["label_descriptions"] == desc
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"neutral": "meh"}))
    with pytest.raises(TunelabError, match="unknown label 'neutral'"):
        run_baselines(_cfg(train, val, tmp_path / "run"), embedding_model=str(tiny_bert), label_descriptions=bad)


def _manual_loglik(model_dir: Path, text: str, labels: list[str], label: str) -> float:
    """log p(label tokens | prompt) with one unpadded forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    lm = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt, chat = build_prompt(tok, text, labels, {})
    assert not chat  # the tiny tokenizer has no chat template: the plain prompt
    p = tok(prompt)["input_ids"]
    full = tok(prompt + " " + label)["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(lm(input_ids=torch.tensor([full])).logits[0].float(), -1)
    return float(sum(logp[i - 1, full[i]] for i in range(len(p), len(full))))


def test_zero_shot_llm_scores_restricted_labels(tiny_llama: Path, sentiment_files: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    texts = ["good movie", "the plot was very boring and the actor was awful", "nice"]
    labels = ["good", "bad"]
    batched = llm_scores(texts, labels, str(tiny_llama), batch_size=4)
    alone = llm_scores(texts, labels, str(tiny_llama), batch_size=1)
    np.testing.assert_allclose(batched, alone, atol=1e-4)  # right padding changes nothing
    assert batched[1, 1] == pytest.approx(_manual_loglik(tiny_llama, texts[1], labels, "bad"), abs=1e-4)
    assert np.all(batched < 0)

    train, val = sentiment_files
    result = run_baselines(_cfg(train, val, tmp_path / "run"), zero_shot_model=str(tiny_llama), llm_limit=10)
    zs = result["validation"]["zero_shot_llm"]
    assert zs["n"] == 10 and 0.0 <= zs["accuracy"] <= 1.0
    assert sum(sum(r) for r in zs["confusion_matrix"]["matrix"]) == 10
    assert any("seeded sample of 10 of 16" in n for n in result["meta"]["notes"])
    cal = result["validation"]["zero_shot_llm_calibrated"]
    assert cal["n"] == 10 and set(result["meta"]["zero_shot_llm_prior"]) == {"negative", "positive"}


def test_contextual_calibration_removes_a_label_prior() -> None:
    from tunelab.studies.zero_shot import calibrate, label_prior, softmax

    evidence = np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, -0.5], [-0.5, 0.5]])  # what the texts say
    bias = np.array([0.0, 3.0])  # the model says label 1 whatever the text
    biased = evidence + bias
    assert (biased.argmax(1) == 1).all()
    fixed = calibrate(biased, label_prior(np.zeros((3, 2)) + bias))  # content-free texts show only the bias
    assert (fixed.argmax(1) == evidence.argmax(1)).all()
    np.testing.assert_allclose(softmax(fixed), softmax(evidence), atol=1e-12)


def test_ngram_lm_prefers_in_domain_text() -> None:
    rng = random.Random(0)
    train = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(200)]
    held = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(40)]
    shuffled = ["".join(rng.sample(t, len(t))) for t in held]
    lm = CharNgramLM(4).fit(train)
    good, bad = lm.perplexity(held), lm.perplexity(shuffled)
    assert math.isfinite(good["perplexity_per_char"]) and math.isfinite(bad["perplexity_per_char"])
    assert good["perplexity_per_char"] < bad["perplexity_per_char"] / 3
    unseen = lm.perplexity(["完全没见过的字"])  # characters unseen in training: finite, counted
    assert math.isfinite(unseen["perplexity_per_char"]) and unseen["unseen_char_rate"] == 1.0
    # a distribution: the next-symbol probabilities sum to 1 for any history
    assert sum(lm.prob("the", c) for c in lm.vocab) == pytest.approx(1.0)
    assert sum(lm.prob("qqq", c) for c in lm.vocab) == pytest.approx(1.0)


def test_sft_config_gets_the_ngram_lm(tiny_llama: Path, tmp_path: Path) -> None:
    def chat(n: int, seed: int) -> list[dict]:
        rng = random.Random(seed)
        return [{"prompt": f"say {w}", "completion": f"{w} is the word"} for w in rng.choices(WORDS, k=n)]

    cfg = build_config({"task": "sft", "model": str(tiny_llama), "output_dir": str(tmp_path / "run"),
                        "data": {"train": str(write_jsonl(tmp_path / "t.jsonl", chat(60, 0))),
                                 "validation": str(write_jsonl(tmp_path / "v.jsonl", chat(10, 1)))}})
    result = run_baselines(cfg, ngram_order=3)
    lm = result["validation"]["ngram_lm"]
    assert lm["texts"] == 10 and lm["order"] == 3 and 1.0 < lm["perplexity_per_char"] < 10
    assert lm["characters"] == sum(len(r["completion"]) for r in chat(10, 1))  # assistant replies only
    with pytest.raises(TunelabError, match="zero-shot baselines are for classification"):
        run_baselines(cfg, zero_shot_model=str(tiny_llama))


def test_cli_baseline(sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = sentiment_files
    sets = ["task=classification", "model=minilm", f"data.train={train}", f"data.validation={val}",
            f"output_dir={tmp_path / 'run'}"]
    args = ["baseline", *[a for s in sets for a in ("--set", s)]]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    printed = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert printed["validation"]["tfidf_nb"]["accuracy"] >= 0.9
    assert printed == json.loads((tmp_path / "run" / "baselines.json").read_text())
    assert "tfidf_logreg" in res.output  # the table

    for bad_args, message in [
        (["baseline", "--set", "task=classification", "--set", "model=minilm", "--set", "data.trian=x.jsonl"],
         "error: --set data.trian: unknown key"),
        ([*args, "--analyzer", "bpe"], "error: baseline: analyzer must be one of auto, word, char"),
        ([*args, "--label-descriptions", str(tmp_path / "missing.json")], "label descriptions file not found"),
        (["baseline", "--set", "task=ner", "--set", "model=minilm", "--set", f"data.train={train}"],
         "error: baseline: no baselines for task 'ner'"),
    ]:
        res = runner.invoke(app, bad_args)
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1
