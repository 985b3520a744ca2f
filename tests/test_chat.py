"""`tunelab chat`: a tuned tiny model answers over stdin, the conversation is kept, replies stream and stop
at end-of-turn, exit / EOF end it, old turns are left out when the context is full, Ctrl-C stops generating."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.cli.chat import run_chat
from tunelab.export.save import load_model
from tunelab.tasks.chat_template import prompt_ids
from tunelab.tasks.generation import GenerationConfig
from tunelab.tasks.sft import end_of_turn_ids
from tunelab.tasks.streaming import fit_prompt, stream_reply


def test_cli_chat_answers_each_line_until_exit(tiny_chat_run: Path) -> None:
    res = CliRunner().invoke(app, ["chat", str(tiny_chat_run / "model"), "--max-new-tokens", "6"],
                             input="say nice\n\n/reset\nsay great\nexit\nsay bad\n")
    assert res.exit_code == 0, res.output
    # prompts and replies on stdout; the reply stops at <|im_end|> (no more tokens, no marker shown); an empty
    # line only prompts again; the model learnt single-turn rows only, so /reset before the next question
    assert res.stdout.splitlines() == [">>> nice", ">>> >>> >>> great", ">>> "]
    assert "(conversation cleared)" in res.stderr
    assert "chat with" in res.stderr and "greedy" in res.stderr


def test_eof_ends_and_the_conversation_is_kept(tiny_chat_run: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    n = run_chat(tiny_chat_run / "model", system="be brief", temperature=0.0, stdin=io.StringIO("say fine\nsay good\n"),
                 stdout=out, stderr=err)
    assert n == 2 and out.getvalue().splitlines()[0] == ">>> fine"
    assert out.getvalue().endswith(">>> \n")  # end of input: a new line after the last prompt


def test_streamed_text_is_the_reply_and_history_is_rendered(tiny_chat_run: Path) -> None:
    _, model, tok = load_model(tiny_chat_run / "model")
    stop = end_of_turn_ids(tok)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say happy"}]
    out = io.StringIO()
    reply = stream_reply(model, tok, prompt_ids(tok, msgs), GenerationConfig(max_new_tokens=8), stop, out)
    assert reply == "happy" and out.getvalue().strip() == "happy"
    # the next prompt holds the whole conversation, rendered with the saved template
    history = [*msgs, {"role": "assistant", "content": reply}, {"role": "user", "content": "say love"}]
    ids, dropped = fit_prompt(tok, history, None)
    assert dropped == 0 and tok.decode(ids).count("<|im_start|>") == 5
    # too long for the budget: the oldest exchange goes, the system message and the last turn stay
    short, dropped = fit_prompt(tok, history, len(ids) - 1)
    assert dropped == 2 and short == prompt_ids(tok, [history[0], history[3]])


def test_interrupt_stops_generation(tiny_llama: Path) -> None:
    from tunelab.config.run import run_config_class
    from tunelab.config.sections import DataConfig

    run_config_class()
    from tunelab.tasks.sft import Sft, SftConfig

    task = Sft(SftConfig(), DataConfig())
    model, tok = task.build_model(str(tiny_llama), [])  # untrained: replies run on for many tokens
    stop = [-1]  # no end-of-turn: each reply runs to max_new_tokens unless interrupted
    ids = prompt_ids(tok, [{"role": "user", "content": "say sad"}])
    cfg = GenerationConfig(max_new_tokens=12)
    full = stream_reply(model, tok, ids, cfg, stop, io.StringIO())
    event = threading.Event()
    event.set()  # as Ctrl-C does: the stopping criterion ends generation after the first token
    cut = stream_reply(model, tok, ids, cfg, stop, io.StringIO(), event)
    assert len(tok(full, add_special_tokens=False)["input_ids"]) > 2
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= 1 and full.startswith(cut)


def test_chat_needs_an_sft_model(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["chat", str(tmp_path)], input="hi\n")
    assert res.exit_code == 2 and "not a tunelab model directory" in res.output


def test_a_template_that_refuses_a_system_turn_and_a_prompt_template(tiny_chat_run: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`--system` where the model's own template refuses a system turn (Gemma-2's): one line, not a jinja traceback;
    a run trained with a one-placeholder prompt_template gets each chat line as it trained (as predict fills it): the
    last user turn filled in, the turns before it plain, as training reads a row's history (chat, serve and the UI
    filled every user turn in); and every turn — a tool's result, the system message — cleaned by data.clean as
    training cleans a row's (serve cleaned the user turns only)."""
    import shutil

    from tunelab.config.run import run_config_class
    from tunelab.config.sections import DataConfig
    from tunelab.data.readers import Record, Table
    from tunelab.errors import TunelabError

    model = tmp_path / "model"
    shutil.copytree(tiny_chat_run / "model", model)
    template = model / "chat_template.jinja"
    template.write_text("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                        "{% endif %}" + template.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(TunelabError, match=r"^--system: the model's chat template refuses a system message: System "
                                           r"role not supported$"):
        run_chat(model, system="be nice", stdin=io.StringIO("say good\n"), stdout=io.StringIO(),
                 stderr=io.StringIO())
    run_config_class()
    from tunelab.tasks.sft import Sft, SftConfig

    assert Sft(SftConfig(prompt_template="say {word}", response_field="reply"), DataConfig()).chat_turn("good") == \
        "say good"
    assert Sft(SftConfig(), DataConfig()).chat_turn("good") == "good"
    assert Sft(SftConfig(prompt_template="Answer: {question}", response_field="text"), DataConfig()).chat_turn(
        "what is 2+2?") == "Answer: what is 2+2?"  # (whatever the reply's column is called)
    from tunelab.tasks.chat_template import chat_turns  # serve's chat endpoint and the UI playground send as chat does

    task = Sft(SftConfig(prompt_template="say {word}", response_field="reply"), DataConfig())
    sent = chat_turns(task, [{"role": "system", "content": "be nice"}, {"role": "user", "content": "good"},
                             {"role": "assistant", "content": "good"}, {"role": "user", "content": "bad"}])
    assert sent == [{"role": "system", "content": "be nice"}, {"role": "user", "content": "good"},
                    {"role": "assistant", "content": "good"}, {"role": "user", "content": "say bad"}]
    row = {"word": "bad", "system": "be nice", "history": [["good", "good"]]}  # the same conversation as a row
    assert task.parse(Table("d.jsonl", [Record("d.jsonl", 1, row)]), labelled=False)[0]["messages"] == sent
    from tunelab.config.sections import CleanConfig
    from tunelab.data.hygiene import clean_text
    from tunelab.serve.schemas import ChatRequest
    from tunelab.serve.tools import request_messages

    cfg = CleanConfig()  # data.clean cleans every turn of a training row: a tool's result reached serve's template raw
    html = [{"role": "system", "content": "be <b>nice</b>"}, {"role": "user", "content": "weather <b>a</b>"},
            {"role": "assistant", "content": "<i>let me see</i>", "tool_calls": [
                {"type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "content": "<p>sunny&amp;warm</p>"}]
    sent = chat_turns(Sft(SftConfig(), DataConfig(clean=cfg)), request_messages(ChatRequest(messages=html)))
    assert [m["content"] for m in sent] == [clean_text(m["content"], cfg, layout=True) for m in html]
    assert "<" not in str(sent) and sent[2]["said"] == sent[2]["content"]  # (the text beside the calls too)

    from tunelab.cli import chat

    shutil.copy(tiny_chat_run / "model" / "chat_template.jinja", template)  # `tunelab chat` with a prompt_template
    saved = json.loads((model / "tunelab.json").read_text(encoding="utf-8"))
    saved["task"] |= {"prompt_template": "say {word}", "response_field": "reply"}
    (model / "tunelab.json").write_text(json.dumps(saved), encoding="utf-8")
    prompts = []
    monkeypatch.setattr(chat, "fit_prompt", lambda tok, msgs, budget: (prompts.append(msgs), fit_prompt(tok, msgs,
                                                                                                       budget))[1])
    run_chat(model, stdin=io.StringIO("good\nbad\n"), stdout=io.StringIO(), stderr=io.StringIO())
    assert [[m["content"] for m in p if m["role"] == "user"] for p in prompts] == [["say good"], ["good", "say bad"]]
