"""What a study (`tunelab cv`, `tunelab curve`) records of its sub-runs' data files, and which checkpoints of an
unfinished sub-run it may resume.

    SUB/study_started.json   STARTED: written as a sub-run's run is about to start (before it claims the folder):
                             {"inputs": {key: sha256} of the data files it reads,
                              "older": {checkpoint id: the inputs it trained on, or null: not known}} of the
                             checkpoints already in the folder (a run's before it, until its run claims the folder
                             and deletes them; or those of the run it resumes); an older tunelab wrote "older" as
                             a list of ids (what they trained on not known)
    SUB/study_inputs.json    INPUTS: a finished sub-run's data files' sha256, written when its run returned

A rerun stopped before its run claimed the folder leaves the checkpoints there resumable where they trained on the
data files there are now (their inputs carried over from the record it replaced); a checkpoint written after the
record, by the run it started (or resumed), trained on its "inputs".

A data file is hashed once per command (`hashes_cached`: cv, curve), keyed by its resolved path, size, mtime,
ctime and inode: a study's checks and its sub-runs read a shared file (data.test, synonyms) many times.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunelab.config.run import RunConfig
from tunelab.errors import TunelabError
from tunelab.io import read_json
from tunelab.training.checkpoint import sha256
from tunelab.training.layout import list_checkpoints

INPUTS = "study_inputs.json"  # a finished sub-run's data files' sha256, written when its run returned
STARTED = "study_started.json"  # written as a sub-run's run starts: see `resume_candidates`

_cache: dict[tuple[str, int, int, int, int], str] | None = None  # `hashes_cached`'s, while a command holds it


@contextmanager
def hashes_cached() -> Iterator[None]:
    """Within it (one command: a cv, a curve), a data file is hashed once while it stays the same file (resolved
    path, size, mtime, ctime, inode: a file rewritten — atomically, a new inode, or in place — is hashed again)."""
    global _cache
    held, _cache = _cache, {} if _cache is None else _cache
    try:
        yield
    finally:
        _cache = held


def file_sha256(path: Path) -> str:
    """`path`'s sha256, from `hashes_cached`'s cache where a command holds one."""
    if _cache is None:
        return sha256(path)
    real = path.resolve()
    st = os.stat(real)
    key = (str(real), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _cache:
        _cache[key] = sha256(real)
    return _cache[key]


def input_hashes(cfg: RunConfig) -> dict[str, str]:
    """{key: sha256} of each data file `cfg` reads (`DataConfig.files`: the splits, unlabelled rows, synonyms)."""
    paths = ((key, Path(value).expanduser()) for key, value in cfg.data.files())
    return {key: file_sha256(path) for key, path in paths if path.is_file()}


def checkpoint_id(path: Path) -> str | None:
    """What tells a checkpoint from another run's of the same step: its trainer_state.json's sha256 (it holds its
    weights' and optimizer state's)."""
    return sha256(path / "trainer_state.json") if (path / "trainer_state.json").is_file() else None


def unfinished(out: Path) -> list[tuple[int, Path]]:
    """The checkpoints of the unfinished run `out` holds (a study stopped by Ctrl-C or killed: its config.yaml and
    checkpoints, no metrics.json), oldest first."""
    if not (out / "config.yaml").is_file() or (out / "metrics.json").is_file():
        return []
    return list_checkpoints(out / "checkpoints")


def _read_started(out: Path) -> tuple[dict[str, Any] | None, dict[str, dict[str, str] | None]]:
    """STARTED as (record, {older checkpoint id: the inputs it trained on, or None}); (None, {}) where there is none;
    TunelabError where it does not read."""
    if not (out / STARTED).exists():
        return None, {}
    started = read_json(out / STARTED)
    older = started.get("older", []) if isinstance(started, dict) else None
    if isinstance(older, list):  # (an older tunelab's: what they trained on not recorded)
        older = dict.fromkeys((str(i) for i in older), None)
    if not (isinstance(started, dict) and isinstance(started.get("inputs"), dict) and isinstance(older, dict)
            and all(v is None or isinstance(v, dict) for v in older.values())):
        raise TunelabError(f"{STARTED} is damaged")
    return started, older


def started_record(out: Path, inputs: dict[str, str]) -> dict[str, Any]:
    """STARTED for a run about to start in `out` on data files of sha256 `inputs`: the checkpoints there each with
    what it trained on (as the record it replaces said: its "older" one's, else its "inputs"; unknown without one),
    so that a rerun stopped before its run deletes them loses none of what they may resume on."""
    try:
        before, older_then = _read_started(out)
    except TunelabError:
        before, older_then = None, {}
    older: dict[str, dict[str, str] | None] = {}
    for _, path in list_checkpoints(out / "checkpoints"):
        cid = checkpoint_id(path)
        if cid is not None:
            older[cid] = older_then[cid] if cid in older_then else None if before is None else before["inputs"]
    return {"inputs": inputs, "older": older}


def resume_candidates(out: Path, cfg: RunConfig) -> tuple[list[Path], str]:
    """The checkpoints (newest first) of the unfinished run in `out` that trained on the rows and data files `cfg`
    reads now (a sub-run `sub_run_state` found TO_RUN: the rows it writes are those there), as STARTED recorded them
    — their sha256 ("inputs"; data.test may change, as a resume's may) and those of the checkpoints already there
    when it was written ("older", until the run claims the folder; null: not known, never resumed); else none, and
    why."""
    found = unfinished(out)
    if not found:
        return [], ""
    try:
        started, older = _read_started(out)
    except TunelabError:
        return [], f"what its checkpoints trained on does not read: {STARTED} is damaged"
    if started is None:
        return [], f"what its checkpoints trained on is not recorded: no {STARTED}"
    now = input_hashes(cfg)

    def changed(then: dict[str, str]) -> list[str]:
        return sorted(k for k in now.keys() | then.keys() if k != "test" and now.get(k) != then.get(k))

    ours = []
    for _, path in reversed(found):
        cid = checkpoint_id(path)
        then = older[cid] if cid in older else started["inputs"]
        if then is not None and not changed(then):
            ours.append(path)
    if ours:
        return ours, ""
    if changed(started["inputs"]):
        return [], f"its checkpoints trained on another {', '.join(f'data.{k}' for k in changed(started['inputs']))}"
    return [], "its checkpoints are those of a run it replaces, on other rows or data files"
