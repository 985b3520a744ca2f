"""`tunelab predict` / `tunelab eval` of an sft run fit each generation prompt to the run's data.max_length and to the
model's positions less max_new_tokens (tasks/sft_prompts.py), as training fits a row and LLaMA-Factory's predict cuts
to cutoff_len: the middle of the longest user / system messages goes, never the assistant header at the prompt's end;
one stderr line counts the prompts cut; a prompt no cut fits is one line naming file:line, exit 2, nothing written.
They had been generated whole, past max_length and past the model's 64 positions, without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import WORDS, make_tiny_llama, say_rows, write_jsonl
from tunelab.cli import app

LONG = "say " + " ".join(["fine"] * 80)  # about 90 tokens rendered: past max_length 32 and the 64 positions


@pytest.fixture(scope="module")
def run64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sft run (one step) of a tiny Llama with 64 positions: data.max_length 32, max_new_tokens 8."""
    tmp = tmp_path_factory.mktemp("sft-prompts")
    model = make_tiny_llama(tmp / "base", positions=64)
    train = write_jsonl(tmp / "train.jsonl", say_rows(WORDS[:4]))
    sets = ["task=sft", f"model={model}", f"data.train={train}", f"output_dir={tmp / 'run'}", "train.max_steps=1",
            "train.save_steps=0", "train.precision=fp32", "data.max_length=32", "train.report=false",
            "task.generation.max_new_tokens=8"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return tmp / "run" / "model"


def test_predict_fits_prompts_to_max_length_and_positions(run64: Path, tmp_path: Path) -> None:
    rows = [{"prompt": "say good"}, {"prompt": LONG}, {"prompt": "say " + " ".join(["nice"] * 20)}]
    data, out = write_jsonl(tmp_path / "p.jsonl", rows), tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["predict", str(run64), "--input", str(data), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("predict: 1 of 3 prompts cut to fit data.max_length=32 tokens: the middle of") == 1
    assert [json.loads(x)["prompt"] for x in out.read_text().splitlines()] == [r["prompt"] for r in rows]
    res = CliRunner().invoke(app, ["predict", str(run64), "--input", str(data), "--output", str(out), "--overwrite",
                                   "--max-new-tokens", "50"])  # 64 positions leave a prompt 14 tokens
    assert res.exit_code == 0, res.output
    assert ("predict: 2 of 3 prompts cut to fit 14 tokens (the model's 64 positions less "
            "task.generation.max_new_tokens=50; data.max_length=32)") in res.stderr, res.stderr


def test_fitted_prompts_keep_the_assistant_header(run64: Path) -> None:
    """Under data.truncation head (the run's), too: the prompt's end, where the reply is generated, stays."""
    import tunelab
    from tunelab.tasks.chat_template import prompt_ids
    from tunelab.tasks.sft_prompts import fitted_prompts, max_length_room

    model = tunelab.load(run64)
    [ex] = model.parse_inputs([{"prompt": LONG}])
    [ids] = fitted_prompts(model.tokenizer, [(ex, ex["messages"], None)], max_length_room(32), None)
    whole = prompt_ids(model.tokenizer, ex["messages"])
    assert len(ids) <= 32 < len(whole) and ids[-4:] == whole[-4:] and ids[:4] == whole[:4], (ids, whole)


def test_a_prompt_that_cannot_fit_is_one_line(run64: Path, tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "say good"}, {"role": "assistant", "content": " ".join(["good"] * 60)},
             {"role": "user", "content": "say good"}]  # an earlier reply alone is past 32 tokens
    data, out = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say good"}, {"messages": turns}]), tmp_path / "o.jsonl"
    res = CliRunner().invoke(app, ["predict", str(run64), "--input", str(data), "--output", str(out)])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == (f"error: {data}:2: messages: the prompt is 76 tokens, more than data.max_length=32 "
                                  "tokens even with the middle of its user / system messages cut (the template, "
                                  "earlier replies and tool turns are longer): shorten the conversation"), res.stderr
    assert not out.exists()


def test_a_prompt_refused_for_the_positions_says_so(run64: Path, tmp_path: Path) -> None:
    """A prompt that no cut fits in the room the model's positions leave beside max_new_tokens had been refused as
    `more than 1 tokens`: neither the positions nor max_new_tokens said, and what to lower not named."""
    data, out = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say good"}]), tmp_path / "o.jsonl"
    res = CliRunner().invoke(app, ["predict", str(run64), "--input", str(data), "--output", str(out),
                                   "--max-new-tokens", "63"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().startswith(
        f"error: {data}:1: prompt: the prompt is 8 tokens, more than the 1 token that the model's 64 positions leave "
        "beside task.generation.max_new_tokens=63 even with the middle of its user / system messages cut"), res.stderr
    assert res.stderr.strip().endswith(
        ": shorten the conversation or lower --max-new-tokens / task.generation.max_new_tokens"), res.stderr
    assert not out.exists()


def test_eval_fits_the_prompts_it_generates_from(run64: Path, tmp_path: Path) -> None:
    rows = [{"prompt": "say good", "completion": "good"},
            {"prompt": "say " + " ".join(["nice"] * 20), "completion": "nice"}]
    data, replies = write_jsonl(tmp_path / "e.jsonl", rows), tmp_path / "r.jsonl"
    res = CliRunner().invoke(app, ["eval", str(run64), "--data", str(data), "--predictions", str(replies),
                                   "--max-new-tokens", "50"])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("eval: 1 of 2 prompts cut to fit 14 tokens (the model's 64 positions") == 1, res.stderr
    assert [json.loads(x)["line"] for x in replies.read_text().splitlines()] == [1, 2]
