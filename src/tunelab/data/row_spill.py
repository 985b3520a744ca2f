"""The training examples moved off the heap: once their features are on disk, or as a large file is parsed.

A parsed example is a dict holding its text, label, file, line and the input row (itself a dict): ≈ 0.6 KB of
Python objects for an SST-2 row. Once the training split is tokenised into the feature cache, the run reads its
examples only a few more times (the data summary counts them; the HTML report's near-duplicate, label and length
sections read them) and never during training — yet the list stayed alive through training, so the training
step's memory came on top of it:
peak RSS at 1 M SST-2 rows 1,757 MB, of which ≈ 600 MB were these dicts. `spill_rows` writes them to a file
beside the cache entry, pickled 1,024 at a time (one pickle shares the keys, file name and labels of its rows:
≈ 0.1 KB a row), opens it, and returns a read-only sequence over it; the list can then be freed. A large JSONL
training file never makes the list at all: `spill_chunks` writes its rows part by part as they are parsed
(data/load.parse_file), and every later step reads them from the file.

The file is this process's own: written by it, opened, then unlinked (it lives on while open), so nothing
another process wrote is ever unpickled. A failure to write it (read-only or full disk) keeps the list: the run
goes on as before, with its memory.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from tunelab.data.feature_store import RowSequence, cache_root

CHUNK = 1024  # examples per pickle: what one random access unpickles
STALE_S = 3600  # a spill file this old in the directory was left by a process that died while writing it
_SCHEMA = pa.schema([("rows", pa.large_binary())])


class SpilledRows(RowSequence):
    """Examples read back from a spilled file: `rows[i]` a dict, `rows[a:b]` a list, iteration a chunk at a
    time. Read-only: the stored rows never change, and a returned dict is a copy (the last chunk read by index is
    kept, so the same dict comes back until another chunk is read) — nothing downstream of the feature cache
    changes the training examples (a split that evaluation writes into is never spilled: data/splits.py)."""

    def __init__(self, path: Path, n: int) -> None:
        # read with pread, one pickle (a record batch) at a time, not mapped: the pages read stay in the system's
        # file cache, not in this process's memory (a map counts every page read in its RSS: ~1 GB at 10 M rows)
        self._reader = ipc.open_file(pa.OSFile(str(path), "rb"))
        self._n = n
        self._last: tuple[int, list[dict[str, Any]]] = (-1, [])

    def __len__(self) -> int:
        return self._n

    def _unpickle(self, k: int) -> list[dict[str, Any]]:
        return pickle.loads(memoryview(self._reader.get_batch(k).column(0)[0].as_buffer()))

    def _chunk(self, k: int) -> list[dict[str, Any]]:
        if self._last[0] != k:
            self._last = (k, self._unpickle(k))
        return self._last[1]

    def _row(self, i: int) -> dict[str, Any]:
        return self._chunk(i // CHUNK)[i % CHUNK]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for k in range(self._reader.num_record_batches):
            yield from self._unpickle(k)


def spill_rows(examples: Sequence[dict[str, Any]], directory: Path) -> Sequence[dict[str, Any]]:
    """`examples` written to a file in `directory` and read back through a `SpilledRows` (drop every other
    reference to the list to free it); `examples` itself where the file cannot be written, or where it is already
    off the heap (a `RowSequence`: spilled as it was parsed, data/load.py)."""
    if isinstance(examples, RowSequence) or not examples:
        return examples
    try:
        return spill_chunks((examples[s : s + CHUNK] for s in range(0, len(examples), CHUNK)), directory)
    except (OSError, pa.ArrowException):
        return examples


def spill_chunks(parts: Iterable[Sequence[dict[str, Any]]], directory: Path) -> SpilledRows:
    """The examples of `parts`, written as they come (one part and the rows short of a chunk are held at a time),
    one pickle of `CHUNK` rows per record batch, read back through a `SpilledRows`. Raises OSError /
    ArrowException where the file cannot be written, and whatever producing a part raises (a `DataError`); the
    file is gone either way."""
    _remove_stale(directory)
    fd, name = tempfile.mkstemp(prefix=".rows.", suffix=".tmp", dir=directory)
    path, n = Path(name), 0

    def write(rows: list[dict[str, Any]]) -> None:
        blob = pickle.dumps(rows, protocol=5)
        writer.write_batch(pa.record_batch([pa.array([blob], pa.large_binary())], schema=_SCHEMA))

    try:
        with os.fdopen(fd, "wb") as f, ipc.new_file(f, _SCHEMA) as writer:
            held: list[dict[str, Any]] = []  # rows of a part not yet a whole CHUNK
            for part in parts:
                held.extend(part)
                whole = len(held) - len(held) % CHUNK
                for start in range(0, whole, CHUNK):
                    write(held[start : start + CHUNK])
                n += whole
                del held[:whole], part  # the next part is parsed without this one
            if held:
                write(held)
                n += len(held)
        return SpilledRows(path, n)
    finally:  # open (or failed): the name is no longer needed
        with contextlib.suppress(OSError):
            path.unlink()


def spill_anywhere(make_parts: Callable[[], Iterable[Sequence[dict[str, Any]]]], cache: bool) -> SpilledRows | None:
    """`spill_chunks` into the feature cache's folder (unless `cache` is off), else the system's temporary one; each
    attempt asks `make_parts` for the parts anew (a failed attempt may have used some). None where neither folder
    can be written: the caller keeps its rows in memory."""
    for directory in [*([cache_root()] if cache else []), Path(tempfile.gettempdir())]:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            return spill_chunks(make_parts(), directory)
        except (OSError, pa.ArrowException):  # unwritable or full: the next folder
            continue
    return None


class Joined(RowSequence):
    """One sequence of rows, then another (the training rows spilled as parsed, then their augmented copies)."""

    def __init__(self, first: RowSequence, then: RowSequence) -> None:
        self._first, self._then = first, then

    def __len__(self) -> int:
        return len(self._first) + len(self._then)

    def _row(self, i: int) -> dict[str, Any]:
        n = len(self._first)
        return self._first._row(i) if i < n else self._then._row(i - n)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self._first
        yield from self._then

    def _slice(self, start: int, stop: int) -> list[dict[str, Any]]:
        n = len(self._first)
        return [*self._first[min(start, n) : min(stop, n)], *self._then[max(start - n, 0) : max(stop - n, 0)]]


def _remove_stale(directory: Path) -> None:
    """Spill files still there an hour after they were written: their writer died between creating and unlinking
    them (a write takes seconds), or the system could not unlink an open file (Windows)."""
    now = time.time()
    for path in directory.glob(".rows.*.tmp"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > STALE_S:
                path.unlink()
