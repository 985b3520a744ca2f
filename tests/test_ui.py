"""`tunelab ui` in a real headless Chromium (Debian `chromium` driven by the `playwright` package through
`executable_path`) against the real server started as a user starts it (`tunelab ui`, a separate process): launch a
tiny run from the form, watch its curve, stop and resume it, close the page and restart the server while the job goes
on, reopen and see the curve continue, open its report, get a prediction from the playground; the Chinese
interface; a bad form answered with one line and nothing started."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import app_on_loopback, free_port, sentiment_rows, train_sentiment, write_jsonl

pytest.importorskip("fastapi")
LOCAL = "http://127.0.0.1"  # TestClient's Host (its default, `testserver`, is a name ui/guard.py refuses)
CHROMIUM = next((p for p in (os.environ.get("TUNELAB_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)


class UIServer:
    """`python -m tunelab ui --runs RUNS --port P` as a process of its own (so restarting it is real)."""

    def __init__(self, runs: Path, log: Path) -> None:
        self.runs, self.log, self.port, self.process = runs, log, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UIServer:
        out = self.log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "tunelab", "ui", "--runs", str(self.runs), "--port",
                                         str(self.port)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/api/runs", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(self.log.read_text()[-2000:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@contextlib.contextmanager
def ui_on_loopback(runs: Path) -> Iterator[str]:
    """The page's app (`tunelab ui --runs RUNS`) on uvicorn on a free loopback port, in a thread of this process:
    for what a browser shows, where the server's own process is not what a test is about. Yields its base URL."""
    from tunelab.ui.app import create_app

    with app_on_loopback(create_app(runs)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium, launched once for the module's tests (each opens its own context and pages)."""
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (apt-get install chromium); CI must run the UI test")
        pytest.skip("chromium is not installed")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _points(page: object) -> int:
    line = page.query_selector('#chart polyline[data-name="loss"]')  # type: ignore[attr-defined]
    return int(line.get_attribute("data-points")) if line else 0


def _status(server: UIServer, name: str) -> str:
    runs = {r["name"]: r for r in httpx.get(f"{server.url}/api/runs", timeout=10).json()}
    return runs[name]["status"] if name in runs else "absent"


def test_launch_watch_restart_stop_resume_report_playground(tiny_bert: Path, tmp_path: Path, browser: object) -> None:
    runs = tmp_path / "runs"
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(64, 0))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(40, 1))
    server = UIServer(runs, tmp_path / "ui.log").start()
    try:
        context = browser.new_context()  # type: ignore[attr-defined]
        page = context.new_page()
        page.goto(f"{server.url}/launch")
        page.fill("input[name=name]", "tiny")
        page.select_option("select[name=task]", "classification")
        page.fill("input[name=model]", str(tiny_bert))
        page.select_option("select[name=method]", "full")
        page.fill("input[name=train]", str(train))
        page.fill("input[name=validation]", str(val))
        page.fill("input[name=epochs]", "70")  # 560 steps of a few ms: still running after the resume
        page.fill("input[name=lr]", "0.005")
        page.fill("input[name=batch_size]", "8")
        page.fill("textarea[name=extra]", "train.precision=fp32\ntrain.log_steps=40\ntrain.save_steps=80\n"
                                          "train.eval_steps=400")
        page.click("#start")
        page.wait_for_url(f"{server.url}/runs/tiny")
        page.wait_for_function("() => { const l = document.querySelector('#chart polyline[data-name=\"loss\"]');"
                               " return l && +l.dataset.points >= 3; }", timeout=60_000)  # past the step-80 save
        page.click("#stop")  # Ctrl-C for the job: it ends, its checkpoint kept
        page.wait_for_selector("#resume", timeout=60_000)
        assert _status(server, "tiny") == "stopped"
        page.click("#resume")
        page.wait_for_selector("#stop", timeout=60_000)
        page.wait_for_function("() => +document.querySelector('#chart polyline[data-name=\"loss\"]')"
                               ".dataset.points >= 5", timeout=60_000)  # the resumed job is writing
        before = _points(page)
        page.close()  # the tab closes and the server restarts: the job goes on
        server.stop()
        assert (runs / ".ui" / "tiny" / "job.json").is_file()
        server.start()
        assert _status(server, "tiny") in ("running", "finished")  # it went on without the server
        page = context.new_page()
        page.goto(f"{server.url}/runs/tiny")  # re-attached: the full curve and log
        assert _points(page) >= before
        page.wait_for_selector("#status.finished", timeout=120_000)  # the page follows it to the end
        assert _points(page) == 14 > before  # 560 steps, a point every 40: the whole curve, none lost or doubled
        log = page.inner_text("#log")
        assert "tunelab train" in log and "interrupted" in log and "--resume" in log, log[-1500:]
        metrics = json.loads((runs / "tiny" / "metrics.json").read_text())
        assert metrics["validation"]["accuracy"] > 0.9
        with context.expect_page() as report:
            page.click("#report")
        report.value.wait_for_load_state()
        assert "tiny" in report.value.content()

        page.goto(f"{server.url}/play?run=tiny")
        page.fill("textarea[name=text]", "a wonderful , delightful film")
        page.click("#send")
        page.wait_for_function("() => document.getElementById('result').textContent.length > 0")
        row = json.loads(page.inner_text("#result"))
        assert row["pred_label"] in ("positive", "negative") and set(row["scores"]) == {"positive", "negative"}

        page.goto(f"{server.url}/?lang=zh")  # Chinese interface, remembered
        assert page.inner_text("h1") == "运行"
        assert "已完成" in page.inner_text("#runs")
        page.goto(f"{server.url}/compare?a=tiny&b=tiny")
        assert page.inner_text("h1") == "对比两次运行"
        context.close()
    finally:
        server.stop()
        for job in runs.glob(".ui/*/job.json"):  # never leave a training process behind
            pid = json.loads(job.read_text()).get("pid")
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def test_a_bad_form_is_one_line_and_starts_nothing(tiny_bert: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    runs = tmp_path / "runs"
    runs.mkdir()
    notes = runs / "notes.txt"
    notes.write_text("a file, not a run")
    client = TestClient(create_app(runs), base_url=LOCAL)
    base = {"name": "a", "task": "classification", "model": str(tiny_bert), "method": "full",
            "train": str(write_jsonl(tmp_path / "t.jsonl", sentiment_rows(8)))}
    for change, said in (({"name": "../x"}, "name: '../x'"), ({"epochs": "many"}, "train.epochs"),
                         ({"extra": "train.lr"}, "not key=value"), ({"method": "nope"}, "method"),
                         ({"extra": "model.foo=1"}, "model.foo: model is not a section"),
                         ({"extra": "task.name.x=1"}, "task.name is not a section"),
                         ({"extra": "train.lr=" + "[" * 5000 + "]" * 5000}, "train.lr: nested too deeply"),
                         ({"name": "notes.txt"}, "notes.txt is a file"),
                         ({"train": str(tmp_path / "nope.jsonl")}, f"data.train: {tmp_path / 'nope.jsonl'}: file not"),
                         ({"validation": "nope.jsonl"}, "data.validation: nope.jsonl: file not found"),
                         ({"epochs": ".inf"}, "train.epochs"), ({"lr": ".nan"}, "train.lr")):
        res = client.post("/launch", data={**base, **change})
        assert res.status_code == 422
        line = re.search(r'id="error">([^<]*)<', res.text)
        assert line and said in line.group(1).replace("&#39;", "'"), (change, res.text[:300])
    assert list(runs.iterdir()) == [notes]  # nothing written, nothing started
    assert client.get("/runs/nope").status_code == 404
    assert client.get("/runs/" + "a" * 300).status_code == 404  # longer than a file name may be: still no run


def test_every_interface_text_has_chinese() -> None:
    from tunelab.ui.i18n import ZH

    templates = Path(__file__).resolve().parents[1] / "src" / "tunelab" / "ui" / "templates"
    used = {m for p in templates.glob("*.html") for m in re.findall(r'(?<![\w.])t\("([^"]+)"\)', p.read_text())}
    used |= {"running", "finished", "stopped", "failed", "empty"}  # the statuses, through t(run.status)
    assert used and not used - set(ZH), sorted(used - set(ZH))


def test_the_playground_streams_a_chat_reply(tiny_chat_run: Path) -> None:
    """A chat model's playground: the reply comes as server-sent events, then [DONE]."""
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    client = TestClient(create_app(tiny_chat_run.parent), base_url=LOCAL)
    page = client.get(f"/play?run={tiny_chat_run.name}")
    assert page.status_code == 200 and 'id="message"' in page.text  # the chat form, not the predict form
    res = client.post(f"/api/play/{tiny_chat_run.name}/chat",
                      json={"messages": [{"role": "user", "content": "say good"}]})
    events = [line[6:] for line in res.text.splitlines() if line.startswith("data: ")]
    assert res.status_code == 200 and events[-1] == "[DONE]"
    assert "".join(json.loads(e)["text"] for e in events[:-1]).strip() == "good"
    assert client.post(f"/api/play/{tiny_chat_run.name}/chat", json={"messages": []}).status_code == 422


@pytest.fixture(scope="module")
def play_runs(tiny_bert: Path, tiny_chat_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder: a classifier `cls`, the chat run `sft`, `broken` (a config, no model) and a file."""
    tmp = tmp_path_factory.mktemp("ui-play")
    train_sentiment(tiny_bert, tmp / "cls", sets=("train.epochs=1",))
    runs = tmp / "runs"
    runs.mkdir()
    (runs / "cls").symlink_to(tmp / "cls")
    (runs / "sft").symlink_to(tiny_chat_run)
    (runs / "broken").mkdir()
    (runs / "broken" / "config.yaml").write_text("task: classification\n")
    (runs / "notes.txt").write_text("notes")
    return runs


def _detail(res: httpx.Response) -> str:
    """The one line of an API error, in `tunelab serve`'s shape: {"error": {"message", "code"}}."""
    err = res.json()["error"]
    assert err["code"] == res.status_code and "\n" not in err["message"], res.text
    return str(err["message"])


def test_the_playground_refuses_bad_inputs_with_one_line(play_runs: Path) -> None:
    """Inputs that are not texts or rows, NaN, lone surrogates: a 422 naming inputs[i], never a 500."""
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    client = TestClient(create_app(play_runs), base_url=LOCAL)
    for body, said in ((b'{"inputs": [1]}', "inputs[0]: expected a text or an object"),
                       (b'{"inputs": ["good", null]}', "inputs[1]: expected a text or an object of its fields, "
                                                        "got null"),
                       (b'{"inputs": [["a", "b"]]}', "got a list"), (b'{"inputs": [NaN]}', "inputs[0]"),
                       (b'{"inputs": [{"text": "good", "id": NaN}]}', "inputs[0].id: nan is not a finite"),
                       (b'{"inputs": [{"text": "good", "note": "\\ud800"}]}', "inputs[0].note: invalid Unicode"),
                       (b'{"inputs": ["\\ud800 good"]}', "unpaired surrogate")):
        res = client.post("/api/play/cls", content=body, headers={"Content-Type": "application/json"})
        assert res.status_code == 422 and said in _detail(res), (body, res.text)
    res = client.post("/api/play/cls", json={"inputs": ["a wonderful , delightful film"]})
    assert res.status_code == 200 and res.json()["outputs"][0]["pred_label"] in ("positive", "negative")


def test_the_playground_refuses_bad_conversations_with_one_line(play_runs: Path) -> None:
    """Messages without a role of system/user/assistant or a UTF-8 text content, a prompt longer than the model's
    context, chat with a classifier: one line naming what is wrong, nothing generated."""
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    client = TestClient(create_app(play_runs), base_url=LOCAL)
    user = {"role": "user", "content": "say good"}
    for messages, said in (([1], "messages[0]: expected an object {role, content}, got a number"),
                           ([{"role": "user"}], "messages[0].content: expected a text; got missing"),
                           ([user, {"role": "user", "content": None}], "messages[1].content: expected a text; "
                                                                       "got null"),
                           ([{"role": "user", "content": 5}], "messages[0].content: expected a text; got a number"),
                           ([{"role": "wizard", "content": "x"}], "messages[0].role: expected one of system, user, "
                                                                  "assistant; got 'wizard'"),
                           ([{"role": "user", "content": "say " + "good " * 2000}], "tokens, at most")):
        res = client.post("/api/play/sft/chat", json={"messages": messages})
        assert res.status_code == 422 and said in _detail(res), (messages, res.text[:300])
    res = client.post("/api/play/sft/chat", content=b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
                      headers={"Content-Type": "application/json"})
    assert res.status_code == 422 and "messages[0].content: invalid Unicode" in _detail(res)
    res = client.post("/api/play/cls/chat", json={"messages": [user]})
    assert res.status_code == 400 and "not a chat model" in _detail(res)


def test_a_run_without_a_model_is_said_not_a_500(play_runs: Path) -> None:
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    client = TestClient(create_app(play_runs), base_url=LOCAL)
    for path, body in (("/api/play/broken", {"inputs": ["good"]}),
                       ("/api/play/broken/chat", {"messages": [{"role": "user", "content": "say good"}]})):
        res = client.post(path, json=body)
        assert res.status_code == 409 and "not a tunelab model directory" in _detail(res), res.text
    for lang, lead in (("en", "This run has no model to try."), ("zh", "这次运行没有可试用的模型。")):
        page = client.get(f"/play?run=broken&lang={lang}")
        line = re.search(r'id="error">([^<]*)<', page.text)
        assert page.status_code == 409 and line and lead in line.group(1), page.text[:500]
        assert "not a tunelab model directory" in line.group(1) and 'id="send"' not in page.text
    assert client.post("/api/play/notes.txt", json={"inputs": ["good"]}).status_code == 404


def test_api_errors_have_the_shape_of_tunelab_serve(play_runs: Path) -> None:
    """Every error the UI answers is `{"error": {"message": one line, "code": status}}`, as `tunelab serve`'s are
    (it was FastAPI's `{"detail": ...}`); a 422 also names the field in `param` and keeps a `detail` list. A browser
    asking a page for HTML gets its refusal as a page (a deleted run: it was that JSON, raw)."""
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    client = TestClient(create_app(play_runs), base_url=LOCAL)
    user = {"role": "user", "content": "say good"}
    cases = [("POST", "/api/play/cls", {"inputs": []}, 422, "inputs", "a non-empty list of texts or rows"),
             ("POST", "/api/play/cls", {"inputs": ["good", None]}, 422, "inputs[1]", "expected a text or an object"),
             ("POST", "/api/play/cls", {"inputs": ["good", {"txt": "good"}]}, 422, "inputs[1].text",
              "missing field"),  # (named as `tunelab serve` names it: it was `inputs: <input>:2: text: ...`)
             ("POST", "/api/play/sft/chat", {"messages": [{"role": "user"}]}, 422, "messages[0].content",
              "expected a text; got missing"),
             ("POST", "/api/play/sft/chat", {"messages": [{"role": "user", "content": "good " * 5000}]}, 422,
              "messages", "tokens, at most"),
             ("POST", "/api/play/cls/chat", {"messages": [user]}, 400, None, "not a chat model"),
             ("POST", "/api/play/broken", {"inputs": ["good"]}, 409, None, "not a tunelab model directory"),
             ("POST", "/api/play/notes.txt", {"inputs": ["good"]}, 404, None, "no run 'notes.txt'"),
             ("GET", "/api/play/cls", None, 405, None, "Method Not Allowed"),
             ("GET", "/runs/nope", None, 404, None, "no run 'nope'"),
             ("GET", "/runs/broken/report", None, 404, None, "broken has no report.html"),
             ("GET", "/nowhere", None, 404, None, "Not Found")]
    for method, path, body, status, param, said in cases:
        res = client.request(method, path, json=body)
        assert res.status_code == status and said in _detail(res), (path, body, res.text[:300])
        if param is not None:
            err = res.json()["error"]
            assert err["param"] == param and err["message"].startswith(f"{param}: "), res.text[:300]
            assert res.json()["detail"][0]["loc"] == ["body", param], res.text[:300]
        else:
            assert set(res.json()) == {"error"} and set(res.json()["error"]) == {"message", "code"}, res.text
    # a browser (Accept: text/html) following a deleted run's link or a mistyped address gets a page saying so
    for path, said in (("/runs/nope?lang=zh", "no run &#39;nope&#39;"), ("/runs/broken/report", "no report.html"),
                       ("/nowhere", "Not Found")):
        res = client.get(path, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert res.status_code == 404 and res.headers["content-type"].startswith("text/html"), res.text[:300]
        assert said in res.text and '<a href="/" id="back">' in res.text, res.text
    assert "全部运行" in client.get("/runs/nope?lang=zh", headers={"Accept": "text/html"}).text
    res = client.get("/api/play/cls", headers={"Accept": "text/html"})  # the JSON routes answer JSON, as before
    assert res.status_code == 405 and res.json()["error"]["message"] == "Method Not Allowed"


def test_the_playground_page_shows_a_refusal_as_its_one_line(play_runs: Path, browser: object) -> None:
    """In the browser: a row the model cannot read, and a conversation longer than the model's context, each show
    the error's message (read from {"error": {"message"}}) where the answer would be."""
    with ui_on_loopback(play_runs) as url:
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(f"{url}/play?run=cls")
        page.click("#send")  # the text left empty
        page.wait_for_selector("#result.error")
        assert page.inner_text("#result") == "inputs[0].text: empty text"  # (as tunelab serve names it)
        page.goto(f"{url}/play?run=sft")
        page.fill("#message", "say " + "good " * 5000)
        page.click("#send")
        page.wait_for_selector("#reply.error")
        assert page.inner_text("#reply").startswith("messages: the conversation is "), page.inner_text("#reply")
        page.fill("#message", "say good")  # the refused message was not kept in the conversation
        page.click("#send")
        page.wait_for_function("() => document.getElementById('reply').dataset.done === '1'")
        assert page.inner_text("#reply").strip() == "good" and page.get_attribute("#reply", "class") == ""
        page.close()  # (the browser is the module's)


def test_a_yaml_anchor_bomb_in_a_form_value_is_refused_quickly() -> None:
    """Anchors repeat one list exponentially (10 ** 9 values at depth 10): each list is walked once, in time."""
    import time

    from tunelab.errors import TunelabError
    from tunelab.ui.checks import form_value

    names = "abcdefghi"
    bomb = "[&a [x,x,x,x,x,x,x,x,x,x]" + "".join(f", &{n} [{','.join(['*' + p] * 10)}]"
                                                for p, n in zip(names, names[1:], strict=False)) + "]"
    start = time.perf_counter()
    try:
        form_value("train.x", bomb)
    except TunelabError as exc:
        assert "train.x" in str(exc)
    assert time.perf_counter() - start < 5


def test_a_form_value_nested_past_the_limit_is_refused_before_yaml_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Brackets nested deeper than MAX_DEPTH are refused by their count alone: YAML's scanner took 5 s over 5,000
    levels in a 10 kB field (it looks over one possible key per open bracket at every token), the server's thread
    held all that time. Within the limit, brackets in quoted texts included, the value is what YAML reads."""
    import yaml

    from tunelab.errors import TunelabError
    from tunelab.ui.checks import MAX_DEPTH, form_value

    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with monkeypatch.context() as patched:
        read: list[object] = []
        patched.setattr(yaml, "scan", lambda *args, **kwargs: read.append(args) or [])
        patched.setattr(yaml, "load", lambda *args, **kwargs: read.append(args))
        for text in (deep, "[" * 5000 + "]" * 5000, "{a: " * 100 + "1" + "}" * 100):
            with pytest.raises(TunelabError, match=rf"^train\.lr: nested too deeply \(more than {MAX_DEPTH} levels\)$"):
                form_value("train.lr", text)
        assert read == []
    value = form_value("train.x", "[" * MAX_DEPTH + "]" * MAX_DEPTH)
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == []
    assert form_value("train.x", "[[1, '[[it''s'], {a: \"]]\\\"{\"}]") == [[1, "[[it's"], {"a": ']]"{'}]


def _as_a_user(work: Callable[[], object]) -> object:
    """`work()` in a thread of its own without root's file access (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH dropped from
    that thread's effective set: the threads it starts inherit it), so that a folder's mode 000 is refused as it is
    to any other user; as another user, as it is."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    out: list[object] = []

    def thread() -> None:
        if os.geteuid() == 0:
            libc, head, data = ctypes.CDLL(None, use_errno=True), Header(0x20080522, 0), (Data * 2)()  # v3, this thread
            assert libc.capget(ctypes.byref(head), data) == 0, ctypes.get_errno()
            data[0].effective &= ~0b110  # bits 1, 2: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            assert libc.capset(ctypes.byref(head), data) == 0, ctypes.get_errno()
        try:
            out.append(work())
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's own thread
            out.append(exc)

    import threading

    runner = threading.Thread(target=thread)
    runner.start()
    runner.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def test_a_damaged_run_folder_shows_as_missing_not_a_500(tmp_path: Path) -> None:
    """A config.yaml that is not UTF-8, a job.json whose pid is a text, a metrics.json whose wall time is not a
    number, a metrics.jsonl with a null time and a character cut in half, a run folder this server may not read:
    every page still answers (the unreadable run listed as such, its page saying why)."""
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    runs = tmp_path / "runs"
    for name in ("a", "b", "e"):
        (runs / name).mkdir(parents=True)
    (runs / "e" / "config.yaml").write_text("task: classification\n")
    (runs / "e").chmod(0)  # (another user's run, a folder whose permissions were changed)
    (runs / ".ui" / "f").mkdir(parents=True)
    (runs / ".ui" / "f").chmod(0)  # (a job folder of another user's UI)
    (runs / "a" / "config.yaml").write_bytes(b"task: classification\nmodel: caf\xe9\n")
    (runs / "a" / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": 0.5, "elapsed_s": null}\n{"step": 2, "lo\xe2\x82')
    (runs / "b" / "metrics.json").write_text('{"train": {"wall_s": "x"}, "validation": {"accuracy": 0.5}}')
    (runs / ".ui" / "b").mkdir(parents=True)
    (runs / ".ui" / "b" / "job.json").write_text('{"pid": "123", "started": "yesterday"}')
    for name, pid in (("c", -1), ("d", 99999999999999999999)):  # -1 would probe every process; too large for C
        (runs / ".ui" / name).mkdir(parents=True)
        (runs / ".ui" / name / "job.json").write_text(json.dumps({"pid": pid}))
    client = TestClient(create_app(runs), base_url=LOCAL)

    def pages() -> dict[str, httpx.Response]:
        return {path: client.get(path) for path in ("/", "/api/runs", "/runs/a", "/runs/b", "/compare?a=a&b=b", "/play",
                                                    "/runs/e", "/runs/e/live", "/compare?a=a&b=e", "/runs/e/report")}

    try:
        got = _as_a_user(pages)
    finally:
        (runs / "e").chmod(0o755)
        (runs / ".ui" / "f").chmod(0o755)
    assert isinstance(got, dict)
    for path, res in got.items():
        assert res.status_code == (404 if path.endswith("report") else 200), (path, res.text[:300])
    assert {r["name"]: r["status"] for r in got["/api/runs"].json()} == {
        "a": "failed", "b": "failed", "c": "failed", "d": "failed", "e": "unreadable", "f": "empty"}
    assert f"{runs / 'e'}: cannot be read (Permission denied)" in got["/runs/e"].text
    from tunelab.ui.app import LIBRARY

    assert LIBRARY.wait(timeout=120)  # the app's warm-up import done before the next test imports in its thread


def test_a_run_named_with_url_characters_is_linked_as_itself(tmp_path: Path) -> None:
    """A run a command line named `exp#2` or `50% ?x` (the launch form takes no such name): the runs list, the
    report link and the resume form lead to that run, not to `exp` (the `#` read as a fragment) or a 404."""
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    runs = tmp_path / "runs"
    done, stopped = runs / "exp#2", runs / "50% ?x"
    for run in (done, stopped, runs / "exp"):
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("task: classification\n")
    (done / "metrics.json").write_text('{"validation": {"accuracy": 0.5}}')
    (done / "model").mkdir()
    (done / "report.html").write_text("<p>the report of exp#2</p>")
    (stopped / "checkpoints" / "step-00000002").mkdir(parents=True)
    for name in ("trainable.safetensors", "state.pt", "trainer_state.json"):
        (stopped / "checkpoints" / "step-00000002" / name).write_text("")
    client = TestClient(create_app(runs), base_url=LOCAL)
    links = dict(re.findall(r'<tr data-run="([^"]*)"><td><a href="([^"]*)">', client.get("/").text))
    for run in (done, stopped):
        page = client.get(links[run.name])
        assert page.status_code == 200 and f"<h1>{run.name}</h1>" in page.text, links
    report = re.search(r'id="report" href="([^"]*)"', client.get(links[done.name]).text)
    assert report and client.get(report.group(1)).text == "<p>the report of exp#2</p>"
    form = re.search(r'<form method="post" action="([^"]*)"><button id="resume">', client.get(links[stopped.name]).text)
    assert form and form.group(1) == "/runs/50%25%20%3Fx/resume"


def test_the_chinese_pages_name_the_curves_and_the_playground_fields(play_runs: Path) -> None:
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    client = TestClient(create_app(play_runs), base_url=LOCAL)
    page = client.get("/runs/cls?lang=zh").text
    assert "步数" in page and "损失" in page and ">step<" not in page
    assert "<label>文本</label>" in client.get("/play?run=cls&lang=zh").text
    assert "<label>text</label>" in client.get("/play?run=cls&lang=en").text


def test_the_playground_loads_a_run_trained_again(play_runs: Path) -> None:
    """The model a run folder holds now: after a new run wrote its model/, the playground loads that one."""
    from tunelab.io import write_text_atomic
    from tunelab.ui.app import Models

    models = Models()
    first = models.get(play_runs / "cls")
    assert models.get(play_runs / "cls") is first
    meta = play_runs / "cls" / "model" / "tunelab.json"
    write_text_atomic(meta, meta.read_text(encoding="utf-8"))  # as a new run's export writes it
    assert models.get(play_runs / "cls") is not first


def test_stop_signals_a_run_a_script_started_not_the_scripts_process_group(tmp_path: Path) -> None:
    """A run started by a script without job control shares the script's process group (here: this test's): Stop
    sends SIGINT to the run alone."""
    from tunelab.ui.jobs import stop
    from tunelab.ui.runs import RunView

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tunelab"],
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    try:
        assert os.getpgid(child.pid) == os.getpgid(0)
        stop(RunView("cli", tmp_path, "running", pid=child.pid))
        assert child.wait(timeout=20) != 0  # interrupted; this process (its group's) untouched
    finally:
        child.kill()


def test_two_launches_of_one_name_at_once_start_one_job(tiny_bert: Path, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tunelab.errors import TunelabError
    from tunelab.ui.app import LIBRARY, create_app
    from tunelab.ui.jobs import launch

    runs = tmp_path / "runs"
    runs.mkdir()
    create_app(runs)
    assert LIBRARY.wait(timeout=120)  # as the /launch route waits: the library imported by one thread, not three
    tree = {"task": "classification", "model": str(tiny_bert),
            "data": {"train": str(write_jsonl(tmp_path / "t.jsonl", sentiment_rows(8)))}, "train": {"max_steps": 1}}

    def one(_: int) -> object:
        try:
            return launch(runs, "dup", tree)
        except TunelabError as exc:
            return str(exc)

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(one, range(2)))
    pids = [g for g in got if isinstance(g, int)]
    try:
        assert len(pids) == 1 and any("a job named 'dup' was launched before" in str(g) for g in got), got
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
