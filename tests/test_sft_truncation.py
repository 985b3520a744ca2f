"""SFT rows over data.max_length: `data.truncation: head+tail` takes the middle out of the prompt's longest messages
(LLaMA-Factory's prompt / reply budget) so a row whose long context pushed its reply past max_length trains; `head`
refuses that row naming head+tail; data check says the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from tunelab.cli import app
from tunelab.config.run import run_config_class
from tunelab.config.sections import DataConfig
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError, DataError
from tunelab.evaluation.evaluate import encoded
from tunelab.tasks import base
from tunelab.tasks.base import Task
from tunelab.tasks.feature_cache import training_features

run_config_class()
from tunelab.tasks.sft import Sft, SftConfig  # noqa: E402
from tunelab.tasks.sft_truncation import MIN_KEEP, middles_cut, prompt_share  # noqa: E402

U, A, S = "user", "assistant", "system"
LONG = "this is " + " ".join(["good"] * 20) + " and that"  # its reply starts after 16 tokens


def _task(max_length: int, truncation: str = "head") -> Sft:
    return Sft(SftConfig(), DataConfig(max_length=max_length, truncation=truncation))


def _examples(task: Sft, rows: list[dict]) -> list[dict]:
    return task.parse(Table("d.jsonl", [Record("d.jsonl", i + 1, r) for i, r in enumerate(rows)]))


def _trained(tok: object, f: dict) -> list[str]:
    return [t for t, v in zip(tok.convert_ids_to_tokens(f["input_ids"]), f["labels"], strict=True) if v != -100]


def test_head_tail_cuts_the_prompt_middle_so_the_reply_trains(tiny_llama: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    rows = [{"prompt": "say bad", "completion": "bad movie"}, {"prompt": LONG, "completion": "bad movie"}]
    head = _task(16)
    examples = _examples(head, rows)
    tok = head.load_tokenizer(str(tiny_llama))
    # head (the default) refuses the row as before, and names the way out (before: no mention of head+tail)
    with pytest.raises(DataError, match=r"^d.jsonl:2: completion: the assistant reply starts after data.max_length=16 "
                                        r"tokens; raise data.max_length, shorten the prompt, or set data.truncation: "
                                        r"head\+tail \(cuts the middle of the prompt's longest message instead\)$"):
        head.encode(examples, tok)
    task = _task(16, "head+tail")  # (before: refused, "task sft cuts rows at the end (head) only")
    short, cut = task.encode(examples, tok)
    assert len(cut["input_ids"]) <= 16 and task.truncated == 1
    assert _trained(tok, cut) == _trained(tok, short) == ["bad", "movie", "<|im_end|>"]  # the whole reply trains
    toks = tok.convert_ids_to_tokens(cut["input_ids"])
    user = toks[3 : toks.index("<|im_end|>")]  # (after <s> <|im_start|> user: a word the tiny vocabulary lacks)
    assert user[:3] == ["this", "is", "good"] and user[-3:] == ["good", "and", "that"]  # its head and its tail
    assert user.count("good") < 20  # its middle is gone
    assert task.cut_note() == (
        "sft: 1 of 2 examples cut at data.max_length=16 tokens: 1 lost the middle of a prompt message "
        "(data.truncation: head+tail), 0 cut at the end (their tail is left out of the loss)")
    with pytest.raises(ConfigError, match=r"data.truncation: tail: task sft cuts a row at its end \(head\), or first "
                                          r"the middle of its prompt \(head\+tail\)"):
        _task(16, "tail")


def test_head_tail_over_several_turns_cuts_prompt_messages_only(tiny_llama: Path) -> None:
    """Multi-turn: the longest user message loses its middle first, the shorter one only once the longest is down to
    its length; the system message, the earlier reply and the last reply stay whole. A long reply keeps its share of
    max_length in proportion (LLaMA-Factory's infer_seqlen), the rest is cut at the end."""
    long_1, long_2 = " ".join(["good"] * 30), " ".join(["nice"] * 10)
    msgs = [{"role": S, "content": "quite boring"}, {"role": U, "content": long_1}, {"role": A, "content": "fine"},
            {"role": U, "content": long_2}, {"role": A, "content": "bad movie"}]
    task = _task(40, "head+tail")
    tok = task.load_tokenizer(str(tiny_llama))
    (f,) = task.encode(_examples(task, [{"messages": msgs}]), tok)
    toks = tok.convert_ids_to_tokens(f["input_ids"])
    assert len(toks) <= 40 and _trained(tok, f) == ["fine", "<|im_end|>", "bad", "movie", "<|im_end|>"]
    assert toks[3:6] == ["quite", "boring", "<|im_end|>"]  # the system message whole
    assert 0 < toks.count("nice") <= toks.count("good") < 30  # both cut, the longer first
    # an assistant turn (its tool calls too) is never cut, whatever its length
    call = {"role": A, "content": "x" * 50, "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
    assert middles_cut([*msgs, call], 6)[2:] == [msgs[2], {"role": U, "content": "nic" + "ice"}, msgs[4], call]
    # LLaMA-Factory's infer_seqlen: a short reply whole, a short prompt whole, else in proportion
    assert [prompt_share(*n, 1024) for n in ((2000, 100), (300, 2000), (900, 900))] == [924, 300, 512]
    reply = " ".join(["bad"] * 30)
    (f,) = task.encode(_examples(task, [{"prompt": long_1, "completion": reply}]), tok)
    assert len(f["input_ids"]) == 40 and 15 <= len(_trained(tok, f)) < 31  # both cut: about half each


@pytest.mark.parametrize("truncation", ["head", "head+tail"])
def test_data_check_says_what_head_tail_keeps(tiny_llama: Path, tmp_path: Path, truncation: str) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "say bad", "completion": "bad movie"},
                                                 {"prompt": LONG, "completion": "bad movie"}])
    args = ["data", "check", str(path), "--task", "sft", "--model", str(tiny_llama), "--set", "data.max_length=16",
            "--set", f"data.truncation={truncation}"]
    res = CliRunner().invoke(app, [*args, "--json"])
    kept = truncation == "head+tail"
    # (before, head+tail: "task sft cuts rows at the end (head) only"); head: the report, then train's refusal, exit 2
    assert res.exit_code == (0 if kept else 2), res.output
    assert kept or res.stderr.startswith(f"error: {path}:2: completion: the assistant reply starts after"), res.stderr
    r = json.loads(res.stdout)["files"][str(path)]
    assert (r["replies_fully_cut"], r["prompts_middle_cut"]) == (([], 1) if kept else ([f"{path}:2"], 0))
    shown = CliRunner(env={"COLUMNS": "400"}).invoke(app, args).output
    if kept:
        assert "none entirely" in shown and "1 lose the middle of a prompt message (data.truncation: head+tail)" in \
            shown
    else:
        assert "1 entirely" in shown and ("data.truncation: head+tail, which cuts the middle of their prompt, would "
                                          "keep 1 of them") in shown


EARLIER = " ".join(["fine"] * 30)  # an earlier assistant turn longer than the row's prompt share


def test_head_tail_never_empties_a_prompt_message(tiny_llama: Path, capsys: pytest.CaptureFixture) -> None:
    """A long earlier assistant turn (never cut) fills the row: no cut of the user messages reaches the prompt's share,
    nor brings the last reply inside max_length. head+tail had cut every user message to "" (and said "1 lost the
    middle"); now the prompt stays whole and the row is cut at its end, as head cuts it. Where the share is out of
    reach but a cut brings some of the last reply inside max_length, the cut keeps the most of the reply it can (up to
    its share): the message down to 16 characters where that keeps more (before: the largest cut that kept the
    reply's first token, one token trained where MIN_KEEP kept the reply whole or six)."""
    msgs = [{"role": U, "content": LONG}, {"role": A, "content": EARLIER}, {"role": U, "content": "say bad"},
            {"role": A, "content": "bad movie"}]
    head, task = _task(32), _task(32, "head+tail")
    tok = task.load_tokenizer(str(tiny_llama))
    [whole] = head.encode(_examples(head, [{"messages": msgs}]), tok)
    capsys.readouterr()
    [f] = task.encode(_examples(task, [{"messages": msgs}]), tok)
    assert f == whole and tok.convert_ids_to_tokens(f["input_ids"])[3:5] == ["this", "is"]  # (before: the user's "")
    assert task.cut_note() == (
        "sft: 1 of 1 examples cut at data.max_length=32 tokens: 0 lost the middle of a prompt message "
        "(data.truncation: head+tail), 1 cut at the end (their tail is left out of the loss)")
    # its share out of reach, the reply's start is not: the message keeps its head and its tail, the reply the most
    for limit, reply, trained in ((12, "bad movie", ["bad", "movie"]), (16, " ".join(["bad"] * 40), ["bad"] * 6)):
        task = _task(limit, "head+tail")
        [f] = task.encode(_examples(task, [{"prompt": LONG, "completion": reply}]), tok)
        toks = tok.convert_ids_to_tokens(f["input_ids"])
        assert len(toks) == limit and toks[3 : toks.index("<|im_end|>")] == ["this", "is", "and", "that"]
        assert _trained(tok, f) == trained  # (before: ["bad"], with a "good" or five kept in the prompt)


def test_data_check_counts_prompts_cut_and_suggests_head_tail_where_it_helps(tiny_llama: Path, tmp_path: Path) -> None:
    """A row that head refuses and head+tail cannot save (an untrained earlier reply fills max_length): data check had
    counted it among the "prompts cut" under head+tail and suggested head+tail for it under head."""
    stuck = [{"role": U, "content": LONG}, {"role": A, "content": EARLIER, "weight": 0},
             {"role": U, "content": "say bad"}, {"role": A, "content": "bad movie"}]
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": LONG, "completion": "bad movie"}, {"messages": stuck}])
    args = ["data", "check", str(path), "--task", "sft", "--model", str(tiny_llama), "--set", "data.max_length=16",
            "--set", "data.validation_split=0"]  # (else train holds one of the two out, encoded after the other)
    for truncation, refused, cut, saved in (("head", [1, 2], 0, 1), ("head+tail", [2], 1, 0)):
        res = CliRunner().invoke(app, [*args, "--set", f"data.truncation={truncation}", "--json"])
        assert res.exit_code == 2 and len(res.stderr.splitlines()) == 1, res.output  # train refuses them too
        assert res.stderr.startswith(f"error: {path}:{refused[0]}: ") and json.loads(res.stdout)["refused"] in \
            res.stderr
        r = json.loads(res.stdout)["files"][str(path)]
        assert (r["replies_fully_cut"], r["prompts_middle_cut"], r["head_tail_would_keep"]) == (
            [f"{path}:{n}" for n in refused], cut, saved)
    with pytest.raises(DataError, match=r"^d.jsonl:1: messages: the assistant reply starts after data.max_length=16 "
                                        r"tokens; raise data.max_length or shorten the prompt \(data.truncation: "
                                        r"head\+tail would not save it"):
        task = _task(16)
        task.encode(_examples(task, [{"messages": stuck}]), task.load_tokenizer(str(tiny_llama)))


def test_data_check_names_the_row_train_refuses_first_after_its_hold_out(tiny_llama: Path, tmp_path: Path) -> None:
    """No data.validation: train holds data.validation_split of the training file out (seeded by train.seed) and
    encodes the rest first, so it refuses a row of the rest first; data check named the file's first refused row
    (`t.jsonl:1`, held out) where train named `t.jsonl:3`."""
    rows = [{"prompt": LONG, "completion": "bad movie"}] * 10  # each refused under head at max_length 16
    path = write_jsonl(tmp_path / "t.jsonl", [{**r, "prompt": f"{r['prompt']} {i}"} for i, r in enumerate(rows)])
    config = tmp_path / "run.yaml"
    config.write_text(f"task: sft\nmodel: {tiny_llama}\noutput_dir: {tmp_path / 'run'}\ndata:\n  train: {path}\n"
                      "  max_length: 16\n  validation_split: 0.3\ntrain: {max_steps: 1, seed: 2, report: false}\n")
    check = CliRunner().invoke(app, ["data", "check", "--config", str(config), "--json"])
    train = CliRunner().invoke(app, ["train", str(config)])
    assert check.exit_code == train.exit_code == 2, (check.output, train.output)
    said = check.stderr.splitlines()
    assert len(said) == 1 and train.stderr.splitlines()[-1] == said[0], (check.stderr, train.stderr)
    assert said[0].startswith(f"error: {path}:3: completion: "), said  # (train.seed 2 holds out rows 1 and 2)
    assert json.loads(check.stdout)["refused"] == said[0].removeprefix("error: ")
    # `train --set train.seed=0` holds out other rows (1, 7, 10): data check takes that seed too (it refused every
    # train.* key, so it could not be told the seed train used), and no other train key
    sets = ["--set", "train.seed=0"]
    check = CliRunner().invoke(app, ["data", "check", "--config", str(config), *sets])
    train = CliRunner().invoke(app, ["train", str(config), "--overwrite", *sets])
    assert check.exit_code == train.exit_code == 2, (check.output, train.output)
    said = check.stderr.splitlines()
    assert len(said) == 1 and train.stderr.splitlines()[-1] == said[0], (check.stderr, train.stderr)
    assert said[0].startswith(f"error: {path}:2: completion: "), said
    check = CliRunner().invoke(app, ["data", "check", "--config", str(config), "--set", "train.lr=1"])
    assert check.exit_code == 2 and check.stderr == (
        "error: --set train.lr: data check takes only data.* and task.* keys, and train.seed (the seed of its "
        "validation hold-out)\n"), check.output


@pytest.mark.parametrize(("text", "keep", "whole"), [
    (" ".join(f"fact{i} is here." for i in range(120)), 40, r"(fact\d+ |is |here\. ?)+"),  # whole words
    ("😀👨\u200d👩\u200d👧\u200d👦🇫🇷" * 40, 30, "(😀|👨\u200d👩\u200d👧\u200d👦|🇫🇷)+"),  # whole emoji
    ("cafe\u0301 " * 40, 24, "(cafe\u0301 ?)+"),  # an accent stays on its letter
])
def test_head_tail_cuts_between_words_and_characters(text: str, keep: int, whole: str) -> None:
    """A cut edge moves to a word's end or start within a few characters, and never splits a character from its
    combining mark or an emoji's zero-width joiner (before: "fact0 … fact119 is here." → "fare.", `👩\u200d\u200d👧`);
    text without spaces is cut by character."""
    import re

    for k in range(keep, keep + 12):
        [m] = middles_cut([{"role": U, "content": text}], k)
        assert re.fullmatch(whole, m["content"]) and len(m["content"]) <= k + 1, (k, m["content"])
    chinese = "这是一个很长的中文段落没有空格" * 10
    assert middles_cut([{"role": U, "content": chinese}], 20)[0]["content"] == chinese[:10] + chinese[-10:]


def test_head_tail_cut_message_keeps_min_keep_characters() -> None:
    """A cut message keeps at least MIN_KEEP (16) characters: where moving its edges inward to a word's end / start or
    out of an emoji would keep fewer, they move outward (before: "Please point?", 13; "Start end?", 10)."""
    english = "Please summarise this text. " + " ".join(f"word{i} alpha beta." for i in range(50)) + " Main point?"
    emoji = "Start " + "👨\u200d👩\u200d👧\u200d👦🇫🇷e\u0301" * 30 + " end?"
    assert middles_cut([{"role": U, "content": english}], MIN_KEEP)[0]["content"] == "Please summarise Main point?"
    for text in (english, emoji, "ab " * 40, "a  " * 40, "x\u0301" * 40):
        for keep in range(MIN_KEEP, MIN_KEEP + 6):
            [m] = middles_cut([{"role": U, "content": text}], keep)
            assert len(m["content"]) >= MIN_KEEP, (text[:12], keep, m["content"])


def test_head_tail_cuts_a_teachers_prompt_as_a_training_rows(tiny_llama: Path, capsys: pytest.CaptureFixture) -> None:
    """Distillation's unlabelled prompt too long for the teacher's reply: under head+tail it loses its middle, as the
    same row with a reply would (before: refused, "data.max_length=30 leaves no room for the teacher's reply"); the
    student trains on the prompt the teacher read (before: the row with the teacher's reply, its end-of-turn past
    max_length, lost another "good" from its prompt in training). head still refuses it."""
    def distil(truncation: str) -> tuple[list[dict], list[dict], object]:
        task = Sft(SftConfig(generation={"max_new_tokens": 8}), DataConfig(max_length=30, truncation=truncation))
        teacher, tok = task.build_model(str(tiny_llama), [])
        prompts = task.parse(Table("u.jsonl", [Record("u.jsonl", 1, {"prompt": LONG})]), labelled=False)
        out = task.unlabeled_examples(prompts, teacher, tok)
        return out, task.encode(out, tok), tok

    [ex], [f], tok = distil("head+tail")
    user = ex["messages"][0]["content"]
    assert user.startswith("this is good") and user.endswith("good and that") and len(user) < len(LONG)
    assert [m["role"] for m in ex["messages"]] == [U, A] and ex["open_end"]  # 8 tokens, unfinished
    toks = tok.convert_ids_to_tokens(f["input_ids"])
    assert tok.convert_tokens_to_string(toks[3 : toks.index("<|im_end|>")]).strip() == user  # the teacher's prompt
    assert len(toks) == 30 and len(_trained(tok, f)) == 8  # the whole reply trains; its untrained end-of-turn goes
    assert ("distill: 1 of 1 unlabelled prompts lost the middle of a prompt message to leave room for the teacher's "
            "reply (data.truncation: head+tail)") in capsys.readouterr().err
    with pytest.raises(DataError, match=r"^u.jsonl:1: prompt: the prompt is \d+ tokens: data.max_length=30 leaves no "
                                        r"room for the teacher's reply$"):
        distil("head")


@pytest.mark.parametrize("task", ["sft", "classification"])
def test_baseline_eval_encodes_validation_once(task: str, tiny_llama: Path, tiny_bert: Path, tmp_path: Path) -> None:
    """train.baseline_eval scored the untrained model on validation rows it encoded again: sft said its cut line twice
    (`sft: 1 of 3 examples cut ...`), classification said its note for the baseline alone. Now the split is encoded
    once, and each task says its line once per split, naming it (the two lines had read as one said twice); so
    does eval_generate's line on the prompts it cut."""
    from conftest import WORDS, say_rows, sentiment_rows

    if task == "sft":
        long = {"messages": [{"role": U, "content": "say good"}, {"role": A, "content": " ".join(["good"] * 40)}]}
        wordy = {"messages": [{"role": U, "content": "say " + " ".join(["fine"] * 40)}, {"role": A, "content": "fine"}]}
        rows, val, model = say_rows(WORDS[:4]), [*say_rows(WORDS[:2]), long, wordy], tiny_llama
        line, extra = "sft ({}): 2 of 4 examples", ["task.generation.eval_generate=true", "data.truncation=head+tail",
                                                     "task.generation.max_new_tokens=4"]
    else:
        rows, val, model = sentiment_rows(8), sentiment_rows(2, 1), tiny_bert
        val.append({"text": " ".join([WORDS[15]] * 40), "label": "positive"})
        line, extra = "classification ({}): 1 row longer than data.max_length", []
    train, valf = write_jsonl(tmp_path / "t.jsonl", rows), write_jsonl(tmp_path / "v.jsonl", val)
    sets = [f"task={task}", f"model={model}", f"data.train={train}", f"data.validation={valf}", f"data.test={valf}",
            f"output_dir={tmp_path / 'run'}", "train.max_steps=1", "train.save_steps=0", "train.precision=fp32",
            "train.baseline_eval=true", "data.max_length=24", "train.report=false", *extra]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    assert [res.stderr.count(line.format(split)) for split in ("validation", "test")] == [1, 1], res.stderr
    if task == "sft":  # eval_generate's line on the prompts it cut: once a split, by the trained model's replies
        assert [res.stderr.count(f"train ({split}): 1 of 4 prompts cut to fit") for split in ("validation", "test")
                ] == [1, 1], res.stderr
    assert "baseline" in json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_a_training_split_encoded_in_parts_says_one_cut_line(tiny_llama: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """The training split tokenised a chunk at a time (the feature cache) says one line for the whole split, as in
    memory, and again on a cache hit; eval names its split. Before: one line per chunk (`sft: 1 of 3 ...` four times
    for ten rows in chunks of three), from inside `encode`, and the split reached it through `Task.cut_split`."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(base, "TOKENIZE_CHUNK", 3)
    task = _task(12)
    rows = [{"prompt": "say bad", "completion": "bad movie plot story" if i % 2 else "bad"} for i in range(10)]
    examples = _examples(task, rows)
    tok = task.load_tokenizer(str(tiny_llama))
    line = "sft: 5 of 10 examples cut at data.max_length=12 tokens (their tail is left out of the loss)"
    for cache in (False, True, True):  # in memory; parts written to the cache; read back
        capsys.readouterr()
        assert len(training_features(task, examples, tok, use_cache=cache).features) == 10
        assert [s for s in capsys.readouterr().err.splitlines() if s.startswith("sft")] == [line], cache
    assert not hasattr(Task, "cut_split")
    encoded(task, examples[:4], tok, split="validation")
    assert capsys.readouterr().err.splitlines() == [
        "sft (validation): 2 of 4 examples cut at data.max_length=12 tokens (their tail is left out of the loss)"]
