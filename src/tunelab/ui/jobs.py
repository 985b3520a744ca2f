"""Training jobs the web UI starts: `tunelab train` as a detached process (its own session, stdin closed, output to
`RUNS/.ui/NAME/train.log`), so closing the page, the laptop sleeping or this server restarting neither stops nor
loses it; the run page re-reads its files. Stop sends SIGINT — the run ends as Ctrl-C ends it, its newest
checkpoint kept — and resume starts `tunelab train --resume` on the same config, in the folder the run was launched
from (its relative paths are from there: job.json's `cwd`, else the run's data_summary.json `data_folder`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tunelab.config.fields import yaml_text, yaml_value
from tunelab.data.report import DATA_FOLDER, read_summary
from tunelab.errors import TunelabError
from tunelab.io import exists, write_text_atomic
from tunelab.training.layout import LOCK
from tunelab.ui.checks import json_value, shown
from tunelab.ui.runs import UI_DIR, RunView, alive, start_time, view

DATA_FIELDS = ("train", "validation", "test", "unlabeled")

# a run's folder name: letters and digits of any script (`情感分类`, as a CLI run's output_dir may be named), '.', '_'
# and '-'; no path separator, no leading dot (the UI's own folder, hidden ones), at most 80 characters
NAME = re.compile(r"\w[\w.-]{0,79}", re.UNICODE)
NAME_RULE = "name: {name} — letters (Chinese too), digits, '.', '_' and '-' only, not starting with '.' or '-' (a " \
            "folder name under {runs})"


# names that look like another or like nothing: other forms of one name (NFKC: `ｒｕｎ` is `run`, NFD Hangul),
# Hangul fillers that show as blank; and names too long for a file system's 255 bytes once a suffix is added
FILLERS = "\u115f\u1160\u3164\uffa0"
NAME_PLAIN = "name: {name} — write it plainly: no full-width or compatibility forms, no blank-looking characters, " \
             "at most 200 bytes"


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for the job in a thread, so that it does not linger as a zombie while this server lives."""
    threading.Thread(target=process.wait, daemon=True).start()


def _start(runs: Path, name: str, args: list[str], job: dict[str, Any], cwd: Path) -> subprocess.Popen[bytes]:
    """Start `tunelab ARGS` detached in `cwd` and record its pid, the pid's start time and the folder in the job
    file (`job`: its contents so far)."""
    job_dir = runs / UI_DIR / name
    job_dir.mkdir(parents=True, exist_ok=True)
    with (job_dir / "train.log").open("ab") as log:
        log.write(f"$ tunelab {' '.join(args)}\n".encode())
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNELAB_PROGRESS_EVERY": os.environ.get(
            "TUNELAB_PROGRESS_EVERY", "5")}
        process = subprocess.Popen([sys.executable, "-m", "tunelab", *args], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd, env=env)
    _reap(process)
    job = job | {"pid": process.pid, "pid_start": start_time(process.pid), "args": args, "cwd": str(cwd)}
    job.setdefault("started", time.time())
    write_text_atomic(job_dir / "job.json", json.dumps(job, ensure_ascii=False, indent=1))
    return process


def _read(job_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_LAUNCHING = threading.Lock()  # a launch's checks and its start are one step: two forms sent at once, one job


def launch(runs: Path, name: str, tree: dict[str, Any], t: Callable[[str], str] = str) -> int:
    """Validate the config, write it to RUNS/.ui/NAME/config.yaml and start training into RUNS/NAME. A bad field,
    a data file that is not there or a name already taken is a TunelabError (one line, nothing written or
    started); `t`: the page's translator (ui/i18n.py), in whose language the name's refusals are said."""
    with _LAUNCHING:
        return _launch(runs, name, tree, t)


def _launch(runs: Path, name: str, tree: dict[str, Any], t: Callable[[str], str]) -> int:
    if not NAME.fullmatch(name):
        raise TunelabError(t(NAME_RULE).format(name=repr(name), runs=runs))
    if name != unicodedata.normalize("NFKC", name) or any(c in FILLERS for c in name) or len(name.encode()) > 200:
        raise TunelabError(t(NAME_PLAIN).format(name=repr(name)))
    run = runs / name
    if run.exists() and not run.is_dir():
        raise TunelabError(t("name: {run} is a file, not a run folder; choose another name").format(run=run))
    if run.exists() and any(not p.name.startswith(".") for p in run.iterdir()):
        raise TunelabError(t("name: {run} already holds a run; choose another name").format(run=run))
    if (runs / UI_DIR / name / "job.json").is_file() and view(run).status != "failed":
        raise TunelabError(t("name: a job named {name} was launched before; choose another name").format(
            name=repr(name)))
    # (a job that failed and left no run files gives its name back: its record and log are the UI's own, replaced)
    tree = {**tree, "output_dir": str(run.resolve())}
    text = yaml_text(tree)
    from tunelab.config.run import build_config

    # the file the job will read, built as `tunelab train CONFIG` builds it: every field checked before a start
    cfg = build_config(yaml_value(text))  # read as train reads it (YAML 1.2)
    for key, value in tree.items():  # inf / NaN are the config's to refuse (build_config above), as train does
        json_value(value, key, numbers=False)
    for field in ("train", "validation", "test", "unlabeled"):
        path = getattr(cfg.data, field)
        if field == "train" and not (path or "").strip():
            raise TunelabError("data.train: required: the training data file")
        if path and not path.startswith("hf:") and not exists(Path(path)):
            raise TunelabError(f"data.{field}: {shown(path)}: file not found")
    job_dir = runs / UI_DIR / name
    job_dir.mkdir(parents=True, exist_ok=True)
    config = job_dir / "config.yaml"
    write_text_atomic(config, text)
    return _start(runs, name, ["train", str(config.resolve())], {"config": tree, "started": time.time()},
                  Path.cwd()).pid


def stop(v: RunView) -> None:
    """Ctrl-C for the job: SIGINT to its process group where it leads one (a job the UI started, a run started in a
    terminal), else to the process alone (a run a script started in the script's group: the group is the script's,
    and may hold this server); never to this server or its own group."""
    if v.status != "running" or not v.pid or v.pid == os.getpid():
        raise TunelabError(f"{v.name} is not running")
    try:
        if os.getpgid(v.pid) == v.pid and v.pid != os.getpgrp():
            os.killpg(v.pid, signal.SIGINT)
        else:
            os.kill(v.pid, signal.SIGINT)
    except ProcessLookupError:  # it ended since its status was read
        raise TunelabError(f"{v.name} is not running") from None
    except PermissionError:
        raise TunelabError(f"{v.name}: process {v.pid} is another user's; this server cannot stop it") from None


def wait_stopped(run: Path, timeout: float = 30.0) -> RunView:
    deadline = time.time() + timeout
    v = view(run)
    while v.status == "running" and time.time() < deadline:
        time.sleep(0.2)
        v = view(run)
    return v


def launch_folder(v: RunView, job: dict[str, Any]) -> Path:
    """The folder a run's relative paths are from: the one its UI job (`job`, its job.json) was started in (`cwd`),
    else the one training read its data in (the run's data_summary.json `data_folder`, as `tunelab train --resume`
    reads it), else this server's."""
    for folder in (job.get("cwd"), read_summary(v.path).get(DATA_FOLDER)):
        if isinstance(folder, str) and Path(folder).is_dir():
            return Path(folder)
    return Path.cwd()


def _missing_data(config: Path, cwd: Path) -> None:
    """A data file of the config that is not there from `cwd`: one line naming it (the job would fail on it)."""
    try:
        tree = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return  # unreadable: `tunelab train` says why (the job's first line, below)
    data = tree.get("data") if isinstance(tree, dict) else None
    for field in DATA_FIELDS if isinstance(data, dict) else ():
        path = data.get(field)
        if isinstance(path, str) and path and not path.startswith("hf:") and not exists(cwd / Path(path).expanduser()):
            raise TunelabError(f"data.{field}: {shown(path)}: file not found (from {cwd}, where the run was "
                               "launched)")


def resume(v: RunView, watch: float = 20.0) -> int:
    """Continue a stopped run from its newest checkpoint (`tunelab train CONFIG --resume`), in the folder it was
    launched from. Waits up to `watch` seconds for the job to take the run's lock (its pid written in it: read, not
    probed, so as not to race the job's own flock): a job that ends before that (a file no longer there, a config
    refused) is a TunelabError with the log's last line."""
    if v.status != "stopped":
        raise TunelabError(f"{v.name} is {v.status}; only a stopped run (one with a checkpoint) can be resumed")
    config = v.job_dir / "config.yaml"
    if not config.is_file():
        config = v.path / "config.yaml"
    job = _read(v.job_dir)
    if alive(job.get("pid"), job.get("pid_start")):
        raise TunelabError(f"{v.name} is still starting")
    cwd = launch_folder(v, job)
    _missing_data(config, cwd)
    log = v.job_dir / "train.log"
    offset = log.stat().st_size if log.is_file() else 0
    process = _start(v.path.parent, v.name, ["train", str(config.resolve()), "--set",
                                             f"output_dir={v.path.resolve()}", "--resume"], job, cwd)
    deadline = time.time() + watch
    while time.time() < deadline and process.poll() is None and _lock_text(v.path) != str(process.pid):
        time.sleep(0.2)
    if process.poll() not in (None, 0):
        raise TunelabError(f"{v.name}: the resumed job ended at once (exit {process.returncode}): "
                           f"{_last_line(log, offset)}")
    return process.pid


def _lock_text(run: Path) -> str:
    try:
        return (run / LOCK).read_text(errors="replace").strip()
    except OSError:
        return ""


def _last_line(log: Path, offset: int) -> str:
    """The last non-empty line the job wrote to its log after `offset` (its error: `error: ...`)."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            lines = f.read()[-64_000:].decode("utf-8", errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return "see its log"
    lines = [line.strip() for line in lines if line.strip() and not line.startswith("$ tunelab")]
    return lines[-1][:300] if lines else "see its log"
