"""SFT: row formats → messages, one-line data errors, assistant-only loss masks on ChatML (end-of-turn
token trained), truncation, batch-wise validation loss, LoRA on Llama, and train → eval → predict from the CLI."""

from __future__ import annotations

import json
import math
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import CALL, TOOL_TEMPLATE, WEATHER, WORDS, write_jsonl
from tunelab.cli import app
from tunelab.config.run import run_config_class
from tunelab.config.sections import DataConfig
from tunelab.data import check as data_check
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError, DataError

run_config_class()
from tunelab.tasks.sft import Sft, SftConfig, end_of_turn_ids, render  # noqa: E402


def _table(rows: list[dict]) -> Table:
    return Table("d.jsonl", [Record("d.jsonl", i + 1, r) for i, r in enumerate(rows)])


def _task(max_length: int = 64, **kw: object) -> Sft:
    return Sft(SftConfig(**kw), DataConfig(max_length=max_length))


U, A, S = "user", "assistant", "system"


def test_formats_become_messages() -> None:
    rows = [
        {"instruction": "say good", "input": "now", "output": "good"},
        {"instruction": "say bad", "output": "bad"},
        {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "hi"},
                           {"from": "gpt", "value": "yo"}]},
        {"messages": [{"role": U, "content": "a"}, {"role": A, "content": "b"}, {"role": U, "content": "c"},
                      {"role": A, "content": "d"}]},
        {"prompt": "p", "completion": "c"},
    ]
    got = [ex["messages"] for ex in _task().parse(_table(rows))]
    assert got == [
        [{"role": U, "content": "say good\n\nnow"}, {"role": A, "content": "good"}],
        [{"role": U, "content": "say bad"}, {"role": A, "content": "bad"}],
        [{"role": S, "content": "s"}, {"role": U, "content": "hi"}, {"role": A, "content": "yo"}],
        [{"role": U, "content": "a"}, {"role": A, "content": "b"}, {"role": U, "content": "c"},
         {"role": A, "content": "d"}],
        [{"role": U, "content": "p"}, {"role": A, "content": "c"}],
    ]
    # unlabelled (predict): the final assistant turn is dropped, the output is optional, plain text is a user turn
    unl = _task().parse(_table([rows[3], {"instruction": "x"}, {"text": "say good"}]), labelled=False)
    assert [ex["messages"] for ex in unl] == [
        [{"role": U, "content": "a"}, {"role": A, "content": "b"}, {"role": U, "content": "c"}],
        [{"role": U, "content": "x"}],
        [{"role": U, "content": "say good"}],
    ]
    # a forced format requires its fields
    with pytest.raises(DataError, match=r"^d.jsonl:1: messages: missing field \(the row has: instruction, input, "
                                        r"output\)$"):
        _task(format="messages").parse(_table([rows[0]]))


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"instruction": "x"}, "d.jsonl:1: output: missing field (the row has: instruction)"),
        ({"conversations": []}, "d.jsonl:1: conversations: expected a non-empty list of turns"),
        ({"messages": [{"role": "bot", "content": "x"}]},  # every name it takes (it named three)
         "d.jsonl:1: messages: turn 1: unknown role 'bot' (expected system, user, assistant, tool, human, gpt, "
         "function_call, observation)"),
        ({"conversations": [{"from": "human", "value": "x"}]}, "d.jsonl:1: conversations: no assistant turn"),
        ({"messages": [{"role": U, "content": "x"}, {"role": A, "content": 3}]},
         "d.jsonl:1: messages: turn 2: content is not a string: int"),
        ({"prompt": "x", "completion": None}, "d.jsonl:1: completion: missing field"),
        # trained as written, these would teach what the row does not say: a template's header tokens as a reply (and
        # Gemma's system text inside the model's turn), or to end a turn at once
        ({"messages": [{"role": A, "content": "hi"}, {"role": U, "content": "x"}, {"role": A, "content": "y"}]},
         "d.jsonl:1: messages: turn 1: an assistant turn first; a conversation starts with the user (or a system "
         "message)"),
        ({"messages": [{"role": U, "content": "x"}, {"role": A, "content": " "}]},
         "d.jsonl:1: messages: turn 2: an empty assistant reply (it would teach the model to end its turn at once)"),
        ({"instruction": "x", "output": ""},
         "d.jsonl:1: output: an empty assistant reply (it would teach the model to end its turn at once)"),
        ({"text": "x"}, "d.jsonl:1: no messages, conversations, instruction or prompt field"),
        # LLaMA-Factory's history and system columns, Axolotl's per-turn weight: read, or refused in one line
        ({"instruction": "x", "output": "y", "history": "a"},
         "d.jsonl:1: history: expected a list of [user, assistant] pairs of strings, not str"),
        ({"instruction": "x", "output": "y", "history": [["a", "b"], ["c"]]},
         "d.jsonl:1: history: pair 2: expected [user, assistant] (two strings), not a list of 1"),
        ({"instruction": "x", "output": "y", "history": [{"a": "b"}]},
         "d.jsonl:1: history: pair 1: expected [user, assistant] (two strings), not dict"),
        ({"instruction": "x", "output": "y", "history": [["a", 3]]},
         "d.jsonl:1: history: pair 1: the assistant turn is not a string: int"),
        ({"instruction": "x", "output": "y", "history": [["a", " "]]},
         "d.jsonl:1: history: pair 1: an empty assistant reply (it would teach the model to end its turn at once)"),
        ({"messages": [{"role": U, "content": "x"}, {"role": A, "content": "y"}], "history": [["a", "b"]]},
         "d.jsonl:1: history: read with alpaca rows (instruction / input / output) only; write the earlier turns into "
         "the conversation"),
        ({"instruction": "x", "output": "y", "system": 3}, "d.jsonl:1: system: is not a string: int"),
        ({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "x"},
                            {"from": "gpt", "value": "y"}], "system": "t"},
         "d.jsonl:1: system: the conversations have a system turn of their own (and another text); keep one"),
        ({"messages": [{"role": U, "content": "x"}, {"role": A, "content": "y", "weight": 0.5}]},
         "d.jsonl:1: messages: turn 2: weight must be 0 (not trained) or 1, not 0.5"),
        ({"messages": [{"role": U, "content": "x", "weight": 1}, {"role": A, "content": "y"}]},
         "d.jsonl:1: messages: turn 1: weight 1 on a user turn: only assistant turns are trained (leave the weight "
         "out, or 0)"),
        ({"messages": [{"role": U, "content": "x"}, {"role": A, "content": "y", "weight": 0}]},
         "d.jsonl:1: messages: every assistant turn has weight 0: nothing to train"),
        # the two key styles: either in either container, one per turn
        ({"conversations": [{"role": "bot", "content": "x"}]},
         "d.jsonl:1: conversations: turn 1: unknown role 'bot' (expected system, user, assistant, tool, human, gpt, "
         "function_call, observation)"),
        ({"messages": [{"from": "bot", "value": "x"}]},
         "d.jsonl:1: messages: turn 1: unknown role 'bot' (expected human, gpt, system, function_call, observation, "
         "user, assistant, tool)"),
        # LLaMA-Factory's tool use: a function_call turn's calls and the tools column, read or refused in one line
        ({"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "get_weather(x)"}]},
         'd.jsonl:1: conversations: turn 2: function_call: not JSON (Expecting value at character 1); expected '
         '{"name": ..., "arguments": {...}} or a list of them'),
        ({"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": '{"name": "f"}'}]},
         'd.jsonl:1: conversations: turn 2: function_call: expected {"name": ..., "arguments": {...}} or a list of '
         'them'),
        ({"conversations": [{"from": "human", "value": "x"},
                            {"from": "function_call", "value": '{"name": "f", "arguments": [1]}'}]},
         "d.jsonl:1: conversations: turn 2: function_call: f: the arguments are not a JSON object"),
        ({"instruction": "x", "output": "y", "tools": "[{"}, "d.jsonl:1: tools: not JSON (Expecting property name "
         "enclosed in double quotes at character 3); expected a list of tool descriptions"),
        ({"instruction": "x", "output": "y", "tools": '[{"description": "d"}]'},
         "d.jsonl:1: tools: tool 1: expected {name, description, parameters} (or {type: function, function: {...}})"),
        ({"messages": [{"role": U, "content": "x"}, {"role": A, "content": "y", "tool_calls": [{"type": "function"}]}]},
         'd.jsonl:1: messages: turn 2: tool_calls: not read; write each call as a function_call turn (value {"name": '
         '..., "arguments": {...}}), as LLaMA-Factory\'s ShareGPT rows do'),
        ({"conversations": [{"role": U, "from": "human", "value": "x"}]},
         "d.jsonl:1: conversations: turn 1: both role and from; keep one"),
        ({"messages": [{"content": "x"}]},
         "d.jsonl:1: messages: turn 1: no role (expected {role, content} or {from, value})"),
        ({"messages": ["x"]}, "d.jsonl:1: messages: turn 1: expected {role, content} or {from, value}"),
    ],
)
def test_malformed_rows(row: dict, error: str) -> None:
    with pytest.raises(DataError) as info:
        _task().parse(_table([row]))
    assert str(info.value) == error


def test_rows_to_predict_on_are_read_as_before() -> None:
    """The refusals of rows that train (a first turn the assistant's, an empty reply) are not for rows predicted on
    (predict, serve, data.unlabeled): their trailing reply is dropped, an opening greeting is part of the prompt."""
    rows = [{"messages": [{"role": A, "content": "Hi! How can I help?"}, {"role": U, "content": "x"}]},
            {"messages": [{"role": U, "content": "x"}, {"role": A, "content": ""}]}, {"instruction": "x", "output": ""}]
    assert len(_task().parse(_table(rows), labelled=False)) == 3
    with pytest.raises(DataError, match=r"^d.jsonl:1: a: an empty assistant reply"):  # a prompt_template's row too
        _task(prompt_template="Q: {q}", response_field="a").parse(_table([{"q": "x", "a": ""}]))


def test_either_key_style_in_either_container() -> None:
    """ShareGPT's `conversations` with OpenAI's role/content (and `messages` with from/value) are read as written,
    not refused as `unknown role None`."""
    want = [{"role": U, "content": "hi"}, {"role": A, "content": "yo"}]
    rows = [{"conversations": [{"role": U, "content": "hi"}, {"role": A, "content": "yo"}]},
            {"messages": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
            {"conversations": [{"from": "human", "content": "hi"}, {"role": "gpt", "value": "yo"}]}]
    assert [ex["messages"] for ex in _task().parse(_table(rows))] == [want] * 3
    assert [ex["messages"] for ex in _task(format="sharegpt").parse(_table(rows[:1]))] == [want]


HISTORY = {"instruction": "say nice", "input": "", "output": "nice", "system": "be good",
           "history": [["say good", "good"], ["say bad", "bad"]]}


def test_system_and_history_columns_are_turns(tiny_llama: Path) -> None:
    """LLaMA-Factory's alpaca `system` and `history` and ShareGPT's top-level `system` become the conversation's
    turns (they were dropped: one user and one assistant turn trained); the history replies are trained like every
    assistant turn, and predict builds the prompt training did."""
    rows = [HISTORY, {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
                      "system": "be a cat"},
            {"prompt": "p", "completion": "c", "system": "s"}, {"instruction": "x", "output": "y", "system": ""}]
    task = _task()
    examples = task.parse(_table(rows))
    assert [ex["messages"] for ex in examples] == [
        [{"role": S, "content": "be good"}, {"role": U, "content": "say good"}, {"role": A, "content": "good"},
         {"role": U, "content": "say bad"}, {"role": A, "content": "bad"}, {"role": U, "content": "say nice"},
         {"role": A, "content": "nice"}],
        [{"role": S, "content": "be a cat"}, {"role": U, "content": "hi"}, {"role": A, "content": "yo"}],
        [{"role": S, "content": "s"}, {"role": U, "content": "p"}, {"role": A, "content": "c"}],
        [{"role": U, "content": "x"}, {"role": A, "content": "y"}],  # an empty system column: no system turn
    ]
    _, tok = task.build_model(str(tiny_llama), examples[:1])
    (f,) = task.encode(examples[:1], tok)
    toks = tok.convert_ids_to_tokens(f["input_ids"])
    assert [toks[i] for i, v in enumerate(f["labels"]) if v != -100] == ["good", "<|im_end|>", "bad", "<|im_end|>",
                                                                       "nice", "<|im_end|>"]
    # predict on the same row: system + history + instruction, the generation prompt of the trained conversation
    (p,) = task.encode(task.parse(_table([{k: v for k, v in HISTORY.items() if k != "output"}]), labelled=False), tok)
    assert p["input_ids"] == f["input_ids"][:len(p["input_ids"])]
    assert tok.convert_ids_to_tokens(p["input_ids"][-3:]) == ["<|im_end|>", "<|im_start|>", "<unk>"]  # assistant\n
    assert f["input_ids"][len(p["input_ids"]):] == tok.convert_tokens_to_ids(["nice", "<|im_end|>"])


def test_prompt_template_rows_keep_their_system_and_history() -> None:
    """With task.prompt_template, a row's `system` column and alpaca `history` pairs were dropped silently (one user
    turn, the filled template, and its reply trained); they are read as LLaMA-Factory reads them: the system message,
    then the history turns (their replies trained), unless the template names the column itself."""
    row = {"src": "good", "tgt": "nice", "system": "be brief", "history": [["say bad", "bad"]]}
    task = _task(prompt_template="say {src}", response_field="tgt")
    (ex,) = task.parse(_table([row]))
    want = [{"role": S, "content": "be brief"}, {"role": U, "content": "say bad"}, {"role": A, "content": "bad"},
            {"role": U, "content": "say good"}, {"role": A, "content": "nice"}]
    assert ex["messages"] == want
    (unl,) = task.parse(_table([{k: v for k, v in row.items() if k != "tgt"}]), labelled=False)
    assert unl["messages"] == want[:-1]  # predict builds the prompt training did
    (named,) = _task(prompt_template="{system}: say {src}", response_field="tgt").parse(_table([row]))
    assert named["messages"] == [*want[1:3], {"role": U, "content": "be brief: say good"}, want[-1]]  # once
    with pytest.raises(DataError) as info:
        task.parse(_table([{**row, "history": [["say bad"]]}]))
    assert str(info.value) == "d.jsonl:1: history: pair 1: expected [user, assistant] (two strings), not a list of 1"


def test_rows_that_read_before_the_system_and_weight_columns_still_read() -> None:
    """A review of the fix: Arrow / HF exports fill absent keys with null (`weight: null` on every turn, `content:
    null` beside `value`), an empty `history` cell is "", and a ShareGPT row may carry its system prompt both in a
    `system` column and as its first turn: all were refused; they read as before (the system prompt once). So was an
    OpenAI turn's empty `tool_calls` (`[]`, as exports write a plain reply's)."""
    rows = [{"conversations": [{"from": "human", "value": "hi", "content": None, "weight": None},
                               {"from": "gpt", "value": "yo", "weight": None, "tool_calls": []}]},
            {"instruction": "x", "output": "y", "history": ""},
            {"conversations": [{"from": "system", "value": "be a cat"}, {"from": "human", "value": "hi"},
                               {"from": "gpt", "value": "yo"}], "system": "be a cat"}]
    assert [ex["messages"] for ex in _task().parse(_table(rows))] == [
        [{"role": U, "content": "hi"}, {"role": A, "content": "yo"}],
        [{"role": U, "content": "x"}, {"role": A, "content": "y"}],
        [{"role": S, "content": "be a cat"}, {"role": U, "content": "hi"}, {"role": A, "content": "yo"}]]
    other = {**rows[2], "system": "be a dog"}
    with pytest.raises(DataError, match="have a system turn of their own \\(and another text\\); keep one"):
        _task().parse(_table([other]))


def test_an_older_runs_rows_are_read_again_as_it_trained_on_them(tmp_path: Path) -> None:
    """A run trained before text rules 3 read a template row without its system / history turns and no tools column;
    read again by today's reading (resume, report, export) its held-out rows differed: "the rows held out now are not
    those the run ... validated on". They are read by the run's own rules (its data_summary.json's text_rules)."""
    from tunelab.data.load import load_splits, run_splits
    from tunelab.data.report import training_fingerprint
    from tunelab.text import text_rules

    rows = [{"src": w, "tgt": w, "system": "be brief", "history": [["say bad", "bad"]], "tools": json.dumps([WEATHER])}
            for w in WORDS[:10]]
    data = DataConfig(train=str(write_jsonl(tmp_path / "train.jsonl", rows)), validation_split=0.2)
    task = Sft(SftConfig(prompt_template="say {src}", response_field="tgt"), data)
    held = [ex["line"] for ex in load_splits(data, task, 0)["validation"]]
    as_trained = [{"messages": [{"role": U, "content": f"say {rows[n - 1]['src']}"},  # what the older tunelab read
                                {"role": A, "content": rows[n - 1]["tgt"]}], "field": "tgt", "labelled": True}
                  for n in held]
    run = tmp_path / "run"
    run.mkdir()
    summary = {"text_rules": 2, "rows_used": {"train": 8, "validation": 2},
               "applied": {"validation_split": {"rows": 2, "rows_sha256": training_fingerprint(as_trained)}}}
    (run / "data_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    assert [ex["messages"] for ex in run_splits(run, data, task, 0)["validation"]] == \
        [ex["messages"] for ex in as_trained]
    openai = {"messages": [{"role": U, "content": "x"}, {"role": A, "content": "y", "tool_calls": [{"id": "1"}]}]}
    with text_rules(2):  # its OpenAI tool_calls were not looked at (now: refused, not trained without them)
        assert _task().parse(_table([openai]))[0]["messages"] == [{"role": U, "content": "x"}, {"role": A,
                                                                                                 "content": "y"}]


def test_data_check_reads_history_and_system(tiny_llama: Path, tmp_path: Path) -> None:
    """The reviewer's rows: data check counted `user: 3, assistant: 3` for them (no system, no history turn); a
    malformed history is one line, exit 2."""
    path = write_jsonl(tmp_path / "hist.jsonl", [
        {**HISTORY, "history": [["say good", "good"]]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "system": "be a cat"},
        {"conversations": [{"role": U, "content": "hi"}, {"role": A, "content": "yo"}]}])
    res = CliRunner().invoke(app, ["data", "check", str(path), "--task", "sft", "--model", str(tiny_llama), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"][str(path)]["turns"] == {U: 4, A: 4, S: 2}
    bad = write_jsonl(tmp_path / "bad.jsonl", [HISTORY, {**HISTORY, "history": [["say good"]]}])
    res = CliRunner().invoke(app, ["data", "check", str(bad), "--task", "sft", "--model", str(tiny_llama)])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {bad}:2: history: pair 1: expected [user, " \
                                                        "assistant] (two strings), not a list of 1", res.output


def test_a_turn_of_weight_0_is_not_trained(tiny_llama: Path) -> None:
    """Axolotl's per-turn `"weight": 0` (it was ignored: the turn trained): the turn stays in the prompt, rendered as
    without the key, and its tokens are not trained; the row's other replies are."""
    msgs = [{"role": U, "content": "say good"}, {"role": A, "content": "good", "weight": 0},
            {"role": U, "content": "say bad"}, {"role": A, "content": "bad movie", "weight": 1}]
    task = _task()
    examples = task.parse(_table([{"messages": msgs}, {"messages": [{k: v for k, v in m.items() if k != "weight"}
                                                                    for m in msgs]}]))
    assert examples[0]["messages"][1] == {"role": A, "content": "good", "weight": 0}
    _, tok = task.build_model(str(tiny_llama), examples)
    weighted, plain = task.encode(examples, tok)
    assert weighted["input_ids"] == plain["input_ids"]
    toks = tok.convert_ids_to_tokens(weighted["input_ids"])
    assert [toks[i] for i, v in enumerate(weighted["labels"]) if v != -100] == ["bad", "movie", "<|im_end|>"]
    assert [toks[i] for i, v in enumerate(plain["labels"]) if v != -100] == ["good", "<|im_end|>", "bad", "movie",
                                                                           "<|im_end|>"]
    # not trained, so not refused as a reply: an opening greeting, an empty turn
    rows = [{"messages": [{"role": A, "content": "hi", "weight": 0}, *msgs[2:]]},
            {"messages": [msgs[0], {"role": A, "content": "", "weight": 0}, *msgs[2:]]}]
    assert len(task.parse(_table(rows))) == 2


TOOL_ROW = {"conversations": [{"from": "human", "value": "say good"}, {"from": "function_call", "value": CALL},
                              {"from": "observation", "value": "nice"}, {"from": "gpt", "value": "nice"}],
            "system": "be brief", "tools": json.dumps([WEATHER])}


def test_function_call_and_observation_turns_and_tools(tiny_llama: Path, tmp_path: Path) -> None:
    """LLaMA-Factory's tool use: `function_call` turns were refused (`unknown role`) and a `tools` column dropped
    silently. A function_call turn is the assistant's tool calls (trained), an observation a tool turn (not trained),
    the tools go where the model's template puts `apply_chat_template(tools=...)`; a template that would leave any of
    them out (the built-in ChatML) is one line naming the field, exit code 2."""
    from tunelab.data.dedup import duplicate_keys
    from tunelab.tasks.chat_template import assistant_spans

    task = _task(max_length=512)
    (alpaca,) = task.parse(_table([{"instruction": "say good", "output": "good", "tools": TOOL_ROW["tools"]}]))
    tools = [{"type": "function", "function": WEATHER}]
    assert alpaca["messages"][0] == {"role": U, "content": "say good", "tools": tools}  # (it was dropped)
    (ex,) = task.parse(_table([TOOL_ROW]))
    msgs = ex["messages"]
    assert [m["role"] for m in msgs] == [S, U, A, "tool", A]
    assert msgs[0]["tools"] == tools
    assert msgs[2]["tool_calls"] == [{"type": "function", "function": {"name": "get_weather",
                                                                       "arguments": {"city": "a"}}, "id": "call00001"}]
    assert msgs[3]["tool_call_id"] == "call00001"  # (ids: test_tool_call_ids_are_what_mistrals_template_takes)
    tok = task.load_tokenizer(str(tiny_llama))
    tok.chat_template = TOOL_TEMPLATE
    text, spans = assistant_spans(tok, msgs)
    assert [text[s:e] for s, e in spans] == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "a"}}\n</tool_call><|im_end|>', "nice<|im_end|>"]
    assert text.startswith('<|im_start|>system\nbe brief\n\n# Tools\n<tools>\n{"type": "function", "function": {'
                           '"name": "get_weather"') and "<tool_response>\nnice\n</tool_response>" in text
    (f,) = task.encode([ex], tok)
    (p,) = task.encode(task.parse(_table([TOOL_ROW]), labelled=False), tok)  # predict: the prompt training had
    assert p["input_ids"] == f["input_ids"][:len(p["input_ids"])] and f["labels"][len(p["input_ids"]) - 1] == -100
    other = {**TOOL_ROW, "tools": json.dumps([{**WEATHER, "name": "get_time"}])}  # other tools: not a duplicate
    assert duplicate_keys(ex) != duplicate_keys(task.parse(_table([other]))[0])

    chatml = task.load_tokenizer(str(tiny_llama))  # no tool support: refused, never rendered without them
    with pytest.raises(DataError) as info:
        task.encode([ex], chatml)
    assert str(info.value) == ("d.jsonl:1: tools: the model's chat template does not write tools "
                               "(apply_chat_template(tools=...) leaves them out); use a model whose template takes "
                               "them (Qwen2.5, Llama 3.1, ...), or leave the column out")
    with pytest.raises(DataError, match=r"^d.jsonl:1: conversations: function_call turns: the model's chat template "
                                        r"does not write an assistant turn's tool calls"):
        task.encode(task.parse(_table([{k: v for k, v in TOOL_ROW.items() if k != "tools"}])), chatml)

    path = write_jsonl(tmp_path / "tools.jsonl", [TOOL_ROW])
    res = CliRunner().invoke(app, ["data", "check", str(path), "--task", "sft", "--model", str(tiny_llama)])
    assert res.exit_code == 2 and res.output.strip() == f"error: {path}:1: tools: the model's chat template does not " \
        "write tools (apply_chat_template(tools=...) leaves them out); use a model whose template takes them " \
        "(Qwen2.5, Llama 3.1, ...), or leave the column out", res.output
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    tok.save_pretrained(model)  # the same model with the tool template
    res = CliRunner().invoke(app, ["data", "check", str(path), "--task", "sft", "--model", str(model), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"][str(path)]["turns"] == {A: 2, S: 1, U: 1, "tool": 1}


def test_tool_rows_read_render_and_score_as_they_train(tiny_llama: Path) -> None:
    """The review of the tool rows: OpenAI's role `tool` was an unknown role (the names it takes listed three); a call
    written compactly, or with its arguments as a JSON string, trains the same tokens but was another row to dedup;
    Hermes' named templates ({default, tool_use}) were refused, probed without tools; a template's own refusal
    (Mistral v0.3's call ids) was not said; a prompt_template naming {tools} had the tools written twice; eval scored
    a perfect tool call 0 against the row's JSON, not the calls as training wrote them."""
    from tunelab.data.dedup import duplicate_keys
    from tunelab.evaluation.generation import evaluate_generation
    from tunelab.metrics.generation import score_generations
    from tunelab.tasks.chat_template import CHATML
    from tunelab.tasks.generation import GenerationConfig, decode_reply
    from tunelab.text import text_rules

    task = _task(max_length=512)
    (ex,) = task.parse(_table([TOOL_ROW]))
    turns = [{"role": U, "content": "say good"}, {"role": "function_call", "content": CALL},
             {"role": "tool", "content": "nice"}, {"role": A, "content": "nice"}]
    (openai,) = task.parse(_table([{**TOOL_ROW, "conversations": turns}]))
    assert openai["messages"] == ex["messages"]  # OpenAI's tool message: an observation
    compact = [{**t, "value": '{"arguments":"{\\"city\\":\\"a\\"}","name":"get_weather"}'}
               if t["from"] == "function_call" else t for t in TOOL_ROW["conversations"]]
    (same,) = task.parse(_table([{**TOOL_ROW, "conversations": compact}]))
    assert duplicate_keys(same) == duplicate_keys(ex)
    with text_rules(3):  # a run of the rules before keys them as written, as it did
        assert duplicate_keys(same) != duplicate_keys(ex)

    model, tok = task.build_model(str(tiny_llama), [ex])
    tok.chat_template = {"default": CHATML, "tool_use": TOOL_TEMPLATE}  # as Hermes-2-Pro / Hermes-3 ship theirs
    assert render(tok, ex["messages"]).count("<tool_call>") == 1
    with pytest.raises(DataError, match=r"tool calls; it writes them only given tools: give the row a tools column$"):
        task.encode(task.parse(_table([{k: v for k, v in TOOL_ROW.items() if k != "tools"}])), tok)
    loop = "{% for call in m['tool_calls'] or [] %}"  # a template that writes calls only with ids (Mistral v0.3's)
    tok.chat_template = TOOL_TEMPLATE.replace(loop, loop + "{{ raise_exception('Tool call IDs should be alphanumeric "
                                              "strings with length 9!') }}")
    with pytest.raises(DataError) as info:
        task.encode([ex], tok)
    assert str(info.value) == ("d.jsonl:1: conversations: function_call turns: the model's chat template does not "
                               "write an assistant turn's tool calls (it raised: Tool call IDs should be alphanumeric "
                               "strings with length 9!); use a model whose template does (Qwen2.5, Llama 3.1, ...)")
    tok.chat_template = TOOL_TEMPLATE
    named = _task(prompt_template="{tools}\n{q}", response_field="a")
    (row,) = named.parse(_table([{"q": "say good", "a": "good", "tools": TOOL_ROW["tools"]}]))
    assert row["messages"] == [{"role": U, "content": f"{TOOL_ROW['tools']}\nsay good"}, {"role": A, "content": "good"}]
    with text_rules(3):  # a run of text rules 3 gave them to the chat template as well: its rows read again as it was
        (old,) = named.parse(_table([{"q": "say good", "a": "good", "tools": TOOL_ROW["tools"]}]))
    assert old["messages"][0].get("tools") and old["messages"][0]["content"] == f"{TOOL_ROW['tools']}\nsay good"

    (call,) = task.parse(_table([{**TOOL_ROW, "conversations": TOOL_ROW["conversations"][:2]}]))  # the call scored
    (f,) = task.encode([call], tok)
    trained = decode_reply(tok, [t for t in f["labels"] if t != -100])  # what a perfect model writes
    _, (scored,) = evaluate_generation(task, model, tok, [call], 1, GenerationConfig(max_new_tokens=1))
    assert scored["reference"] == trained != CALL
    assert score_generations([trained], [scored["reference"]])[0]["exact_match"] == 1.0
    assert task.records(np.array([[1.0, 1.0]]), [call])[0]["gold"] == trained


Q, FC, OB, R = TOOL_ROW["conversations"]  # human, function_call, observation, gpt
TWO = json.dumps([json.loads(CALL), {"name": "get_weather", "arguments": {"city": "b"}}])  # parallel calls, one turn
OWN = json.dumps([{**c, "id": i} for c, i in zip(json.loads(TWO), ("abcdefghi", "jklmnopqr"), strict=True)])  # ids


@pytest.mark.parametrize(("turns", "error"), [
    ([Q, FC, FC, OB, R], "turn 3: turn 2's tool call has no result (an observation / tool turn must come next)"),
    ([Q, OB, R], "turn 2: a tool result (observation) with no tool call (function_call turn) before it"),
    ([Q, R, OB, R], "turn 3: a tool result (observation) with no tool call (function_call turn) before it"),
    ([OB, Q, R], "turn 1: a tool result (observation) with no tool call (function_call turn) before it"),
    ([Q, FC, OB, OB, R], "turn 4: 2 tool results (observations) in a row for the 1 call of turn 2"),
    ([Q, {**FC, "value": TWO}, OB, OB, OB, R],
     "turn 5: 3 tool results (observations) in a row for the 2 calls of turn 2"),
    ([Q, FC, R], "turn 3: turn 2's tool call has no result (an observation / tool turn must come next)"),
    ([Q, FC, Q, R], "turn 3: turn 2's tool call has no result (an observation / tool turn must come next)"),
    ([Q, {**FC, "value": OWN}, {**OB, "tool_call_id": "zzz"}, R],  # (was trained, paired with the first call)
     "turn 3: tool_call_id 'zzz' is none of the call ids of turn 2"),
    ([Q, {**FC, "value": OWN}, {**OB, "tool_call_id": "jklmnopqr"}, {**OB, "tool_call_id": "jklmnopqr"}, R],
     "turn 4: a second tool result for the call 'jklmnopqr' of turn 2"),
    ([Q, {**FC, "value": OWN.replace("jklmnopqr", "abcdefghi")}, OB, R], "turn 2: two tool calls with the id "
                                                                          "'abcdefghi'"),
    ([Q, {**FC, "value": OWN.replace('"abcdefghi"', "7")}, OB, R],
     "turn 2: function_call: get_weather: id is not a string: int"),
    ([Q, {**FC, "value": CALL.replace('"a"', "NaN")}, OB, R],
     "turn 2: function_call: get_weather: arguments: city: nan is not a finite number"),
    ([Q, {**FC, "tool_call_id": "abcdefghi"}, OB, R], "turn 2: tool_call_id: only on a tool (observation) turn"),
])
def test_tool_turns_out_of_order_are_one_line(turns: list[dict], error: str) -> None:
    """Two function_call turns in a row, a tool result (observation, OpenAI's role tool) with no call before it, more
    results than calls: trained as written (LLaMA-Factory drops such rows). Now one line naming the turn, as an unknown
    role is; so is a `tool_call_id` no call of the turn has, a second result for one call, ids that cannot pair a
    result with its call, and arguments a JSON answer cannot write. The rows of a run of text rules before 5 are read
    as it trained on them."""
    from tunelab.text import text_rules

    row = {"conversations": turns}
    with pytest.raises(DataError) as info:
        _task().parse(_table([row]))
    assert str(info.value) == f"d.jsonl:1: conversations: {error}"
    openai = [{"role": ("tool" if t["from"] == "observation" else t["from"]), "content": t["value"],
               **({"tool_call_id": t["tool_call_id"]} if "tool_call_id" in t else {})} for t in turns]  # role tool
    with pytest.raises(DataError, match=f"^d.jsonl:1: messages: {error.split(':')[0]}: "):
        _task().parse(_table([{"messages": openai}]))
    with text_rules(4):  # read as that run read them: nothing refused, no ids
        (old,) = _task().parse(_table([row]))
    assert len(old["messages"]) == len(turns) and "tool_call_id" not in str(old["messages"])
    assert "call00001" not in str(old) and "'id'" not in str(old["messages"])


def test_tool_turns_in_orders_templates_take_are_read(tmp_path: Path) -> None:
    """Parallel calls in one turn, answered by one observation (LLaMA-Factory's) or by a result each (OpenAI's, what
    Qwen2.5's template groups into one turn); a call that ends the conversation (the call trained); call, result,
    call, result. Each result carries the id of the call it answers, in order. `data check` refuses a row out of order
    after them in one line, exit code 2."""
    rows = [[Q, {**FC, "value": TWO}, OB, R], [Q, {**FC, "value": TWO}, OB, {**OB, "value": "b"}, R], [Q, FC],
            [Q, FC, OB, FC, OB, R],
            # a row's own ids pair its results with its calls, whatever their order (they were dropped, and results
            # paired by place: each trained against the other call); a result without one answers the first call
            # not yet answered; every call is named call0000N, so the template writes what serving gives it
            [Q, {**FC, "value": OWN}, {**OB, "tool_call_id": "jklmnopqr"}, {**OB, "tool_call_id": "abcdefghi"}, R],
            [Q, {**FC, "value": OWN}, {**OB, "tool_call_id": "jklmnopqr"}, OB, R],
            [Q, {**FC, "value": OWN.replace("abcdefghi", "call00002").replace(', "id": "jklmnopqr"', "")},
             {**OB, "tool_call_id": "call00002"}, OB, R],
            # "" is no id, as null (exports of one schema for every turn write it): refused on a user turn, as none of
            # the call ids, as two calls' one id
            [{**t, "tool_call_id": ""} for t in (Q, FC, OB, R)],
            [Q, {**FC, "value": OWN.replace("abcdefghi", "").replace("jklmnopqr", "")}, {**OB, "tool_call_id": ""},
             OB, R]]
    path = write_jsonl(tmp_path / "d.jsonl", [{"conversations": t} for t in [*rows, [Q, FC, FC, OB, R]]])
    res = CliRunner().invoke(app, ["data", "check", str(path), "--task", "sft"])
    assert res.exit_code == 2 and res.output.strip() == f"error: {path}:{len(rows) + 1}: conversations: turn 3: turn " \
        "2's tool call has no result (an observation / tool turn must come next)", res.output
    read = [ex["messages"] for ex in _task().parse(_table([{"conversations": t} for t in rows]))]
    ids = [[(m["role"], [c["id"] for c in m.get("tool_calls", [])] or m.get("tool_call_id")) for m in msgs[1:-1]]
           for msgs in read]
    assert ids == [[(A, ["call00001", "call00002"]), ("tool", "call00001")],
                   [(A, ["call00001", "call00002"]), ("tool", "call00001"), ("tool", "call00002")],
                   [],
                   [(A, ["call00001"]), ("tool", "call00001"), (A, ["call00002"]), ("tool", "call00002")],
                   [(A, ["call00001", "call00002"]), ("tool", "call00002"), ("tool", "call00001")],
                   [(A, ["call00001", "call00002"]), ("tool", "call00002"), ("tool", "call00001")],
                   [(A, ["call00001", "call00002"]), ("tool", "call00001"), ("tool", "call00002")],
                   [(A, ["call00001"]), ("tool", "call00001")],
                   [(A, ["call00001", "call00002"]), ("tool", "call00001"), ("tool", "call00002")]]
    assert read[2][-1]["tool_calls"][0]["id"] == "call00001"
    # a turn of many calls whose results give ids only now and then: each id-less one answers the first call not yet
    # answered (found by a cursor that only moves on; it was looked for from the turn's first call each time)
    from tunelab.tasks.chat_tools import call_id, link_calls

    n = 2000
    many = [{"role": U, "content": "x"}, {"role": A, "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {}}, "id": f"own{k}"} for k in range(n)]},
        *({"role": "tool", "content": str(j)} | ({"tool_call_id": f"own{j + 1}"} if j % 2 == 0 else {})
          for j in range(n))]
    assert link_calls(many, str) is None
    assert [m["tool_call_id"] for m in many[2:]] == [call_id(j + 2 if j % 2 == 0 else j) for j in range(n)]


MISTRAL_TOOLS = (  # the lines of Mistral v0.3's template that take calls: ids of 9 letters and digits, or it raises
    "{% macro check(id) %}{% if id is not string or id | length != 9 or not id.isalnum() %}"
    "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{% endif %}{% endmacro %}"
    "{% if tools %}{{ '[AVAILABLE_TOOLS] ' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}{% endif %}"
    "{% for m in messages %}{% if m['role'] in ('user', 'system') %}{{ '[INST] ' + m['content'] + '[/INST]' }}"
    "{% elif m['role'] == 'tool' %}{{ check(m.tool_call_id) }}"
    "{{ '[TOOL_RESULTS] {\"content\": ' + (m['content'] | tojson) + ', \"call_id\": \"' + m.tool_call_id + "
    "'\"}[/TOOL_RESULTS]' }}"
    "{% elif m.tool_calls %}{{ '[TOOL_CALLS] [' }}{% for call in m.tool_calls %}{{ check(call.id) }}"
    "{{ (call.function | tojson)[:-1] + ', \"id\": \"' + call.id + '\"}' }}{% endfor %}{{ ']</s>' }}"
    "{% else %}{{ ' ' + m['content'] + '</s>' }}{% endif %}{% endfor %}"
)


def test_tool_call_ids_are_what_mistrals_template_takes(tiny_llama: Path) -> None:
    """Mistral v0.3's template writes a call and its result only with a call id of 9 letters and digits, which
    function_call turns carry none of: every tool row was refused for such a model. Calls and results get ids
    (`call00001`, the conversation's first call: the same for the same row, so dedup and resume keep them; a pattern
    a model can learn to write), which Qwen2.5's template leaves out (the spans of
    test_function_call_and_observation_turns_and_tools are unchanged). A row's own ids and a request's (OpenAI's
    `call_...`, which the template refused) pair results with calls and are renamed so: serving's prompt is
    training's."""
    task = _task(max_length=512)
    tok = task.load_tokenizer(str(tiny_llama))
    tok.chat_template = MISTRAL_TOOLS
    (ex,) = task.parse(_table([{**TOOL_ROW, "conversations": [Q, {**FC, "value": TWO}, OB, OB, R]}]))
    text = render(tok, ex["messages"])
    assert ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "a"}, "id": "call00001"}{"name": '
            '"get_weather", "arguments": {"city": "b"}, "id": "call00002"}]</s>') in text
    assert text.count('"call_id": "call00001"') == text.count('"call_id": "call00002"') == 1
    (f,) = task.encode([ex], tok)
    assert any(v != -100 for v in f["labels"])
    assert task.parse(_table([TOOL_ROW]))[0] == task.parse(_table([TOOL_ROW]))[0]  # the same ids each time it is read

    # a row's own ids pair its results with its calls, in any order (they were dropped: paired by place, each result
    # trained against the other call), and the calls are named as always
    turns = [Q, {**FC, "value": OWN}, {**OB, "value": "b", "tool_call_id": "jklmnopqr"},
             {**OB, "tool_call_id": "abcdefghi"}, R]
    (own,) = task.parse(_table([{**TOOL_ROW, "conversations": turns}]))
    text = render(tok, own["messages"])
    assert '{"content": "b", "call_id": "call00002"}' in text and '{"content": "nice", "call_id": "call00001"}' in text
    # dedup compares the pairing: the same results answering the calls the other way round render otherwise (they
    # were one row, the second dropped); the same pairing under other ids is one row
    from tunelab.data.dedup import duplicate_keys

    def answered(first: str, second: str, ids: tuple[str, str] = ("abcdefghi", "jklmnopqr")) -> dict:
        value = OWN.replace("abcdefghi", ids[0]).replace("jklmnopqr", ids[1])
        return task.parse(_table([{**TOOL_ROW, "conversations": [Q, {**FC, "value": value}, {
            **OB, "value": "b", "tool_call_id": first}, {**OB, "tool_call_id": second}, R]}]))[0]

    swapped = answered("abcdefghi", "jklmnopqr")
    assert render(tok, swapped["messages"]) != text and duplicate_keys(swapped) != duplicate_keys(own)
    assert duplicate_keys(answered("yyy", "xxx", ("xxx", "yyy"))) == duplicate_keys(own)
    # served (serve/tools.py, by the same link_calls): OpenAI's ids, which Mistral's template refused (`call_...`, not
    # 9 letters and digits), pair the results alike and never reach the template: the prompt is training's
    from tunelab.serve.schemas import ChatRequest
    from tunelab.serve.tools import request_messages

    def served(calls: list[dict], results: list[tuple[str | None, str]]) -> list[dict]:
        sent = [{"type": "function", "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                | ({"id": c["id"]} if c.get("id") else {}) for c in calls]  # (arguments as OpenAI's JSON text)
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say good"},
                    {"role": "assistant", "content": None, "tool_calls": sent},
                    *({"role": "tool", "content": said} | ({"tool_call_id": to} if to else {}) for to, said in results),
                    {"role": "assistant", "content": "nice"}]
        return request_messages(ChatRequest(messages=messages, tools=[{"type": "function", "function": WEATHER}]))

    openai = [{**c, "id": f"call_{k}2adf2706be8415785d2bdcb"} for k, c in enumerate(own["messages"][2]["tool_calls"])]
    assert render(tok, served(openai, [(openai[1]["id"], "b"), (openai[0]["id"], "nice")])) == text
    # ids filled by place took no notice of the ids given: both results answered one call, two calls had one id
    assert [m.get("tool_call_id") for m in served(openai, [(openai[1]["id"], "b"), (None, "nice")])[3:5]] == \
        ["call00002", "call00001"]
    given = [{**openai[0], "id": "call00002"}, {**openai[1], "id": None}]
    read = served(given, [("call00002", "b"), (None, "nice")])
    assert [c["id"] for c in read[2]["tool_calls"]] == ["call00001", "call00002"]
    assert [m["tool_call_id"] for m in read[3:5]] == ["call00001", "call00002"]
    # a model of text rules before 5 trained on rows without ids: its template is given none (the client's reached it,
    # which Mistral's refused: training's own refusal, not a prompt it never saw)
    from tunelab.text import text_rules

    with text_rules(4):
        old = served(openai, [(openai[1]["id"], "b"), (openai[0]["id"], "nice")])
    assert [m["role"] for m in old] == [S, U, A, "tool", "tool", A] and old[2]["tool_calls"]
    assert not any("id" in c for m in old for c in m.get("tool_calls", ()))
    assert not any("tool_call_id" in m for m in old)


def test_chatml_masks_all_but_assistant_turns(tiny_llama: Path) -> None:
    """The tiny tokenizer has no template: ChatML is set, its markers added as special tokens, and only the
    tokens of each assistant reply plus the <|im_end|> closing it carry labels."""
    task = _task()
    msgs = [{"role": S, "content": "be nice"}, {"role": U, "content": "say good"}, {"role": A, "content": "good"},
            {"role": U, "content": "say bad"}, {"role": A, "content": "bad movie"}]
    examples = task.parse(_table([{"messages": msgs}]))
    model, tok = task.build_model(str(tiny_llama), examples)
    assert "<|im_start|>" in tok.chat_template and len(tok) == model.get_input_embeddings().num_embeddings
    (f,) = task.encode(examples, tok)
    toks = tok.convert_ids_to_tokens(f["input_ids"])
    assert toks == [
        "<s>",  # the tokenizer adds BOS to plain text, so the built-in template starts with it
        "<|im_start|>", "<unk>", "<unk>", "nice", "<|im_end|>",  # system (unknown words are <unk>)
        "<|im_start|>", "<unk>", "<unk>", "good", "<|im_end|>",  # user
        "<|im_start|>", "<unk>", "good", "<|im_end|>",  # assistant: header, reply, end of turn
        "<|im_start|>", "<unk>", "<unk>", "bad", "<|im_end|>",  # user
        "<|im_start|>", "<unk>", "bad", "movie", "<|im_end|>",  # assistant
    ]
    trained = [i for i, v in enumerate(f["labels"]) if v != -100]
    assert trained == [13, 14, 22, 23, 24]
    assert all(f["labels"][i] == f["input_ids"][i] for i in trained)
    assert [toks[i] for i in trained] == ["good", "<|im_end|>", "bad", "movie", "<|im_end|>"]
    assert end_of_turn_ids(tok)[0] == tok.convert_tokens_to_ids("<|im_end|>")

    # validation loss: per batch, equal to the model's own mean token loss on the same labels
    batch = task.collate([f], pad_id=tok.pad_token_id)
    with torch.no_grad():
        want = model(**batch).loss.item()
    sums = task.logits(model, [f], partial(task.collate, pad_id=tok.pad_token_id), 4)
    m = task.metrics(sums, examples)
    from tunelab.models.precision import resolve_precision  # evaluation runs under bf16 autocast where bf16 is native

    rel = 1e-5 if resolve_precision("auto", torch.device("cpu")) == "fp32" else 1e-3
    assert m["tokens"] == 5 and m["loss"] == pytest.approx(want, rel=rel)
    assert m["perplexity"] == pytest.approx(math.exp(want), rel=rel)


# Qwen3's template (cut to what matters here): the reply after the last user turn opens with a `<think>` block, an
# earlier reply is written without it (a tool-call turn too, and then its calls follow a `\n` only after text of its
# own); Phi-3's writes eos after the last turn only
QWEN3_LIKE = (
    "{%- set ns = namespace(last=0) %}{%- for m in messages %}{%- if m.role == 'user' %}"
    "{%- set ns.last = loop.index0 %}"
    "{%- endif %}{%- endfor %}{%- for m in messages %}{%- if m.role == 'assistant' %}"
    "{%- if loop.index0 > ns.last and loop.last %}"
    "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m.content }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + m.content }}{%- endif %}"
    "{%- for call in m.tool_calls or [] %}"
    "{%- if (loop.first and m.content) or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n' + (call.function | tojson) + '\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif m.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
PHI3 = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")
TWO_TURNS = {"messages": [{"role": U, "content": "say good"}, {"role": A, "content": "good"},
                          {"role": U, "content": "say bad"}, {"role": A, "content": "bad"}]}
THINK = "<think>\n\n</think>\n\n"


@pytest.mark.parametrize(("template", "markers", "row", "spans", "trained"), [
    (QWEN3_LIKE, ["<|im_start|>", "<|im_end|>"], TWO_TURNS, ["good<|im_end|>", f"{THINK}bad<|im_end|>"],
     ["good", "<|im_end|>", *["<unk>"] * 6, "bad", "<|im_end|>"]),
    (PHI3, ["<|user|>", "<|assistant|>", "<|end|>"], TWO_TURNS, ["good<|end|>", "bad<|end|>\n</s>"],
     ["good", "<|end|>", "bad", "<|end|>", "</s>"]),
    (QWEN3_LIKE, ["<|im_start|>", "<|im_end|>"], {"conversations": TOOL_ROW["conversations"]},  # human, function_call,
     [f"<tool_call>\n{CALL}\n</tool_call><|im_end|>", f"{THINK}nice<|im_end|>"],  # observation, gpt
     [*["<unk>"] * 16, "a", *["<unk>"] * 4, "<|im_end|>", *["<unk>"] * 6, "nice", "<|im_end|>"]),
])
def test_a_template_that_writes_earlier_replies_otherwise(template: str, markers: list[str], row: dict,
                                                          spans: list[str], trained: list[str],
                                                          tiny_llama: Path) -> None:
    """Multi-turn rows with a template that writes a reply otherwise once more turns follow (Qwen3 drops its empty
    think block, Phi-3 writes eos only at the end) train every reply as the whole conversation writes it (were refused:
    "not prefix-stable"); a Qwen3 tool-call turn before a tool's result too (its mark was put in the content the
    template does not write)."""
    from transformers import AddedToken, AutoTokenizer

    from tunelab.tasks.chat_template import assistant_spans

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in markers], special_tokens=True)
    tok.chat_template = template
    task = _task(max_length=128)
    task.bind_tokenizer(tok)
    (example,) = task.parse(_table([row]))
    text, found = assistant_spans(tok, example["messages"])
    assert [text[a:b] for a, b in found] == spans
    (f,) = task.encode([example], tok)
    toks = tok.convert_ids_to_tokens(f["input_ids"])
    assert [toks[i] for i, v in enumerate(f["labels"]) if v != -100] == trained


def test_a_turn_end_that_runs_into_the_next_header_is_refused(tiny_llama: Path) -> None:
    """`### end` after the last turn only, `### user:` after the others: the end-of-turn marker matched as far as
    `\n###`, and the next turn's `###` trained as the first reply's. A match that does not end in a special token
    or whitespace is refused, as any template whose turns cannot be located."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    tok.chat_template = ("{% for m in messages %}{{ '### ' + m['role'] + ':\\n' + m['content'] + '\\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% else %}{{ '### end' }}{% endif %}")
    task = _task()
    task.bind_tokenizer(tok)
    with pytest.raises(ConfigError, match="not prefix-stable"):
        task.encode(task.parse(_table([TWO_TURNS])), tok)


def test_gemma_turn_markers_select_the_gemma_template(tiny_llama: Path, tmp_path: Path) -> None:
    """A template-less tokenizer whose vocabulary has <start_of_turn>/<end_of_turn> (Gemma base) gets Gemma's turn
    format on its existing ids (no new embeddings); the system message opens the first user turn."""
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    tok.add_tokens([AddedToken(t, normalized=False) for t in ("<start_of_turn>", "<end_of_turn>")])
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    model.resize_token_embeddings(len(tok))
    base = tmp_path / "gemma-like"
    tok.save_pretrained(base)
    model.save_pretrained(base)
    task = _task()
    msgs = [{"role": S, "content": "be nice"}, {"role": U, "content": "say good"}, {"role": A, "content": "good"}]
    examples = task.parse(_table([{"messages": msgs}]))
    model, tok = task.build_model(str(base), examples)
    assert len(tok) == model.get_input_embeddings().num_embeddings == len(AutoTokenizer.from_pretrained(base))
    assert render(tok, msgs) == ("<s><start_of_turn>user\nbe nice\n\nsay good<end_of_turn>\n"
                                 "<start_of_turn>model\ngood<end_of_turn>\n")
    assert render(tok, msgs[:2], generation_prompt=True).endswith("<end_of_turn>\n<start_of_turn>model\n")
    (f,) = task.encode(examples, tok)
    toks = tok.convert_ids_to_tokens(f["input_ids"])
    assert [toks[i] for i, v in enumerate(f["labels"]) if v != -100] == ["good", "<end_of_turn>"]
    assert end_of_turn_ids(tok)[0] == tok.convert_tokens_to_ids("<end_of_turn>")
    assert Sft(SftConfig(template="chatml"), DataConfig()).build_model(str(base), examples)[1].chat_template.count(
        "<|im_start|>") > 0  # forced ChatML still wins


def test_truncation_counted_and_fully_cut_is_an_error(tiny_llama: Path, capsys: pytest.CaptureFixture) -> None:
    task = _task(max_length=12)
    long_user = " ".join(["good"] * 20)
    rows = [{"prompt": "say bad", "completion": "bad movie plot"},  # 12 tokens (BOS first): fits exactly
            {"prompt": "say bad", "completion": "bad movie plot story"}]  # 13: reply tail cut
    examples = task.parse(_table(rows))
    _, tok = task.build_model(str(tiny_llama), examples)
    feats = task.encode(examples, tok)
    assert [len(f["input_ids"]) for f in feats] == [12, 12] and task.truncated == 1
    assert "sft: 1 of 2 examples cut at data.max_length=12 tokens" in task.cut_note()
    bad = task.parse(_table([rows[0], {"prompt": long_user, "completion": "bad"}]))
    with pytest.raises(DataError, match=r"^d.jsonl:2: completion: the assistant reply starts after "
                                        r"data.max_length=12 tokens"):
        task.encode(bad, tok)
    # a template that rejects a conversation names the row; one that is not prefix-stable is refused
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(DataError, match=r"^d.jsonl:1: completion: chat template: roles must alternate$"):
        task.encode(examples[:1], tok)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}|{{ messages | length }}{% endfor %}"
    with pytest.raises(ConfigError, match="not prefix-stable"):
        task.encode(examples[:1], tok)


def test_lora_on_llama(tiny_llama: Path, tmp_path: Path) -> None:
    from tunelab.config.run import build_config
    from tunelab.registry import METHODS
    from tunelab.training import engine

    cfg = build_config({"task": "sft", "model": str(tiny_llama), "output_dir": str(tmp_path), "method": {"name": "lora",
                        "r": 4}, "train": {"max_steps": 3, "batch_size": 4, "lr": 1e-2, "save_steps": 0}})
    task = Sft(cfg.task, cfg.data)
    examples = task.parse(_table([{"prompt": f"say {w}", "completion": w} for w in WORDS[:8]]))
    model, tok = task.build_model(str(tiny_llama), examples)
    assert task.head_modules(model) == []
    new = task.new_token_ids  # the ChatML markers this tokenizer lacked
    assert [tok.convert_ids_to_tokens(i) for i in new] == ["<|im_start|>", "<|im_end|>"]
    embed0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    method = METHODS.get("lora")(cfg.method)
    model = method.apply(model, [], new)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    rows = [n for n in trainable if "trainable_tokens_delta" in n]  # only the new rows, embedding and (untied) head
    assert len(rows) == 2 and any("embed_tokens" in n for n in rows) and any("lm_head" in n for n in rows)
    assert all("lora_" in n for n in trainable if n not in rows)
    assert any("q_proj" in n for n in trainable) and any("down_proj" in n for n in trainable)
    feats = task.encode(examples, tok)
    result = engine.train(model, feats, partial(task.collate, pad_id=tok.pad_token_id), cfg.train, lr=1e-2)
    assert result.steps == 3 and math.isfinite(result.train_loss)
    merged = method.export(model, tmp_path / "model", tmp_path / "adapter")
    for got, before in ((merged.get_input_embeddings().weight, embed0), (merged.get_output_embeddings().weight, head0)):
        old = [i for i in range(len(before)) if i not in new]
        assert torch.equal(got[old], before[old])  # the rest of the vocabulary is untouched
        assert (got[new] - before[new]).abs().amax(dim=1).min() > 1e-3  # every new row trained


def test_new_token_rows(tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaForCausalLM, PhiConfig, PhiForCausalLM

    from tunelab.methods.lora import token_rows

    short = tmp_path / "short"  # a tokenizer two tokens longer than the embeddings: the resize adds those rows too
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    n = model.get_input_embeddings().num_embeddings
    LlamaForCausalLM(model.config.__class__(**{**model.config.to_dict(), "vocab_size": n - 2})).save_pretrained(short)
    for f in tiny_llama.glob("tok*"):
        (short / f.name).write_bytes(f.read_bytes())
    task = _task()
    model, tok = task.build_model(str(short), [])
    assert task.new_token_ids == [n - 2, n - 1, n, n + 1]  # the two untrained rows, then <|im_start|>, <|im_end|>
    assert token_rows(model, task.new_token_ids) == {"model.embed_tokens": task.new_token_ids,
                                                     "lm_head": task.new_token_ids}
    assert token_rows(model, []) == {}
    phi = PhiForCausalLM(PhiConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4))
    assert phi.lm_head.bias is not None  # peft's trainable-token head would drop the bias: the embedding only
    assert token_rows(phi, [62, 63]) == {"model.embed_tokens": [62, 63]}


def test_methods_that_freeze_embeddings_say_so(tiny_llama: Path, capsys: pytest.CaptureFixture) -> None:
    from tunelab.registry import METHODS

    task = _task()
    model, tok = task.build_model(str(tiny_llama), [])
    freeze = METHODS.get("freeze")(METHODS.get("freeze").Config(k=1))
    capsys.readouterr()
    model = freeze.apply(model, [], task.new_token_ids)
    first, last = task.new_token_ids[0], task.new_token_ids[-1]
    assert capsys.readouterr().err == (f"method freeze: the 2 tokens added to the vocabulary (ids {first}-{last}) keep "
                                       "their initial embeddings; lora, dora, qlora and full train them\n")
    assert not model.get_input_embeddings().weight.requires_grad


def _say(words: list[str]) -> list[dict]:
    return [{"messages": [{"role": U, "content": f"say {w}"}, {"role": A, "content": w}]} for w in words]


def test_cli_train_eval_predict(tiny_llama: Path, tmp_path: Path) -> None:
    words = WORDS[:10]
    train = write_jsonl(tmp_path / "train.jsonl", _say(words * 3))
    val = write_jsonl(tmp_path / "val.jsonl", [{"instruction": f"say {w}", "output": w} for w in words[:6]])
    out = tmp_path / "run"
    # the untrained loss of the same (resized) model
    task = _task()
    val_ex = task.parse(_table([{"instruction": f"say {w}", "output": w} for w in words[:6]]))
    torch.manual_seed(0)
    model0, tok0 = task.build_model(str(tiny_llama), val_ex)
    feats = task.encode(val_ex, tok0)
    untrained = task.metrics(task.logits(model0, feats, partial(task.collate, pad_id=tok0.pad_token_id), 8),
                             val_ex)["loss"]

    runner = CliRunner()
    sets = ["task=sft", f"model={tiny_llama}", f"data.train={train}", f"data.validation={val}", f"output_dir={out}",
            "train.epochs=25", "train.lr=5e-3", "train.batch_size=8", "train.save_steps=0"]
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())["validation"]
    assert m["loss"] < 0.1 * untrained, (m, untrained)
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]))
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(out / "model"))  # the built-in template is saved with the model
    assert saved.chat_template == tok0.chat_template and "<|im_end|>" in saved.get_vocab()

    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(val)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1])["loss"] == pytest.approx(m["loss"], rel=1e-4)

    res = runner.invoke(app, ["predict", str(out / "model"), "--input", "-"], input="say nice\n\nsay great\n\n")
    assert res.exit_code == 0, res.output
    assert "1 blank line left out (no rows): the 2 outputs follow the other lines, in order" in res.stderr
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["text"] for r in got] == ["say nice", "say great"]
    assert [r["response"] for r in got] == ["nice", "great"]
    rows = write_jsonl(tmp_path / "rows.jsonl", _say(["fine"]))
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(rows)])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["messages"] == _say(["fine"])[0]["messages"] and row["response"] == "fine"


def test_unsupported_options_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^config: data.augment: not supported by task sft \(no classes"):
        Sft(SftConfig(), DataConfig(augment={"ops": ["swap"]}))
    with pytest.raises(ConfigError, match=r"^config: data.sampling: not supported by task sft"):
        Sft(SftConfig(), DataConfig(sampling="oversample"))


def test_clean_and_dedup_conversations(tmp_path: Path) -> None:
    from tunelab.data.load import load_splits
    from tunelab.data.report import DataReport

    def chat(user: str, reply: str) -> dict:
        return {"messages": [{"role": U, "content": user}, {"role": A, "content": reply}]}

    train = write_jsonl(tmp_path / "train.jsonl", [
        chat("say <b>good</b>", "good"),
        chat("Say   GOOD", "good"),  # a duplicate of row 1 once cleaned and normalised
        chat("say good", "bad"),  # same prompt, another reply: not a duplicate
        chat("say nice", "<br>"),  # the reply is empty once the HTML is stripped
        {"instruction": "say fine", "output": "fine"},  # alpaca, also in validation
        chat("say great", "great"),
        chat("list two", "  1. a  \n\n\n\n    b，c \n"),  # layout kept: lines, indentation, full-width comma
    ])
    val = write_jsonl(tmp_path / "val.jsonl", [chat("say fine", "fine"), chat("say ok", "ok")])
    data = DataConfig(train=str(train), validation=str(val), clean=True, dedup=True)
    report = DataReport()
    splits = load_splits(data, Sft(SftConfig(), data), 0, report)
    assert [ex["line"] for ex in splits["train"]] == [1, 3, 6, 7] and len(splits["validation"]) == 2
    assert splits["train"][0]["messages"][0]["content"] == "say good"  # cleaned
    assert splits["train"][3]["messages"][1]["content"] == "  1. a\n\n    b，c"
    removed = {r["line"]: r for r in report.removed}
    assert removed[2]["reason"] == "duplicate" and removed[2]["duplicate_of"] == f"{train}:1"
    assert removed[4]["reason"] == "empty_after_cleaning"
    assert (removed[4]["field"], removed[4]["turn"], removed[4]["role"]) == ("messages", 2, A)
    assert removed[5]["reason"] == "in_validation" and removed[5]["row"] == {"instruction": "say fine",
                                                                             "output": "fine"}


def test_rows_that_differ_in_a_turns_weight_are_not_duplicates(tiny_llama: Path, tmp_path: Path) -> None:
    """Axolotl's per-turn weight is part of what a row trains on: two rows that differ only in which turn has weight 0
    were one row to data.dedup (the second dropped) and to data check's duplicate count; both are kept now (a true
    repeat still goes), and an older run's rows read again by its text rules (2) are compared as it compared them."""
    from tunelab.data.dedup import duplicate_keys
    from tunelab.data.load import load_splits
    from tunelab.data.report import DataReport
    from tunelab.text import text_rules

    def chat(weights: tuple[int, int]) -> dict:
        return {"messages": [{"role": U, "content": "say good"}, {"role": A, "content": "good", "weight": weights[0]},
                             {"role": U, "content": "say bad"}, {"role": A, "content": "bad", "weight": weights[1]}]}

    train = write_jsonl(tmp_path / "train.jsonl", [chat((0, 1)), chat((1, 0)), chat((1, 0)), chat((1, 1))])
    val = write_jsonl(tmp_path / "val.jsonl", _say(["nice"]))
    data = DataConfig(train=str(train), validation=str(val), dedup=True)
    report = DataReport()
    splits = load_splits(data, Sft(SftConfig(), data), 0, report)
    assert [ex["line"] for ex in splits["train"]] == [1, 2, 4]
    assert [(r["line"], r["duplicate_of"]) for r in report.removed] == [(3, f"{train}:2")]
    res = CliRunner().invoke(app, ["data", "check", str(train), "--task", "sft", "--model", str(tiny_llama), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"][str(train)]["duplicates_exact"] == 1
    examples = _task().parse(_table([chat((0, 1)), chat((1, 0))]))
    with text_rules(2):
        assert duplicate_keys(examples[0]) == duplicate_keys(examples[1])


@pytest.mark.parametrize("chunk", [8192, 2])
def test_data_check_sft(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(data_check, "CHAT_CHUNK", chunk)  # 2: conversations encoded two at a time, same report
    rows = [*_say(["good", "good", "nice"]),
            {"messages": [{"role": S, "content": "be brief"}, {"role": U, "content": "say " + "fine " * 30},
                          {"role": A, "content": "fine"}]},
            {"prompt": "say great", "completion": "great " * 20}]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    res = CliRunner().invoke(app, ["data", "check", str(path), "--task", "sft", "--model", str(tiny_llama), "--json",
                                   "--set", "data.max_length=24"])
    # the report, then the line train refuses the row with (it passed, exit 0, a config train refuses): exit 2
    assert res.exit_code == 2 and res.stderr == (
        f"error: {path}:4: messages: the assistant reply starts after data.max_length=24 tokens; raise "
        "data.max_length, shorten the prompt, or set data.truncation: head+tail (cuts the middle of the prompt's "
        "longest message instead)\n"), res.output
    r = json.loads(res.stdout)["files"][str(path)]
    assert (r["rows"], r["turns"], r["duplicates_exact"]) == (5, {U: 5, A: 5, S: 1}, 1)
    assert r["replies_fully_cut"] == [f"{path}:4"]  # its reply starts after 24 tokens: training refuses this row
    assert r["replies_partly_cut"] == 1 and r["over_max_length"] == 2
    task = _task()
    tok = task.load_tokenizer(str(tiny_llama))  # the lengths are those of the ChatML rendering training uses
    feats = task.encode(task.parse(_table(rows[:1])), tok)
    assert r["token_length"]["p50"] == len(feats[0]["input_ids"])
    assert r["assistant_tokens"]["p50"] == sum(t != -100 for t in feats[0]["labels"])
    res = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["data", "check", str(path), "--task", "sft", "--model",
                                                          str(tiny_llama), "--set", "data.max_length=24"])
    assert res.exit_code == 2 and "1 partly; 1 entirely" in res.stdout and f"{path.name}:4" in res.stdout


def test_packing_is_refused_where_packed_examples_would_see_each_other(tiny_llama: Path, tmp_path: Path) -> None:
    """OPT (and MPT, Bloom) build one causal mask over a packed row, ignoring where positions restart: each example
    attended to the ones before it. Measured on the loaded model: refused in one line; Llama packs."""
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    opt = tmp_path / "opt"
    config = OPTConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                       max_position_embeddings=64, word_embed_proj_dim=16)
    OPTForCausalLM(config).save_pretrained(opt)
    tok.save_pretrained(opt)
    with pytest.raises(ConfigError, match=r"^config: task.packing: OPTForCausalLM would let packed examples attend to "
                                          r"each other \(its attention mask ignores where positions restart\)"):
        _task(packing=True).build_model(str(opt), [])
    _task(packing=True).build_model(str(tiny_llama), [])
    _task().build_model(str(opt), [])  # unpacked: rows padded, each its own


def test_an_encoder_is_refused_as_it_would_read_the_replies_it_learns(tiny_bert: Path, tmp_path: Path) -> None:
    """AutoModelForCausalLM gives a BERT a BertLMHeadModel that still attends both ways (no is_decoder): it trained
    silently on next tokens it could see. Measured on the loaded model, refused in one line; the train command too."""
    with pytest.raises(ConfigError, match=r"^config: model: task sft trains a causal LM, and .* \(BertLMHeadModel\) "
                                          r"attends to the tokens after each position"):
        _task().build_model(str(tiny_bert), [])
    rows = write_jsonl(tmp_path / "t.jsonl", [{"messages": [{"role": U, "content": w}, {"role": A, "content": w}]}
                                              for w in WORDS[:4]])
    res = CliRunner().invoke(app, ["train", "--set", "task=sft", "--set", f"model={tiny_bert}", "--set",
                                   f"data.train={rows}", "--set", f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "task sft trains a causal LM" in res.output


def test_reasoning_content_trains_in_the_think_block(tiny_llama: Path, tmp_path: Path) -> None:
    """An assistant turn's `reasoning_content` (Qwen3's field) trains inside the think block its template writes, as
    the reasoning a reply's content writes before `</think>` does (it was dropped: the row trained an empty block);
    in the duplicate key; one line where it is no string, on another role, or on a template that leaves it out."""
    from transformers import AutoTokenizer

    from conftest import make_tiny_qwen3
    from tunelab.data.dedup import compared_texts

    tok = AutoTokenizer.from_pretrained(make_tiny_qwen3(tmp_path / "qwen3"))
    said = {"role": A, "content": "good", "reasoning_content": "hmm good"}
    inline = {"role": A, "content": "<think>\nhmm good\n</think>\n\ngood"}
    task = _task()
    task.bind_tokenizer(tok)
    for reply in (said, inline):
        (f,) = task.encode(task.parse(_table([{"messages": [{"role": U, "content": "say good"}, reply]}])), tok)
        toks = tok.convert_ids_to_tokens(f["input_ids"])
        assert [toks[i] for i, v in enumerate(f["labels"]) if v != -100] == ["<think>", "hmm", "good", "</think>",
                                                                             "good", "<|im_end|>"]
    rows = task.parse(_table([{"messages": [{"role": U, "content": "say good"}, said]},
                              {"messages": [{"role": U, "content": "say good"}, {**said, "reasoning_content": "x"}]}]))
    assert compared_texts(rows[0]) != compared_texts(rows[1])  # two rows, not one row twice
    for turn, why in (({"role": A, "content": "good", "reasoning_content": 3}, "turn 2: reasoning_content: not a "
                       "string: int"), ({"role": U, "content": "hi", "reasoning_content": "x"},
                                        "turn 1: reasoning_content: only on an assistant turn")):
        msgs = [turn, {"role": A, "content": "x"}] if turn["role"] == U else [{"role": U, "content": "x"}, turn]
        with pytest.raises(DataError, match=rf"^d.jsonl:1: messages: {why}$"):
            task.parse(_table([{"messages": msgs}]))
    chatml = AutoTokenizer.from_pretrained(str(tiny_llama))
    chatml.chat_template = QWEN3_LIKE  # writes a think block, not the turn's reasoning
    task.bind_tokenizer(chatml)
    with pytest.raises(DataError, match=r"^d.jsonl:1: messages: reasoning_content: the model's chat template does "
                                        r"not write an assistant turn's reasoning"):
        task.encode(rows[:1], chatml)


def test_reasoning_an_earlier_turn_the_template_leaves_out_is_said_once_a_file(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    """Qwen3's template writes a think block only after the last user turn: a 2-exchange row with reasoning on both
    turns trains the last turn's only, and the first's was dropped without a word (sft.md said it is trained). One note
    a file names it and the first row; a row whose reasoning is all written says nothing."""
    from transformers import AutoTokenizer

    from conftest import make_tiny_qwen3

    tok = AutoTokenizer.from_pretrained(make_tiny_qwen3(tmp_path / "qwen3"))
    one = [{"role": U, "content": "say good"}, {"role": A, "content": "good", "reasoning_content": "hmm good"}]
    two = [*one, {"role": U, "content": "say bad"}, {"role": A, "content": "bad", "reasoning_content": "hmm bad"}]
    task = _task(max_length=128)
    task.bind_tokenizer(tok)
    task.encode(task.parse(_table([{"messages": one}])), tok)
    assert "reasoning_content" not in capsys.readouterr().err
    feats = task.encode(task.parse(_table([{"messages": one}, {"messages": two}, {"messages": two}])), tok)
    toks = tok.convert_ids_to_tokens(feats[1]["input_ids"])
    assert [toks[i] for i, v in enumerate(feats[1]["labels"]) if v != -100] == [
        "good", "<|im_end|>", "<think>", "hmm", "bad", "</think>", "bad", "<|im_end|>"]  # the first's not there
    task.encode(task.parse(_table([{"messages": two}])), tok)  # the same file again (a part, a later split)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err == ("note: d.jsonl: reasoning_content of an assistant turn the chat template "
                                            "leaves out (Qwen3's writes it only after the last user turn) is not "
                                            "trained (e.g. line 2)\n"), err


def test_qwen3_replies_come_without_their_think_block(qwen3_think_run: Path, tmp_path: Path) -> None:
    """A Qwen3 model's reply that opens with a think block: predict's `response` and eval's scored prediction are
    the text after it, the reasoning beside them (`reasoning`); eval's reference written with one is scored without
    it too (the block had been scored against the reference: exact match 0)."""
    data = write_jsonl(tmp_path / "val.jsonl", [
        {"messages": [{"role": U, "content": "say good"}, {"role": A, "content": "good"}]},
        {"messages": [{"role": U, "content": "say good"}, {"role": A, "content": "<think>\nhmm\n</think>\n\ngood"}]}])
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["predict", str(qwen3_think_run / "model"), "--input", str(data), "--output",
                                   str(out)])
    assert res.exit_code == 0, res.output
    assert [(r["response"], r["reasoning"]) for r in map(json.loads, out.read_text().splitlines())] == [
        ("good", "hmm")] * 2
    gen = tmp_path / "gen.jsonl"
    res = CliRunner().invoke(app, ["eval", str(qwen3_think_run / "model"), "--data", str(data), "--predictions",
                                   str(gen)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in gen.read_text().splitlines()]
    assert [(r["reference"], r["prediction"], r["reasoning"], r["exact_match"]) for r in rows] == [
        ("good", "good", "hmm", 1.0)] * 2
