"""The FastAPI application of `tunelab serve`.

- `POST /v1/predict` — classification / NER / QA models: one output row per input, the rows `tunelab predict` writes,
  except that an input whose outputs are NaN or infinite is answered by its row with `error` (`FailedRow`; a request
  of such rows alone is a 422, each counted in /metrics); concurrent requests share forward passes (serve/batcher.py).
  A row the task cannot read is a 422 naming it by its place (`inputs[2].text`: `row_error`).
- `POST /v1/chat/completions`, `POST /v1/completions` — OpenAI-compatible, for chat (sft) models: `max_tokens`,
  `temperature`, `top_p`, `stop`, `seed`, `stream` (server-sent events), usage counts (serve/schemas.py lists what
  else is taken; `tools`, calls and tool results: serve/tools.py). Concurrent requests share `generate()` calls
  (serve/chat_batcher.py); one completion is serve/completion.py's. A completion's prompt starts with BOS where the
  model's does (`completion_bos`); a list of prompts is one choice each.
- `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text: requests, latency, batch sizes, tokens, queue,
  rows answered with `error`).
- A bearer token when an API key is set (401 otherwise; /health stays open), 413 for a body over the limit, 422 for a
  bad field (named), 503 with Retry-After when the queue is full; every error as `{"error": {"message", "code"}}`
  (serve/errors.py). CORS only for the origins named.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse
from jinja2 import TemplateError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tunelab.api import Model
from tunelab.errors import TunelabError
from tunelab.evaluation.evaluate import FailedRow, not_finite_error
from tunelab.http_errors import error, invalid, row_error
from tunelab.serve.batcher import MicroBatcher, QueueFull
from tunelab.serve.chat_batcher import ChatBatcher
from tunelab.serve.completion import Completion
from tunelab.serve.errors import BodyLimit, install
from tunelab.serve.schemas import ChatRequest, CompletionRequest, PredictRequest, Settings
from tunelab.serve.tools import forced_calls, refusal, reply_format, reply_tags, request_messages
from tunelab.tasks.chat_template import chat_turns, completion_bos, prompt_ids
from tunelab.tasks.chat_tools import TemplateRefusal
from tunelab.tasks.model_rows import model_rules
from tunelab.tasks.reasoning import writes_reasoning

log = logging.getLogger("uvicorn.error")  # the server's log, beside uvicorn's own lines


@dataclass
class Served:
    """One model the server answers for, under `name`."""

    name: str
    model: Model
    batcher: MicroBatcher | None = None  # predict models
    chat_batcher: ChatBatcher | None = None  # chat models
    bos: int | None = None  # chat models: the BOS id a completion's prompt starts with (None: none)

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
        self.row_errors = Counter("tunelab_row_errors", "Inputs answered with error (outputs NaN or infinite)",
                                  ["model"], registry=r)


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
        self.warned: set[str] = set()  # models whose failed rows the log has said

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        for s in self.models:
            if s.chat:
                tok = s.model.tokenizer
                s.chat_batcher = ChatBatcher(s.model.module, tok, s.model.task.stop_ids(tok, s.model.module),
                                             self.settings.max_chat_batch, max_queue=self.settings.max_queue)
                s.bos = completion_bos(tok)
            else:
                # an input whose outputs are NaN answers its own row with `error`; the batch's other rows are answered
                s.batcher = MicroBatcher(lambda examples, m=s.model: m.predict_examples(examples, len(examples),
                                                                                         by_row=True),
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
            try:
                response = await call_next(request)
            except Exception:  # answered as a 500 by the outermost handler (http_errors): counted here as one
                self._count(request, path, 500, start)
                raise
        self._count(request, path, response.status_code, start)
        return response

    def _count(self, request: Request, path: str, status: int, start: float) -> None:
        # by route: a label per path any client makes up would grow the metrics without end
        route = path if any(getattr(r, "path", None) == path for r in request.app.routes) else "other"
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - start)

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
        except TunelabError as exc:  # a row the task cannot read: named by its place in the request
            raise row_error(exc, body.inputs, model.task.data.text_field) from None
        if failed := sum(isinstance(o, FailedRow) for o in outputs):  # outputs NaN or infinite: counted, said once
            self.row_failed(served, failed, len(outputs))
            if failed == len(outputs):  # none answered: the request fails, as eval and predict would
                raise invalid("inputs", f"{not_finite_error(model.path, failed, failed)}; it cannot be scored")
        return {"model": served.name, "outputs": outputs}

    def row_failed(self, served: Served, failed: int, rows: int) -> None:
        """`failed` of a request's `rows` inputs answered with `error`: counted (tunelab_row_errors_total), and the
        first time for that model one warning in the server's log (a model whose weights went NaN answers every row
        so)."""
        self.metrics.row_errors.labels(served.name).inc(failed)
        if served.name not in self.warned:
            self.warned.add(served.name)
            log.warning("model %s: %s; such rows are answered with error, a request of no other rows is a 422 "
                        "(tunelab_row_errors_total counts them; said once)", served.name,
                        not_finite_error(served.model.path, failed, rows))

    async def chat_completions(self, body: ChatRequest, request: Request) -> Any:
        served = self.pick(body.model, chat=True)
        if (forced := forced_calls(body)) is not None:  # tool_choice "required" / a named function: cannot be made
            raise forced
        tokenizer = served.model.tokenizer
        with model_rules(served.model.task):  # tools, calls, cleaning: as its training read them
            messages = chat_turns(served.model.task, request_messages(body, writes_reasoning(tokenizer)))
        try:
            ids = prompt_ids(tokenizer, messages)
        except TemplateRefusal as exc:  # tools, calls or results the template would leave out: a 400 naming them
            raise refusal(exc, messages) from None
        except (TemplateError, TypeError) as exc:  # the model's own template refuses them (Gemma's "roles must
            # alternate"; a call's arguments of a type it cannot join)
            raise invalid("messages", f"the model's chat template refuses them: {exc}") from None
        calls = reply_format(tokenizer, body)  # (None: the reply is its text)
        return await Completion(self, served, [("messages", ids)], body, chat=True, calls=calls,
                                keep=reply_tags(tokenizer, calls)).respond(request)

    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        served = self.pick(body.model, chat=True)
        listed = isinstance(body.prompt, list)  # (a list: one choice per prompt, each as one prompt alone)
        texts = body.prompt if listed else [body.prompt]
        if len(texts) > self.settings.max_inputs:  # each prompt counts as a predict request's input does
            return error(413, f"prompt: {len(texts)} prompts, at most {self.settings.max_inputs} per request")
        prompts = []
        for i, text in enumerate(texts):
            ids = served.model.tokenizer(text, add_special_tokens=False)["input_ids"]
            if served.bos is not None and ids[:1] != [served.bos]:  # as the model read its text in training (and
                ids = [served.bos, *ids]  # as vLLM tokenises a prompt); a prompt that starts with it keeps one
            prompts.append((f"prompt[{i}]" if listed else "prompt", ids))
        return await Completion(self, served, prompts, body, chat=False).respond(request)


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
