"""`tunelab serve`: a real uvicorn server on loopback over a tiny classifier and the tiny chat model — predict with
micro-batching, OpenAI-compatible chat (JSON, server-sent events, and the real `openai` client), completions with a
stop string, models, health, Prometheus metrics; 401 / 413 / 422 / 503 as documented."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conftest import serve_on_loopback, train_sentiment
from tunelab.cli import app

pytest.importorskip("fastapi")
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def cls_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentiment(tiny_bert, tmp_path_factory.mktemp("serve") / "sentiment", validation=False,
                           sets=("train.report=false",))  # (no test here reads a report.html)


@pytest.fixture(scope="module")
def served(cls_run: Path, tiny_chat_run: Path) -> Iterator[tuple[str, object]]:
    yield from serve_on_loopback([cls_run, tiny_chat_run], api_key=KEY, max_inputs=8, max_body_bytes=20_000,
                                 max_tokens=16, max_wait_ms=30)


def test_auth_health_models_metrics(served: tuple[str, object]) -> None:
    url, _ = served
    assert httpx.get(f"{url}/health").json()["status"] == "ok"  # open: load balancers probe it
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    models = httpx.get(f"{url}/v1/models", headers=AUTH).json()["data"]
    assert [(m["id"], m["task"]) for m in models] == [("sentiment", "classification"), ("run", "sft")]
    for i in range(3):  # paths a client makes up: counted under one label, not one series each (memory)
        assert httpx.get(f"{url}/made-up-{i}").status_code == 401
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    assert "tunelab_requests_total" in text and "tunelab_request_seconds_bucket" in text
    assert "made-up" not in text and 'tunelab_requests_total{path="other",status="401"} 3.0' in text


def test_predict_matches_the_library_and_batches(served: tuple[str, object], cls_run: Path) -> None:
    import tunelab

    url, server = served
    inputs = ["good great film", {"text": "awful boring plot"}]
    res = httpx.post(f"{url}/v1/predict", json={"inputs": inputs}, headers=AUTH)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == "sentiment"
    assert body["outputs"] == tunelab.load(cls_run).predict(inputs)
    assert [o["pred_label"] for o in body["outputs"]] == ["positive", "negative"]

    def one(i: int) -> str:
        r = httpx.post(f"{url}/v1/predict", json={"model": "sentiment", "inputs": [f"good film {i}"]}, headers=AUTH)
        return r.json()["outputs"][0]["pred_label"]

    with ThreadPoolExecutor(12) as pool:
        labels = list(pool.map(one, range(24)))
    assert set(labels) == {"positive"}
    sizes = server.by_name["sentiment"].batcher.stats.sizes  # type: ignore[attr-defined]
    assert max(sizes) > 1, sizes  # concurrent requests shared forward passes


def test_a_predict_request_reads_its_rows_once(served: tuple[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    """The task reads a request's rows once — the check that a bad row fails its own request only is also the read
    its batch runs (they were read twice: checked, then again by Model.predict) — and a row it cannot read still
    fails its request, named (`test_a_row_the_task_cannot_read_is_named_by_its_place`)."""
    url, server = served
    task = server.by_name["sentiment"].model.task  # type: ignore[attr-defined]
    real, reads = task.parse, []

    def parse(table: object, **kwargs: object) -> object:
        reads.append(len(table.records))  # type: ignore[attr-defined]
        return real(table, **kwargs)

    monkeypatch.setattr(task, "parse", parse)
    res = httpx.post(f"{url}/v1/predict", json={"inputs": ["good great film", {"text": "awful plot", "id": 7}]},
                     headers=AUTH, timeout=30)
    assert res.status_code == 200 and reads == [2], (reads, res.text)
    assert [o["pred_label"] for o in res.json()["outputs"]] == ["positive", "negative"]
    assert res.json()["outputs"][1]["id"] == 7  # the row's own fields come back
    res = httpx.post(f"{url}/v1/predict", json={"inputs": ["good", {"txt": "good"}]}, headers=AUTH, timeout=30)
    assert res.status_code == 422 and res.json()["error"]["param"] == "inputs[1].text", res.text
    assert reads == [2, 2], reads


def test_a_row_the_task_cannot_read_is_named_by_its_place(served: tuple[str, object]) -> None:
    """A row the task cannot read was a 422 naming `inputs` with the CLI's `<input>:3: text: empty text`: it names the
    row by its place in the request, and the field where the task names one (`inputs[2].text`), in the task's words
    (the CLI's line for a file is unchanged)."""
    url, _ = served
    for inputs, param, says in ((["good", "film", ""], "inputs[2].text", "empty text"),
                                ([{"text": "good"}, {"text": "  \n", "id": 1}], "inputs[1].text", "empty text"),
                                (["good", {"txt": "good"}], "inputs[1].text", "missing field (the row has: txt)")):
        res = httpx.post(f"{url}/v1/predict", json={"inputs": inputs}, headers=AUTH, timeout=30)
        err = res.json()["error"]
        assert res.status_code == 422 and err["param"] == param and err["message"] == f"{param}: {says}", res.text


def test_a_field_of_several_types_is_named_at_its_path(served: tuple[str, object]) -> None:
    """An input of neither type a predict row takes was named `inputs[0].str` (pydantic's name for the union's first
    type, a field the body does not have) with one error per type: it is `inputs[0]`, saying what is taken; the
    other fields of several types alike (`stop.list[function-after[utf8(), str]][1]` is `stop[1]`)."""
    url, _ = served
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    for path, body, param, says in (
            ("/v1/predict", {"inputs": [1]}, "inputs[0]", "expected a text, or an object with the task's data"),
            ("/v1/predict", {"inputs": ["good", None]}, "inputs[1]", "expected a text, or an object"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": 1}]}, "messages[0].content",
             "expected a text, or a list of text parts"),
            ("/v1/chat/completions", {**chat, "stop": 1}, "stop", "expected a text, or a list of texts"),
            ("/v1/chat/completions", {**chat, "stop": ["end", 1]}, "stop[1]", "Input should be a valid string"),
            ("/v1/chat/completions", {**chat, "logprobs": "x"}, "logprobs", "expected true / false, or a number"),
            ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": "x", "tool_calls": [
                {"function": {"name": "f", "arguments": 1}}]}]}, "messages[0].tool_calls[0].function.arguments",
             "expected a JSON object, or its JSON text")):
        res = httpx.post(f"{url}{path}", json=body, headers=AUTH, timeout=30)
        err = res.json()["error"]
        assert res.status_code == 422 and err["param"] == param, (body, res.text)
        assert err["message"].startswith(f"{param}: {says}") and "(and " not in err["message"], (body, err)


def test_an_input_whose_outputs_are_nan_answers_its_own_row_only(served: tuple[str, object]) -> None:
    """One input the model gives NaN for (here: its word's embedding row set to NaN) answers its row with `error`;
    the request's other rows, and another request batched with it, are answered (the whole request was a 422)."""
    import asyncio

    import torch

    from tunelab.evaluation.evaluate import NOT_FINITE
    from tunelab.serve.batcher import MicroBatcher

    url, server = served
    entry = server.by_name["sentiment"]  # type: ignore[attr-defined]
    model, inputs = entry.model, ["good great film", {"text": "scene", "id": 3}, "awful boring plot"]
    clean = httpx.post(f"{url}/v1/predict", json={"inputs": inputs}, headers=AUTH, timeout=30).json()["outputs"]
    weight = model.module.get_input_embeddings().weight
    row, saved = model.tokenizer.convert_tokens_to_ids("scene"), None
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    with torch.no_grad():
        saved = weight[row].clone()
        weight[row] = float("nan")
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        res = httpx.post(f"{url}/v1/predict", json={"inputs": inputs}, headers=AUTH, timeout=30)
        assert res.status_code == 200, res.text
        outputs = res.json()["outputs"]
        assert outputs[1] == {"text": "scene", "id": 3, "error": NOT_FINITE}
        assert [outputs[0], outputs[2]] == [clean[0], clean[2]]

        async def together() -> tuple[list[object], list[int]]:  # two users' requests in one forward pass
            batcher = MicroBatcher(entry.batcher.fn, max_batch=32, max_wait_ms=0)
            await batcher.start()
            got = await asyncio.gather(*(batcher.submit(model.parse_inputs(x)) for x in (["scene"], ["good"])))
            await batcher.stop()
            return list(got), batcher.stats.sizes

        (nan, good), sizes = asyncio.run(together())
        assert sizes == [2] and nan == [{"text": "scene", "error": NOT_FINITE}] and good[0]["pred_label"], (sizes, good)
        # a request none of whose rows is answered fails, as eval and predict do (it was a 200 of errors only, and
        # nothing counted it; a row's own `error` field is no failure); every failed row of a request is counted, and
        # the log says it once per model
        res = httpx.post(f"{url}/v1/predict", json={"inputs": ["scene", {"text": "scene", "error": 1}]},
                         headers=AUTH, timeout=30)
        assert res.status_code == 422 and res.json()["error"]["param"] == "inputs", res.text
        assert "the model's outputs are NaN or infinite for 2 of 2 examples" in res.json()["error"]["message"]
        assert httpx.post(f"{url}/v1/predict", json={"inputs": [{"text": "good", "error": 1}]}, headers=AUTH,
                          timeout=30).json()["outputs"][0]["error"] == 1
        metrics = httpx.get(f"{url}/metrics", headers=AUTH).text
        assert 'tunelab_row_errors_total{model="sentiment"} 3.0' in metrics, metrics  # 1 + 2 (the batcher's: its own)
        said = [r.getMessage() for r in records if "NaN or infinite" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("model sentiment: "), said
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
        with torch.no_grad():
            weight[row] = saved


def test_limits_and_validation(served: tuple[str, object]) -> None:
    url, _ = served
    res = httpx.post(f"{url}/v1/predict", json={"inputs": ["x"] * 9}, headers=AUTH)
    assert res.status_code == 413 and "at most 8" in res.json()["error"]["message"]
    res = httpx.post(f"{url}/v1/predict", content=json.dumps({"inputs": ["x" * 30_000]}), headers={
        **AUTH, "Content-Type": "application/json"})
    assert res.status_code == 413
    for body, field in (({}, "inputs"), ({"inputs": []}, "inputs"), ({"inputs": [3]}, "inputs"),
                        ({"inputs": ["a"], "temperature": 1}, "temperature")):
        res = httpx.post(f"{url}/v1/predict", json=body, headers=AUTH)
        assert res.status_code == 422 and field in json.dumps(res.json()["detail"]), (body, res.text)
    res = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "say good"}],
                                                         "max_tokens": 17}, headers=AUTH)
    assert res.status_code == 422 and "max_tokens" in res.text
    res = httpx.post(f"{url}/v1/predict", json={"model": "run", "inputs": ["x"]}, headers=AUTH)
    assert res.status_code == 400 and "/v1/chat/completions" in res.text
    res = httpx.post(f"{url}/v1/predict", json={"model": "nope", "inputs": ["x"]}, headers=AUTH)
    assert res.status_code == 404


def test_chat_json_stream_and_the_openai_client(served: tuple[str, object]) -> None:
    url, _ = served
    request = {"model": "run", "messages": [{"role": "user", "content": "say good"}], "max_tokens": 8,
               "temperature": 0}
    res = httpx.post(f"{url}/v1/chat/completions", json=request, headers=AUTH, timeout=60)
    assert res.status_code == 200, res.text
    body = res.json()
    reply = body["choices"][0]["message"]["content"]
    assert body["object"] == "chat.completion" and reply.startswith("good")
    assert body["usage"]["completion_tokens"] > 0 and body["usage"]["prompt_tokens"] > 3
    chunks = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**request, "stream": True}, headers=AUTH,
                      timeout=60) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    parsed = [json.loads(c) for c in chunks[:-1]]
    streamed = "".join(p["choices"][0]["delta"].get("content", "") for p in parsed)
    assert streamed.strip() == reply and parsed[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="run", messages=[{"role": "user", "content": "say good"}], max_tokens=8, temperature=0, stream=True)
        if c.choices]
    assert "".join(pieces).strip() == reply
    done = client.chat.completions.create(model="run", messages=[{"role": "user", "content": "say good"}],
                                          max_tokens=8, temperature=0)
    assert done.choices[0].message.content == reply


def test_completion_stops_at_a_stop_string(served: tuple[str, object]) -> None:
    url, _ = served
    base = {"prompt": "<|im_start|>user\nsay good<|im_end|>\n<|im_start|>assistant\n", "max_tokens": 8,
            "temperature": 0}
    full = httpx.post(f"{url}/v1/completions", json=base, headers=AUTH, timeout=60).json()["choices"][0]["text"]
    assert full
    stop = full.strip()[1:3] or full.strip()[:1]
    cut = httpx.post(f"{url}/v1/completions", json={**base, "stop": [stop]}, headers=AUTH, timeout=60).json()
    assert stop not in cut["choices"][0]["text"] and cut["choices"][0]["finish_reason"] == "stop"


def test_a_row_ends_where_its_request_stops_it(tiny_chat_run: Path) -> None:
    """A stop string or a client gone sets the job's `stopped`: its row takes no more tokens (usage counts up to
    that one) and generate() is told to end once every row is done."""
    import threading

    import torch
    from transformers import AutoTokenizer

    from tunelab.serve.chat_batcher import Job, _Rows
    from tunelab.tasks.generation import GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_run / "model")
    seen: list[str] = []
    jobs = [Job([1], GenerationConfig(max_new_tokens=50), seen.append, threading.Event()) for _ in range(2)]
    rows = _Rows(jobs, tokenizer, stop=[])
    rows.put(torch.tensor([[1], [1]]))  # the prompts
    ids = torch.zeros((2, 1), dtype=torch.long)
    for step in range(6):
        if step == 2:
            jobs[0].stopped.set()  # a stop string in its text, or its client gone
        if step == 4:
            jobs[1].stopped.set()
        assert not rows(ids, None).any() or step >= 4
        rows.put(torch.tensor([5, 6]))
    assert [len(j.tokens) for j in jobs] == [2, 4] and all(j.done for j in jobs)
    assert rows(ids, None).all()


def test_a_client_that_leaves_stops_its_row_json_or_stream(tiny_chat_run: Path) -> None:
    """A client gone before its reply is done — a JSON answer's as a stream's — ends its row: generate() stops there
    instead of running to max_tokens for nobody. The model never ends a reply (no stop token) and takes 20 ms a step,
    so a row that ran on would take ~126 tokens, 2.5 s; the clients leave after 0.3 s."""
    import socket
    import time

    for url, server in serve_on_loopback([tiny_chat_run], max_tokens=4000):
        batcher = server.models[0].chat_batcher
        batcher.stop = [10**6]
        batcher.model.register_forward_hook(lambda *_: time.sleep(0.02))
        generated: list[int] = []
        generate = batcher._generate
        batcher._generate = lambda jobs, generate=generate, generated=generated: (
            generate(jobs), generated.extend(len(j.tokens) for j in jobs))
        port = int(url.rsplit(":", 1)[1])
        for stream in (False, True):
            body = json.dumps({"prompt": "say good", "max_tokens": 4000, "temperature": 0, "stream": stream}).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                time.sleep(0.3)
            deadline = time.time() + 30
            while len(generated) < 1 + stream and time.time() < deadline:
                time.sleep(0.02)
        assert len(generated) == 2 and max(generated) < 100, generated
        res = httpx.post(f"{url}/v1/completions", json={"prompt": "say good", "max_tokens": 3}, timeout=60)
        assert res.status_code == 200 and res.json()["usage"]["completion_tokens"] == 3, res.text


def test_a_completion_without_max_tokens_keeps_to_the_servers_cap(tiny_chat_run: Path) -> None:
    """--max-tokens bounds every completion, also one that leaves max_tokens out (the run's 128 would apply)."""
    for url, _ in serve_on_loopback([tiny_chat_run], max_tokens=1):
        body = {"messages": [{"role": "user", "content": "say good"}], "temperature": 0}
        res = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert res.status_code == 200 and res.json()["usage"]["completion_tokens"] == 1, res.text


def test_messages_the_models_own_template_refuses_are_a_422(tiny_chat_run: Path, tmp_path: Path) -> None:
    """A chat template that raises (Gemma's "roles must alternate") answers 422 naming messages, not 500."""
    import shutil

    run = tmp_path / "strict"
    shutil.copytree(tiny_chat_run, run)
    refuse = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate "
              "user/assistant/user/assistant/...') }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    jinja = run / "model" / "chat_template.jinja"
    if jinja.is_file():
        jinja.write_text(refuse, encoding="utf-8")
    else:
        config = json.loads((run / "model" / "tokenizer_config.json").read_text(encoding="utf-8"))
        (run / "model" / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": refuse}))
    for url, _ in serve_on_loopback([run]):
        body = {"messages": [{"role": "assistant", "content": "hi"}], "max_tokens": 2}
        res = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert res.status_code == 422 and "roles must alternate" in res.text and "messages" in res.text, res.text


def test_a_full_queue_is_refused_with_retry_after(cls_run: Path) -> None:
    """At most 3 inputs may wait: of 16 requests of 2 inputs sent at once, those that arrive while another is queued
    or running do not fit (under load each batch also waits 400 ms for company, so they overlap)."""
    for url, _ in serve_on_loopback([cls_run], max_queue=3, max_wait_ms=400):
        def call(_: int, url: str = url) -> httpx.Response:
            return httpx.post(f"{url}/v1/predict", json={"inputs": ["good", "bad"]}, timeout=30)

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(call, range(16)))
        assert httpx.post(f"{url}/v1/predict", json={"inputs": ["good"]}, timeout=30).status_code == 200  # drained
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 1 and 503 in statuses, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "server busy" in busy.json()["error"]["message"]


def test_an_encoder_alias_is_refused_before_loading() -> None:
    from tunelab.errors import TunelabError
    from tunelab.serve.models import served_models

    with pytest.raises(TunelabError, match="minilm: an encoder has no task head until it is tuned"):
        served_models([Path("minilm")])


def test_a_run_given_as_dot_is_served_under_its_name(cls_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """`tunelab serve .` in a run's model/ (or `..`): the run's name, not "" or ".."; the same run again, numbered,
    never as a name another argument has (`cls-2` answered for `a/cls`, and the folder `cls-2` was `cls-2-2`)."""
    from tunelab.serve.models import served_models

    monkeypatch.chdir(cls_run / "model")
    names = [s.name for s in served_models([Path("."), Path(".."), Path("../model")])]
    assert names == ["sentiment", "sentiment-2", "sentiment-3"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    for folder in ("cls", "a/cls", "cls-2"):
        (tmp_path / folder).symlink_to(cls_run)
    names = [s.name for s in served_models([Path("cls"), Path("a/cls"), Path("cls-2")])]
    assert names == ["cls", "cls-3", "cls-2"]


def test_bad_path_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["serve", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "no such directory" in res.stderr


def test_concurrent_chats_share_generate_calls(served: tuple[str, object], tiny_chat_run: Path) -> None:
    """Requests waiting together are left-padded into one generate() call and answer as they do alone (over HTTP
    and, deterministically batched, through the batcher itself)."""
    import asyncio

    import tunelab
    from tunelab.serve.chat_batcher import ChatBatcher, Job
    from tunelab.tasks.chat_template import prompt_ids

    url, _ = served
    words = ["good", "film", "bad", "plot"]

    def ask(word: str) -> str:
        body = {"messages": [{"role": "user", "content": f"say {word}"}], "max_tokens": 6, "temperature": 0}
        res = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)
        assert res.status_code == 200, res.text
        return res.json()["choices"][0]["message"]["content"]

    alone = [ask(w) for w in words]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ask, words * 2)) == alone * 2

    model = tunelab.load(tiny_chat_run)
    tok = model.tokenizer
    batcher = ChatBatcher(model.module, tok, model.task.stop_ids(tok, model.module))
    cfg = model.task.cfg.generation.model_copy(update={"max_new_tokens": 6})
    pieces: dict[int, list[str]] = {i: [] for i in range(len(words))}
    jobs = [Job(prompt_ids(tok, [{"role": "user", "content": f"say {w}"}]), cfg, pieces[i].append, threading.Event())
            for i, w in enumerate(words)]

    async def together() -> list[Job]:
        return await asyncio.gather(*(batcher.submit(j) for j in jobs))

    done = asyncio.run(together())
    assert batcher.sizes == [4]  # submitted together: one generate() call
    assert [j.text.strip() for j in done] == alone
    assert ["".join(pieces[i]).strip() for i in range(len(words))] == alone  # each row streamed its own text


def test_the_api_fuzzed_from_its_openapi_schema_never_500s(served: tuple[str, object]) -> None:
    """schemathesis generates bodies from the server's own OpenAPI schema — valid ones and ones that break it (wrong
    types, missing fields, out-of-range numbers) — and sends them to the running server: no answer is a 5xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    url, _ = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/predict", "POST /v1/chat/completions",
                                              "POST /v1/completions", "GET /v1/models", "GET /health"}
    seen: dict[str, set[int]] = {}
    answers: dict[str, list[tuple[int, str, str]]] = {}

    def fuzz(case: object) -> None:
        label = case.operation.label  # type: ignore[attr-defined]
        response = case.call(base_url=url, headers=AUTH, timeout=60)  # type: ignore[attr-defined]
        seen.setdefault(label, set()).add(response.status_code)
        answers.setdefault(label, []).append((response.status_code, str(case.body)[:80], response.text[:120]))  # type: ignore[attr-defined]
        assert response.status_code < 500, (label, case, response.text[:300])

    for operation in operations:
        if operation.label == "POST /v1/predict":  # one body it must take and one it must refuse, whatever the
            # fuzzer draws (in a full parallel run its 25 valid-by-schema bodies once drew no accepted one)
            for body in ({"inputs": ["a good film"]}, {"inputs": []}):
                fuzz(operation.Case(body=body, media_type="application/json"))
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            run = settings(max_examples=25, deadline=None, database=None, derandomize=True,
                           suppress_health_check=list(HealthCheck))(given(case=operation.as_strategy(
                               generation_mode=mode))(fuzz))
            try:
                run()
            except Unsatisfiable:  # no way to break an operation without inputs (GET /health)
                assert mode == schemathesis.GenerationMode.NEGATIVE and operation.method.upper() == "GET"
    assert 422 in seen["POST /v1/predict"] and 200 in seen["POST /v1/predict"], (seen, answers["POST /v1/predict"][:8])
    assert len(answers["POST /v1/predict"]) > 20, seen  # the fuzzer's bodies were sent too


def test_lora_runs_share_one_base_and_the_model_name_picks_the_adapter(
        tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two LoRA runs of one base (opposite labellings of the same texts) are served over one copy of the base; each
    request's `model` switches adapter, and each answers as its own merged model does (`tunelab.load`)."""
    import tunelab

    lora = ("method=lora", "method.r=4", "train.epochs=10", "train.lr=2e-2", "train.report=false")
    # run folders named with a "." (peft refuses one in an adapter's name: tunelab names them inside)
    a = train_sentiment(tiny_bert, tmp_path_factory.mktemp("lora-a") / "plain", sets=lora)
    b = train_sentiment(tiny_bert, tmp_path_factory.mktemp("lora-b") / "flipped-v1.1", sets=lora,
                        labels=("positive", "negative"))
    texts = ["a wonderful , delightful film", "a dull and tedious mess", "wonderful", "tedious"]
    for url, server in serve_on_loopback([a, b], max_wait_ms=20):
        shared = [server.by_name[n].model.module for n in ("plain", "flipped-v1.1")]  # type: ignore[attr-defined]
        assert shared[0].peft is shared[1].peft and len(shared[0].peft.peft_config) == 2
        assert [m.tunelab_precision for m in shared] == ["fp32", "fp32"]  # trained at fp32 (tests): scored so
        def ask(name: str, url: str = url) -> tuple[str, list[dict]]:
            res = httpx.post(f"{url}/v1/predict", json={"model": name, "inputs": texts}, timeout=60)
            return name, res.json()["outputs"]

        with ThreadPoolExecutor(4) as pool:  # interleaved requests to both adapters
            answers = list(pool.map(ask, ["plain", "flipped-v1.1"] * 3))
        for name, outputs in answers:
            merged = tunelab.load(a if name == "plain" else b).predict(texts)
            assert [o["pred_label"] for o in outputs] == [m["pred_label"] for m in merged]
            for o, m in zip(outputs, merged, strict=True):
                assert all(abs(o["scores"][k] - m["scores"][k]) < 1e-4 for k in m["scores"]), (o, m)
        plain = dict(answers)["plain"]
        flipped = dict(answers)["flipped-v1.1"]
        assert [o["pred_label"] for o in plain] != [o["pred_label"] for o in flipped]


def test_the_batcher_keeps_to_its_token_budget() -> None:
    """Padded tokens per forward pass (inputs × the longest) stay within max_tokens; a request that does not fit
    opens the next batch, none is lost or reordered; one request over the budget on its own still runs."""
    import asyncio

    from tunelab.serve.batcher import MicroBatcher

    batches: list[list[str]] = []

    def forward(rows: list[str]) -> list[str]:
        batches.append(rows)
        return [r.upper() for r in rows]

    async def main() -> list[list[str]]:
        batcher = MicroBatcher(forward, max_batch=32, max_wait_ms=50, max_tokens=40, cost=len)
        await batcher.start()
        requests = [["aaaaaaaaaa"], ["bbbbbbbbbb"], ["cc"], ["d" * 20], ["e" * 60], ["ffff", "gggg"]]
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert answers == [["AAAAAAAAAA"], ["BBBBBBBBBB"], ["CC"], ["D" * 20], ["E" * 60], ["FFFF", "GGGG"]]
    assert all(len(b) * max(map(len, b)) <= 40 for b in batches if len(b) > 1)
    assert ["e" * 60] in batches and len(batches) > 2


def test_the_batcher_keeps_to_max_batch_inputs() -> None:
    """A request that would take a batch past max_batch opens the next one; one larger than max_batch runs alone."""
    import asyncio

    from tunelab.serve.batcher import MicroBatcher

    batches: list[list[str]] = []

    def forward(rows: list[str]) -> list[str]:
        batches.append(rows)
        return rows

    async def main() -> list[list[str]]:
        batcher = MicroBatcher(forward, max_batch=4, max_wait_ms=50)
        await batcher.start()
        requests = [["a"], ["b"], [f"c{i}" for i in range(10)], ["d", "e"], ["f", "g", "h"]]
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return answers

    requests = [["a"], ["b"], [f"c{i}" for i in range(10)], ["d", "e"], ["f", "g", "h"]]
    assert asyncio.run(main()) == requests
    alone = [f"c{i}" for i in range(10)]
    assert alone in batches and all(len(b) <= 4 for b in batches if b != alone), batches


def test_a_batch_that_fails_fails_only_the_bad_request_and_the_batcher_lives_on() -> None:
    """Requests batched together: one holding a row the model cannot take gets its error; the others their answers;
    a cost function that raises (a row the tokenizer refuses) does not kill the batching task."""
    import asyncio

    from tunelab.serve.batcher import MicroBatcher

    def forward(rows: list[str]) -> list[str]:
        if "bad" in rows:
            raise ValueError("a bad row")
        return [r.upper() for r in rows]

    def cost(row: str) -> int:
        if row == "uncountable":
            raise TypeError("the tokenizer refuses it")
        return len(row)

    async def main() -> list[object]:
        batcher = MicroBatcher(forward, max_batch=32, max_wait_ms=200, max_tokens=1000, cost=cost)
        await batcher.start()
        first = await asyncio.gather(batcher.submit(["uncountable"]), return_exceptions=True)
        answers = await asyncio.gather(*(batcher.submit(r) for r in (["a"], ["bad"], ["b", "c"])),
                                       return_exceptions=True)
        after = await batcher.submit(["d"])
        await batcher.stop()
        return [*first, *answers, after]

    got = asyncio.run(main())
    assert got[0] == ["UNCOUNTABLE"] and got[1] == ["A"] and got[3] == ["B", "C"] and got[4] == ["D"]
    assert isinstance(got[2], ValueError)


def test_hostile_bodies_are_4xx_and_the_server_keeps_answering(served: tuple[str, object]) -> None:
    """A lone surrogate (which the tokenizer cannot take), NaN / Infinity, an out-of-range seed, a key given twice, a
    chunked body over the limit, an input over max_input_tokens: each a 4xx naming the field; a good request still
    answers after each."""
    url, _ = served
    raw = {**AUTH, "Content-Type": "application/json"}
    bodies = [
        ("/v1/predict", '{"inputs": ["\\ud800x"]}', 422, "inputs"),
        ("/v1/predict", '{"inputs": [{"text": "good", "text_pair": "\\udfff"}]}', 422, "inputs"),
        ("/v1/predict", '{"inputs": [NaN]}', 422, "inputs"),
        ("/v1/predict", '{"inputs": ["x"], "model": Infinity}', 422, "model"),
        ("/v1/completions", '{"prompt": "\\ud800"}', 422, "prompt"),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "\\ud800"}]}', 422, "content"),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 422,
         "temperature"),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "temperature": 1, '
         '"seed": 18446744073709551616}', 422, "seed"),
        # a key given twice: refused as a data file refuses it, not the last value kept without a word
        ("/v1/predict", '{"inputs": [{"text": "good", "text": "bad"}]}', 422,
         'inputs[0]: duplicate key \\"text\\" in inputs[0]'),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, '
         '"max_tokens": 4000}', 422, 'body: duplicate key \\"max_tokens\\" in one object'),
    ]
    for path, body, status, field in bodies:
        res = httpx.post(f"{url}{path}", content=body, headers=raw, timeout=30)
        assert res.status_code == status and field in res.text, (body, res.status_code, res.text)
        good = httpx.post(f"{url}/v1/predict", json={"inputs": ["good film"]}, headers=AUTH, timeout=30)
        assert good.status_code == 200, (body, good.text)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as the body arrives
        yield b'{"inputs": ["'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"]}'

    # the tiny BERT has 128 learned positions and its run data.max_length 256 (its rows were short): a longer text is
    # cut at the positions, not a 500 from the position embeddings
    res = httpx.post(f"{url}/v1/predict", json={"inputs": ["good " * 300]}, headers=AUTH, timeout=30)
    assert res.status_code == 200 and res.json()["outputs"][0]["pred_label"] in ("positive", "negative"), res.text
    res = httpx.post(f"{url}/v1/predict", content=chunks(), headers=raw, timeout=30)
    assert res.status_code == 413 and "over 20000 bytes" in res.text, res.text
    res = httpx.post(f"{url}/v1/predict", content=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert res.status_code == 401, res.text  # the key is checked first, whatever the body
    metrics = httpx.get(f"{url}/metrics", headers=AUTH, timeout=30).text
    assert 'tunelab_requests_total{path="/v1/predict",status="413"}' in metrics  # counted like every answer
    small = httpx.post(f"{url}/v1/predict", content=iter([b'{"inputs": ', b'["good"]}']), headers=raw, timeout=30)
    assert small.status_code == 200, small.text


def test_malformed_http_is_uvicorns_own_400_and_the_server_goes_on(cls_run: Path) -> None:
    """A request that is not HTTP never reaches the app: uvicorn answers it with its own plain-text 400, without the
    error shape or CORS headers even for an allowed origin (docs/serve.md says so: the app cannot change it); the
    server keeps answering."""
    import socket

    page = "https://app.example"
    for url, _ in serve_on_loopback([cls_run], cors_origins=(page,)):
        host, port = url.removeprefix("http://").split(":")
        for raw in (b"GARBAGE\r\n\r\n", b"GET /health HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\nBad Header\r\n\r\n",
                    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\nContent-Length: ten\r\n\r\n"):
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(raw.replace(b"%s", page.encode()))
                answer = b""
                while chunk := conn.recv(4096):  # uvicorn closes the connection after it
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 ") and b"text/plain" in head, (raw, answer)
            assert body == b"Invalid HTTP request received." and b"access-control" not in head.lower(), (raw, answer)
        res = httpx.get(f"{url}/health", headers={"Origin": page}, timeout=10)
        assert res.status_code == 200 and res.headers["access-control-allow-origin"] == page


def test_an_input_over_max_input_tokens_is_refused_before_it_runs(cls_run: Path) -> None:
    for url, _ in serve_on_loopback([cls_run], max_input_tokens=50):
        res = httpx.post(f"{url}/v1/predict", json={"inputs": ["good", "good " * 100]}, timeout=30)
        assert res.status_code == 422 and "input 2: 100 tokens, at most 50 per input" in res.text, res.text
        assert httpx.post(f"{url}/v1/predict", json={"inputs": ["good " * 40]}, timeout=30).status_code == 200


def test_completions_waiting_beyond_max_queue_are_refused(tiny_chat_run: Path) -> None:
    """Chat requests obey --max-queue too: with that many completions waiting, the next is a 503 with Retry-After."""
    for url, server in serve_on_loopback([tiny_chat_run], max_queue=2):
        batcher = server.models[0].chat_batcher  # type: ignore[attr-defined]
        batcher.pending.extend([object(), object()])  # two completions waiting (as a busy server would hold them)
        try:
            res = httpx.post(f"{url}/v1/completions", json={"prompt": "say good", "max_tokens": 2}, timeout=30)
        finally:
            del batcher.pending[:2]
        assert res.status_code == 503 and res.headers["retry-after"] == "1" and "server busy" in res.text, res.text
        res = httpx.post(f"{url}/v1/completions", json={"prompt": "say good", "max_tokens": 2}, timeout=30)
        assert res.status_code == 200, res.text


def test_bodies_the_review_found_still_4xx(served: tuple[str, object]) -> None:
    """A row with a lone-surrogate key (its answer echoes the row), raw non-UTF-8 bytes, nesting 600 deep, and a
    chunked body that also claims a small Content-Length: each a 4xx, never a 500."""
    import socket
    from urllib.parse import urlsplit

    url, _ = served
    raw = {**AUTH, "Content-Type": "application/json"}
    for body in ('{"inputs": [{"text": "good film", "\\ud800": 1}]}', '{"inputs": {"\\ud800": 1}}',
                 '{"inputs": [' + "[" * 600 + "]" * 600 + "]}"):
        res = httpx.post(f"{url}/v1/predict", content=body, headers=raw, timeout=30)
        assert res.status_code == 422, (body[:60], res.status_code, res.text[:200])
    res = httpx.post(f"{url}/v1/predict", content=b"\xff\xfe", headers={**AUTH, "Content-Type": "text/plain"},
                     timeout=30)
    assert 400 <= res.status_code < 500, res.text
    host, port = urlsplit(url).hostname, urlsplit(url).port
    chunk = b"x" * 4000
    request = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
               + b"\r\nContent-Type: application/json\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n")
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        answer = sock.recv(4096)
    assert answer.split(b"\r\n", 1)[0].split()[1] in (b"400", b"413"), answer[:200]  # refused, never parsed whole
    assert httpx.post(f"{url}/v1/predict", json={"inputs": ["good"]}, headers=AUTH, timeout=30).status_code == 200


def test_positions_a_loaded_model_cuts_inputs_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """RoBERTa counts positions from padding_idx + 1 (514 rows hold 512); a sliding window's stride is cut with the
    length, so the data settings stay valid."""
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    from tunelab.config.sections import DataConfig
    from tunelab.models import positions

    small = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
             "vocab_size": 30}
    assert positions.learned_position_limit(RobertaModel(RobertaConfig(max_position_embeddings=514, **small))) == 512
    assert positions.learned_position_limit(BertModel(BertConfig(max_position_embeddings=128, **small))) == 128
    data = DataConfig(max_length=256, truncation="sliding_window", window_stride=128)
    monkeypatch.setattr(positions, "positions_at", lambda path: (128, True))  # the tiny BERT's answer
    cut = positions.cut_to_positions(data, "unused")
    assert (cut.max_length, cut.window_stride) == (128, 64)
    monkeypatch.setattr(positions, "positions_at", lambda path: (None, False))  # rotary positions: nothing cut
    assert positions.cut_to_positions(data, "unused") is data


def test_a_prompt_leaves_room_for_one_new_token(served: tuple[str, object]) -> None:
    """The tiny chat model has 128 positions: a prompt of 128 tokens would put the first new token past them (a model
    with learned positions has no row there), so at most 127 — the web UI's playground bounds it the same way. (The
    prompt's tokens count the BOS put before it.)"""
    url, _ = served
    res = httpx.post(f"{url}/v1/completions", json={"model": "run", "prompt": " ".join(["good"] * 127),
                                                    "max_tokens": 1}, headers=AUTH, timeout=30)
    assert res.status_code == 422 and "prompt is 128 tokens, at most 127" in res.text, res.text
    res = httpx.post(f"{url}/v1/completions", json={"model": "run", "prompt": " ".join(["good"] * 126),
                                                    "max_tokens": 1}, headers=AUTH, timeout=30)
    assert res.status_code == 200, res.text


def test_every_error_has_one_shape_naming_the_field(served: tuple[str, object]) -> None:
    """OpenAI's clients read `error.message`: every refusal — 401, 400, 404 (a model, a path), 405, 413, 422 (FastAPI's
    own and the server's) — is `{"error": {"message": one line, "code": status}}`; a 422 also names the field in
    `param` and keeps FastAPI's `detail` list."""
    url, _ = served
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    cases = [
        ("GET", "/v1/models", None, {}, 401, "API key"),
        ("POST", "/v1/predict", {"model": "run", "inputs": ["x"]}, AUTH, 400, "/v1/chat/completions"),
        ("POST", "/v1/predict", {"model": "nope", "inputs": ["x"]}, AUTH, 404, "'nope' is not served"),
        ("GET", "/v1/nowhere", None, AUTH, 404, "Not Found"),
        ("GET", "/v1/predict", None, AUTH, 405, "Method Not Allowed"),
        ("POST", "/v1/predict", {"inputs": ["x"] * 9}, AUTH, 413, "at most 8"),
        ("POST", "/v1/predict", {}, AUTH, 422, "inputs: Field required"),
        ("POST", "/v1/chat/completions", {**chat, "max_tokens": 17}, AUTH, 422, "max_tokens: at most 16"),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, AUTH, 422,
         "messages[0].role: Input should be"),
    ]
    for method, path, body, headers, status, message in cases:
        res = httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)
        err = res.json()["error"]
        assert res.status_code == status and err["code"] == status, (path, res.text)
        assert message in err["message"] and "\n" not in err["message"], (path, err)
        if status == 422:
            assert err["param"] == message.split(":")[0] and err["message"].startswith(err["param"] + ": ")
            assert res.json()["detail"][0]["loc"][:2] == ["body", err["param"].split("[")[0]], res.text
    assert httpx.get(f"{url}/v1/predict", headers=AUTH).headers["allow"] == "POST"


def test_a_text_utf8_cannot_carry_is_said_in_the_words_of_every_path(served: tuple[str, object]) -> None:
    """A NUL or a lone surrogate in an input was `inputs[0]: Value error, value: a NUL character ...` (pydantic's
    words around the problem); now the problem, or the path inside the row and the problem, as predict and the API
    say it of that row (`note: invalid Unicode ...`)."""
    url, _ = served
    raw = {**AUTH, "Content-Type": "application/json"}
    nul = "a NUL character at character 5; remove it"  # (no UTF-16 hint: JSON's \u0000 is no file's bytes)
    for path, body, said in (
            ("/v1/predict", '{"inputs": ["good\\u0000film"]}', f"inputs[0]: {nul}"),
            ("/v1/predict", '{"inputs": ["good", {"text": "good", "note": "a\\ud800"}]}',
             "inputs[1]: note: invalid Unicode: unpaired surrogate '\\ud800' at character 2"),
            ("/v1/predict", '{"inputs": ["good", {"text": "good\\u0000film"}]}', f"inputs[1].text: {nul}"),
            ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "good\\u0000film"}]}',
             f"messages[0].content: {nul}")):
        res = httpx.post(f"{url}{path}", content=body, headers=raw, timeout=30)
        assert res.status_code == 422 and res.json()["error"]["message"] == said, res.text
    # a field the model does not read: echoed back as it came (was a 422), as `tunelab predict` and the API echo it
    res = httpx.post(f"{url}/v1/predict", content='{"inputs": [{"text": "good", "note": "a\\u0000b"}]}', headers=raw,
                     timeout=30)
    assert res.status_code == 200 and res.json()["outputs"][0]["note"] == "a\x00b", res.text


def test_an_unexpected_exception_is_a_500_in_the_same_shape() -> None:
    """No endpoint is known to fail (the fuzz test above looks for one), but if one does its 500 keeps the shape."""
    import asyncio

    from tunelab.serve.app import create_app

    application = create_app([])

    async def boom() -> None:
        raise RuntimeError("a bug")

    application.add_api_route("/boom", boom, methods=["GET"])

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            return await client.get("/boom")

    res = asyncio.run(call())
    assert res.status_code == 500 and res.json()["error"] == {
        "message": "internal server error (the server's log has the details)", "code": 500}


def test_a_body_that_is_not_utf8_json_is_a_400_saying_so(served: tuple[str, object]) -> None:
    """FastAPI answers bytes that are not UTF-8 (and JSON nested past the parser's depth) with a 400 "There was an
    error parsing the body", and broken JSON with a 422 "JSON decode error": each is now a 400 naming the problem."""
    url, _ = served
    raw = {**AUTH, "Content-Type": "application/json"}
    for body, reason in ((b'{"inputs": ["caf\xe9 au lait"]}', "can't decode byte 0xe9 in position 16"),
                         (b'{"inputs": ["good"]', "Expecting ',' delimiter"),
                         (b"[" * 5000 + b"]" * 5000, "nested too deeply")):
        res = httpx.post(f"{url}/v1/predict", content=body, headers=raw, timeout=30)
        err = res.json()["error"]
        assert res.status_code == 400 and err["code"] == 400, res.text
        assert err["message"].startswith("request body is not valid UTF-8 JSON: ") and reason in err["message"], err
    assert httpx.post(f"{url}/v1/predict", content='{"inputs": ["café"]}'.encode(), headers=raw).status_code == 200
    bom = '\ufeff{"inputs": ["café"]}'.encode()  # a UTF-8 BOM, as some Windows tools write it: read past
    assert httpx.post(f"{url}/v1/predict", content=bom, headers=raw).status_code == 200


def test_nan_and_infinity_anywhere_in_a_body_are_a_422_naming_where(served: tuple[str, object]) -> None:
    """Python's JSON parser takes NaN, Infinity and 1e999 (as inf); a predict row's extra field holding one was
    answered with null in its output row. Any non-finite number in a body is a 422 naming its path."""
    url, _ = served
    raw = {**AUTH, "Content-Type": "application/json"}
    for path, body, param in (
            ("/v1/predict", '{"inputs": [{"text": "good film", "score": NaN}]}', "inputs[0].score"),
            ("/v1/predict", '{"inputs": ["bad", {"text": "good", "w": [1, -Infinity]}]}', "inputs[1].w[1]"),
            ("/v1/predict", '{"inputs": [{"text": "good", "weight": 1e999}]}', "inputs[0].weight"),
            ("/v1/completions", '{"prompt": "say good", "temperature": 1e999}', "temperature")):
        res = httpx.post(f"{url}{path}", content=body, headers=raw, timeout=30)
        err = res.json()["error"]
        assert res.status_code == 422 and err["param"] == param, (body, res.text)
        assert err["message"].startswith(f"{param}: ") and "is not a finite number" in err["message"], err
    res = httpx.post(f"{url}/v1/predict", content='{"inputs": [{"text": "good film", "score": 0.5}]}', headers=raw)
    assert res.status_code == 200 and res.json()["outputs"][0]["score"] == 0.5, res.text


def test_cors_headers_on_every_answer_to_an_allowed_origin(cls_run: Path) -> None:
    """A page on an allowed origin can read the 401 and the 413 too (CORS is the outermost middleware), and its
    browser's preflight — which never carries the API key — is answered rather than refused with a 401."""
    page = "https://app.example"
    for url, _ in serve_on_loopback([cls_run], api_key=KEY, max_body_bytes=1000, cors_origins=(page,)):
        def post(headers: dict[str, str], inputs: list[str], url: str = url) -> httpx.Response:
            return httpx.post(f"{url}/v1/predict", json={"inputs": inputs}, headers=headers, timeout=30)

        answers = {"200": post({**AUTH, "Origin": page}, ["good"]),
                   "401": post({"Origin": page}, ["good"]),
                   "413": post({**AUTH, "Origin": page}, ["x" * 2000]),
                   "422": post({**AUTH, "Origin": page}, []),
                   "preflight": httpx.options(f"{url}/v1/predict", headers={
                       "Origin": page, "Access-Control-Request-Method": "POST",
                       "Access-Control-Request-Headers": "authorization, content-type"}, timeout=30)}
        elsewhere = post({"Origin": "https://elsewhere.example"}, ["good"])
    for name, res in answers.items():
        assert str(res.status_code) == ("200" if name == "preflight" else name), (name, res.text)
        assert res.headers.get("access-control-allow-origin") == page, (name, dict(res.headers))
    assert "authorization" in answers["preflight"].headers["access-control-allow-headers"].lower()
    assert elsewhere.status_code == 401 and "access-control-allow-origin" not in elsewhere.headers


def test_a_burst_of_completions_never_queues_past_max_queue(tiny_chat_run: Path) -> None:
    """A completion takes its place in the queue in the same step as its --max-queue check (c0d9c01): were they two
    steps, a burst read at once would pass the check together before any was queued. The server's event loop is
    held while 6 requests arrive, so that it reads them in one go and they run in lockstep, and the one generation
    thread is held too: with max_queue 1 and batches of 1, one completion generates, at most one waits, the rest 503."""
    import asyncio
    import socket
    import time

    import uvicorn

    from conftest import free_port
    from tunelab.serve.app import create_app
    from tunelab.serve.models import served_models
    from tunelab.serve.schemas import Settings

    application = create_app(served_models([tiny_chat_run]), Settings(max_queue=1, max_chat_batch=1))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    held, release, generating = threading.Event(), threading.Event(), threading.Event()
    body = json.dumps({"prompt": "say good", "max_tokens": 1}).encode()
    request = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def status(sock: socket.socket) -> int:
        with sock:
            return int(sock.recv(4096).split()[1])

    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        batcher = application.state.server.models[0].chat_batcher
        batcher._pool.submit(generating.wait, 60)  # the generation thread busy until the 503s are in

        def hold() -> None:
            held.set()
            release.wait(30)

        loop.call_soon_threadsafe(hold)
        assert held.wait(30)
        socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(6)]
        for sock in socks:  # accepted by the kernel, read by the server once its loop is free
            sock.sendall(request)
        release.set()
        with ThreadPoolExecutor(6) as pool:
            answers = [pool.submit(status, sock) for sock in socks]
            deadline = time.time() + 15
            while sum(a.done() for a in answers) < 4 and time.time() < deadline:
                time.sleep(0.05)
            generating.set()
            statuses = [a.result() for a in answers]
    finally:
        release.set()
        generating.set()
        server.should_exit = True
        thread.join(timeout=30)
        loop.close()
    assert statuses.count(503) >= 4 and statuses.count(200) >= 1 and set(statuses) <= {200, 503}, statuses


def test_a_422_counts_every_field_error_though_detail_lists_the_first_20(served: tuple[str, object]) -> None:
    url, _ = served
    res = httpx.post(f"{url}/v1/predict", json={"inputs": [1] * 30}, headers=AUTH, timeout=30)
    body = res.json()
    assert res.status_code == 422 and len(body["detail"]) == 20, res.text
    more = int(body["error"]["message"].split("(and ")[1].split()[0])
    assert more + 1 >= 30, body["error"]["message"]  # each of the 30 inputs is wrong at least once
