"""The FastAPI application of `tunelab serve`.

- `POST /v1/predict` — classification / NER / QA models: one output row per input, the rows `tunelab predict` writes;
  concurrent requests share forward passes (serve/batcher.py).
- `POST /v1/chat/completions`, `POST /v1/completions` — OpenAI-compatible, for chat (sft) models: `max_tokens`,
  `temperature`, `top_p`, `stop`, `seed`, `stream` (server-sent events), usage counts. Concurrent requests share
  `generate()` calls (serve/chat_batcher.py).
- `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text: requests, latency, batch sizes, tokens, queue).
- A bearer token when an API key is set (401 otherwise; /health stays open), 413 for a body over the limit, 422 for a
  bad field (named), 503 with Retry-After when the queue is full; every error as `{"error": {"message", "code"}}`
  (serve/errors.py). CORS only for the origins named.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from jinja2 import TemplateError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tunelab.api import Model
from tunelab.errors import TunelabError
from tunelab.http_errors import error, invalid
from tunelab.serve.batcher import MicroBatcher, QueueFull
from tunelab.serve.chat_batcher import ChatBatcher, Job
from tunelab.serve.errors import BodyLimit, install
from tunelab.serve.schemas import ChatRequest, CompletionRequest, PredictRequest, Settings
from tunelab.tasks.chat_template import prompt_ids, user_turns
from tunelab.tasks.generation import prompt_limit, with_overrides


@dataclass
class Served:
    """One model the server answers for, under `name`."""

    name: str
    model: Model
    batcher: MicroBatcher | None = None  # predict models
    chat_batcher: ChatBatcher | None = None  # chat models

    @property
    def chat(self) -> bool:
        return self.model.task.generates_replies


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunelab_requests", "HTTP requests", ["path", "status"], registry=r)
        self.latency = Histogram("tunelab_request_seconds", "Request latency", ["path"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch = Histogram("tunelab_batch_size", "Inputs per forward pass", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.tokens = Counter("tunelab_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.token_rate = Gauge("tunelab_tokens_per_second", "Decode speed of the last reply", ["model"], registry=r)
        self.queue = Gauge("tunelab_queue_inputs", "Inputs waiting or running", ["model"], registry=r)


def input_tokens(tokenizer: Any, row: Any) -> int:
    """The tokens of an input's text fields together (a text, or a row's texts and lists of texts)."""
    if not isinstance(row, dict):
        return len(tokenizer(str(row), add_special_tokens=False)["input_ids"])
    words = [w for v in row.values() for w in ([v] if isinstance(v, str) else v if isinstance(v, list) else [])
             if isinstance(w, str)]  # texts, and lists of them (NER's tokens)
    text = " ".join(words)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


class Server:
    """The endpoints over the served models; `create_app` routes them."""

    def __init__(self, models: list[Served], settings: Settings) -> None:
        self.models, self.settings, self.metrics = models, settings, Metrics()
        self.by_name = {s.name: s for s in models}

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        for s in self.models:
            if s.chat:
                tok = s.model.tokenizer
                s.chat_batcher = ChatBatcher(s.model.module, tok, s.model.task.stop_ids(tok),
                                             self.settings.max_chat_batch, max_queue=self.settings.max_queue)
            else:
                s.batcher = MicroBatcher(lambda examples, m=s.model: m.predict_examples(examples, len(examples)),
                                         self.settings.max_batch, self.settings.max_wait_ms, self.settings.max_queue,
                                         on_batch=lambda n, _s: self.metrics.batch.observe(n),
                                         max_tokens=self.settings.max_batch_tokens)
                await s.batcher.start()
        yield
        for s in self.models:  # graceful: what is queued is answered first
            if s.batcher is not None:
                await s.batcher.stop()

    async def guard(self, request: Request, call_next: Any) -> Any:
        start, path, key = time.perf_counter(), request.url.path, self.settings.api_key
        if key and path != "/health" and request.headers.get("authorization") != f"Bearer {key}":
            response = error(401, "missing or wrong API key: send Authorization: Bearer <key>")
        else:  # a body over the limit: 413 from BodyLimit, inside
            response = await call_next(request)
        # by route: a label per path any client makes up would grow the metrics without end
        route = path if any(getattr(r, "path", None) == path for r in request.app.routes) else "other"
        self.metrics.requests.labels(route, str(response.status_code)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - start)
        return response

    def pick(self, name: str | None, chat: bool) -> Served:
        if name is not None:
            served = self.by_name.get(name)
            if served is None:
                raise HTTPException(404, f"model {name!r} is not served (GET /v1/models lists them)")
            if served.chat != chat:
                use = "/v1/chat/completions" if served.chat else "/v1/predict"
                raise HTTPException(400, f"model {name!r} is a {'chat' if served.chat else 'predict'} model; use {use}")
            return served
        fits = [s for s in self.models if s.chat == chat]
        if not fits:
            raise HTTPException(400, f"no {'chat' if chat else 'predict'} model is served")
        return fits[0]

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "models": [s.name for s in self.models]}

    async def prometheus(self) -> PlainTextResponse:
        for s in self.models:
            waiting = s.batcher.waiting if s.batcher else len(s.chat_batcher.pending) if s.chat_batcher else 0
            self.metrics.queue.labels(s.name).set(waiting)
        return PlainTextResponse(generate_latest(self.metrics.registry).decode(),
                                 media_type="text/plain; version=0.0.4")

    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": s.name, "object": "model", "owned_by": "tunelab",
                                            "task": s.model.task.cfg.name, "path": str(s.model.path)}
                                           for s in self.models]}

    async def predict(self, body: PredictRequest) -> Any:
        served = self.pick(body.model, chat=False)
        if len(body.inputs) > self.settings.max_inputs:
            return error(413, f"inputs: {len(body.inputs)} inputs, at most {self.settings.max_inputs} per request")
        assert served.batcher is not None
        limit, model = self.settings.max_input_tokens, served.model
        counts = [input_tokens(model.tokenizer, row) for row in body.inputs]
        for i, n in enumerate(counts):  # before batching: one long input must not stall every request
            if n > limit:
                raise invalid("inputs", f"input {i + 1}: {n} tokens, at most {limit} per input")
        # the batch's token budget counts an input at most max_length (a longer QA context's windows: as one)
        longest = min(model.task.data.max_length, max(counts))
        try:  # this request's rows alone, so that a bad row fails its own request, not the batch it would join; read
            # once: the batch runs the examples read here
            outputs = await served.batcher.submit(model.parse_inputs(list(body.inputs)), longest)
        except QueueFull as exc:
            return error(503, f"server busy: {exc}; retry shortly", {"Retry-After": "1"})
        except TunelabError as exc:  # a row the task cannot read: the same one line as the CLI's
            raise invalid("inputs", str(exc)) from None
        return {"model": served.name, "outputs": outputs}

    async def chat_completions(self, body: ChatRequest, request: Request) -> Any:
        served = self.pick(body.model, chat=True)
        try:
            messages = user_turns(served.model.task, [m.model_dump() for m in body.messages])
            ids = prompt_ids(served.model.tokenizer, messages)
        except TemplateError as exc:  # the model's own template refuses them (Gemma's "roles must alternate")
            raise invalid("messages", f"the model's chat template refuses them: {exc}") from None
        return await Completion(self, served, ids, body, chat=True).respond(request)

    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        served = self.pick(body.model, chat=True)
        ids = served.model.tokenizer(body.prompt, add_special_tokens=False)["input_ids"]
        return await Completion(self, served, ids, body, chat=False).respond(request)


def create_app(models: list[Served], settings: Settings | None = None) -> FastAPI:
    server = Server(models, settings or Settings())
    app = FastAPI(title="tunelab serve", lifespan=server.lifespan)
    install(app)  # every error as {"error": {"message", "code"}}
    app.add_middleware(BodyLimit, limit=server.settings.max_body_bytes)
    app.middleware("http")(server.guard)  # around BodyLimit: the key is checked first, every answer past CORS counted
    if server.settings.cors_origins:  # added last, the outermost: the 401 / 413 carry its headers too, and a
        # browser's preflight (which never carries the key) is answered before the key is asked for
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(server.settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    app.add_api_route("/health", server.health, methods=["GET"])
    app.add_api_route("/metrics", server.prometheus, methods=["GET"])
    app.add_api_route("/v1/models", server.list_models, methods=["GET"])
    app.add_api_route("/v1/predict", server.predict, methods=["POST"])
    app.add_api_route("/v1/chat/completions", server.chat_completions, methods=["POST"])
    app.add_api_route("/v1/completions", server.completions, methods=["POST"])
    app.state.server = server
    return app


class Completion:
    """One chat or text completion: checked against the limits, generated in a worker thread (one reply at a time
    per model), answered as one JSON object or as server-sent events."""

    def __init__(self, server: Server, served: Served, ids: list[int], body: Any, chat: bool) -> None:
        self.server, self.served, self.ids, self.body, self.chat = server, served, ids, body, chat
        self.cfg = self._config()
        self.stream = _Stream([body.stop] if isinstance(body.stop, str) else list(body.stop or []))
        self.info: dict[str, Any] = {}
        self.ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _config(self) -> Any:
        body, settings, model = self.body, self.server.settings, self.served.model
        if body.max_tokens is not None and body.max_tokens > settings.max_tokens:
            raise invalid("max_tokens", f"at most {settings.max_tokens}")
        asked = body.max_tokens if body.max_tokens is not None else min(model.task.cfg.generation.max_new_tokens,
                                                                        settings.max_tokens)  # the server's cap
        positions, limit = prompt_limit(model.module, settings.max_prompt_tokens)
        if not self.ids:
            raise invalid("messages" if self.chat else "prompt", "empty: no tokens to continue from")
        if len(self.ids) > limit:
            raise invalid("messages" if self.chat else "prompt", f"prompt is {len(self.ids)} tokens, at most {limit}")
        cfg = with_overrides(model.task.cfg.generation, max_new_tokens=asked, temperature=body.temperature,
                             top_p=body.top_p)
        if body.seed is not None:
            cfg = cfg.model_copy(update={"seed": body.seed})
        return cfg.model_copy(update={"max_new_tokens": max(1, min(cfg.max_new_tokens, positions - len(self.ids)))})

    async def respond(self, request: Request) -> Any:
        assert self.served.chat_batcher is not None  # every chat model has one (lifespan)
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.stream.emit = lambda text: loop.call_soon_threadsafe(self.queue.put_nowait, text)
        job = Job(self.ids, self.cfg, self.stream.write, self.stream.stopped)
        try:
            answered = self.served.chat_batcher.enqueue(job)
        except QueueFull as exc:
            return error(503, f"server busy: {exc}; retry shortly", {"Retry-After": "1"})
        self.done = asyncio.ensure_future(self._generate(job, answered))
        if self.body.stream:
            return StreamingResponse(self._events(), media_type="text/event-stream")
        parts = []
        watch = asyncio.ensure_future(self._watch(request))
        try:
            while (piece := await self.queue.get()) is not None:
                parts.append(piece)
            await self.done
        finally:  # (cancelled too: the server shutting down)
            watch.cancel()
            self.stream.stopped.set()  # (a finished row: no effect)
        text = "".join(parts).strip()
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": self._finish()}
                  if self.chat else {"index": 0, "text": text, "finish_reason": self._finish()})
        return {"id": self.ident, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.served.name, "choices": [choice], "usage": self._usage()}

    async def _watch(self, request: Request) -> None:
        """A JSON (not streamed) answer's client gone before it is ready: its row stops generating for nobody, as a
        stream's does when the server cancels it. The body is read, so the next message is the disconnect (awaited,
        not `is_disconnected()`, which never sees it through the `guard` middleware's receive)."""
        if (await request.receive())["type"] == "http.disconnect":
            self.stream.stopped.set()

    async def _generate(self, job: Job, answered: asyncio.Future[Job]) -> None:
        start = time.perf_counter()
        try:
            await answered
        finally:
            self.stream.flush()
            self.queue.put_nowait(None)
        self.info.update(tokens=len(job.tokens), finish=job.finish)
        metrics = self.server.metrics
        metrics.tokens.labels(self.served.name).inc(len(job.tokens))
        metrics.token_rate.labels(self.served.name).set(len(job.tokens) / max(time.perf_counter() - start, 1e-9))

    def _usage(self) -> dict[str, int]:
        n = self.info.get("tokens", 0)
        return {"prompt_tokens": len(self.ids), "completion_tokens": n, "total_tokens": len(self.ids) + n}

    def _finish(self) -> str:
        return "stop" if self.stream.hit else self.info.get("finish", "stop")

    def _chunk(self, delta: dict[str, Any] | str, reason: str | None, usage: bool = False) -> str:
        choice = ({"index": 0, "delta": delta, "finish_reason": reason} if self.chat
                  else {"index": 0, "text": delta, "finish_reason": reason})
        data: dict[str, Any] = {"id": self.ident, "object": "chat.completion.chunk" if self.chat else "text_completion",
                                "created": self.created, "model": self.served.name, "choices": [choice]}
        if usage:
            data["usage"] = self._usage()
        return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"

    async def _events(self) -> AsyncIterator[str]:
        try:
            if self.chat:
                yield self._chunk({"role": "assistant", "content": ""}, None)
            while (piece := await self.queue.get()) is not None:
                yield self._chunk({"content": piece} if self.chat else piece, None)
            await self.done
            yield self._chunk({} if self.chat else "", self._finish(), usage=True)
            yield "data: [DONE]\n\n"
        finally:  # the client gone mid-stream (the server cancels this): its row stops generating for nobody
            self.stream.stopped.set()


class _Stream:
    """The reply's text as it streams, cut at the first `stop` string: text that could still begin a stop string is
    held back until it cannot; once one appears, generation is told to end (`stopped`: the row ends at that token,
    which `usage` counts last)."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.buffer, self.hit = "", False
        self.stopped = threading.Event()
        self.emit: Any = None

    def write(self, text: str) -> None:
        if self.hit:
            return
        self.buffer += text
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            self.stopped.set()
            self._send(self.buffer[:cut])
            self.buffer = ""
            return
        safe = len(self.buffer) - self.keep
        if safe > 0:
            self._send(self.buffer[:safe])
            self.buffer = self.buffer[safe:]

    def flush(self) -> None:
        if not self.hit and self.buffer:
            self._send(self.buffer)
        self.buffer = ""

    def _send(self, text: str) -> None:
        if text:
            self.emit(text)
