"""`tunelab serve`'s OpenAI-compatible endpoints as OpenAI's clients use them, on a real uvicorn server over the tiny
chat run: sampling seeds (fresh without one; with one, the same reply whatever else is in flight), the same text in
the JSON answer and the stream, BOS before a completion's prompt, the common request fields OpenAI's clients send, a
stream whose generation fails, prompts nobody will read left ungenerated, JSON sent without a JSON Content-Type;
batches on a model with learned positions (a tiny GPT-2), and LoRA sft runs whose training grew the vocabulary."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conftest import CALL, TOOL_TEMPLATE, WEATHER, WORDS, free_port, say_rows, serve_on_loopback, write_jsonl
from tunelab.cli import app

pytest.importorskip("fastapi")
SAY_GOOD = [{"role": "user", "content": "say good"}]
CALL_TOKENS = ("<tool_call>", CALL, "</tool_call>")


@pytest.fixture(scope="module")
def tool_run(tiny_chat_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chat run with a template that writes tools as Qwen2.5's does (conftest's TOOL_TEMPLATE), and the three
    tokens of a call added (`<tool_call>`, the call's JSON, `</tool_call>`), so that the model can write one; the tags
    as special tokens, as some Hermes tokenizers have them (a reply's text, which leaves special tokens out, lost
    them: its call was never read)."""
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("tool-chat") / "tools"
    shutil.copytree(tiny_chat_run, run)
    tok = AutoTokenizer.from_pretrained(run / "model")
    tok.chat_template = TOOL_TEMPLATE
    tok.add_tokens([AddedToken(t, normalized=False, special=t != CALL) for t in CALL_TOKENS])
    tok.save_pretrained(run / "model")
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(run / "model")
    return run


@pytest.fixture(scope="module")
def chat(tiny_chat_run: Path, tool_run: Path) -> Iterator[tuple[str, object]]:
    yield from serve_on_loopback([tiny_chat_run, tool_run], max_tokens=32)


def wait_until(ready: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not ready():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def together(url: str, batcher: object, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """`requests` (path, body) waiting in the batcher's queue together before any of them runs: the generation thread
    is held behind a first request the batcher has taken, until all of them are queued."""
    hold = threading.Event()
    batcher._pool.submit(hold.wait, 60)  # type: ignore[attr-defined]
    try:
        with ThreadPoolExecutor(len(requests) + 1) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/completions", json={"prompt": "good", "max_tokens": 1},
                                timeout=60)
            wait_until(lambda: batcher.running and not batcher.pending)  # type: ignore[attr-defined]
            answers = [pool.submit(httpx.post, f"{url}{path}", json=body, timeout=60) for path, body in requests]
            wait_until(lambda: len(batcher.pending) == len(requests))  # type: ignore[attr-defined]
            hold.set()
            assert first.result().status_code == 200
            return [a.result() for a in answers]
    finally:
        hold.set()


def events(url: str, path: str, body: dict) -> tuple[int, list[str]]:
    """A streamed answer's status and its `data:` payloads."""
    with httpx.stream("POST", f"{url}{path}", json={**body, "stream": True}, timeout=60) as res:
        return res.status_code, [line[6:] for line in res.iter_lines() if line.startswith("data: ")]


def streamed_text(payloads: list[str], chat: bool) -> str:
    chunks = [json.loads(p) for p in payloads if p != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content", "") if chat else c["choices"][0]["text"]
                   for c in chunks if c.get("choices"))


def completion_text(res: httpx.Response) -> str:
    assert res.status_code == 200, res.text
    return res.json()["choices"][0]["text"]


SAMPLED = {"prompt": "the movie plot", "max_tokens": 12, "temperature": 2}


def test_sampling_without_a_seed_draws_a_fresh_one(chat: tuple[str, object]) -> None:
    """No seed: each sampling request draws its own, as OpenAI's API does (the run's fixed task.generation.seed gave
    every request the same reply; at temperature 2 the tiny model's 30 replies held 27 different ones), and each
    batch of a request's prompts draws its own (every batch reseeded with the request's one seed)."""
    url, server = chat
    unseeded = [completion_text(httpx.post(f"{url}/v1/completions", json=SAMPLED, timeout=60)) for _ in range(6)]
    assert len(set(unseeded)) > 1, unseeded
    # 16 prompts are two batches of 8, which each reseeded with the request's one seed: prompt 9 got prompt 1's reply
    batcher = server.models[0].chat_batcher  # type: ignore[attr-defined]
    sizes = len(batcher.sizes)
    res = httpx.post(f"{url}/v1/completions", json={**SAMPLED, "prompt": [SAMPLED["prompt"]] * 16}, timeout=60)
    texts = [c["text"] for c in res.json()["choices"]]
    assert batcher.sizes[sizes:] == [8, 8] and texts[:8] != texts[8:], (batcher.sizes, texts)


def test_a_seeded_request_gets_its_reply_whatever_else_is_in_flight(chat: tuple[str, object]) -> None:
    """A seed: three identical requests queued together each get the reply the request gets alone (batched, they
    drew from one random stream: three different replies); greedy requests still share a batch."""
    url, server = chat
    batcher = server.models[0].chat_batcher  # type: ignore[attr-defined]
    seeded = {**SAMPLED, "seed": 7}
    alone = completion_text(httpx.post(f"{url}/v1/completions", json=seeded, timeout=60))
    sizes = len(batcher.sizes)
    answers = [completion_text(r) for r in together(url, batcher, [("/v1/completions", seeded)] * 3)]
    assert answers == [alone] * 3, (answers, alone)
    assert batcher.sizes[sizes + 1:] == [1, 1, 1], batcher.sizes  # (after the held first request)
    greedy = {"prompt": "the movie plot", "max_tokens": 4, "temperature": 0}
    sizes = len(batcher.sizes)
    assert len({completion_text(r) for r in together(url, batcher, [("/v1/completions", greedy)] * 3)}) == 1
    assert batcher.sizes[sizes + 1:] == [3], batcher.sizes


def test_a_seed_holds_while_another_served_model_samples(tiny_chat_run: Path, tmp_path: Path) -> None:
    """Each served model has its own batcher thread, all drawing from torch's one generator: a seeded request's reply
    changed while another model sampled (6 of 6 under load), though the docs promise it whatever the server does."""
    other = shutil.copytree(tiny_chat_run, tmp_path / "other")
    serving = serve_on_loopback([tiny_chat_run, other], max_tokens=64)
    url, _ = next(serving)
    try:
        first, second = (m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"])
        seeded = {"model": first, "prompt": "the movie plot", "max_tokens": 40, "temperature": 2, "seed": 7}
        alone = completion_text(httpx.post(f"{url}/v1/completions", json=seeded, timeout=60))
        stop = threading.Event()

        def noise() -> None:
            while not stop.is_set():
                httpx.post(f"{url}/v1/completions", json={"model": second, "prompt": "good", "max_tokens": 40,
                                                          "temperature": 2}, timeout=60)

        threads = [threading.Thread(target=noise) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            busy = [completion_text(httpx.post(f"{url}/v1/completions", json=seeded, timeout=60)) for _ in range(4)]
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert busy == [alone] * 4, (busy, alone)
    finally:
        serving.close()


def test_json_and_stream_give_the_same_text(chat: tuple[str, object]) -> None:
    """A completion is never stripped (`prompt + text` is what the model read and wrote: its JSON text lost the
    whitespace its stream kept); a chat reply is stripped alike in JSON and stream. A stop string right after a
    space leaves that space at the end of the text."""
    url, _ = chat

    def two_words(path: str, body: dict, text: Callable[[dict], str]) -> tuple[int, str]:
        """A seed whose reply has a second word first found after the first one, and the reply."""
        for seed in range(200):
            reply = text(httpx.post(f"{url}{path}", json={**body, "seed": seed}, timeout=60).json())
            words = reply.split()
            if len(words) >= 2 and reply.find(words[1]) > reply.find(words[0]) + len(words[0]):
                return seed, reply
        raise AssertionError("no reply of two words")

    seed, full = two_words("/v1/completions", SAMPLED, lambda r: r["choices"][0]["text"])
    cut = {**SAMPLED, "seed": seed, "stop": [full.split()[1]]}
    answer = httpx.post(f"{url}/v1/completions", json=cut, timeout=60).json()["choices"][0]
    status, payloads = events(url, "/v1/completions", cut)
    assert status == 200 and answer["text"] == streamed_text(payloads, chat=False) == full[:full.find(cut["stop"][0])]
    assert answer["text"].endswith(" ") and answer["finish_reason"] == "stop", answer
    body = {"messages": [{"role": "user", "content": "the movie plot"}], "max_tokens": 12, "temperature": 2}
    seed, full = two_words("/v1/chat/completions", body, lambda r: r["choices"][0]["message"]["content"])
    cut = {**body, "seed": seed, "stop": [full.split()[1]]}
    reply = httpx.post(f"{url}/v1/chat/completions", json=cut, timeout=60).json()["choices"][0]["message"]["content"]
    status, payloads = events(url, "/v1/chat/completions", cut)
    assert status == 200 and reply == streamed_text(payloads, chat=True) == full.split()[0], (reply, payloads)


def test_a_stop_string_never_written_loses_nothing(chat: tuple[str, object]) -> None:
    """The text held back in case it began a stop string was sent after the reply's end marker: a request with a
    `stop` the reply never wrote lost its last len(stop) - 1 characters (a short reply came back empty), in JSON and
    in the stream."""
    url, _ = chat
    never = "\u2603" * 40  # a snowman row: not in the tiny vocabulary
    for path, body, text in (
            ("/v1/completions", {**SAMPLED, "seed": 3}, lambda r: r["choices"][0]["text"]),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "the movie plot"}], "max_tokens": 12,
                                      "temperature": 2, "seed": 3},
             lambda r: r["choices"][0]["message"]["content"])):
        full = text(httpx.post(f"{url}{path}", json=body, timeout=60).json())
        assert full, full
        cut = {**body, "stop": [never]}
        assert text(httpx.post(f"{url}{path}", json=cut, timeout=60).json()) == full
        status, payloads = events(url, path, cut)
        assert status == 200 and streamed_text(payloads, chat="chat" in path) == full, payloads


def test_a_completion_starts_with_bos_as_the_chat_prompt_does(chat: tuple[str, object], tiny_chat_run: Path) -> None:
    """The tiny Llama's tokenizer puts BOS first, so training did (the chat template opens with it): a completion's
    prompt gets it too, once (a prompt that starts with `<s>` keeps one), and the chat prompt rendered as text is
    the same prompt as the chat request — the same tokens counted, the same greedy reply."""
    from transformers import AutoTokenizer

    from tunelab.tasks.chat_template import render

    url, _ = chat
    rendered = render(AutoTokenizer.from_pretrained(tiny_chat_run / "model"), SAY_GOOD, generation_prompt=True)
    assert rendered.startswith("<s>")
    by_chat = httpx.post(f"{url}/v1/chat/completions", json={"messages": SAY_GOOD, "max_tokens": 4,
                                                             "temperature": 0}, timeout=60).json()
    for prompt in (rendered.removeprefix("<s>"), rendered):
        res = httpx.post(f"{url}/v1/completions", json={"prompt": prompt, "max_tokens": 4, "temperature": 0},
                         timeout=60).json()
        assert res["usage"] == by_chat["usage"], (prompt, res, by_chat)
        assert res["choices"][0]["text"].strip() == by_chat["choices"][0]["message"]["content"]


def test_a_bos_only_the_chat_template_opens_with_is_not_put_before_a_completion(tiny_chat_run: Path) -> None:
    """SmolLM2's tokenizer adds no BOS, and its BOS (`<|im_start|>`) opens its chat template as the turn marker:
    every completion's prompt got a bare `<|im_start|>` before it (another continuation than the model's)."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    from tunelab.tasks.chat_template import completion_bos

    tok = AutoTokenizer.from_pretrained(tiny_chat_run / "model")
    assert completion_bos(tok) == tok.bos_token_id  # plain tokenisation puts it first: the prompt gets it
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    text = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert tok(text, add_special_tokens=False)["input_ids"][:1] == [tok.bos_token_id]  # the template opens with it
    assert completion_bos(tok) is None


def test_the_common_openai_fields_are_taken(chat: tuple[str, object]) -> None:
    """What OpenAI's clients send: `stream_options.include_usage` (a last chunk with the usage and no choices, through
    the real `openai` client), `max_completion_tokens`, penalties of 0, role `developer`, a message's `name`, content
    as text parts. What the server cannot honour stays a 422 naming the field."""
    from openai import OpenAI

    url, _ = chat
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="run", messages=SAY_GOOD, max_tokens=4, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-2].choices[0].finish_reason in ("stop", "length")
    usage = client.completions.create(model="run", prompt="say good", max_tokens=2, stream=True,
                                      stream_options={"include_usage": True})
    assert [c.usage.prompt_tokens for c in usage if c.usage] == [3]  # BOS, say, good
    plain = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say\ngood"}]
    expected = client.chat.completions.create(model="run", messages=plain, max_tokens=4, temperature=0)
    given = client.chat.completions.create(
        model="run", max_completion_tokens=4, temperature=0, presence_penalty=0, frequency_penalty=0,
        logprobs=False, logit_bias={}, tools=[], tool_choice="none", parallel_tool_calls=True,  # (their no-op values)
        response_format={"type": "text"}, messages=[{"role": "developer", "content": "be brief"},
                  {"role": "user", "name": "ann", "content": [{"type": "text", "text": "say"},
                                                              {"type": "text", "text": "good"}]}])
    assert given.choices[0].message.content == expected.choices[0].message.content
    assert given.usage.prompt_tokens == expected.usage.prompt_tokens
    one = client.chat.completions.create(model="run", messages=SAY_GOOD, max_completion_tokens=1, max_tokens=1)
    assert one.usage.completion_tokens == 1 and one.choices[0].finish_reason == "length"
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    for extra, param, says in (
            ({"max_completion_tokens": 2, "max_tokens": 3}, "max_completion_tokens", "differs from max_tokens 3"),
            ({"max_completion_tokens": 33}, "max_completion_tokens", "at most 32"),
            ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
            ({"frequency_penalty": -1}, "frequency_penalty", "not supported"),
            ({"stream_options": {"include_usage": True}}, "stream_options", "only taken with stream"),
            ({"messages": [{"role": "user", "content": image}]}, "messages[0].content", "only text parts"),
            ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]", "a tool result (observation) with no"),
            ({"logprobs": True}, "logprobs", "only null / false is taken"),
            ({"tool_choice": "sometimes"}, "tool_choice", 'expected "none", "auto", "required", {"type": '),
            ({"response_format": {"type": "json_object"}}, "response_format", "not supported"),
            ({"store": True}, "store", "Extra inputs are not permitted")):
        res = httpx.post(f"{url}/v1/chat/completions", json={"messages": SAY_GOOD, **extra}, timeout=60)
        err = res.json()["error"]
        assert res.status_code == 422 and err["param"] == param and says in err["message"], (extra, res.text)
    plain_text = client.completions.create(model="run", prompt="say good", max_tokens=2, temperature=0)
    defaults = client.completions.create(model="run", prompt="say good", max_tokens=2, temperature=0, echo=False,
                                         best_of=1, logprobs=None, suffix=None, logit_bias={})
    assert defaults.choices[0].text == plain_text.choices[0].text
    for extra, param in (({"echo": True}, "echo"), ({"best_of": 2}, "best_of"), ({"logprobs": 0}, "logprobs")):
        res = httpx.post(f"{url}/v1/completions", json={"prompt": "x", **extra}, timeout=60)
        assert res.status_code == 422 and res.json()["error"]["param"] == param, (extra, res.text)


def test_a_list_of_prompts_is_one_choice_each(chat: tuple[str, object]) -> None:
    """`prompt` as a list of texts (OpenAI's legacy completions and vLLM take it) was a 422 `prompt: Input should be a
    valid string`: one choice per prompt, `index` its place, each the reply the prompt gets alone, `usage` summed, in
    the JSON answer and the stream (each chunk with its choice's `index`), through the `openai` client. Each prompt
    is held to the limits one prompt is, named by its place; token ids and an empty list are a 422 naming `prompt`.
    More prompts than --max-queue are taken when nothing waits, as predict takes inputs (they were a 503 for ever)."""
    from openai import OpenAI

    url, server = chat
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    prompts = ["say good", "the movie plot", "say good"]
    alone = [client.completions.create(model="run", prompt=p, max_tokens=3, temperature=0) for p in prompts]
    listed = client.completions.create(model="run", prompt=prompts, max_tokens=3, temperature=0)
    assert [(c.index, c.text, c.finish_reason) for c in listed.choices] == [
        (i, a.choices[0].text, a.choices[0].finish_reason) for i, a in enumerate(alone)], listed
    assert listed.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone) == 3 + 4 + 3  # (BOS each)
    assert listed.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)
    texts, reasons = ["", "", ""], [None, None, None]
    chunks = list(client.completions.create(model="run", prompt=prompts, max_tokens=3, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] += c.text
            reasons[c.index] = c.finish_reason or reasons[c.index]
    assert texts == [c.text for c in listed.choices] and reasons == [c.finish_reason for c in listed.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage == listed.usage, chunks[-1]
    entry = server.by_name["run"]  # type: ignore[attr-defined]
    bos, entry.bos = entry.bos, None  # a model whose tokenizer puts no BOS first: "" has no tokens
    try:
        empty = httpx.post(f"{url}/v1/completions", json={"prompt": ["say good", ""]}, timeout=60)
    finally:
        entry.bos = bos
    for prompt, param, says in (
            ([], "prompt", "empty list"), ([1, 2, 3], "prompt", "token ids are not taken"),
            (["say good", [1, 2]], "prompt[1]", "token ids are not taken"),
            (["say good", 5], "prompt[1]", "valid string"), (["x"] * 257, "prompt", "257 prompts, at most 256"),
            (["say good", " ".join(["good"] * 127)], "prompt[1]", "prompt is 128 tokens, at most 127")):
        res = httpx.post(f"{url}/v1/completions", json={"prompt": prompt, "max_tokens": 1}, timeout=60)
        err = res.json()["error"]
        assert res.status_code in (413, 422) and err["message"].startswith(f"{param}: ") and says in err["message"], (
            prompt[:3], res.text)
    assert empty.status_code == 422 and empty.json()["error"]["param"] == "prompt[1]", empty.text
    queue, entry.chat_batcher.max_queue = entry.chat_batcher.max_queue, 2
    try:  # more prompts than --max-queue, nothing waiting: taken, as predict takes inputs (a 503 for ever)
        res = httpx.post(f"{url}/v1/completions", json={"prompt": prompts, "max_tokens": 3, "temperature": 0},
                         timeout=60)
    finally:
        entry.chat_batcher.max_queue = queue
    assert res.status_code == 200 and [c["text"] for c in res.json()["choices"]] == texts, res.text


def test_tools_calls_and_results_reach_the_template_and_calls_come_back(chat: tuple[str, object]) -> None:
    """`tools` was refused unless empty, and `role: tool` and an assistant's `tool_calls` were 422s: a model tuned on
    tool rows was served without its tools. They reach the model's chat template as training gives them (the prompt
    of a row with the same tools, call and result); a template that cannot write them is a 400 naming the field;
    messages out of order a 422 naming the message; and a reply in Hermes' `<tool_call>` tags comes back as OpenAI's
    `tool_calls` (finish_reason "tool_calls"), in the JSON answer and the stream, through the `openai` client — tags
    that are special tokens too — and goes back as the client dumps it. A text UTF-8 cannot carry in the tools or a
    call's arguments is a 422 naming it."""
    import torch
    from openai import OpenAI

    from tunelab.data.readers import Record, Table

    url, server = chat
    served = server.by_name["tools"]  # type: ignore[attr-defined]
    tok, task = served.model.tokenizer, served.model.task
    tools = [{"type": "function", "function": WEATHER}]
    called = [*SAY_GOOD, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "a"}'}}]},
              {"role": "tool", "tool_call_id": "call_1", "content": "nice"}]
    row = {"conversations": [{"from": "human", "value": "say good"}, {"from": "function_call", "value": CALL},
                             {"from": "observation", "value": "nice"}], "tools": json.dumps([WEATHER])}
    (trained,) = task.encode(task.parse(Table("d.jsonl", [Record("d.jsonl", 1, row)]), labelled=False), tok)
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="tools", messages=called, tools=tools, max_tokens=1, temperature=0)
    assert answer.usage.prompt_tokens == len(trained["input_ids"])  # the prompt training had
    said = [called[0], {**called[1], "content": "good"}, called[2]]  # text beside the calls: written too
    assert client.chat.completions.create(model="tools", messages=said, tools=tools, max_tokens=1, temperature=0
                                          ).usage.prompt_tokens == len(trained["input_ids"]) + 1
    bare = client.chat.completions.create(model="tools", messages=SAY_GOOD, max_tokens=1, temperature=0)
    assert bare.usage.prompt_tokens < client.chat.completions.create(
        model="tools", messages=SAY_GOOD, tools=tools, max_tokens=1, temperature=0).usage.prompt_tokens

    opening, call, closing, end = tok.convert_tokens_to_ids([*CALL_TOKENS, "<|im_end|>"])
    after = {opening: call, call: closing, closing: end}  # the model made to write one call, then end its turn

    def write_a_call(module: torch.nn.Module, args: object, kwargs: dict, output: object) -> object:
        want = [after.get(int(t), opening) for t in kwargs["input_ids"][:, -1]]
        output.logits[:, -1, :] = -1e4  # type: ignore[attr-defined]
        output.logits[range(len(want)), -1, want] = 0  # type: ignore[attr-defined]
        return output

    hook = served.model.module.register_forward_hook(write_a_call, with_kwargs=True)
    try:
        reply = client.chat.completions.create(model="tools", messages=SAY_GOOD, tools=tools, max_tokens=8,
                                               temperature=0).choices[0]
        status, payloads = events(url, "/v1/chat/completions", {"model": "tools", "messages": SAY_GOOD,
                                                                 "tools": tools, "max_tokens": 8})
        unread = client.chat.completions.create(model="tools", messages=SAY_GOOD, tools=tools, tool_choice="none",
                                                max_tokens=8, temperature=0).choices[0]
    finally:
        hook.remove()
    assert reply.finish_reason == "tool_calls" and reply.message.content is None, reply
    (made,) = reply.message.tool_calls
    assert made.type == "function" and made.function.name == "get_weather" and made.id.startswith("call_")
    assert json.loads(made.function.arguments) == {"city": "a"}
    chunks = [json.loads(p) for p in payloads if p != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert status == 200 and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert [d["tool_calls"][0]["function"] for d in deltas if "tool_calls" in d] == [
        {"name": "get_weather", "arguments": '{"city": "a"}'}] and not streamed_text(payloads, chat=True)
    # tool_choice "none": the calls not read, and the tags, special tokens, left out as every special token is (vLLM
    # keeps them only given tools and a tool_choice not "none"; they were returned, raw, in the text)
    assert unread.finish_reason == "stop" and unread.message.content == CALL
    # the reply given back as the openai client dumps it (`refusal`, `annotations`, `audio`, `function_call` at null:
    # a 422 for each) with its result: the prompt training had (the call's id, `call_...`, never reaches it)
    back = [*SAY_GOOD, reply.message.model_dump(), {"role": "tool", "tool_call_id": made.id, "content": "nice"}]
    assert {"refusal", "annotations", "audio", "function_call"} <= set(back[1])
    assert client.chat.completions.create(model="tools", messages=back, tools=tools, max_tokens=1, temperature=0
                                          ).usage.prompt_tokens == len(trained["input_ids"])

    for model, extra, status, param, says in (
            ("run", {"tools": tools}, 400, "tools", "the model's chat template does not write tools"),
            ("run", {"messages": called}, 400, "messages[1].tool_calls", "does not write an assistant message's"),
            ("tools", {"messages": [*SAY_GOOD, called[2]]}, 422, "messages[1]", "with no tool call"),
            ("tools", {"messages": [*called[:2], *called[:2]]}, 422, "messages[2]",
             "messages[1]'s tool call has no result"),
            ("tools", {"messages": [*called[:2], {**called[2], "tool_call_id": "call_2"}]}, 422, "messages[2]",
             "tool_call_id 'call_2' is none of the call ids of messages[1]"),
            ("tools", {"messages": [*SAY_GOOD, {"role": "assistant", "content": None}]}, 422, "messages[1]",
             "content: required"),
            ("tools", {"tools": [{"type": "function", "function": {"description": "d"}}]}, 422, "tools",
             "tool 1: expected {name, description, parameters}"),
            ("tools", {"messages": [*called, called[2]]}, 422, "messages[3]",
             "a second tool result for the call 'call_1' of messages[1]"),
            # a text UTF-8 cannot carry in the tools or a call's parsed arguments: named (was a 422 on `messages`, in
            # the tokenizer's words), as it is in a message's content
            ("tools", {"tools": [{"type": "function", "function": {**WEATHER, "description": "x\ud800"}}]}, 422,
             "tools[0]", "function.description: invalid Unicode: unpaired surrogate"),
            ("tools", {"messages": [*called[:1], {**called[1], "tool_calls": [{"id": "call_1", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": "\ud800"})}}]}, called[2]]}, 422,
             "messages[1].tool_calls[0].function.arguments", "city: invalid Unicode: unpaired surrogate")):
        body = json.dumps({"model": model, "messages": SAY_GOOD, **extra})  # (\ud800 as JSON's escape)
        res = httpx.post(f"{url}/v1/chat/completions", content=body, timeout=60)
        err = res.json()["error"]
        assert res.status_code == status and err["param"] == param and says in err["message"], (extra, res.text)
    was, task.text_rules = task.text_rules, 4  # a model trained by text rules 4 read tool turns in any order (and
    try:  # gave them no ids): its requests are read so too, not refused
        res = httpx.post(f"{url}/v1/chat/completions", json={"model": "tools", "messages": [*SAY_GOOD, called[2]],
                                                              "max_tokens": 1}, timeout=60)
        assert res.status_code == 200, res.text
    finally:
        task.text_rules = was


def test_a_reply_is_read_as_calls_only_where_it_is_calls() -> None:
    """The text before a call streams as it comes; from `<tool_call>` on it is held to the end and read as calls. A
    call cut off (max_tokens), one that is not a call's JSON, or half a tag at the end is the reply's text, whole."""
    from tunelab.serve.completion import _Stream
    from tunelab.serve.tool_formats import HERMES

    def streamed(text: str, stops: tuple[str, ...] = ()) -> tuple[str, list]:
        out: list[str] = []
        stream = _Stream(list(stops), trim=True, calls=HERMES)
        stream.emit = out.append
        for char in text:  # a piece at a time, as tokens come
            stream.write(char)
        stream.flush()
        return "".join(out), [c["function"] for c in stream.tool_calls]

    other = CALL.replace('"a"', '"b"')
    two = f"<tool_call>{CALL}</tool_call>\n<tool_call>\n{other}\n</tool_call>"
    assert streamed(f"Let me look. {two}") == ("Let me look.", [
        {"name": "get_weather", "arguments": '{"city": "a"}'}, {"name": "get_weather", "arguments": '{"city": "b"}'}])
    for text in (f"<tool_call>{CALL}", "<tool_call>get_weather(a)</tool_call>", "it is <tool_",
                 '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',
                 '<tool_call>{"name": "f", "arguments": {"a": NaN}}</tool_call>'):  # (was returned: not JSON)
        assert streamed(text) == (text, []), text
    assert streamed(f"ok<tool_call>{CALL}</tool_call>", stops=("city",)) == ('ok<tool_call>{"name": "get_weather", '
                                                                              '"arguments": {"', [])


def test_a_stream_whose_generation_fails_says_so_and_ends(chat: tuple[str, object]) -> None:
    """Its 200 and headers are sent: the stream ends with an error event in OpenAI's shape and `[DONE]` (it ended
    silently, without a finish_reason), the error is in the server's log, and the server answers on."""
    url, server = chat
    model = server.models[0].model.module  # type: ignore[attr-defined]
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(handler)

    def broken(*_: object) -> None:
        raise RuntimeError("the accelerator fell over")

    hook = model.register_forward_hook(broken)
    try:
        status, payloads = events(url, "/v1/chat/completions", {"messages": SAY_GOOD, "max_tokens": 4})
    finally:
        hook.remove()
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert status == 200 and payloads[-1] == "[DONE]", payloads
    assert json.loads(payloads[-2]) == {"error": {"message": "generation failed (the server's log has the details)",
                                                  "code": 500}}
    assert any(r.exc_info and "the accelerator fell over" in str(r.exc_info[1]) for r in records), records
    status, payloads = events(url, "/v1/chat/completions", {"messages": SAY_GOOD, "max_tokens": 4})
    assert status == 200 and payloads[-1] == "[DONE]" and json.loads(payloads[-2])["choices"][0]["finish_reason"]


def test_choices_nobody_reads_are_not_generated(chat: tuple[str, object]) -> None:
    """A list of prompts whose request ended (the client gone, here from a stream) still ran a prefill and a token for
    each prompt still queued, and a JSON answer with one prompt's generation failed ran the others to their end
    before its 500: queued prompts of an ended request are answered without generating, and the answer fails as soon
    as one prompt does, the others stopped. (One prompt a batch, no stop token: each reply runs to max_tokens.)"""
    url, server = chat
    entry = server.by_name["run"]  # type: ignore[attr-defined]
    batcher = entry.chat_batcher
    bad = entry.model.tokenizer.convert_tokens_to_ids("bad")
    calls: list[list[int]] = []
    release = threading.Event()

    def forward(_: object, __: object, kwargs: dict) -> None:
        calls.append(kwargs["input_ids"][0].tolist())
        release.wait(60)  # the first prompt's prefill held until the client has left
        if len(calls[-1]) > 1 and bad in calls[-1]:
            raise RuntimeError("the accelerator fell over")

    hook = entry.model.module.register_forward_pre_hook(forward, with_kwargs=True)
    batch, stop = batcher.max_batch, batcher.stop
    batcher.max_batch, batcher.stop = 1, [10**6]
    try:
        body = {"prompt": ["good"] * 4, "max_tokens": 8, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as res:
            assert res.status_code == 200
            wait_until(lambda: bool(calls))
        wait_until(lambda: len(batcher.pending) == 3 and all(j.stopped.is_set() for j, _ in batcher.pending))
        release.set()
        wait_until(lambda: not batcher.running)
        assert len(calls) == 1, calls  # the first prompt's prefill (its row ends at that token): none for the 3 others
        rate = [x for x in httpx.get(f"{url}/metrics").text.splitlines() if x.startswith("tunelab_tokens_per_second")]
        assert all(float(x.split()[-1]) > 0 for x in rate), rate  # (the prompts settled unread set it to 0)
        calls.clear()
        res = httpx.post(f"{url}/v1/completions", json={"prompt": ["bad film", "good", "the movie"], "max_tokens": 8},
                         timeout=60)
        wait_until(lambda: not batcher.running)
    finally:
        hook.remove()
        release.set()
        batcher.max_batch, batcher.stop = batch, stop
    assert res.status_code == 500, res.text
    # counted in /metrics as the 500 it is (an exception passed the counting middleware uncounted)
    assert 'tunelab_requests_total{path="/v1/completions",status="500"}' in httpx.get(f"{url}/metrics").text
    # the failed prefill; at most one prefill of a prompt the worker took before the 500 (its row ends at that token)
    assert len(calls) <= 2 and all(len(c) > 1 for c in calls), calls


def test_json_sent_without_a_json_content_type_is_read_as_json(chat: tuple[str, object]) -> None:
    """`curl -d` sends application/x-www-form-urlencoded unless told otherwise, and a client may send no Content-Type:
    the body is read as JSON either way (it was `422 body: Input should be a valid dictionary`); a body that is not
    JSON is the 400 saying why."""
    url, _ = chat
    body = json.dumps({"prompt": "say good", "max_tokens": 1})
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}, {}):
        request = httpx.Request("POST", f"{url}/v1/completions", content=body, headers=headers)
        request.headers.pop("Content-Type", None) if not headers else None
        res = httpx.Client(timeout=60).send(request)
        assert res.status_code == 200 and res.json()["usage"]["completion_tokens"] == 1, (headers, res.text)
    res = httpx.post(f"{url}/v1/completions", content="prompt=say+good", timeout=60,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert res.status_code == 400 and "request body is not valid UTF-8 JSON" in res.json()["error"]["message"]


def test_a_model_with_learned_positions_batches_rows_only_when_they_fit(tiny_chat_run: Path, tmp_path: Path) -> None:
    """A GPT-2 with 32 positions: a long prompt with a short reply and a short prompt with a long reply each fit, but
    not in one batch (26 + 20 columns): each runs alone, where both were a 500 (an IndexError in the position
    embedding). Two that fit together still share a batch. (No stop token: every reply runs to its max_tokens.)"""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    run = tmp_path / "gpt2"
    shutil.copytree(tiny_chat_run / "model", run / "model")
    (run / "model" / "model.safetensors").unlink()
    tok = AutoTokenizer.from_pretrained(run / "model")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(
        run / "model")
    for url, server in serve_on_loopback([run]):
        batcher = server.models[0].chat_batcher  # type: ignore[attr-defined]
        batcher.stop = [10**6]
        long, short = ({"prompt": "good " * 24, "max_tokens": 3, "temperature": 0},
                       {"prompt": "bad", "max_tokens": 20, "temperature": 0})
        answers = together(url, batcher, [("/v1/completions", long), ("/v1/completions", short)])
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert [r.json()["usage"]["completion_tokens"] for r in answers] == [3, 20] and batcher.sizes[-2:] == [1, 1]
        alone = [httpx.post(f"{url}/v1/completions", json=b, timeout=60).json()["choices"][0]["text"]
                 for b in (long, short)]
        assert [r.json()["choices"][0]["text"] for r in answers] == alone
        answers = together(url, batcher, [("/v1/completions", {**long, "max_tokens": 2}),
                                          ("/v1/completions", {**short, "max_tokens": 5})])
        assert [r.status_code for r in answers] == [200, 200] and batcher.sizes[-1] == 2, batcher.sizes


@pytest.fixture(scope="module")
def lora_chat_runs(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two LoRA sft runs of tiny_llama; training added ChatML's markers (vocabulary 60 → 62)."""
    tmp = tmp_path_factory.mktemp("lora-sft")
    runs = []
    for name, words in (("say-a", WORDS[:4]), ("say-b", WORDS[4:8])):
        data = write_jsonl(tmp / f"{name}.jsonl", say_rows(words * 2))
        sets = ["task=sft", f"model={tiny_llama}", f"data.train={data}", f"output_dir={tmp / name}", "method=lora",
                "method.r=4", "train.epochs=1", "train.batch_size=8", "train.save_steps=0", "train.precision=fp32"]
        res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
        assert res.exit_code == 0, res.output
        runs.append(tmp / name)
    return runs


def test_lora_sft_runs_that_grew_the_vocabulary_are_each_served_from_their_model(
        lora_chat_runs: list[Path], tmp_path: Path) -> None:
    """Their adapters hold whole embedding matrices of 62 rows, which one base of 60 cannot share (start-up was a
    RuntimeError traceback from the base's load): each is served from its merged RUN/model, answering as
    `tunelab.load` does. A shared base that does not load as the runs' config says (its weights of another shape)
    is one line and exit code 2."""
    import tunelab
    from tunelab.serve.adapters import AdapterView
    from tunelab.tasks.chat_template import prompt_ids
    from tunelab.tasks.generation import GenerationConfig, generate

    assert json.loads((lora_chat_runs[0] / "model" / "config.json").read_text())["vocab_size"] == 62
    for url, server in serve_on_loopback(lora_chat_runs):
        for served, run in zip(server.models, lora_chat_runs, strict=True):  # type: ignore[attr-defined]
            assert not isinstance(served.model.module, AdapterView)
            res = httpx.post(f"{url}/v1/chat/completions", json={"model": run.name, "messages": SAY_GOOD,
                                                                 "max_tokens": 4, "temperature": 0}, timeout=60)
            model = tunelab.load(run)  # its merged model, greedy, as many tokens
            tok = model.tokenizer
            new = generate(model.module, tok, [prompt_ids(tok, SAY_GOOD)], GenerationConfig(max_new_tokens=4), 1,
                           stop_ids=model.task.stop_ids(tok, model.module))[0]
            expected = tok.decode(new, skip_special_tokens=True).strip()
            assert res.status_code == 200 and res.json()["choices"][0]["message"]["content"] == expected, res.text
    base = tmp_path / "base"  # the base as the runs' config sizes it (62 rows), its weights of 60 rows
    shutil.copytree(Path(json.loads((lora_chat_runs[0] / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"]), base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "vocab_size": 62}))
    runs = []
    for run in lora_chat_runs:
        shutil.copytree(run, tmp_path / run.name)
        settings = tmp_path / run.name / "adapter" / "adapter_config.json"
        settings.write_text(json.dumps({**json.loads(settings.read_text()), "base_model_name_or_path": str(base)}))
        runs.append(str(tmp_path / run.name))
    res = CliRunner().invoke(app, ["serve", *runs, "--port", str(free_port())])
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: base model ") and "cannot load it" in lines[0], lines


def test_serve_and_chat_generate_at_the_precision_eval_and_predict_do(tiny_chat_run: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """eval / predict generated under the model's autocast (bf16 where `auto` picks it), the server's batcher and
    `tunelab chat`'s stream at fp32: one model, one greedy prompt, two replies. Every path runs at the same one."""
    import io

    import torch

    import tunelab
    from tunelab.tasks.streaming import stream_reply

    monkeypatch.setenv("TUNELAB_PRECISION", "bf16")  # what `auto` picks on a CPU with native bf16
    seen: list[torch.dtype] = []

    def record(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        seen.append(output.dtype)

    for url, server in serve_on_loopback([tiny_chat_run]):
        module = server.models[0].chat_batcher.model  # type: ignore[attr-defined]
        hook = module.get_output_embeddings().register_forward_hook(record)
        res = httpx.post(f"{url}/v1/chat/completions", json={"messages": SAY_GOOD, "max_tokens": 2, "temperature": 0},
                         timeout=60)
        hook.remove()
        assert res.status_code == 200 and seen and set(seen) == {torch.bfloat16}, (res.text, seen)
    model = tunelab.load(tiny_chat_run)
    seen.clear()
    hook = model.module.get_output_embeddings().register_forward_hook(record)
    cfg = model.task.cfg.generation.model_copy(update={"max_new_tokens": 2, "do_sample": False})
    ids = model.tokenizer("good", add_special_tokens=False)["input_ids"]
    stream_reply(model.module, model.tokenizer, ids, cfg, [], io.StringIO())
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}, seen


def test_a_thinking_models_reasoning_comes_as_reasoning_content(qwen3_think_run: Path, tiny_chat_run: Path) -> None:
    """A Qwen3 model's reply that opens with a think block, as vLLM's `--reasoning-parser qwen3` answers it: the
    text after the block in `content`, its reasoning in `message.reasoning_content` and, streamed,
    `delta.reasoning_content` chunks before the content (the block had been the reply's text); a model whose template
    has no think block answers as before (no `reasoning_content`)."""
    for url, server in serve_on_loopback([qwen3_think_run, tiny_chat_run], max_tokens=16):
        qwen3, plain = server.models  # type: ignore[attr-defined]
        body = {"model": qwen3.name, "messages": SAY_GOOD, "max_tokens": 8}
        res = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert res.status_code == 200, res.text
        assert res.json()["choices"][0]["message"] == {"role": "assistant", "content": "good",
                                                       "reasoning_content": "hmm"}
        status, payloads = events(url, "/v1/chat/completions", body)
        deltas = [json.loads(p)["choices"][0]["delta"] for p in payloads[:-1] if json.loads(p)["choices"]]
        kinds = [k for d in deltas for k, v in d.items() if k != "role" and v]
        assert status == 200 and kinds == ["reasoning_content", "content"], deltas
        assert "".join(d.get("reasoning_content", "") for d in deltas) == "hmm" and streamed_text(payloads, True) == \
            "good"
        other = httpx.post(f"{url}/v1/chat/completions", json={**body, "model": plain.name}, timeout=60)
        assert "reasoning_content" not in other.json()["choices"][0]["message"]


def test_a_thinking_models_reply_sent_back_with_its_reasoning_is_taken(qwen3_think_run: Path,
                                                                        tiny_chat_run: Path) -> None:
    """The openai client's loop — its reply's `message.model_dump()` appended to the messages, `reasoning_content`
    and all — takes a second turn (it was a 422 `messages[1].reasoning_content: Extra inputs are not permitted`); the
    reasoning reaches the template as a training row's does (Qwen3's writes it after the last user message: the
    prompt is longer by it), a template without think blocks goes without it, and it is refused off an assistant
    message."""
    openai = pytest.importorskip("openai")
    for url, server in serve_on_loopback([qwen3_think_run, tiny_chat_run], max_tokens=16):
        qwen3, plain = server.models  # type: ignore[attr-defined]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
        reply = client.chat.completions.create(model=qwen3.name, messages=SAY_GOOD, max_tokens=8).choices[0].message
        assert (reply.content, reply.reasoning_content) == ("good", "hmm")  # type: ignore[attr-defined]
        again = client.chat.completions.create(model=qwen3.name, max_tokens=8,
                                               messages=[*SAY_GOOD, reply.model_dump(), *SAY_GOOD])
        assert again.choices[0].message.content == "good"
        turn = {"role": "assistant", "content": "good"}
        used = [client.chat.completions.create(model=qwen3.name, max_tokens=1, messages=[*SAY_GOOD, m]).usage
                for m in (turn, {**turn, "reasoning_content": "hmm hmm"})]
        assert used[1].prompt_tokens == used[0].prompt_tokens + 2, used  # type: ignore[union-attr]
        plain_turn = client.chat.completions.create(model=plain.name, max_tokens=8,
                                                    messages=[*SAY_GOOD, reply.model_dump(), *SAY_GOOD])
        assert plain_turn.choices[0].message.content is not None
        res = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": qwen3.name, "messages": [{**SAY_GOOD[0], "reasoning_content": "hmm"}]})
        assert res.status_code == 422 and "reasoning_content: only on an assistant message" in res.text, res.text
