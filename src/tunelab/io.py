"""Files written so that a crash never leaves half of one: every write goes to a temp file next to the target
and is renamed into place (atomic on POSIX). JSON and JSONL readers and writers for the run directory's files,
and temp directories committed the same way (`atomic_dir` + `commit_dir`)."""

from __future__ import annotations

import base64
import datetime
import decimal
import errno
import filecmp
import glob
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tunelab.errors import BrokenFileError, UnwritableError, first_line, overwrite_option

_REFUSED = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS)  # what making an entry in a folder may meet


def cannot_create(error: OSError) -> str:
    """Why a file or folder could not be made, said of the folder it was to go in: `nothing can be created in /proc:
    No such file or directory` (the reason alone reads as if the place were only absent), or of the file when it is
    there but not writable; else the system's reason."""
    reason = error.strerror or first_line(error)
    if isinstance(error.filename2, str) and error.errno in _REFUSED:  # a rename onto a file: the file is the matter
        return f"{error.filename2} cannot be replaced: {reason}"
    made = Path(error.filename) if isinstance(error.filename, str) else None
    if made is not None and error.errno in _REFUSED and made.parent.is_dir():
        if made.exists():  # there already, not writable by this user (another's lock file): the file is the matter
            return f"{made} cannot be opened for writing: {reason}"
        return f"nothing can be created in {made.parent}: {reason}"
    return reason


def make_dirs(path: Path, flag: str) -> Path:
    """`path` made with its parents, and a file can be created in it; or one line (UnwritableError) naming `flag`
    (`output_dir: cannot write X: ...`), before any work is done."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe(path)
    except (FileExistsError, NotADirectoryError):
        raise UnwritableError(f"{flag}: cannot write {path}: part of it is a file, not a directory") from None
    except OSError as e:  # no permission, a read-only file system, a place that takes no files (/proc)
        raise UnwritableError(f"{flag}: cannot write {path}: {cannot_create(e)}") from None
    return path


def _probe(folder: Path) -> None:
    """A file made and removed in `folder`: the OSError a read-only or refused place raises, before any work."""
    probe = folder / f".tunelab-probe-{os.getpid()}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    probe.unlink(missing_ok=True)


NAME_MAX = 255  # bytes in one name of a path, on Linux, macOS and Windows file systems alike
TEMP_ROOM = NAME_MAX - 31  # of an `atomic_dir` name, what the folder's own takes: `.tmp-`, `-<pid>@<host>-<random>`


def fitted(name: str, room: int) -> str:
    """`name` as it is where it fits in `room` bytes, else its start and a digest of the whole: a temp name made of
    a file's or folder's own name, which may be near the 255-byte limit (`--output` of 84 Chinese characters was
    refused as `.NAME.1234.tmp: File name too long`, a name the user never gave)."""
    raw = os.fsencode(name)
    if len(raw) <= room:
        return name
    return raw[:room - 9].decode("utf-8", "ignore") + "~" + hashlib.sha256(raw).hexdigest()[:8]


def temp_beside(path: Path) -> Path:
    """This process's temp file beside `path` (`.NAME.PID.tmp`, the name `fitted` where the whole would pass the
    255-byte limit), written and then renamed into place."""
    tail = f".{os.getpid()}.tmp"
    return path.with_name(f".{fitted(path.name, NAME_MAX - 1 - len(tail))}{tail}")


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write `data` to a temp file next to `path`, then rename it into place; parents are created."""
    path = Path(path)
    if path.is_dir():
        raise UnwritableError(f"{path}: is a directory; name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UnwritableError(f"{path}: cannot be written: part of {path.parent} is a file, not a directory") \
            from None
    except OSError as e:  # a parent that cannot be made: no permission, a place that takes no folders (/proc)
        raise UnwritableError(f"{path}: cannot be written ({cannot_create(e)})") from None
    tmp = temp_beside(path)
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as e:  # no permission, no space, a place that takes no files (/proc)
        raise UnwritableError(f"{path}: cannot be written ({cannot_create(e)})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


class Read(NamedTuple):
    """An input of a command, for `check_outputs`: a file, or a directory whose files are read (`names`: only the
    entries at these paths below it and what they hold, e.g. a run's own files `metrics.json`, `model`,
    `predictions/validation.jsonl`; None: every file in it)."""

    role: str  # "the --data file", "the model directory"
    path: Path
    names: frozenset[str] | None = None

    def guards(self, inner: tuple[str, ...]) -> bool:
        """Whether the entry at `inner` (its names below `path`) is one the input reads."""
        return self.names is None or any("/".join(inner[:n]) in self.names for n in range(1, len(inner) + 1))


def exists(path: Path) -> bool:
    """Whether `path` exists; False for one that cannot be asked about (a folder this user may not read, a name too
    long for the file system, a NUL byte), where `Path.exists` raises."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def below(path: Path, folder: Path) -> tuple[str, ...] | None:
    """The names of `path` below `folder` (`()` when it is `folder`) when it is `folder` or inside it, else None —
    by what the file system says is one place, not by spelling: on a case-insensitive file system (macOS, Windows)
    `RUN/Model` is `RUN/model`, and a bind mount or a second name reaches one folder by two paths."""
    path, folder = path.expanduser().resolve(), folder.expanduser().resolve()
    if path == folder or folder in path.parents:
        return path.relative_to(folder).parts
    try:
        if not folder.exists():
            return None
        return next((path.parts[len(p.parts):] for p in (path, *path.parents)
                     if p.exists() and os.path.samefile(p, folder)), None)
    except (OSError, ValueError):
        return None


def same_file(old: Any, new: Any) -> bool:
    """Two spellings of one existing file or folder (`data/train.jsonl`, `./data/train.jsonl`), or a file copied or
    moved elsewhere with the same bytes (what a resumed run, or a study's trial, fold or point, counts as no change)."""
    if not (isinstance(old, str) and isinstance(new, str)):
        return False
    try:
        a, b = Path(old), Path(new)
        if not (a.exists() and b.exists()):
            return False
        return a.samefile(b) or (a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False))
    except OSError:
        return False


def check_outputs(flag: str, paths: Sequence[Path], inputs: Sequence[Read] = (), overwrite: bool = False,
                  what: str = "output") -> None:
    """Refuse, before any work is done, to write the file an option names (`paths[0]`) and the files written beside
    it (`paths[1:]`), as one line naming `flag`: one of the `inputs`, or an existing file an input directory holds,
    always; a directory, a path under a file, or in a folder that takes no new files (read-only, no permission),
    always; any other existing file unless `overwrite`."""
    for path in map(Path, paths):
        for read in inputs:
            role, source = read.role, read.path
            inner = below(path, source)
            if inner == ():
                raise UnwritableError(f"{flag}: {path} is {role}; write the {what} elsewhere")
            if inner and source.is_dir() and path.exists() and read.guards(inner):
                raise UnwritableError(f"{flag}: {path} is a file of {role} {source}; write the {what} elsewhere")
        if path.is_dir():
            raise UnwritableError(f"{flag}: {path} is a directory; name a file to write")
        check_creatable(flag, path)
        if not overwrite and (path.exists() or path.is_symlink()):
            raise UnwritableError(f"{flag}: {path} exists; pass {overwrite_option()} to replace it")


def check_creatable(flag: str, path: Path) -> None:
    """Refuse, before any work is done, a file or folder `path` that nothing can create: under a file or a link to a
    missing folder, or in a folder that takes no new entries (read-only, no permission, /proc); one line naming
    `flag`. Nothing is made."""
    parent = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if parent is not None and not parent.exists():  # a link to nothing: a file would be made through it, or fail
        raise UnwritableError(f"{flag}: {path} cannot be written: {parent} is a link to a missing folder "
                              f"({os.readlink(parent)})")
    if parent is not None and not parent.is_dir():
        raise UnwritableError(f"{flag}: {path} cannot be written: {parent} is a file, not a directory")
    try:
        if parent is not None:
            _probe(parent)  # a read-only or refused folder, said before the work
    except OSError as e:
        raise UnwritableError(f"{flag}: {path} cannot be written: {cannot_create(e)}") from None


def write_text_atomic(path: Path | str, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON values (the `default=` of json.dumps)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _row_value(value: Any) -> Any:
    """A value of a user's row that JSON has no type for, as JSON (the `default=` of `json_line`): what Parquet and
    Arrow columns hold besides numpy's — dates and times as ISO text, decimals as numbers, bytes as their UTF-8
    text (else base64), and anything else as its text: an echoed row never stops a finished prediction."""
    if isinstance(value, np.generic | np.ndarray):
        return plain(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _finite(value: Any) -> Any:
    """`value` with NaN and ±inf as null, as JSON has them (pandas' `to_json` does the same)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_line(row: Any) -> str:
    """One JSONL line of a row (UTF-8 text kept as it is, numpy, date, decimal and bytes values as `_row_value`
    writes them, NaN and ±inf as null: standard JSON that any reader takes)."""
    try:
        return json.dumps(row, ensure_ascii=False, default=_row_value, allow_nan=False) + "\n"
    except ValueError:  # a NaN or an infinity somewhere (the fast path above is the common case)
        return json.dumps(_finite(row), ensure_ascii=False, default=lambda v: _finite(_row_value(v))) + "\n"


def write_json_atomic(path: Path | str, data: Any) -> Path:
    """Indented JSON, UTF-8 kept as it is, newline at the end."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=plain) + "\n")


def write_jsonl_atomic(path: Path | str, rows: Iterable[Any]) -> Path:
    return write_text_atomic(path, "".join(json_line(r) for r in rows))


def dir_bytes(path: Path | str) -> int:
    """Size on disk of every file under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def read_json(path: Path | str) -> Any:
    """The parsed file, or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BrokenFileError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise BrokenFileError(f"{path}: not valid JSON (not UTF-8 text)") from None


def read_jsonl(path: Path | str, torn_tail: bool = False) -> list[Any]:
    """Every non-blank line parsed, in order; a line that does not parse is a BrokenFileError naming the file and the
    line. `torn_tail`: a last line that does not parse (a log whose writer was killed mid-line) is left out instead."""
    try:
        with Path(path).open(encoding="utf-8") as f:
            lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    except UnicodeDecodeError:
        raise BrokenFileError(f"{path}: not valid JSONL (not UTF-8 text)") from None
    rows = []
    for i, (n, line) in enumerate(lines):
        try:
            rows.append(json.loads(line.rstrip()))
        except json.JSONDecodeError as e:
            if not (torn_tail and i == len(lines) - 1):
                raise BrokenFileError(f"{path}:{n}: not valid JSON ({e.msg}, column {e.colno}); the file is "
                                      "damaged (cut short or edited)") from None
    return rows


def atomic_dir(final: Path) -> Path:
    """A fresh temp dir next to `final`, `.tmp-<name>-<pid>@<host>-<random>` (the pid and this machine's `host_id`:
    `remove_stale_temps` knows a dead process's folder); call `commit_dir(tmp, final)` when it is complete."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{fitted(final.name, TEMP_ROOM)}-{os.getpid()}@{host_id()}-",
                                dir=final.parent))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes it private; the result is an ordinary directory
    return tmp


def remove_stale_temps(final: Path) -> list[Path]:
    """Remove the `atomic_dir` folders of `final` left by a process that is gone (killed before it cleaned up:
    SIGKILL, a power cut); returns them. A folder of a live process, of another user's, or made on another machine
    (a shared filesystem: its processes are not this one's to see) is left alone."""
    gone = []
    for name in dict.fromkeys((fitted(final.name, TEMP_ROOM), final.name)):  # (whole: an older tunelab's, ≤ 227 bytes)
        pattern = re.compile(rf"\.tmp-{re.escape(name)}-(\d+)@{host_id()}-[a-z0-9_]{{8}}")
        for folder in final.parent.glob(f".tmp-{glob.escape(name)}-*") if final.parent.is_dir() else ():
            match = pattern.fullmatch(folder.name)
            if match and folder.is_dir() and not folder.is_symlink() and not pid_alive(int(match.group(1))):
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder)
    return gone


def host_id() -> str:
    """This machine, in 8 hex digits of its name (in temp folders' names: whose processes they are)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this machine is running (another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (PermissionError), a pid this system cannot hold
        return True
    return True


def umask() -> int:
    """This process's umask (022 on most systems), read where Linux shows it; elsewhere set and put back at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def open_permissions(folder: Path) -> None:
    """Files and folders under `folder` (itself too) as this user's umask makes any other (0644 / 0755 under the
    usual 022): what a model folder or a checkpoint is when it is put in place. safetensors (and mkdtemp) write
    private 0600 / 0700 files, which another user (a server, a colleague) cannot read. Links are left as they are."""
    mask = umask()
    folder.chmod(0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod((0o777 if name in dirs else 0o666) & ~mask)


def commit_dir(tmp: Path, final: Path) -> None:
    """Put the finished temp dir `tmp` in place of `final` (an existing `final` is replaced; a link, not what it
    points to)."""
    if final.exists() or final.is_symlink():
        tail = f"-{os.getpid()}"  # (a name near the 255-byte limit: its start and a digest, as `atomic_dir`'s)
        old = final.with_name(f".old-{fitted(final.name, NAME_MAX - 5 - len(tail))}{tail}")
        final.rename(old)
        tmp.rename(final)
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
