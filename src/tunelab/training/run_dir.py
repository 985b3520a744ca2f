"""The run directory (`output_dir`) is never lost by accident: a run writes into it only after everything it can
check has been checked, one process at a time, and never over something that is not a finished run of the same
config unless told to (`--overwrite`, or `--resume` to continue it).

    check_inputs_apart read-only, first: an output_dir that is an input of the run (the model it starts from, a
                       distillation teacher's run, a data file), lies inside one, or holds one where the run puts its
                       own files → one-line TunelabError, exit 2, even with --overwrite
    check_output_dir   read-only, before any model is loaded: a file, foreign files, a run of another config,
                       an unfinished run (resume it) → one-line TunelabError, exit 2
    RunDirLock         `OUTPUT_DIR/.tunelab.lock` under an OS file lock (fcntl.flock): a second run into the same
                       directory is refused with the holder's pid; the OS drops the lock of a killed process
                       (the file stays, empty, between runs)
    start_run_dir      after the model is loaded and the data encoded: the old run's files moved to .replaced (unless
                       resuming; an unfinished run's are deleted, but for its exports), config.yaml written,
                       metrics.jsonl reset (or cut back to the resumed checkpoint)
    finish_run_dir     the run has finished: .replaced deleted (a `tunelab tune` trial that is pruned has finished
                       too: studies/tune.py calls it as it prunes; a failed or interrupted run keeps .replaced)
    check_removable    read-only, before a study (cv, curve) removes or replaces folders under --overwrite: each can
                       be removed whole, or one line and nothing is removed (rmtree stopped half-way lost part of them)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

from tunelab.errors import TunelabError, option, overwrite_option
from tunelab.io import below, cannot_create, write_text_atomic
from tunelab.training.checkpoint import discard_after, read_trainer_state, truncate_metrics
from tunelab.training.layout import EXPORTED, LOCK, REPLACED, RUN_FILES, STUDY_FILES, list_checkpoints

if TYPE_CHECKING:
    from tunelab.config.run import RunConfig


def run_inputs(cfg: RunConfig) -> list[tuple[str, Path]]:
    """What a run reads from disk, as (role, path) for `check_inputs_apart`: the model it starts from (a local
    directory), a distillation teacher, the data files."""
    inputs = [("the model it starts from (model)", Path(cfg.model).expanduser())]
    if not inputs[0][1].is_dir():
        inputs = []  # an alias, a hub id, layers:...
    if cfg.distill is not None:
        inputs.append(("the distillation teacher (distill.teacher)", Path(cfg.distill.teacher).expanduser()))
    inputs += [(f"the data.{key} file", Path(value).expanduser()) for key, value in cfg.data.files()]
    return inputs


def check_inputs_apart(out: Path, inputs: Sequence[tuple[str, Path]], flag: str = "output_dir") -> None:
    """Refuse (one line), whatever --overwrite says, an output directory that would take one of the run's `inputs`
    ((role, path)) from it: the input itself, a folder inside an input directory (a student written into its
    teacher's run), or a folder holding an input under a name the run replaces (RUN_FILES, .replaced: moved aside
    as the run starts and deleted when it finishes)."""
    for role, path in inputs:  # by the file system's identity (io.below), not the spelling
        inner, holds = below(out, path), below(path, out)
        if inner == ():
            raise TunelabError(f"{flag}: {out} is {role}; choose another {flag}")
        if inner and path.is_dir():
            raise TunelabError(f"{flag}: {out} is inside {role}, {path}; choose another {flag}")
        if holds and holds[0] in RUN_FILES | {REPLACED}:
            raise TunelabError(f"{flag}: {out} holds {role}, {path}, which a run there would replace; choose "
                               f"another {flag}")


def check_output_dir(out: Path, same_config: Callable[[dict[str, Any]], bool], *, resume: bool,
                     overwrite: bool, locked: bool = False) -> None:
    """Refuse (one line) an output_dir that a run would clobber: not a directory, or a non-empty one that is not a
    finished run of this same config (`same_config(saved config.yaml)`) nor one that stopped before its first
    checkpoint. `resume` (this directory's own checkpoint)
    and `overwrite` allow it. Hidden files (.DS_Store, .ipynb_checkpoints) are nobody's work. `locked`: asked again
    under this process's RunDirLock (another run may have written the directory since the first check)."""
    if out.exists() and not out.is_dir():
        raise TunelabError(f"output_dir: {out} is a file, not a directory; choose another output_dir")
    if out.is_dir() and not locked:
        refuse_if_in_use(out)  # the pid of a live run first: what else the directory holds is that run's
    if resume or overwrite or not out.is_dir():
        return
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    foreign = sorted(names - RUN_FILES - STUDY_FILES)
    if not foreign and not (out / "config.yaml").is_file() and names & RUN_FILES and names & RUN_FILES <= EXPORTED:
        kept = ", ".join(f"{n}/" for n in sorted(names & EXPORTED))
        raise TunelabError(f"output_dir: {out} holds only what was exported from an earlier run ({kept}; its model "
                           "and config.yaml are gone), and a new run takes a run's exports away: move them elsewhere "
                           f"to keep them, pass {overwrite_option()} to replace them, or choose another output_dir")
    if foreign:
        what = f"files that no tunelab run wrote ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
    elif not names & RUN_FILES:
        return  # empty, or only what baseline / curve / tune put there
    else:
        saved = out / "config.yaml"
        try:
            old = yaml.safe_load(saved.read_text(encoding="utf-8")) if saved.is_file() else None
        except yaml.YAMLError:
            old = {}  # unreadable: not this config
        if not isinstance(old, dict) or not same_config(old):
            what = "a run of another config" if old is not None else "files of a run without its config.yaml"
        elif not (out / "metrics.json").is_file():
            if not list_checkpoints(out / "checkpoints"):
                return  # it stopped before its first checkpoint (or failed before training): nothing to resume
            what = f"an unfinished run of this config ({option('--resume', 'resume=' + repr('auto'))} continues it)"
        else:
            return  # a finished run of this config: training it again replaces it
    raise TunelabError(f"output_dir: {out} holds {what}; pass {overwrite_option()} to replace it, or choose another "
                       "output_dir")


def refuse_if_in_use(out: Path) -> None:
    """One line naming the holder's pid when a live process holds `out`'s lock (probed, not kept)."""
    try:
        fd = os.open(out / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return  # no lock file: never locked
    except OSError as e:  # there, but not readable by this user: whether a run holds it cannot be known
        raise TunelabError(f"output_dir: {out}: its lock {out / LOCK} cannot be read ({e.strerror}): a run of "
                           "another user may be writing it") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(out, fd) from None
    except OSError:
        pass  # a filesystem without locks: RunDirLock says so
    finally:
        os.close(fd)  # closing releases a probe that succeeded


def _in_use(out: Path, fd: int) -> TunelabError:
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
    return TunelabError(f"output_dir: {out} is in use by process {holder} (a run is writing it); wait for it to "
                        "end or choose another output_dir")


TRIES = 10  # RunDirLock: 0.5 s of tries before a folder is in use


class RunDirLock:
    """`with RunDirLock(out):` — the directory is this process's until the block ends (or the process dies)."""

    def __init__(self, out: Path, name: str = LOCK) -> None:  # name: STUDY_LOCK for a study's folder (tune, cv, curve)
        self.out, self.path, self.fd = out, out / name, -1

    def __enter__(self) -> RunDirLock:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # as the umask says: a group may share runs
        except OSError as e:
            raise TunelabError(f"output_dir: cannot write {self.out}: {cannot_create(e)}") from None
        for attempt in range(TRIES):  # a reader's brief shared probe (`tunelab ui`'s status) is no holder: try again
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 < TRIES:
                    time.sleep(0.05)
                    continue
                error = _in_use(self.out, self.fd)
                os.close(self.fd)
                raise error from None
            except OSError as e:  # a filesystem without locks (some network mounts)
                os.close(self.fd)
                raise TunelabError(f"output_dir: cannot lock {self.path}: {e.strerror or e}") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        os.ftruncate(self.fd, 0)  # the file stays (deleting it would let two processes lock two files); no holder
        os.close(self.fd)  # closing releases the lock


def start_run_dir(out: Path, config_yaml: str, resume_from: Path | None) -> None:
    """The first writes of a run, once it is sure to start: clear the old run it replaces (a finished run of the same
    config, or any with --overwrite: its checkpoints must not mix with the new ones) — a finished one is moved aside
    into OUTPUT_DIR/.replaced, which `finish_run_dir` deletes once the new run has finished (an interrupted or failed
    run leaves the old results there); then config.yaml and the log."""
    if resume_from is None:
        present = [out / name for name in sorted(RUN_FILES) if (out / name).exists() or (out / name).is_symlink()]
        if (out / "metrics.json").is_file():  # a finished run: aside until this one finishes (a rename, no copy)
            _remove(out / REPLACED)
            (out / REPLACED).mkdir()
            for path in present:
                path.rename(out / REPLACED / path.name)
        else:  # an unfinished or failed run's files (a finished run replaced before may still wait in .replaced);
            for path in present:  # exports (what --overwrite replaces of a run whose model is gone) wait there too
                if path.name in EXPORTED and not (out / REPLACED / path.name).exists():
                    (out / REPLACED).mkdir(exist_ok=True)
                    path.rename(out / REPLACED / path.name)
                else:
                    _remove(path)
    write_text_atomic(out / "config.yaml", config_yaml)
    if resume_from is None:
        (out / "metrics.jsonl").unlink(missing_ok=True)
    else:  # the log continues from the checkpoint; later checkpoints belong to the replaced history
        step = read_trainer_state(resume_from)["step"]
        truncate_metrics(out / "metrics.jsonl", step)
        discard_after(out / "checkpoints", step)


def finish_run_dir(out: Path) -> None:
    """A run has finished: the run it replaced (OUTPUT_DIR/.replaced) is no longer needed."""
    shutil.rmtree(out / REPLACED, ignore_errors=True)


def replaced_note(out: Path) -> str:
    """What an interrupted run says about the finished run it was replacing, if any."""
    return f"; the results of the run it replaces are kept in {out / REPLACED}" if (out / REPLACED).is_dir() else ""


def check_removable(paths: Sequence[Path], flag: str = "output_dir") -> None:
    """Refuse (one line, before any is touched) folders or files that could not be removed whole: a folder of theirs
    that cannot be listed or changed (its permissions, a read-only file system), an entry marked immutable or
    append-only (`chattr +i`: not even root removes it). shutil.rmtree would stop at the first and leave the rest
    half removed."""
    for top in paths:
        if not (top.exists() or top.is_symlink()):
            continue
        problem = _unremovable(top.parent, top)
        if problem is None and top.is_dir() and not top.is_symlink():
            problem = _tree_problem(top)
        if problem is not None:
            raise TunelabError(f"{flag}: {top} cannot be removed (this command would replace it): {problem}; "
                               f"nothing was removed (make it removable, or choose another {flag})")


def _tree_problem(top: Path) -> str | None:
    """Why something under the folder `top` could not be removed, or None."""
    unreadable: list[OSError] = []
    for folder, dirs, files in os.walk(top, onerror=unreadable.append):  # (links are removed, never followed)
        if unreadable:
            break
        for name in dirs + files:
            if (problem := _unremovable(Path(folder), Path(folder) / name)) is not None:
                return problem
    if unreadable:
        return f"{unreadable[0].filename} cannot be listed ({unreadable[0].strerror or unreadable[0]})"
    return None


FS_IOC_GETFLAGS, KEPT_FLAGS = 0x80086601, 0x10 | 0x20  # Linux: its immutable and append-only flags (`lsattr`)


def _unremovable(folder: Path, entry: Path) -> str | None:
    """Why `entry` could not be removed from `folder` (as unlink / rmdir would fail), or None."""
    if not os.access(folder, os.W_OK | os.X_OK):  # (root too: a read-only file system, an immutable folder)
        return f"{folder} cannot be changed (no permission to remove what it holds, or a read-only file system)"
    try:
        info = entry.lstat()
    except FileNotFoundError:
        return None
    flags = getattr(info, "st_flags", None)  # macOS / BSD: UF_ / SF_ IMMUTABLE and APPEND
    if flags is None and sys.platform.startswith("linux") and not stat.S_ISLNK(info.st_mode):
        flags = _linux_flags(entry)
    if flags and flags & (KEPT_FLAGS if sys.platform.startswith("linux") else
                          stat.UF_IMMUTABLE | stat.UF_APPEND | stat.SF_IMMUTABLE | stat.SF_APPEND):
        return f"{entry} is marked immutable or append-only (lsattr / chattr)"
    return None


def _linux_flags(entry: Path) -> int | None:
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:
        return None  # not readable by this user: whether it is flagged cannot be known (rmtree will say)
    try:
        return struct.unpack_from("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8)))[0]  # (the kernel writes an int)
    except OSError:
        return None  # a file system without these flags (tmpfs, NFS)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
