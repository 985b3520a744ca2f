"""The FastAPI application of `tunelab ui`: server-side pages (Jinja2, SVG charts) over a runs folder.

    GET  /                      the runs: status, task, model, method, key metrics, started, duration
    GET  /runs/NAME             one run: live curves, log tail, config, report link, stop / resume
    GET  /runs/NAME/live        the part of that page that refreshes every 2 s while the run runs
    GET  /runs/NAME/report      the run's HTML report
    POST /runs/NAME/stop|resume SIGINT to the job / `tunelab train --resume` (ui/jobs.py); refused: the run page, 409
    GET  /launch, POST /launch  the form that writes a config and starts `tunelab train` detached
    GET  /compare?a=&b=         two runs side by side: the settings that differ, metrics, curves
    GET  /play?run=NAME         the playground; POST /api/play/NAME (predict rows) and /api/play/NAME/chat (SSE)
    GET  /api/runs              the runs list as JSON
Every page takes ?lang=en|zh (remembered in a cookie). Errors answer as `tunelab serve`'s do (tunelab/http_errors.py):
`{"error": {"message": "<one line>", "code": <status>}}`, a 422 naming the field in `param`. Requests other web sites
make a browser send (a Host not this server's, a POST from another origin, a JSON API body not sent as JSON) are
refused before any route (ui/guard.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yaml
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.config.fields import flat_fields
from tunelab.errors import TunelabError
from tunelab.http_errors import http_error, install_handlers, invalid, row_error
from tunelab.registry import METHODS, TASKS
from tunelab.text.full_width import equals_mark
from tunelab.ui import checks, jobs
from tunelab.ui.charts import line_chart
from tunelab.ui.guard import Guard
from tunelab.ui.i18n import pick_language, translator
from tunelab.ui.runs import RunView, curves, list_runs, log_tail, view

if TYPE_CHECKING:
    from tunelab.api import Model

FORM_NUMBERS = {"epochs": "train.epochs", "lr": "train.lr", "batch_size": "train.batch_size",
                "max_length": "data.max_length"}


class Models:
    """Tuned models the playground has loaded, the two most recent kept."""

    def __init__(self, keep: int = 2) -> None:
        self.keep, self.lock = keep, threading.Lock()
        self.loaded: OrderedDict[Path, tuple[tuple[int, int], Model]] = OrderedDict()

    def get(self, path: Path) -> Model:
        """The run's model, loaded again where the run has been trained again since (its model/ replaced)."""
        LIBRARY.wait()  # the warm-up's imports first: two threads importing transformers at once can fail
        with self.lock:
            stamp = _stamp(path)
            if path not in self.loaded or self.loaded[path][0] != stamp:
                from tunelab.api import load  # torch: imported when the playground first needs a model

                self.loaded[path] = (stamp, load(path))
                while len(self.loaded) > self.keep:
                    self.loaded.popitem(last=False)
            self.loaded.move_to_end(path)
            return self.loaded[path][1]


def _stamp(path: Path) -> tuple[int, int]:
    """Which model a run folder holds now: its model/tunelab.json's inode and time (each export writes a new one;
    the name is models.aliases.META_FILE, not imported: that module imports torch, and this one must not)."""
    try:
        st = (path / "model" / "tunelab.json").stat()
    except OSError:
        return (0, 0)
    return (st.st_ino, st.st_mtime_ns)


class UI:
    stop_wait = 30.0  # seconds Stop waits for the run to end (then a 409 saying it did not)
    resume_watch = 20.0  # seconds Resume watches the job start (one that ends in that time: a 409 with its error)

    def __init__(self, runs: Path, lang: str = "auto") -> None:
        self.runs, self.lang, self.models = runs, lang, Models()
        self.env = Environment(loader=PackageLoader("tunelab.ui", "templates"), autoescape=True,
                               undefined=StrictUndefined)

    # -- helpers -------------------------------------------------------------------------------
    def language(self, request: Request) -> str:
        return pick_language(request.query_params.get("lang"), request.cookies.get("lang"),
                             request.headers.get("accept-language"), self.lang)

    def page(self, request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        query, lang = request.query_params.get("lang"), self.language(request)
        html = self.env.get_template(template).render(t=translator(lang), lang=lang, path=request.url.path,
                                                      **values)
        response = HTMLResponse(html, status_code=status)
        if query in ("en", "zh"):
            response.set_cookie("lang", query, samesite="lax")
        return response

    def run(self, name: str) -> RunView:
        missing = HTTPException(404, f"no run {name[:100]!r} in {self.runs}")
        if "/" in name or name.startswith(".") or not name:
            raise missing
        try:
            v = view(self.runs / name)
            if v.status == "empty" and not v.path.is_dir():
                raise missing
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            raise missing from None
        return v

    async def model(self, name: str) -> Model:
        """The run's tuned model, loaded in a worker thread; a run without one (failed, still training) is a 409."""
        path = self.run(name).path
        try:
            return await asyncio.to_thread(self.models.get, path)
        except (TunelabError, OSError) as exc:
            raise HTTPException(409, f"{name}: no model to try: {str(exc).splitlines()[0]}") from None

    def live(self, v: RunView, request: Request) -> dict[str, Any]:
        return {"run": v, "chart": line_chart(curves(v), translator(self.language(request))), "log": log_tail(v)}

    # -- pages ---------------------------------------------------------------------------------
    async def index(self, request: Request) -> HTMLResponse:
        return self.page(request, "runs.html", runs=list_runs(self.runs), folder=str(self.runs))

    async def api_runs(self) -> list[dict[str, Any]]:
        return [{"name": v.name, "status": v.status, "task": v.task, "model": v.model, "method": v.method,
                 "metrics": v.metrics, "started": v.started, "duration": v.duration, "step": v.step}
                for v in list_runs(self.runs)]

    async def run_page(self, request: Request, name: str, status: int = 200, error: str = "") -> HTMLResponse:
        """The run's page; `error`: why a stop or resume was refused (one line, with `status`)."""
        v = self.run(name)
        try:
            config = (v.path / "config.yaml").read_text(encoding="utf-8", errors="replace")
        except OSError:
            config = ""
        return self.page(request, "run.html", status=status, error=error or v.error, config=config,
                         has_report=_is_file(v.path / "report.html"), **self.live(v, request))

    async def run_live(self, request: Request, name: str) -> HTMLResponse:
        return self.page(request, "live.html", **self.live(self.run(name), request))

    async def report(self, name: str) -> FileResponse:
        path = self.run(name).path / "report.html"
        if not _is_file(path):
            raise HTTPException(404, f"{name} has no report.html yet")
        return FileResponse(path)

    async def stop(self, request: Request, name: str) -> Response:
        v = self.run(name)
        try:
            jobs.stop(v)
        except TunelabError as exc:
            return await self.run_page(request, name, 409, str(exc).splitlines()[0])
        if (await asyncio.to_thread(jobs.wait_stopped, v.path, self.stop_wait)).status == "running":
            return await self.run_page(request, name, 409, f"{name} did not stop after {self.stop_wait:g} s (it was "
                                                           "sent SIGINT; it may still be saving a checkpoint)")
        return RedirectResponse(f"/runs/{quote(name, safe='')}", status_code=303)

    async def resume(self, request: Request, name: str) -> Response:
        try:
            await asyncio.to_thread(jobs.resume, self.run(name), self.resume_watch)
        except TunelabError as exc:
            return await self.run_page(request, name, 409, str(exc).splitlines()[0])
        return RedirectResponse(f"/runs/{quote(name, safe='')}", status_code=303)

    async def launch_form(self, request: Request) -> HTMLResponse:
        await asyncio.to_thread(LIBRARY.wait)
        return self.page(request, "launch.html", error="", values={}, tasks=TASKS.names(),
                         methods=METHODS.names())

    async def launch(self, request: Request) -> Any:
        await asyncio.to_thread(LIBRARY.wait)
        form = {k: str(v).strip() for k, v in (await request.form()).items()}
        tree: dict[str, Any] = {"task": {"name": form.get("task", "")}, "model": form.get("model", ""),
                                "method": {"name": form.get("method", "")},
                                "data": {"train": form.get("train", "")}}
        if form.get("validation"):
            tree["data"]["validation"] = form["validation"]
        error = ""
        try:
            for key, dotted in FORM_NUMBERS.items():
                if form.get(key):
                    checks.set_field(tree, dotted, checks.form_value(dotted, form[key]))
            for line in form.get("extra", "").splitlines():
                if line.strip():
                    key, sep, value = line.partition("=")
                    if not sep:
                        raise TunelabError(f"more settings: {line.strip()[:80]!r} is not key=value"
                                           f"{equals_mark(line)}")
                    checks.set_field(tree, key.strip(), checks.form_value(key.strip(), value))
            await asyncio.to_thread(jobs.launch, self.runs, form.get("name", ""), tree,
                                    translator(self.language(request)))
        except TunelabError as exc:
            error = str(exc).splitlines()[0]
        except RecursionError:
            error = "more settings: a value is nested too deeply"
        except OSError as exc:
            error = f"could not start the job: {exc}"
        if error:
            return self.page(request, "launch.html", status=422, error=error, values=form, tasks=TASKS.names(),
                             methods=METHODS.names())
        return RedirectResponse(f"/runs/{quote(form['name'], safe='')}", status_code=303)

    async def compare(self, request: Request, a: str = "", b: str = "") -> HTMLResponse:
        runs = list_runs(self.runs)
        pair: list[RunView] = [self.run(x) for x in (a, b) if x]
        diff: list[tuple[str, str, str]] = []
        chart = ""
        if len(pair) == 2:
            flat = [flat_fields(_yaml(v.path / "config.yaml")) for v in pair]
            keys = sorted(set(flat[0]) | set(flat[1]))
            diff = [(k, str(flat[0].get(k, "")), str(flat[1].get(k, ""))) for k in keys
                    if flat[0].get(k) != flat[1].get(k) and k != "output_dir"]
            chart = line_chart({f"{v.name} {k}": pts for v in pair for k, pts in curves(v).items()},
                               translator(self.language(request)))
        return self.page(request, "compare.html", runs=runs, pair=pair, diff=diff, chart=chart, a=a, b=b)

    async def play(self, request: Request, run: str = "") -> HTMLResponse:
        finished = [v for v in list_runs(self.runs) if v.status == "finished"]
        chosen, fields, chat, error, status = None, (), False, "", 200
        if run:
            chosen = self.run(run)
            try:
                model = await self.model(run)
                chat, fields = model.task.generates_replies, model.task.input_fields()
            except HTTPException as exc:
                chosen, error, status = None, str(exc.detail), exc.status_code
        return self.page(request, "play.html", status=status, runs=finished, chosen=chosen, fields=fields,
                         chat=chat, error=error)

    async def _request(self, request: Request, key: str, what: str, check: Any) -> Any:
        """The body's non-empty list `key` through `check` (checks.predict_inputs / chat_messages; else 422); a body
        that is not JSON is refused before this, as `tunelab serve` refuses it (http_errors.StrictJSONRoute: 400)."""
        body = await request.json()
        items = body.get(key) if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise invalid(key, f"a non-empty list of {what}")
        try:
            return check(items)
        except TunelabError as exc:  # `inputs[1].note: ...`: a 422 whose param is the path it names
            where, sep, problem = str(exc).partition(": ")
            if sep and (where == key or where.startswith((f"{key}[", f"{key}."))):
                raise invalid(where, problem) from None
            raise invalid(key, str(exc)) from None

    async def play_predict(self, name: str, request: Request) -> Any:
        inputs = await self._request(request, "inputs", "texts or rows", checks.predict_inputs)
        model = await self.model(name)
        try:
            return {"outputs": await asyncio.to_thread(model.predict, inputs)}
        except TunelabError as exc:  # a row the task cannot read: as `tunelab serve` says it (`inputs[0].text`)
            raise row_error(exc, inputs, model.task.data.text_field) from None

    async def play_chat(self, name: str, request: Request) -> StreamingResponse:
        await asyncio.to_thread(LIBRARY.wait)
        from tunelab.tasks.chat_template import chat_turns, prompt_ids
        from tunelab.tasks.streaming import stream_reply

        messages = await self._request(request, "messages", "{role, content}", checks.chat_messages)
        model = await self.model(name)
        if not model.task.generates_replies:
            raise HTTPException(400, f"{name} is a {model.task.cfg.name} model, not a chat model: "
                                     f"POST /api/play/{name} predicts with it")
        try:
            ids = await asyncio.to_thread(prompt_ids, model.tokenizer, chat_turns(model.task, messages))
        except (TemplateError, ValueError) as exc:  # a template of the model's own may refuse a conversation
            raise invalid("messages", f"the chat template refused them: {str(exc)[:200]}") from None
        from tunelab.tasks.generation import prompt_limit  # here: importing it loads torch (the model has)

        positions, limit = prompt_limit(model.module, checks.MAX_PROMPT_TOKENS)
        if len(ids) > limit:
            raise invalid("messages", f"the conversation is {len(ids)} tokens, at most {limit} (the model's "
                                      f"context is {positions})")
        generation = model.task.cfg.generation
        generation = generation.model_copy(update={"max_new_tokens": min(generation.max_new_tokens,
                                                                         positions - len(ids))})
        loop, queue = asyncio.get_running_loop(), asyncio.Queue[str | None]()

        class Out:
            def write(self, text: str) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, text)

            def flush(self) -> None:
                pass

        def work() -> None:
            try:
                stream_reply(model.module, model.tokenizer, ids, generation,
                             model.task.stop_ids(model.tokenizer, model.module), Out())  # type: ignore[arg-type]
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        async def events() -> AsyncIterator[str]:
            task = asyncio.ensure_future(asyncio.to_thread(work))
            while (piece := await queue.get()) is not None:
                yield "data: " + json.dumps({"text": piece}, ensure_ascii=False) + "\n\n"
            await task
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


async def _error_page(request: Request, exc: Exception) -> Response:
    """A page's refusal as a page where a browser asks for one (a deleted run's link, a mistyped address: it was the
    JSON error shown raw); the JSON routes and API clients get the one JSON shape (http_errors)."""
    assert isinstance(exc, StarletteHTTPException)
    if (request.url.path.startswith("/api/") or isinstance(exc.detail, list)
            or "text/html" not in request.headers.get("accept", "")):
        return await http_error(request, exc)
    response = request.app.state.ui.page(request, "error.html", status=exc.status_code, code=exc.status_code,
                                          message=str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def _is_file(path: Path) -> bool:
    """A file there (False where its folder may not be read: an unreadable run shows, with its reason)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # (not UTF-8: a ValueError)
        return {}
    return data if isinstance(data, dict) else {}



ROUTES = [("GET", "/", "index"), ("GET", "/api/runs", "api_runs"), ("GET", "/runs/{name}", "run_page"),
          ("GET", "/runs/{name}/live", "run_live"), ("GET", "/runs/{name}/report", "report"),
          ("POST", "/runs/{name}/stop", "stop"), ("POST", "/runs/{name}/resume", "resume"),
          ("GET", "/launch", "launch_form"), ("POST", "/launch", "launch"), ("GET", "/compare", "compare"),
          ("GET", "/play", "play"), ("POST", "/api/play/{name}", "play_predict"),
          ("POST", "/api/play/{name}/chat", "play_chat")]


LIBRARY = threading.Event()  # set once the warm-up has imported the library
_WARMING = threading.Lock()  # one warm-up per process, however many apps are made (the tests make several)
_warming: list[threading.Thread] = []


def _warm_up() -> None:
    """Import the library (torch, transformers, the tasks) in the background: the runs pages answer at once, and the
    launch form and the playground wait for `LIBRARY` instead of importing themselves — two threads importing
    transformers / accelerate at once can meet a partly initialised module (seen: "cannot import name
    'AcceleratorState' from partially initialized module 'accelerate.state'" on the first /launch of a loaded
    machine)."""
    try:
        import tunelab.api  # noqa: F401

        TASKS.names()
    finally:
        LIBRARY.set()


def create_app(runs: Path, lang: str = "auto", host: str = "127.0.0.1", allow_hosts: tuple[str, ...] = ()) -> FastAPI:
    """The app over `runs`; `host`: the address it is served on (--host), a name its requests' Host may give, as
    may `allow_hosts` (--allow-host: ui/guard.py, requests of other sites refused)."""
    with _WARMING:
        if not _warming:
            _warming.append(threading.Thread(target=_warm_up, daemon=True, name="tunelab-ui-warm-up"))
            _warming[0].start()
    ui = UI(runs, lang)
    app = FastAPI(title="tunelab ui", docs_url=None, redoc_url=None)
    install_handlers(app)  # API errors as `tunelab serve` answers them: {"error": {"message", "code"}}
    app.add_exception_handler(StarletteHTTPException, _error_page)  # (a browser's: a page)
    for method, path, handler in ROUTES:
        page = {"response_class": HTMLResponse} if method == "GET" and not path.startswith("/api/") else {}
        app.add_api_route(path, getattr(ui, handler), methods=[method], **page)
    app.add_middleware(Guard, host=host, allow=tuple(allow_hosts))
    app.state.ui = ui
    return app
