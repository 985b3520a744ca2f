"""Tool calls in `tunelab serve`'s chat replies in each format a chat template writes them in — Llama 3.1's bare JSON,
Mistral v0.3's `[TOOL_CALLS]` list, newer Mistral's `[TOOL_CALLS]name[ARGS]{...}` — told from the template and read
back as OpenAI's `tool_calls` (Hermes' `<tool_call>` tags: test_serve_openai.py). The templates are written here,
each modelled on its family's tool-call part, on copies of the tiny chat run whose replies are forced."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import CALL, TOOL_TEMPLATE, WEATHER, serve_on_loopback

pytest.importorskip("fastapi")

LLAMA31 = (  # Llama 3.1 / 3.2's: the tools in the system turn, a call as the turn's bare JSON ("parameters")
    "{{ bos_token }}{% if tools %}{{ '<|start_header_id|>system<|end_header_id|>\\n\\nEnvironment: ipython\\n' }}"
    "{% for t in tools %}{{ (t | tojson) + '\\n' }}{% endfor %}{{ '<|eot_id|>' }}{% endif %}"
    "{% for m in messages %}{% if m['tool_calls'] %}"
    "{% if m['tool_calls'] | length != 1 %}{{ raise_exception('This model only supports single tool-calls at once!') }}"
    "{% endif %}{% set call = m['tool_calls'][0]['function'] %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' + '{\"name\": \"' + call['name'] + '\", ' }}"
    "{{ '\"parameters\": ' + (call['arguments'] | tojson) + '}' + '<|eot_id|>' }}"
    "{% elif m['role'] == 'tool' %}"
    "{{ '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}"
    "{% else %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
MISTRAL_V03 = (  # Mistral v0.3's / Nemo's: `[TOOL_CALLS] [` a JSON list of the calls with their 9-character ids `]`
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% if tools and loop.first %}{{ '[AVAILABLE_TOOLS] ' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}{% endif %}"
    "{{ '[INST] ' + m['content'] + '[/INST]' }}"
    "{% elif m['tool_calls'] %}{{ '[TOOL_CALLS] [' }}{% for c in m['tool_calls'] %}"
    "{% set out = c['function'] | tojson %}{{ out[:-1] }}"
    "{% if c['id'] is not defined or c['id'] | length != 9 %}"
    "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{% endif %}"
    "{{ ', \"id\": \"' + c['id'] + '\"}' }}{% if not loop.last %}{{ ', ' }}{% else %}{{ ']' + eos_token }}{% endif %}"
    "{% endfor %}{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + eos_token }}"
    "{% elif m['role'] == 'tool' %}"
    "{{ '[TOOL_RESULTS] {\"content\": ' + (m['content'] | tojson) + ', \"call_id\": \"' + m['tool_call_id'] + '\"}' }}"
    "{{ '[/TOOL_RESULTS]' }}{% endif %}{% endfor %}"
)
MISTRAL_ARGS = (  # newer Mistral templates' (Mistral Small 3.2, Magistral, Devstral): `[TOOL_CALLS]name[ARGS]{...}`
    "{{ bos_token }}{% if tools %}{{ '[AVAILABLE_TOOLS]' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST]' + m['content'] + '[/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{% for c in m['tool_calls'] or [] %}"
    "{% set arguments = c['function']['arguments'] %}{% if arguments is not string %}"
    "{% set arguments = arguments | tojson %}{% elif arguments == '' %}{% set arguments = '{}' %}{% endif %}"
    "{{ '[TOOL_CALLS]' + c['function']['name'] + '[ARGS]' + arguments }}{% endfor %}{{ eos_token }}"
    "{% elif m['role'] == 'tool' %}{{ '[TOOL_RESULTS]' + m['content'] + '[/TOOL_RESULTS]' }}{% endif %}{% endfor %}"
)
CITY = {"name": "get_weather", "arguments": '{"city": "a"}'}, {"name": "get_weather", "arguments": '{"city": "b"}'}
LLAMA_A, LLAMA_B = (json.dumps({"name": "get_weather", "parameters": {"city": c}}) for c in "ab")
MISTRAL_LIST = json.dumps([{"name": "get_weather", "arguments": {"city": c}, "id": f"call0000{i}"}
                           for i, c in enumerate("ab", 1)])
ARGS_A = json.dumps({"city": "a"})
DEEP = '{"a": ' + "[" * 1100  # past the JSON reader's nesting (RecursionError)
SURROGATE = '{"name": "get_weather\\ud83d", "parameters": {"city": "a"}}'  # a name no answer can carry
MISTRAL_TAGS = ["[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]",
                "[/TOOL_RESULTS]"]
# name -> (template, special tokens, other tokens, the reply forced: its tokens, then its content and calls)
FAMILIES = {
    "llama": (LLAMA31, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>", "<|eom_id|>"],
              [LLAMA_A, ";", LLAMA_B, DEEP, SURROGATE, "sunny"],
              ["<|python_tag|>", LLAMA_A, ";", LLAMA_B, "<|eot_id|>"], None, list(CITY)),
    "mistral": (MISTRAL_V03, MISTRAL_TAGS, [MISTRAL_LIST], ["[TOOL_CALLS]", MISTRAL_LIST, "</s>"], None, list(CITY)),
    "mistral_args": (MISTRAL_ARGS, [*MISTRAL_TAGS, "[ARGS]"], ["get_weather", ARGS_A],
                     ["good", "[TOOL_CALLS]", "get_weather", "[ARGS]", ARGS_A, "</s>"], "good", [CITY[0]]),
}
TOOLS = [{"type": "function", "function": WEATHER}]
SAY_GOOD = [{"role": "user", "content": "say good"}]


def test_the_call_format_is_told_from_the_chat_template(tiny_llama: Path) -> None:
    """What the template writes for a call turn is what the model learned to write: Hermes' tags, Llama 3.1's bare
    JSON, Mistral's `[TOOL_CALLS]` list or `[TOOL_CALLS]name[ARGS]`; a template that writes calls another way (or
    none) has no format, and its replies stay text."""
    from transformers import AutoTokenizer

    from tunelab.serve.tool_formats import call_format
    from tunelab.tasks.chat_template import CHATML

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    listed = TOOL_TEMPLATE.replace("<tool_call>\\n' + (", "' + (").replace("\\n</tool_call>", "")  # bare JSON after
    # the turn's text: Qwen2.5's without its tags (a ChatML turn that opens with the call: Llama's format)
    as_list = ("{% for m in messages %}{{ m['content'] }}"  # OpenAI's list written as is: no format
               "{% if m['tool_calls'] %}{{ m['tool_calls'] | tojson }}{% endif %}{% endfor %}")
    with_ids = MISTRAL_ARGS.replace("'[ARGS]'", "'[CALL_ID]' + c['id'] + '[ARGS]'")  # (those that write ids)
    assert listed != TOOL_TEMPLATE and with_ids != MISTRAL_ARGS
    for template, told in ((TOOL_TEMPLATE, "hermes"), (LLAMA31, "json"), (MISTRAL_V03, "mistral"),
                           (MISTRAL_ARGS, "mistral_args"), (with_ids, "mistral_args"), (listed, "json"),
                           (CHATML, None), (as_list, None),
                           (LLAMA31.replace("\"parameters\"", "\"args\""), None)):
        tok.chat_template = template
        found = call_format(tok)
        assert (found and found.name) == told, template


def streamed(fmt: object, text: str, stops: tuple[str, ...] = ()) -> tuple[str, list]:
    """(the text sent, the calls) of a reply written a character at a time, as tokens come."""
    from tunelab.serve.completion import _Stream

    out: list[str] = []
    stream = _Stream(list(stops), trim=True, calls=fmt)  # type: ignore[arg-type]
    stream.emit = out.append
    for char in text:
        stream.write(char)
    stream.flush()
    return "".join(out), [c["function"] for c in stream.tool_calls]


def test_each_format_is_read_as_calls_only_where_it_is_calls() -> None:
    """A reply in the format is its calls (the text before a tag its content); one cut off (max_tokens), with text
    after the calls, JSON that is not a call's, or Llama's JSON after text, is the reply's text, whole."""
    from tunelab.serve.tool_formats import JSON, MISTRAL, MISTRAL_ARGS

    a, b = list(CITY)
    args_b = json.dumps({"city": "b"})
    for fmt, text, told in (
            (JSON, LLAMA_A, ("", [a])),
            (JSON, f"<|python_tag|>{LLAMA_A}; {LLAMA_B}", ("", [a, b])),
            (JSON, f"  {LLAMA_A} ;\n{LLAMA_B};", ("", [a, b])),
            (JSON, f"Let me look.<|python_tag|>{LLAMA_A}", ("Let me look.", [a])),
            (JSON, '{"name": "get_weather", "arguments": {"city": "a"}}', ("", [a])),
            (MISTRAL, f"[TOOL_CALLS] {MISTRAL_LIST}", ("", [a, b])),
            (MISTRAL, f"Let me look. [TOOL_CALLS][{CALL}]", ("Let me look.", [a])),
            (MISTRAL_ARGS, f"[TOOL_CALLS]get_weather[ARGS]{ARGS_A}[TOOL_CALLS]get_weather[ARGS]{args_b}",
             ("", [a, b])),
            (MISTRAL_ARGS, f"ok [TOOL_CALLS] get_weather [ARGS] {ARGS_A}", ("ok", [a])),
            (MISTRAL_ARGS, f"[TOOL_CALLS]get_weather[CALL_ID]call00001[ARGS]{ARGS_A}", ("", [a]))):
        assert streamed(fmt, text) == told, text
    for fmt, text in (
            (JSON, LLAMA_A[:-1]), (JSON, f"{LLAMA_A} that is all"), (JSON, f"it is {LLAMA_A}"),
            (JSON, '{"name": "get_weather"}'), (JSON, '{"name": "f", "parameters": {}, "arguments": {}}'),
            (JSON, '{"name": "f", "parameters": [1]}'), (JSON, f"{LLAMA_A}, {LLAMA_B}"), (JSON, "{} is empty"),
            (JSON, '{"name": "f", "parameters": {"a": NaN}}'), (JSON, f"<|python_tag|>{LLAMA_A} <|python_tag|>"),
            (MISTRAL, f"[TOOL_CALLS] {MISTRAL_LIST[:-2]}"), (MISTRAL, f"[TOOL_CALLS] {CALL}"),
            (MISTRAL, f"[TOOL_CALLS] {MISTRAL_LIST} done"), (MISTRAL, "[TOOL_CALLS] []"), (MISTRAL, "[TOOL_CA"),
            (MISTRAL_ARGS, "[TOOL_CALLS]get_weather"), (MISTRAL_ARGS, f"[TOOL_CALLS]get weather[ARGS]{ARGS_A}"),
            (MISTRAL_ARGS, f"[TOOL_CALLS]get_weather[ARGS]{ARGS_A} done"),
            (MISTRAL_ARGS, "[TOOL_CALLS]get_weather[ARGS][1]")):
        assert streamed(fmt, text) == (text.strip(), []), text
    assert streamed(JSON, LLAMA_A, stops=("city",)) == (LLAMA_A[:LLAMA_A.index("city")], [])  # cut at a stop: text


def test_a_reply_json_cannot_read_or_no_answer_can_carry_is_text() -> None:
    """JSON nested past the reader's limit (RecursionError) or an int of 4300+ digits (ValueError) raised out of the
    reader, hanging the request (below), and a call named with a lone surrogate (`"\\ud83d"`) was returned, a 500 /
    a cut stream: each is the reply's text."""
    from tunelab.serve.tool_formats import HERMES, JSON, MISTRAL

    deep, digits = "[" * 1100, "1" * 4400
    for fmt, text in (
            (JSON, DEEP), (JSON, f'{{"name": "get_weather", "parameters": {{"n": {digits}}}}}'), (JSON, SURROGATE),
            (HERMES, f"<tool_call>{deep}</tool_call>"), (HERMES, f"<tool_call>{digits}</tool_call>"),
            (MISTRAL, f"[TOOL_CALLS] {deep}"),
            (MISTRAL, f'[TOOL_CALLS] [{{"name": "get_weather", "arguments": "{deep}"}}]'),  # (arguments as JSON text)
            (MISTRAL, '[TOOL_CALLS] [{"name": "get_\\udc00weather", "arguments": {}}]')):
        assert streamed(fmt, text) == (text.strip(), []), text[:60]


@pytest.fixture(scope="module")
def family_runs(tiny_chat_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny chat run with each family's template and its tokens (the tags special, as those models have them;
    a call's JSON one token, so that the model can write it), one run a family."""
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer

    runs = {}
    for name, (template, special, plain, *_) in FAMILIES.items():
        run = runs[name] = tmp_path_factory.mktemp("tool-formats") / name
        shutil.copytree(tiny_chat_run, run)
        tok = AutoTokenizer.from_pretrained(run / "model")
        tok.chat_template = template
        tok.add_tokens([AddedToken(t, normalized=False, special=True) for t in special]
                       + [AddedToken(t, normalized=False) for t in plain])
        tok.save_pretrained(run / "model")
        model = AutoModelForCausalLM.from_pretrained(run / "model")
        model.resize_token_embeddings(len(tok))
        if name == "llama":  # as Llama 3.1's generation_config: <|eom_id|> (a call's end) among its eos ids
            model.generation_config.eos_token_id = [tok.eos_token_id,
                                                    *tok.convert_tokens_to_ids(["<|eom_id|>", "<|eot_id|>"])]
        model.save_pretrained(run / "model")
    return runs


@pytest.fixture(scope="module")
def families(family_runs: dict[str, Path]) -> Iterator[tuple[str, object]]:
    yield from serve_on_loopback(list(family_runs.values()), max_tokens=16)


def events(url: str, body: dict, done: list[bool] | None = None, timeout: float = 60) -> list[dict]:
    """A stream's events (`done`: given, told whether it ended with `data: [DONE]`)."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=timeout) as res:
        assert res.status_code == 200
        lines = [line for line in res.iter_lines() if line.startswith("data: ")]
    if done is not None:
        done.append(lines[-1:] == ["data: [DONE]"])
    return [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]


@contextmanager
def forcing(served: object, tokens: list[str]) -> Iterator[list[int]]:
    """The served model made to write `tokens` (their ids, yielded), then the first again, whatever it is given."""
    import torch

    ids = served.model.tokenizer.convert_tokens_to_ids(tokens)  # type: ignore[attr-defined]
    after = dict(zip(ids, ids[1:], strict=False))

    def write(module: torch.nn.Module, args: object, kwargs: dict, output: object) -> object:
        want = [after.get(int(t), ids[0]) for t in kwargs["input_ids"][:, -1]]
        output.logits[:, -1, :] = -1e4  # type: ignore[attr-defined]
        output.logits[range(len(want)), -1, want] = 0  # type: ignore[attr-defined]
        return output

    hook = served.model.module.register_forward_hook(write, with_kwargs=True)  # type: ignore[attr-defined]
    try:
        yield ids
    finally:
        hook.remove()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_calls_in_each_family_s_format_come_back_as_tool_calls(families: tuple[str, object], family: str) -> None:
    """A model whose template writes calls as Llama 3.1's JSON or Mistral's `[TOOL_CALLS]` had its calls returned as
    text: they come back as OpenAI's `tool_calls` (finish_reason "tool_calls"), in the JSON answer and the stream,
    the text before them as `content`, the tags kept though they are special tokens, and go back as the client dumps
    them; with `tool_choice: "none"` the reply is its text (the special tags left out, as every special token is)."""
    from openai import OpenAI

    url, server = families
    served = server.by_name[family]  # type: ignore[attr-defined]
    tok = served.model.tokenizer
    *_, forced, content, calls = FAMILIES[family]
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    body = {"model": family, "messages": SAY_GOOD, "tools": TOOLS, "max_tokens": 12, "temperature": 0}
    with forcing(served, forced) as ids:  # the model made to write the reply, then end its turn
        reply = client.chat.completions.create(**body).choices[0]  # type: ignore[call-overload]
        chunks = events(url, body)
        unread = client.chat.completions.create(**body, tool_choice="none").choices[0]  # type: ignore[call-overload]
    assert reply.finish_reason == "tool_calls" and reply.message.content == content, reply
    assert [c.function.model_dump() for c in reply.message.tool_calls] == calls
    assert all(c.type == "function" and c.id.startswith("call_") for c in reply.message.tool_calls)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "".join(d.get("content") or "" for d in deltas) == (content or "")
    assert [[c["function"] for c in d["tool_calls"]] for d in deltas if "tool_calls" in d] == [calls]
    assert unread.finish_reason == "stop"
    assert unread.message.content == tok.decode(ids, skip_special_tokens=True).strip()

    made = reply.message.model_dump()  # back with a result for each call (Llama 3.1's template takes one call a turn)
    made["tool_calls"] = made["tool_calls"][:1] if family == "llama" else made["tool_calls"]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "nice"} for c in made["tool_calls"]]
    back = [*SAY_GOOD, made, *results]
    res = httpx.post(f"{url}/v1/chat/completions", json={**body, "messages": back, "max_tokens": 1}, timeout=60)
    assert res.status_code == 200, res.text


def test_a_llama_call_ended_by_eom_id_comes_back_as_tool_calls(families: tuple[str, object]) -> None:
    """Llama 3.1 / 3.2 end a call with <|eom_id|>, which their generation_config lists among its eos ids; serve
    stopped at the template's end of turn and eos only (generate()'s `eos_token_id` replaces the model's own), so the
    reply ran on past the call and was text. The model's own eos ids end a reply too — in serve, `tunelab chat` and
    eval alike (`Task.stop_ids`) — and a model whose generation_config lists only eos stops where it did."""
    from tunelab.tasks.chat_template import end_of_turn_ids

    url, server = families
    served = server.by_name["llama"]  # type: ignore[attr-defined]
    body = {"model": "llama", "messages": SAY_GOOD, "tools": TOOLS, "max_tokens": 8, "temperature": 0}
    with forcing(served, ["<|python_tag|>", LLAMA_A, "<|eom_id|>", "sunny", "<|eot_id|>"]):
        res = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
    assert res["choices"][0]["finish_reason"] == "tool_calls", res
    assert [c["function"] for c in res["choices"][0]["message"]["tool_calls"]] == [CITY[0]]
    assert res["usage"]["completion_tokens"] == 3  # ended at <|eom_id|>
    for name, extra in (("llama", ["<|eom_id|>"]), ("mistral", [])):
        model = server.by_name[name].model  # type: ignore[attr-defined]
        tok = model.tokenizer
        assert model.task.stop_ids(tok, model.module) == end_of_turn_ids(tok) + tok.convert_tokens_to_ids(extra)


def test_a_reply_not_read_as_calls_is_text_and_a_failed_read_an_error_never_a_hang(
        families: tuple[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    """A Llama reply nested past the JSON reader's limit raised out of the reader, and the request waited for ever
    (JSON and stream: the end of the reply was never queued); a call named with a lone surrogate was a 500 / a
    stream cut before `[DONE]`. Both are the reply's text; should reading the calls fail all the same, the answer is
    a 500 / the stream's error event and `[DONE]`."""
    from tunelab.serve.completion import STREAM_FAILED
    from tunelab.serve.tool_formats import CallFormat

    url, server = families
    served = server.by_name["llama"]  # type: ignore[attr-defined]
    body = {"model": "llama", "messages": SAY_GOOD, "tools": TOOLS, "max_tokens": 4, "temperature": 0}
    for reply in (DEEP, SURROGATE):
        done: list[bool] = []
        with forcing(served, [reply, "<|eot_id|>"]):
            res = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)
            chunks = events(url, body, done, timeout=20)
        assert res.status_code == 200 and res.json()["choices"][0]["message"] == {"role": "assistant",
                                                                                  "content": reply}, res.text[:200]
        assert done == [True] and "".join(c["choices"][0]["delta"].get("content") or ""
                                          for c in chunks if c["choices"]) == reply

    def fails(self: CallFormat, text: str) -> None:
        raise RuntimeError("reading the calls failed")

    monkeypatch.setattr(CallFormat, "calls", fails)
    done = []
    with forcing(served, ["<|python_tag|>", LLAMA_A, "<|eot_id|>"]):
        res = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)
        chunks = events(url, body, done, timeout=20)
    assert res.status_code == 500 and res.json()["error"]["code"] == 500
    assert done == [True] and chunks[-1] == {"error": {"message": STREAM_FAILED, "code": 500}}


def test_a_tool_choice_that_forces_calls_is_a_400_saying_why(families: tuple[str, object]) -> None:
    """`tool_choice: "required"` and a named function, which OpenAI's clients send (vLLM forces them by constrained
    decoding), were a 422 in the words of a typo (`not supported by this server (only null / "none" / "auto" is
    taken)`): they are a 400 naming `tool_choice` and saying why and what to send instead, the stream's too, as are
    OpenAI's `allowed_tools` in mode "required" and a custom tool (function tools only), which were a 422 saying only
    the other forms are taken; `allowed_tools` in mode "auto" gives the model the tools it names (the prompt as with
    those tools alone), one not among `tools` a 422; a value that is not OpenAI's stays a 422 saying what is taken."""
    import openai

    url, _ = families
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    body = {"model": "mistral", "messages": SAY_GOOD, "tools": TOOLS, "max_tokens": 1}
    allowed = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": TOOLS}}
    custom = {"type": "custom", "custom": {"name": "grammar"}}
    for choice, says in (("required", '"required" is not supported'),
                         ({"type": "function", "function": {"name": "get_weather"}},
                          'a named function ("get_weather") is not supported'),
                         (allowed, 'allowed_tools with mode "required" is not supported'),
                         (custom, 'a custom tool ("grammar") is not supported: this server takes function tools only')):
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as refused:
                client.chat.completions.create(**body, tool_choice=choice, stream=stream)  # type: ignore[call-overload]
            err = refused.value.body
            assert refused.value.status_code == 400 and err["param"] == "tool_choice", err  # type: ignore[index]
            assert err["message"].startswith(f"tool_choice: {says}")  # type: ignore[index]
            assert 'send "auto"' in err["message"]  # type: ignore[index]
            assert (choice == custom) != ("this server cannot make the model call a tool" in err["message"])  # type: ignore[index]
    other = {"type": "function", "function": {**WEATHER, "name": "get_time"}}
    only = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}}
    prompt: dict[str, int] = {}
    for label, extra in (("alone", {}), ("both", {"tools": [*TOOLS, other]}),
                         ("allowed", {"tools": [*TOOLS, other], "tool_choice": only})):
        res = httpx.post(f"{url}/v1/chat/completions", json={**body, **extra}, timeout=60)
        assert res.status_code == 200, res.text
        prompt[label] = res.json()["usage"]["prompt_tokens"]
    assert prompt["allowed"] == prompt["alone"] < prompt["both"]
    unknown = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [other]}}
    res = httpx.post(f"{url}/v1/chat/completions", json={**body, "tool_choice": unknown}, timeout=60)
    err = res.json()["error"]
    assert res.status_code == 422 and err["param"] == "tool_choice" and '"get_time"' in err["message"], err
    for wrong in ("sometimes", {"type": "function"}, {"type": "function", "function": {"name": 1}}, ["auto"],
                  {"type": "custom"}, {**allowed, "allowed_tools": {"mode": "sometimes", "tools": TOOLS}},
                  {**allowed, "allowed_tools": {"mode": "auto", "tools": [{"name": "get_weather"}]}}):
        res = httpx.post(f"{url}/v1/chat/completions", json={**body, "tool_choice": wrong}, timeout=60)
        err = res.json()["error"]
        assert res.status_code == 422 and err["param"] == "tool_choice" and "expected \"none\", \"auto\"" in err[
            "message"], (wrong, res.text)
