"""`tunelab ui` refusing what it must not do: requests other web sites make a browser send (CSRF, DNS rebinding), a
stale pid taken for a running run (and signalled), a Stop that says it stopped what still runs, a Resume that fails
in silence from another folder, a failed launch keeping its name for good. Through HTTP (TestClient, or the real
server as a process of its own), with real processes and a real tiny run; no browser."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import sentiment_rows, write_jsonl

pytest.importorskip("fastapi")
LOCAL = "http://127.0.0.1"


def _start_time(pid: int) -> int:
    """/proc/PID/stat field 22: when the process started."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _message(res: httpx.Response) -> str:
    return str(res.json()["error"]["message"])


def test_requests_of_other_sites_are_refused(tmp_path: Path) -> None:
    """A POST from another origin (Origin, Sec-Fetch-Site), a Host that is not this server's (DNS rebinding) and a
    JSON API body not sent as JSON: 403 / 415 with one line, before any route runs; the pages' own requests pass."""
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    runs = tmp_path / "runs"
    runs.mkdir()
    client = TestClient(create_app(runs), base_url=LOCAL)
    form = {"name": "x", "task": "classification", "model": "m", "method": "full", "train": "nope.jsonl"}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:8080"},
                    {"Origin": "https://127.0.0.1"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "cross-site"}):
        res = client.post("/launch", data=form, headers=headers, follow_redirects=False)
        assert res.status_code == 403 and "from another site" in _message(res), (headers, res.text[:300])
        res = client.post("/runs/x/stop", headers=headers, follow_redirects=False)
        assert res.status_code == 403, (headers, res.text[:300])
    assert list(runs.iterdir()) == []  # nothing written, nothing started
    for headers in ({}, {"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"}, {"Origin": "http://127.0.0.1:80"},
                    {"Sec-Fetch-Site": "none"}):  # the page's own form (curl: neither header)
        res = client.post("/launch", data=form, headers=headers)
        assert res.status_code == 422 and 'id="error"' in res.text, headers  # the route answered: a bad form
    for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example", "10.0.0.5", ""):
        res = client.get("/api/runs", headers={"Host": host})
        assert res.status_code == 403 and "is not this server's name" in _message(res), (host, res.text)
    for host in ("127.0.0.1:7860", "localhost:7860", "LOCALHOST", "[::1]:7860", "127.0.0.2", "ui.localhost"):
        assert client.get("/api/runs", headers={"Host": host}).status_code == 200, host
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        res = client.post("/api/play/x", content=b'{"inputs": ["good"]}',
                          headers={"Content-Type": kind} if kind else {})
        assert res.status_code == 415 and "Content-Type must be application/json" in _message(res), (kind, res.text)
    res = client.post("/api/play/x", content=b'{"inputs": ["good"]}',
                      headers={"Content-Type": "application/json; charset=utf-8"})
    assert res.status_code == 404 and "no run 'x'" in _message(res)  # through to the route

    bound = TestClient(create_app(runs, host="192.168.1.5"), base_url="http://192.168.1.5:7860")
    assert bound.get("/api/runs").status_code == 200
    assert bound.get("/api/runs", headers={"Host": "10.0.0.5:7860"}).status_code == 403
    assert bound.post("/runs/x/stop", headers={"Origin": "http://192.168.1.5:7860"}).status_code == 404
    everywhere = TestClient(create_app(runs, host="0.0.0.0"), base_url="http://10.0.0.5:7860")  # noqa: S104
    assert everywhere.get("/api/runs").status_code == 200  # an address cannot be rebound; a name can
    assert everywhere.get("/api/runs", headers={"Host": "evil.example:7860"}).status_code == 403
    # behind a reverse proxy (its public name given with --allow-host): its Host, and its pages' Origin though the
    # proxy passes Host 127.0.0.1 (nginx's default)
    proxied = TestClient(create_app(runs, allow_hosts=("ui.example.com",)), base_url=LOCAL)
    assert proxied.get("/api/runs", headers={"Host": "ui.example.com"}).status_code == 200
    assert proxied.post("/runs/x/stop", headers={"Origin": "https://ui.example.com"}).status_code == 404
    assert proxied.post("/runs/x/stop", headers={"Origin": "https://evil.example"}).status_code == 403
    assert proxied.get("/api/runs", headers={"Host": "evil.example"}).status_code == 403


@pytest.fixture
def holder_process(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A process (its command line names tunelab) that holds RUN/.tunelab.lock as training does and ignores SIGINT
    — a run that does not stop."""
    run = tmp_path / "runs" / "busy"
    run.mkdir(parents=True)
    code = ("import fcntl, os, signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
            "os.write(fd, f'{os.getpid()}\\n'.encode()); print('ready', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code, str(run / ".tunelab.lock"), "tunelab"],
                             stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        yield run, child
    finally:
        child.kill()
        child.wait()


def test_stop_says_when_the_run_did_not_stop(holder_process: tuple[Path, subprocess.Popen[bytes]]) -> None:
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    run, child = holder_process
    app = create_app(run.parent)
    app.state.ui.stop_wait = 0.5
    res = TestClient(app, base_url=LOCAL).post("/runs/busy/stop", follow_redirects=False)
    assert res.status_code == 409 and "busy did not stop after 0.5 s" in res.text, res.text[:500]
    assert 'id="error"' in res.text and 'id="stop"' in res.text  # the page, still running, says why
    assert child.poll() is None


def test_a_stale_pid_is_not_a_running_run(holder_process: tuple[Path, subprocess.Popen[bytes]]) -> None:
    """A pid left in a lock nobody holds, or in job.json for a process started at another time (the pid given to
    another process since), is no running run, even where that process's command line names tunelab; the lock's
    holder and the job's own process are."""
    from tunelab.ui.runs import view

    busy, child = holder_process
    assert view(busy).status == "running" and view(busy).pid == child.pid  # the lock's holder
    runs = busy.parent
    (runs / "old").mkdir()
    (runs / "old" / ".tunelab.lock").write_text(f"{child.pid}\n")  # a killed run's lock: nobody holds it
    (runs / ".ui" / "job").mkdir(parents=True)
    started = _start_time(child.pid)
    for pid_start, status in ((started + 1, "failed"), (started, "running")):
        (runs / ".ui" / "job" / "job.json").write_text(json.dumps({"pid": child.pid, "pid_start": pid_start}))
        assert view(runs / "job").status == status
    assert view(runs / "old").status == "empty" and view(runs / "old").pid is None


def test_stop_never_signals_the_ui_itself(tmp_path: Path) -> None:
    """A stale lock naming the server's own pid (a tunelab process): the run is not running, Stop is a 409, and the
    server lives on (it was sent SIGINT, and ended)."""
    from test_ui import UIServer

    runs = tmp_path / "runs"
    (runs / "old").mkdir(parents=True)
    server = UIServer(runs, tmp_path / "ui.log").start()
    try:
        assert server.process is not None
        (runs / "old" / ".tunelab.lock").write_text(f"{server.process.pid}\n")
        try:
            res = httpx.post(f"{server.url}/runs/old/stop", timeout=60)
            said = (res.status_code, res.text)
        except httpx.HTTPError as exc:
            said = (0, str(exc))
        assert said[0] == 409 and "old is not running" in said[1], said
        time.sleep(1)
        assert server.process.poll() is None
        assert {r["name"]: r["status"] for r in httpx.get(f"{server.url}/api/runs").json()} == {"old": "empty"}
        res = httpx.get(f"{server.url}/api/runs", headers={"Host": "evil.example"})  # the real server guards too
        assert res.status_code == 403
    finally:
        server.stop()


def test_a_failed_launch_gives_its_name_back(tiny_bert: Path, tmp_path: Path) -> None:
    """A UI job that failed without writing a run may be launched again under its name; one whose run folder holds
    files may not (they are kept). The new job records the folder it was launched from and its process's start."""
    from fastapi.testclient import TestClient

    from tunelab.ui.app import LIBRARY, create_app

    runs = tmp_path / "runs"
    for name in ("gone", "kept"):
        (runs / ".ui" / name).mkdir(parents=True)
        (runs / ".ui" / name / "job.json").write_text(json.dumps({"pid": 0, "started": 1.0}))
        (runs / ".ui" / name / "train.log").write_text("error: data.train: cannot read\n")
    (runs / "kept").mkdir()
    (runs / "kept" / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    client = TestClient(create_app(runs), base_url=LOCAL)
    assert LIBRARY.wait(timeout=120)
    assert {r["name"]: r["status"] for r in client.get("/api/runs").json()} == {"gone": "failed", "kept": "failed"}
    train = write_jsonl(tmp_path / "t.jsonl", sentiment_rows(8))
    form = {"task": "classification", "model": str(tiny_bert), "method": "full", "train": str(train),
            "extra": "train.max_steps=1"}
    res = client.post("/launch", data={**form, "name": "kept"})
    assert res.status_code == 422 and "already holds a run" in res.text
    assert (runs / "kept" / "metrics.jsonl").is_file()
    res = client.post("/launch", data={**form, "name": "gone"}, follow_redirects=False)
    job = json.loads((runs / ".ui" / "gone" / "job.json").read_text())
    try:
        assert res.status_code == 303 and res.headers["location"] == "/runs/gone", res.text[:300]
        assert job["cwd"] == str(Path.cwd()) and job["pid_start"] == _start_time(job["pid"]) and job["started"] > 1
    finally:
        if type(job.get("pid")) is int and job["pid"] > 0:  # (the old record's 0 would be this process's group)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job["pid"], signal.SIGKILL)


def _job_ends(runs: Path, name: str, timeout: float = 180) -> None:
    """Wait for the UI job's process to end (this process's server reaps it)."""
    pid = json.loads((runs / ".ui" / name / "job.json").read_text())["pid"]
    started, deadline = _start_time(pid), time.time() + timeout
    while time.time() < deadline:
        try:
            if _start_time(pid) != started:
                return
        except (OSError, IndexError, ValueError):
            return
        time.sleep(0.05)


def test_resume_runs_in_the_folder_the_run_was_launched_from(tiny_bert: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A run trained in `proj/` with relative paths, stopped (a checkpoint, no final model), resumed from a UI
    started in another folder: the job runs in `proj/` and finishes. A resume that cannot work says why (409 on the
    run page): a data file no longer there, or a job that ends at once (its log's last line)."""
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    proj = tmp_path / "proj"
    proj.mkdir()
    write_jsonl(proj / "train.jsonl", sentiment_rows(32, 0))
    from typer.testing import CliRunner

    from tunelab.cli import app

    sets = ["task=classification", f"model={tiny_bert}", "data.train=train.jsonl", "output_dir=runs/rel",
            "train.max_steps=4", "train.save_steps=2", "train.batch_size=8", "train.precision=fp32"]
    monkeypatch.chdir(proj)  # trained in proj/ with relative paths (in this process: the UI's jobs are processes)
    done = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert done.exit_code == 0, done.output[-3000:]
    runs = proj / "runs"
    for path in ("metrics.json", "model", "report.html", "predictions"):  # as if stopped before its export
        shutil.rmtree(runs / "rel" / path) if (runs / "rel" / path).is_dir() else (runs / "rel" / path).unlink()
    for name in ("gone", "bad"):
        shutil.copytree(runs / "rel", runs / name)
    config = (runs / "gone" / "config.yaml").read_text()
    (runs / "gone" / "config.yaml").write_text(config.replace("train: train.jsonl", "train: moved.jsonl"))
    (runs / "bad" / "config.yaml").write_text(config + "lerning_rate: 1\n")  # refused by `tunelab train`
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    client = TestClient(create_app(runs), base_url=LOCAL)
    assert {r["name"]: r["status"] for r in client.get("/api/runs").json()} == dict.fromkeys(("rel", "gone", "bad"),
                                                                                             "stopped")
    res = client.post("/runs/rel/resume", follow_redirects=False)
    assert res.status_code == 303, res.text[-1500:]
    _job_ends(runs, "rel")
    log = (runs / ".ui" / "rel" / "train.log").read_text()
    statuses = {r["name"]: r["status"] for r in client.get("/api/runs").json()}
    assert statuses == {"rel": "finished", "gone": "stopped", "bad": "stopped"}, log[-2000:]
    assert json.loads((runs / ".ui" / "rel" / "job.json").read_text())["cwd"] == str(proj)
    res = client.post("/runs/gone/resume", follow_redirects=False)
    assert res.status_code == 409 and f"data.train: moved.jsonl: file not found (from {proj}" in res.text, res.text
    res = client.post("/runs/bad/resume", follow_redirects=False)
    assert res.status_code == 409 and "the resumed job ended at once (exit 2): " in res.text, res.text[-1500:]
    assert "lerning_rate" in res.text and 'id="resume"' in res.text
