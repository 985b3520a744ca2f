"""What the web UI shows of a runs folder, read from the files a run writes — `config.yaml`, `metrics.jsonl`,
`metrics.json`, the holder of `.tunelab.lock`, its checkpoints — and, for runs the UI launched, the job file and
log under `RUNS/.ui/NAME/` (ui/jobs.py). Nothing here writes: a run started from the command line shows the same."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab.training.layout import FILES, LOCK, list_checkpoints

UI_DIR = ".ui"  # RUNS/.ui/NAME/: job.json, config.yaml, train.log of runs launched from the page


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (field 3, the state, first); OSError without /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot: /proc/PID/stat field 22); None without /proc. A pid
    the system gave to another process since has another start time."""
    try:
        return int(_stat(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int | None, started: Any = None) -> bool:
    """A live process (not a zombie, not this server) with this pid whose command line is a tunelab one and, where
    `started` (its `start_time` when it was recorded) is given, that started then — not a later process given the
    same pid."""
    if type(pid) is not int or not 0 < pid < 2**31 or pid == os.getpid():  # (-1 would probe every process)
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = _stat(pid)  # (read once: this runs for every run on each refresh of the page)
        if stat[0] == "Z":
            return False
        if type(started) is int and int(stat[19]) != started:
            return False
        return b"tunelab" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError, ValueError):
        return True  # no /proc (macOS): the signal check is all there is


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def metric_rows(run: Path) -> list[dict[str, Any]]:
    """`metrics.jsonl` as rows (a half-written last line, while the run writes it, is left out)."""
    try:  # (a character cut in half by the writer: replaced, that line then left out as unreadable)
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _number(value: Any) -> float | None:
    """A number a run's file holds, or None where it holds anything else (a damaged or foreign file)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def scalars(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        return {}
    return {k: n for k, v in metrics.items() if (n := _number(v)) is not None and k != "n"}


@dataclass
class RunView:
    """One run as the runs list and the run page show it."""

    name: str
    path: Path
    status: str  # running | finished | stopped | failed | empty | unreadable
    task: str = ""
    model: str = ""
    method: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # the key metrics of the last evaluation
    started: float | None = None  # epoch seconds
    duration: float | None = None  # seconds trained (so far)
    pid: int | None = None
    launched: bool = False  # by the UI (it has a job file and a log)
    step: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)  # metrics.jsonl, read once per view
    error: str = ""  # why the run's files cannot be read (status "unreadable")

    @property
    def job_dir(self) -> Path:
        return self.path.parent / UI_DIR / self.name


def holder(run: Path) -> tuple[bool, int | None]:
    """Whether a process holds the run's lock now, and the pid it wrote there. Probed as training/run_dir.py probes
    it (fcntl.flock, shared, not waiting): the OS drops the lock of a process that ended, so a pid left in the file
    by a killed run — which the system may have given to any process since — is no holder. On a file system
    without locks, the pid in the file if that process is a live tunelab one."""
    try:
        fd = os.open(run / LOCK, os.O_RDONLY)
    except OSError:
        return False, None  # no lock file: never locked
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        pid = int(text) if text.isdigit() else None
        if pid is None:
            return False, None  # empty: the last holder ended cleanly (a holder writes its pid as it takes it)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, pid if pid != os.getpid() else None
        except OSError:  # a file system without locks
            return (True, pid) if alive(pid) else (False, None)
        return False, None  # nobody holds it (closing the file below releases the probe)
    finally:
        os.close(fd)


def view(run: Path) -> RunView:
    """What the pages show of one run, from its files; a damaged file (not UTF-8, not JSON, wrong types) shows as
    missing, and a folder this server may not read (its permissions, another user's) as status "unreadable" with
    the reason — never an error page for the whole runs list."""
    try:
        return _view(run)
    except OSError as exc:
        if not os.path.isdir(run):  # not there at all (a name too long for the file system): the caller's to say
            raise
        return RunView(run.name, run, "unreadable", error=f"{run}: cannot be read ({exc.strerror or exc})")


def _view(run: Path) -> RunView:
    name = run.name
    job = read_json(run.parent / UI_DIR / name / "job.json")
    job = job if isinstance(job, dict) else {}
    config: dict[str, Any] = {}
    try:
        loaded = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        config = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError, yaml.YAMLError):  # (UnicodeDecodeError is a ValueError)
        config = job.get("config") if isinstance(job.get("config"), dict) else {}
    rows = metric_rows(run)
    final = read_json(run / "metrics.json")
    locked, pid = holder(run)
    if not locked and alive(job.get("pid"), job.get("pid_start")):
        locked, pid = True, job.get("pid")  # a job the UI started, before it takes the run's lock
    if locked:
        status = "running"
    elif isinstance(final, dict) and (run / "model").is_dir():
        status = "finished"
    elif any(all((p / f).is_file() for f in FILES) for _, p in list_checkpoints(run / "checkpoints")):
        status = "stopped"  # resumable (--resume verifies the checkpoint's checksums; hashing here every 2 s would not)
    elif job or rows:
        status = "failed"
    else:
        status = "empty"
    task = config.get("task")
    method = config.get("method")
    out = RunView(name, run, status, task=(task or {}).get("name", "") if isinstance(task, dict) else str(task or ""),
                  model=str(config.get("model") or ""),
                  method=(method or {}).get("name", "") if isinstance(method, dict) else str(method or ""),
                  pid=pid, launched=bool(job), rows=rows)
    out.metrics = _key_metrics(final, rows)
    steps = [r for r in rows if _number(r.get("elapsed_s")) is not None]
    out.step = int(rows[-1]["step"]) if rows and type(rows[-1].get("step")) is int else None
    wall = _number(final["train"].get("wall_s")) if isinstance(final, dict) and isinstance(final.get("train"),
                                                                                             dict) else None
    out.duration = wall if wall is not None else _number(steps[-1]["elapsed_s"]) if steps else None
    started = _number(job.get("started"))
    if started is None and (run / "config.yaml").exists():
        started = (run / "config.yaml").stat().st_mtime
    out.started = started
    return out


def _key_metrics(final: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """The first three scalars of the final evaluation (validation first), else of the last evaluation so far."""
    if isinstance(final, dict):
        for split in ("validation", "test", *final):
            if split != "train" and scalars(final.get(split)):
                return dict(list(scalars(final[split]).items())[:3])
    for row in reversed(rows):
        evals = {k[5:]: v for k, v in scalars(row).items() if k.startswith("eval/")}
        if evals:
            return dict(list(evals.items())[:3])
    return {}


def list_runs(runs: Path) -> list[RunView]:
    """Every run directory under `runs` (one with a config, metrics or a UI job), newest first."""
    if not runs.is_dir():
        return []
    names = {p.name for p in runs.iterdir() if not p.name.startswith(".") and _is_run(p)}
    ui = runs / UI_DIR
    with contextlib.suppress(OSError):  # (a .ui this server may not read, another user's: its jobs left out)
        names |= {p.name for p in ui.iterdir() if _has_job(p)} if ui.is_dir() else set()
    views = [view(runs / n) for n in names]
    return sorted(views, key=lambda v: -(v.started or 0))


def _has_job(p: Path) -> bool:
    try:
        return (p / "job.json").is_file()
    except OSError:
        return True  # (unreadable: listed, its page saying why)


def _is_run(p: Path) -> bool:
    """A folder with a run's files; one this server may not look into is listed too (as unreadable), not left out."""
    try:
        return p.is_dir() and any((p / f).exists() for f in ("config.yaml", "metrics.jsonl", "metrics.json", LOCK))
    except OSError:
        return True


def curves(v: RunView) -> dict[str, list[tuple[float, float]]]:
    """Training loss and each evaluation metric by step (the run's final evaluation rows excluded)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for row in v.rows:
        step = row.get("step")
        if not isinstance(step, int | float) or "final" in row:
            continue
        for key, value in scalars(row).items():
            if key == "loss" or key.startswith("eval/"):
                out.setdefault(key, []).append((float(step), value))
    return out


def log_tail(v: RunView, lines: int = 200) -> str:
    """The end of the job's log (UI-launched runs), else the metric rows as the log."""
    path = v.job_dir / "train.log"
    if path.is_file():
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
            text = f.read().decode("utf-8", errors="replace")
        # a progress bar redraws with carriage returns: keep the last state of each line
        return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()[-lines:])
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in v.rows[-lines:])
