"""SFT generation: metrics on hand-made strings, batched = unbatched greedy generation, end-of-turn stops,
prompt templates, `tunelab eval` generation (metrics, replies file, --limit, --no-generate) and
generation in train's final evaluation (task.generation.eval_generate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import WORDS, say_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import run_config_class
from tunelab.config.sections import DataConfig
from tunelab.data.readers import Record, Table, read_table
from tunelab.errors import ConfigError, DataError, TunelabError
from tunelab.evaluation.generation import (
    default_predictions_path,
    eval_generation,
    eval_generation_config,
    evaluate_generation,
)
from tunelab.metrics.generation import score_generations, segment_zh
from tunelab.tasks.chat_template import prompt_ids
from tunelab.tasks.generation import GenerationConfig, generate, with_overrides
from tunelab.text import is_chinese

run_config_class()
from tunelab.tasks.sft import Sft, SftConfig, end_of_turn_ids, sft_records  # noqa: E402


# -- metrics ---------------------------------------------------------------------------------------
def test_identical_texts_score_perfectly() -> None:
    refs = ["the cat sat on the mat", "a dog barked twice at the door"]
    corpus, samples = score_generations(refs, refs)
    assert corpus["bleu"] == pytest.approx(100.0) and corpus["chrf"] == pytest.approx(100.0)
    assert corpus["exact_match"] == 1.0 and corpus["generated"] == 2 and corpus["bleu_tokenize"] == "13a"
    assert corpus["rouge1"] == corpus["rouge2"] == corpus["rougeL"] == 1.0
    assert samples == [{"exact_match": 1.0, "bleu": 100.0, "chrf": 100.0, "rouge_l": 1.0}] * 2


def test_partial_overlap_english() -> None:
    ref = "the cat sat on the mat"
    corpus, (s,) = score_generations(["the cat sat on the"], [ref])
    # ROUGE-1: all 5 predicted unigrams match, 5 of 6 reference ones: F = 2·1·(5/6) / (11/6) = 10/11; ROUGE-L too
    assert corpus["rouge1"] == pytest.approx(10 / 11) and s["rouge_l"] == pytest.approx(10 / 11, abs=1e-6)
    # ROUGE-2: the 4 predicted bigrams are among the reference's 5: P 1, R 4/5 → F = 8/9
    assert corpus["rouge2"] == pytest.approx(8 / 9)
    assert 0 < corpus["bleu"] < 100 and 0 < corpus["chrf"] < 100 and corpus["exact_match"] == 0.0
    closer, _ = score_generations(["the cat sat on the mat ."], [ref])
    assert closer["chrf"] > corpus["chrf"]
    none, _ = score_generations(["xyz"], [ref])
    assert none["bleu"] == 0.0 and none["rouge1"] == 0.0


def test_exact_match_normalises_whitespace_only() -> None:
    corpus, samples = score_generations(["  Hello \n world ", "hello world"], ["Hello world", "Hello world"])
    assert [s["exact_match"] for s in samples] == [1.0, 0.0] and corpus["exact_match"] == 0.5


def test_a_set_mixing_chinese_and_english_scores_each_reply_in_its_language() -> None:
    """Under 30 % CJK overall, the Chinese reply was tokenised as English: rouge-score dropped it (ROUGE-L 0)."""
    corpus, samples = score_generations(["北京是首都", "the capital of france is paris"],
                                        ["北京是首都", "the capital of france is paris"])
    assert [s["rouge_l"] for s in samples] == [1.0, 1.0] and corpus["rougeL"] == 1.0
    assert corpus["bleu_tokenize"] == "zh"  # any Chinese reference: 13a would keep its sentence one token


def test_a_reply_with_a_little_chinese_is_segmented() -> None:
    """A reference under 30 % CJK (mostly English names) was tokenised by rouge-score, which keeps only [a-z0-9]:
    a different Chinese sentence around the same names scored ROUGE 1.0."""
    pred = "我不知道Billboard Hot 100，也没听过The Weeknd的“Blinding Lights”。"
    ref = "截至今天，Billboard Hot 100榜首的歌曲是The Weeknd的“Blinding Lights”。"
    assert not is_chinese(ref)
    corpus, (s,) = score_generations([pred], [ref])
    assert corpus["rouge1"] < 0.8 and corpus["rougeL"] < 0.8 and s["rouge_l"] < 0.8
    assert corpus["bleu_tokenize"] == "zh"
    # an English reference with a Chinese reply: the reply's Chinese counts against its precision (ROUGE, per row);
    # the corpus BLEU's tokenisation follows the references, so that two models' replies are tokenised alike
    english, _ = score_generations(["the weeknd 的歌曲很好听"], ["the weeknd"])
    assert english["rouge1"] < 0.8 and english["bleu_tokenize"] == "13a"
    same, _ = score_generations([ref], [ref])
    assert same["rougeL"] == 1.0


def test_full_width_digits_and_letters_are_tokens() -> None:
    """rouge-score's [a-z0-9] runs dropped full-width ２０２３ / ＡＩ: different numbers and names scored 1.0."""
    assert [t for t in segment_zh("他在２０２３年获得第１名，ＡＩ模型") if t.isascii()] == ["2023", "1", "ai"]
    corpus, _ = score_generations(["他获得第１名，使用ＧＰＴ４模型"], ["他获得第２名，使用ＢＥＲＴ模型"])
    assert corpus["rouge1"] < 1.0 and corpus["rougeL"] < 1.0
    width, _ = score_generations(["他获得第1名"], ["他获得第１名"])  # the same text in either width
    assert width["rouge1"] == 1.0
    english, _ = score_generations(["Acme sells widgets", "area is 5 m"], ["Acme™ sells widgets", "area is 5 m²"])
    assert english["rougeL"] == 1.0  # English rows as rouge-score reads them (NFKC glued ™ / ² to the word before)


def test_chinese_is_segmented_for_rouge_and_bleu(monkeypatch: pytest.MonkeyPatch) -> None:
    import tunelab.metrics.generation as gen

    assert is_chinese(["我爱北京天安门", "hello"]) and not is_chinese(["hello world", "天"])
    ref, pred = "我爱北京天安门", "我爱北京"
    # jieba (the `zh` extra, installed by `make install`): words — 我 / 爱 / 北京 / 天安门
    pytest.importorskip("jieba")
    assert segment_zh("我爱 NLP 2024！北京天安门") == ["我", "爱", "nlp", "2024", "北京", "天安门"]
    corpus, (s,) = score_generations([pred], [ref])
    assert corpus["bleu_tokenize"] == "zh" and 0 < corpus["bleu"] < 100
    assert corpus["rouge1"] == pytest.approx(6 / 7)  # P = 3/3, R = 3/4
    # without jieba: single characters — P = 4/4, R = 4/7 → F = 8/11; bigrams P = 3/3, R = 3/6 → F = 2/3
    monkeypatch.setattr(gen, "jieba_or_none", lambda: None)
    segment_zh.cache_clear()  # segmentations are cached per text
    try:
        assert segment_zh("我爱 NLP 2024！北京") == ["我", "爱", "nlp", "2024", "北", "京"]
        corpus, _ = score_generations([pred], [ref])
        assert corpus["rouge1"] == pytest.approx(8 / 11) and corpus["rouge2"] == pytest.approx(2 / 3)
    finally:
        segment_zh.cache_clear()
    # rouge-score's own tokenizer keeps [a-z0-9] only: Chinese would score 0
    english, _ = score_generations([pred], [ref], language="en")
    assert english["rouge1"] == 0.0
    same, _ = score_generations([ref], [ref])
    assert same["bleu"] == pytest.approx(100.0) and same["rougeL"] == 1.0 and same["chrf"] == pytest.approx(100.0)


# -- generation ------------------------------------------------------------------------------------
def _table(rows: list[dict]) -> Table:
    return Table("d.jsonl", [Record("d.jsonl", i + 1, r) for i, r in enumerate(rows)])


@pytest.fixture(scope="module")
def chatml_llama(tiny_llama: Path) -> tuple:
    task = Sft(SftConfig(), DataConfig())
    model, tok = task.build_model(str(tiny_llama), task.parse(_table(say_rows(["good"]))))
    return model, tok


def _prompts(tok: object) -> list[list[int]]:
    texts = ["good", "bad movie plot story", "the film was very boring and the actor sad", "nice", "a b c"]
    return [prompt_ids(tok, [{"role": "user", "content": t}]) for t in texts]


def test_batched_greedy_equals_one_by_one(chatml_llama: tuple) -> None:
    model, tok = chatml_llama
    prompts = _prompts(tok)
    assert len({len(p) for p in prompts}) > 2  # different lengths: the batch is left-padded
    cfg = GenerationConfig(max_new_tokens=8)
    alone = [generate(model, tok, [p], cfg, 1, stop_ids=[-1])[0] for p in prompts]
    batched = generate(model, tok, prompts, cfg, 4, stop_ids=[-1])
    assert batched == alone and all(len(r) == 8 for r in alone)


def test_a_learned_position_table_bounds_prompts_and_replies(chatml_llama: tuple) -> None:
    """GPT-2's learned positions (32 here): a prompt that fills them is one line (it was an IndexError); a reply is
    cut where they end, and a row that would be cut goes alone, so a short row in its batch keeps its whole reply;
    `ended` says which replies reached a stop id. Rotary positions (Llama) are not bounded: they run on."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tunelab.errors import TunelabError

    _, tok = chatml_llama
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2))
    cfg = GenerationConfig(max_new_tokens=20)
    with pytest.raises(TunelabError, match=r"generate: prompt 2 of 2 is 40 tokens; the model has 32 positions"):
        generate(gpt2, tok, [[5] * 4, [5] * 40], cfg, 2, stop_ids=[-1])
    ended = [True, True]
    replies = generate(gpt2, tok, [[5] * 20, [6] * 5], cfg, 2, stop_ids=[-1], ended=ended)
    assert [len(r) for r in replies] == [12, 20] and ended == [False, False]
    llama, _ = chatml_llama
    long = generate(llama, tok, [[5] * 200], GenerationConfig(max_new_tokens=4), 1, stop_ids=[-1])  # 128 positions
    assert len(long[0]) == 4
    from transformers import OPTConfig, OPTForCausalLM  # OPT's table (`embed_positions`) starts at row 2

    opt = OPTForCausalLM(OPTConfig(vocab_size=len(tok), max_position_embeddings=32, hidden_size=16,
                                   num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, word_embed_proj_dim=16))
    with pytest.raises(TunelabError, match="the model has 32 positions"):
        generate(opt, tok, [[5] * 39], cfg, 1, stop_ids=[-1])
    assert len(generate(opt, tok, [[5] * 30], GenerationConfig(max_new_tokens=10), 1, stop_ids=[-1])[0]) == 2


def test_generation_scores_the_last_trained_reply(chatml_llama: tuple) -> None:
    """`tunelab eval` compared the model's reply with the last assistant turn even where that turn has Axolotl's
    `"weight": 0` (not trained); it scores the last trained turn, generated from the conversation up to it (the turns
    after it are not in the prompt), and the per-example records name the same reference."""
    import numpy as np

    model, tok = chatml_llama
    task = Sft(SftConfig(), DataConfig())
    msgs = [{"role": "user", "content": "say good"}, {"role": "assistant", "content": "good"},
            {"role": "user", "content": "say bad"}, {"role": "assistant", "content": "bad movie", "weight": 0}]
    examples = task.parse(_table([{"messages": msgs}, {"messages": msgs[:2]}]))
    _, rows = evaluate_generation(task, model, tok, examples, 2, GenerationConfig(max_new_tokens=2))
    assert [(r["reference"], r["prompt"], r["turns"]) for r in rows] == [("good", "say good", 1)] * 2
    assert rows[0]["prediction"] == rows[1]["prediction"]  # one prompt
    records = sft_records(np.array([[1.0, 1.0], [1.0, 1.0]]), examples)
    assert [(r["gold"], r["text"]) for r in records] == [("good", "user: say good")] * 2


def test_stops_at_end_of_turn(chatml_llama: tuple) -> None:
    model, tok = chatml_llama
    prompts = _prompts(tok)
    cfg = GenerationConfig(max_new_tokens=8)
    free = generate(model, tok, prompts, cfg, 8, stop_ids=[-1])
    k = next(i for i in range(1, 8) if free[0][i] not in free[0][:i])
    stopped = generate(model, tok, prompts, cfg, 8, stop_ids=[free[0][k]])
    assert stopped[0] == free[0][:k]  # cut before the stop id, nothing after it
    for full, cut in zip(free, stopped, strict=True):  # every reply: up to its first stop id
        assert cut == full[: full.index(free[0][k])] if free[0][k] in full else cut == full
    assert end_of_turn_ids(tok)[0] == tok.convert_tokens_to_ids("<|im_end|>")


def test_beam_search_and_seeded_sampling(chatml_llama: tuple) -> None:
    model, tok = chatml_llama
    prompts = _prompts(tok)[:3]
    beams = generate(model, tok, prompts, GenerationConfig(max_new_tokens=5, num_beams=3), 2, stop_ids=[-1])
    assert [len(b) for b in beams] == [5, 5, 5]
    sample = with_overrides(GenerationConfig(max_new_tokens=6, seed=3), temperature=1.5, top_p=0.9)
    assert sample.do_sample and sample.temperature == 1.5
    a, b = (generate(model, tok, prompts, sample, 3, stop_ids=[-1]) for _ in range(2))
    assert a == b  # seeded
    assert not with_overrides(sample, temperature=0).do_sample
    for bad in (-1, float("nan"), float("inf")):  # NaN had meant greedy, silently
        with pytest.raises(ConfigError, match="--temperature: must be 0 .greedy. or a positive finite number"):
            with_overrides(sample, temperature=bad)


def test_a_wide_beam_costs_time_not_memory(chatml_llama: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """`batch_size` counts sequences: with 4 beams a batch of 8 generates 2 prompts at a time, with the replies
    those prompts get one at a time."""
    model, tok = chatml_llama
    prompts = _prompts(tok)[:5]
    cfg = GenerationConfig(max_new_tokens=4, num_beams=4)
    alone = [generate(model, tok, [p], cfg, 1, stop_ids=[-1])[0] for p in prompts]
    rows: list[int] = []
    real = model.generate

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        rows.append(kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counted)
    assert generate(model, tok, prompts, cfg, 8, stop_ids=[-1]) == alone
    assert rows == [2, 2, 1]


# -- prompt templates ------------------------------------------------------------------------------
def test_prompt_template_builds_the_user_turn() -> None:
    task = Sft(SftConfig(prompt_template="Translate into Chinese:\n{source}", response_field="target"),
               DataConfig())
    (ex,) = task.parse(_table([{"source": "Hi.", "target": "你好。", "attribution": "x"}]))
    assert ex["messages"] == [{"role": "user", "content": "Translate into Chinese:\nHi."},
                              {"role": "assistant", "content": "你好。"}]
    # predict: no reply needed; a stdin line fills the template's only placeholder
    rows = task.parse(_table([{"source": "Bye."}, {"text": "Good night."}]), labelled=False)
    assert [r["messages"] for r in rows] == [[{"role": "user", "content": "Translate into Chinese:\nBye."}],
                                             [{"role": "user", "content": "Translate into Chinese:\nGood night."}]]
    with pytest.raises(DataError, match=r"^d.jsonl:1: source: missing field \(used by task.prompt_template; the row "
                                        r"has: target\)$"):
        task.parse(_table([{"target": "x"}]))
    with pytest.raises(DataError, match=r"^d.jsonl:1: source: missing value \(nan\) \(used by task.prompt_template\)$"):
        task.parse(_table([{"source": float("nan"), "target": "x"}]))
    with pytest.raises(DataError, match=r"^d.jsonl:1: target: missing field \(the row has: source\)$"):
        task.parse(_table([{"source": "x"}]))
    two = Sft(SftConfig(prompt_template="{a} + {b} = {{sum}}", response_field="c"), DataConfig())
    (ex,) = two.parse(_table([{"a": 1, "b": "two", "c": "3"}]))
    assert ex["messages"][0]["content"] == "1 + two = {sum}"  # {{ and }} are literal braces


def test_prompt_template_refuses_a_missing_value_written_as_nan(tmp_path: Path) -> None:
    """JSON `NaN` (pandas' missing cell) was filled in as the text "NaN", even as the trained reply."""
    task = Sft(SftConfig(prompt_template="Translate: {source}", response_field="target"), DataConfig())
    path = tmp_path / "d.jsonl"
    path.write_text('{"source": "Hi.", "target": "Salut."}\n{"source": "Bye.", "target": NaN}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: target: missing value \(nan\)$"):
        task.parse(read_table(str(path)))
    for row, field in (({"source": float("nan"), "target": "x"}, "source"), ({"source": "x", "target": float("nan")},
                                                                              "target"),
                       ({"source": float("inf"), "target": "x"}, "source")):
        with pytest.raises(DataError, match=rf"^d.jsonl:1: {field}: missing value \((nan|inf)\)"):
            task.parse(_table([row]))
    (ex,) = task.parse(_table([{"source": "Hi.", "target": float("nan")}]), labelled=False)  # predict: no reply
    assert ex["messages"] == [{"role": "user", "content": "Translate: Hi."}]
    (ex,) = task.parse(_table([{"source": 2.5, "target": "x"}]))  # a finite number is its JSON text, as before
    assert ex["messages"][0]["content"] == "Translate: 2.5"


@pytest.mark.parametrize(("kw", "error"), [
    ({"prompt_template": "no fields"}, "config: task.prompt_template: no {field} placeholder"),
    ({"prompt_template": "Summarise: {document}"}, "config: task.response_field: required with"),
    ({"response_field": "summary"}, "config: task.response_field: only used with task.prompt_template"),
])
def test_prompt_template_config_errors(kw: dict, error: str) -> None:
    with pytest.raises(ConfigError, match="^" + error.replace("{", r"\{").replace("}", r"\}")):
        SftConfig(**kw)


def test_legacy_max_new_tokens_moves_into_generation() -> None:
    assert SftConfig(max_new_tokens=7).generation.max_new_tokens == 7


# -- eval / train ------------------------------------------------------------------------------------
def test_train_final_evaluation_generates(tiny_chat_run: Path) -> None:
    m = json.loads((tiny_chat_run / "metrics.json").read_text())["validation"]
    assert list(m)[0] == "loss" and m["generated"] == 4 and m["exact_match"] == 1.0
    assert m["chrf"] == pytest.approx(100.0) and m["rougeL"] == 1.0
    assert m["bleu"] == 0.0  # corpus BLEU: one-word replies have no 4-grams (sentence BLEU uses effective order)
    rows = [json.loads(x) for x in (tiny_chat_run / "predictions" / "validation.generations.jsonl").open()]
    assert [(r["prompt"], r["reference"], r["prediction"]) for r in rows] == [(f"say {w}", w, w) for w in WORDS[:4]]
    assert rows[0]["line"] == 1 and rows[0]["turns"] == 1
    assert (rows[0]["bleu"], rows[0]["chrf"], rows[0]["rouge_l"]) == (pytest.approx(100.0), 100.0, 1.0)
    records = [json.loads(x) for x in (tiny_chat_run / "predictions" / "validation.jsonl").open()]
    assert [r["prediction"] for r in records] == [*WORDS[:4], None, None]  # only eval_limit rows generated


def test_baseline_eval_scores_the_untrained_model_first(tiny_chat_run: Path) -> None:
    metrics = json.loads((tiny_chat_run / "metrics.json").read_text())
    before, after = metrics["baseline"], metrics["validation"]
    assert before["loss"] > 2 * after["loss"] and before["generated"] == 4
    assert before["exact_match"] < after["exact_match"] == 1.0
    rows = [json.loads(x) for x in (tiny_chat_run / "predictions" / "baseline-validation.generations.jsonl").open()]
    assert [r["reference"] for r in rows] == WORDS[:4] and [r["prediction"] for r in rows] != WORDS[:4]


def test_cli_eval_generates_and_writes_replies(tiny_chat_run: Path, tmp_path: Path) -> None:
    model_dir = tiny_chat_run / "model"
    val = write_jsonl(tmp_path / "val.jsonl", [{"prompt": f"say {w}", "completion": w} for w in WORDS[:5]]
                      + [{"prompt": "say fine", "completion": "not fine"}])
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(model_dir), "--data", str(val)])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.splitlines()[-1])
    assert m["generated"] == 6 and m["exact_match"] == pytest.approx(5 / 6) and "perplexity" in m
    assert {"bleu", "chrf", "rouge1", "rouge2", "rougeL"} <= set(m)
    path = tiny_chat_run / "predictions" / "eval-val.generations.jsonl"
    rows = [json.loads(x) for x in path.open()]
    assert [r["prediction"] for r in rows] == [*WORDS[:5], "fine"] and rows[-1]["exact_match"] == 0.0
    assert rows[-1]["reference"] == "not fine" and rows[0]["bleu"] == pytest.approx(100.0, abs=1e-3)

    out = tmp_path / "replies.jsonl"
    out.write_text("an earlier file\n", encoding="utf-8")
    args = ["eval", str(model_dir), "--data", str(val), "--limit", "2", "--predictions", str(out), "--num-beams", "2",
            "--max-new-tokens", "4"]
    res = runner.invoke(app, args)  # an existing file is replaced only when asked
    assert res.exit_code == 2 and res.output.strip() == f"error: --predictions: {out} exists; pass --overwrite to " \
        "replace it" and out.read_text(encoding="utf-8") == "an earlier file\n", res.output
    res = runner.invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.splitlines()[-1])
    assert m["generated"] == 2 and m["exact_match"] == 1.0 and len(out.read_text().splitlines()) == 2

    res = runner.invoke(app, ["eval", str(model_dir), "--data", str(val), "--no-generate"])
    assert res.exit_code == 0, res.output
    assert "bleu" not in json.loads(res.stdout.splitlines()[-1])

    # the default replies file, which eval replaces itself, is also --predictions' with --overwrite (it was refused
    # as a file of the run directory, as all of predictions/); the run's own replies never are
    args = ["eval", str(model_dir), "--data", str(val), "--limit", "1", "--max-new-tokens", "1", "--overwrite"]
    res = runner.invoke(app, [*args, "--predictions", str(path)])
    assert res.exit_code == 0 and len(path.read_text().splitlines()) == 1, res.output
    own = tiny_chat_run / "predictions" / "validation.generations.jsonl"
    res = runner.invoke(app, [*args, "--predictions", str(own)])
    assert res.exit_code == 2 and res.stderr == f"error: --predictions: {own} is a file of the run directory " \
        f"{tiny_chat_run}; write the predictions elsewhere\n", res.output
    # RUN/merged's replies are its own, as an export's (they replaced RUN/model's)
    assert default_predictions_path(tiny_chat_run / "merged", val).name == "eval-val.merged.generations.jsonl"


def test_api_evaluate_never_replaces_a_file_of_the_run(tiny_chat_run: Path, tmp_path: Path) -> None:
    """`Model.evaluate(predictions=RUN/metrics.json, overwrite=True)`: refused as the CLI refuses it (it was
    replaced: the API guarded the model directory alone)."""
    import tunelab

    val = write_jsonl(tmp_path / "val.jsonl", say_rows(WORDS[:1]))
    before = (tiny_chat_run / "metrics.json").read_bytes()
    said = f"predictions: {tiny_chat_run / 'metrics.json'} is a file of the run directory {tiny_chat_run}; "
    with pytest.raises(TunelabError) as caught:
        tunelab.load(tiny_chat_run).evaluate(val, limit=1, max_new_tokens=1, overwrite=True,
                                             predictions=tiny_chat_run / "metrics.json")
    assert str(caught.value).startswith(said)
    assert (tiny_chat_run / "metrics.json").read_bytes() == before


def test_generation_options_need_an_sft_model() -> None:
    from tunelab.registry import TASKS

    cls = TASKS.get("classification")
    task = cls(cls.Config(), DataConfig())
    with pytest.raises(TunelabError, match=r"^eval: --num-beams: generation is for models of task sft"):
        eval_generation_config(task, None, num_beams=2)
    assert eval_generation_config(task, None) is None and eval_generation(task, None, None, [], 8, None) == {}
    with pytest.raises(TunelabError, match=r"^predict: --max-new-tokens: generation is for models of task sft"):
        eval_generation_config(task, None, max_new_tokens=1, caller=("predict", "predict"))


def test_predict_takes_evals_generation_options(qwen3_think_run: Path) -> None:
    """`tunelab predict` of an SFT model had no generation options (`--max-new-tokens`: no such option, exit 2):
    eval's, checked as eval checks them. The tiny Qwen3 writes `<think> hmm </think> good <|im_end|>`: one new token
    is the open think block alone (no reply, no reasoning), three stop before `good`."""
    model, runner = str(qwen3_think_run / "model"), CliRunner()

    def said(*options: str) -> tuple[str, str | None]:
        res = runner.invoke(app, ["predict", model, "--input", "-", *options], input="say nice\n")
        assert res.exit_code == 0, res.output
        row = json.loads(res.stdout)
        return row["response"], row["reasoning"]

    assert said() == ("good", "hmm")
    assert said("--max-new-tokens", "1") == ("", None)
    assert said("--max-new-tokens", "3", "--num-beams", "2", "--temperature", "0", "--top-p", "0.9") == ("", "hmm")
    for options, line in [(["--max-new-tokens", "1000"], "--max-new-tokens: 1000 is more than the model's 128 "
                                                         "positions leave for a reply (at most 127)"),
                          (["--top-p", "1.5"], "--top-p: must be in (0, 1], got 1.5")]:
        res = runner.invoke(app, ["predict", model, "--input", "-", *options], input="say nice\n")
        assert res.exit_code == 2 and res.stderr.strip() == f"error: {line}", res.output


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["tatoeba-en-zh-gemma3", "scitldr-smollm2-lora", "csl-title-gemma3",
                                  "alpaca-zh-gemma3"])
def test_example_configs_read_their_data(name: str) -> None:
    """The generation example configs map their real rows to a user turn and the reference reply."""
    from tunelab.config.run import load_config

    cfg = load_config(ROOT / "examples" / "configs" / f"{name}.yaml")
    path = ROOT / cfg.data.validation
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(next(f)) for _ in range(20)]
    examples = Sft(cfg.task, cfg.data).parse(_table(rows))
    for ex, row in zip(examples, rows, strict=True):
        user, reply = ex["messages"]
        assert user["role"] == "user" and reply == {"role": "assistant",
                                                    "content": row[cfg.task.response_field or "output"]}
        source = row.get("source") or row.get("document") or row["instruction"]
        assert source in user["content"]


def test_generation_options_are_bounded_before_anything_loads(tiny_chat_run: Path, tmp_path: Path) -> None:
    """`--num-beams 100000` had run out of memory: a beam wider than 32 is one line, exit 2, before the model loads
    (here: a model directory and a data file that do not exist); a --max-new-tokens past the model's positions is
    one line once the model is loaded, before the data is read."""
    runner = CliRunner()
    missing = tmp_path / "missing.jsonl"
    for args, line in [
        ([str(tmp_path / "no-model"), "--num-beams", "100000"],
         "--num-beams: must be 1 to 32 (each beam is a sequence generated beside the others, with its own cache and "
         "scores over the vocabulary), got 100000"),
        ([str(tmp_path / "no-model"), "--top-p", "1.5"], "--top-p: must be in (0, 1], got 1.5"),
        ([str(tiny_chat_run / "model"), "--max-new-tokens", "100000"],
         "--max-new-tokens: 100000 is more than the model's 128 positions leave for a reply (at most 127)"),
    ]:
        res = runner.invoke(app, ["eval", *args, "--data", str(missing)])
        assert res.exit_code == 2, res.output
        assert res.stderr.strip() == f"error: {line}", res.stderr
    res = runner.invoke(app, ["train", str(tiny_chat_run / "config.yaml"), "--set", "task.generation.num_beams=33"])
    assert res.exit_code == 2 and "task.generation.num_beams" in res.stderr and "32" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1


def _byte_level_tokenizer() -> object:
    """A byte-level BPE vocabulary without merges across Chinese bytes: 北 is three tokens, as in GPT-2-style
    vocabularies (SmolLM2's among them) for characters they have no merge for."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world"] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def test_a_reply_cut_inside_a_character_ends_at_the_last_whole_one() -> None:
    """max_new_tokens can end between a character's byte tokens: eval / predict / chat wrote the half left as
    U+FFFD (`北�`) and scored it; now the reply ends at the last whole character, as the server's stream does."""
    import io

    import torch

    from tunelab.tasks.generation import decode_reply
    from tunelab.tasks.streaming import _WholeCharacters

    tok = _byte_level_tokenizer()
    ids = tok.encode("北京", add_special_tokens=False)
    assert len(ids) == 6 and tok.decode(ids[:4]).endswith("\ufffd")
    assert [decode_reply(tok, ids[:n]) for n in range(7)] == ["", "", "", "北", "北", "北", "北京"]
    assert decode_reply(tok, tok.encode(" say 北", add_special_tokens=False)[:-1], strip=False) == " say "
    streamer = _WholeCharacters(tok, skip_prompt=True, skip_special_tokens=True)
    streamer.put(torch.tensor([[ids[0]]]))  # the prompt
    for i in ids[:4]:
        streamer.put(torch.tensor([i]))
    streamer.end()
    out = io.StringIO()
    for text in streamer:
        out.write(text)
    assert out.getvalue() == "北"


def test_only_a_thinking_template_has_its_replies_think_block_split_off(tiny_llama: Path, tmp_path: Path) -> None:
    """A reply that starts with a think block is the text after it, where the model's template writes think blocks
    (told from the template, as Qwen3's): its reasoning beside it, an empty block gone, a block cut by max_new_tokens
    all reasoning; streamed in any pieces alike. Another model's reply, or one with `<think>` mid-way, is untouched."""
    from transformers import AutoTokenizer

    from conftest import make_tiny_qwen3
    from tunelab.tasks.reasoning import ThinkSplit, reply_of

    qwen3 = AutoTokenizer.from_pretrained(make_tiny_qwen3(tmp_path / "qwen3"))
    plain = AutoTokenizer.from_pretrained(str(tiny_llama))
    cases = {"<think>\n\n</think>\n\n你好": ("你好", None), "<think>\nhmm,\nso\n</think>\n\ngood": ("good", "hmm,\nso"),
             "<think> cut at max_new_tokens": ("", "cut at max_new_tokens"), "good <think> x </think>":
             ("good <think> x </think>", None), "<thin": ("<thin", None), "": ("", None)}
    for text, want in cases.items():
        assert reply_of(qwen3, text) == want and reply_of(plain, text) == (text, None)
        content: list[str] = []
        reasoning: list[str] = []
        split = ThinkSplit(content.append, reasoning.append)
        for piece in text:  # one character at a time: tags and whitespace split across pieces
            split.write(piece)
        split.flush()
        assert ("".join(content), "".join(reasoning) or None) == want


def test_a_template_whose_prompt_opens_the_think_block_has_its_replies_split(tmp_path: Path) -> None:
    """Qwen3-*-Thinking-2507, QwQ and DeepSeek-R1's distills end their generation prompt in `<think>\\n`: the model
    writes only `</think>`, and predict / eval / chat / serve returned `reasoning…</think>\\n\\nanswer` as the reply.
    Such a reply starts inside the block (as vLLM's deepseek_r1 parser reads it), streamed or whole; a reply that
    writes `<think>` again is read alike, one cut before `</think>` is all reasoning; a row's reference is not."""
    import io

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import THINKS, make_tiny_qwen3
    from tunelab.tasks.chat_template import prompt_ids
    from tunelab.tasks.generation import GenerationConfig
    from tunelab.tasks.reasoning import ThinkSplit, opens_think, reference_of, reply_of
    from tunelab.tasks.streaming import stream_reply

    path = make_tiny_qwen3(tmp_path / "thinking", THINKS)
    tok = AutoTokenizer.from_pretrained(path)
    assert not opens_think(tok)
    tok.chat_template = tok.chat_template.replace("{{- '<|im_start|>assistant\\n' }}",
                                                  "{{- '<|im_start|>assistant\\n<think>\\n' }}")
    assert opens_think(tok)
    cases = {"hmm,\nso\n</think>\n\ngood": ("good", "hmm,\nso"), "<think>\nhmm\n</think>\n\ngood": ("good", "hmm"),
             "\n</think>\n\ngood": ("good", None), "cut at max_new_tokens": ("", "cut at max_new_tokens"),
             "": ("", None)}
    for text, want in cases.items():
        assert reply_of(tok, text) == want
        content: list[str] = []
        reasoning: list[str] = []
        split = ThinkSplit(content.append, reasoning.append, opened=True)
        for piece in text:  # one character at a time
            split.write(piece)
        split.flush()
        assert ("".join(content), "".join(reasoning) or None) == want
    assert reply_of(tok, "good", generated=False) == ("good", None)  # a reference is no reply the prompt opened
    # but a tool-call turn's reference, cut after that prompt, starts `</think>`: scored as its split prediction
    assert reference_of(tok, "good") == "good" and reference_of(tok, "</think>\n\n<tool_call>x") == "<tool_call>x"
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = prompt_ids(tok, [{"role": "user", "content": "say good"}])
    assert tok.convert_ids_to_tokens(ids[-1]) == "<think>"  # the model goes on with `hmm </think> good`
    out, thought = io.StringIO(), []
    cfg = GenerationConfig(max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        reply = stream_reply(model, tok, ids, cfg, [tok.convert_tokens_to_ids("<|im_end|>")], out,
                             reasoning=thought.append)
    assert (reply, out.getvalue(), "".join(thought)) == ("good", "good", "hmm")


def test_chat_prints_a_qwen3_reply_without_its_think_block(qwen3_think_run: Path) -> None:
    """`tunelab chat` with a Qwen3 model prints the reply after the think block (it printed the block); on a terminal
    the reasoning before it, dimmed."""
    import io

    from tunelab.cli.chat import DIM, PLAIN, run_chat

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for out, shown in ((io.StringIO(), ">>> good\n"), (Terminal(), f">>> {DIM}hmm{PLAIN}\n\ngood\n")):
        run_chat(qwen3_think_run / "model", stdin=io.StringIO("say good\n"), stdout=out, stderr=io.StringIO())
        assert out.getvalue().startswith(shown), out.getvalue()
