"""Tokenised features on disk: an Arrow IPC file, memory-mapped, read as a sequence of feature dicts.

What `tasks/feature_cache.py` keeps between runs. Arrow because it is the format the field's tools already use
for tokenised data (the `datasets` library's cache is Arrow too) and pyarrow is a tunelab dependency; `datasets`
itself is not (its fingerprinting hashes a `map` function, while tunelab knows exactly what the features depend
on). Hand-written here is only the row access: a list-of-integers column is read through its offsets and values
as NumPy views of the mapped file — 4.3 µs for a classification row of three columns against 9.4 µs for
`Table.slice(i, 1).to_pylist()` (measured on 50,000 random rows; a Python list: 0.4 µs), so a batch of 32 costs
~0.14 ms, noise beside a training step — and every row's length comes from the offsets without reading a row. The
rows stay on disk — in the page cache, shared by every process of a distributed run — instead of in each process's
heap.

A row reads back as the dict it was written from: lists of integers, Python scalars, nested lists (tuples come back
as lists), None where it was None.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from tunelab.io import dir_bytes, pid_alive
from tunelab.models.aliases import cache_dir

FEATURES_FILE = "features.arrow"
META_FILE = "meta.json"  # what tasks/feature_cache.py notes beside the rows
INT32_COLUMNS = ("input_ids", "labels", "token_type_ids", "attention_mask", "position_ids")  # token ids, positions


class FeatureWriter:
    """Append chunks of feature dicts to `path` (one Arrow record batch each). The first chunk fixes the schema;
    token-id columns are stored as int32 (half of Python's int64)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sink: Any = None
        self._writer: Any = None
        self.schema: pa.Schema | None = None
        self.rows = 0

    def add(self, features: Sequence[dict[str, Any]]) -> None:
        if not features:
            return
        if self.schema is None:
            schema = pa.Table.from_pylist(list(features)).schema
            self.schema = pa.schema([_narrow(f) for f in schema])
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = ipc.new_file(self._sink, self.schema)
        self._writer.write_table(pa.Table.from_pylist(list(features), schema=self.schema))
        self.rows += len(features)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
        elif not self.path.exists():  # no rows at all: an empty file with an empty schema
            with pa.OSFile(str(self.path), "wb") as sink, ipc.new_file(sink, pa.schema([])):
                pass


def _narrow(field: pa.Field) -> pa.Field:
    if field.name in INT32_COLUMNS and field.type == pa.list_(pa.int64()):
        return pa.field(field.name, pa.list_(pa.int32()))
    return field


class RowSequence(Sequence[dict[str, Any]]):
    """A read-only sequence of row dicts kept off the heap: `rows[i]` (negative too) a dict, `rows[a:b]` a list.
    Subclasses give `__len__` and `_row(i)` for 0 <= i < len."""

    def _row(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        n = len(self)
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step == 1:
                return self._slice(start, max(start, stop))
            return [self._row(j) for j in range(start, stop, step)]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self._row(i)

    def _slice(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Rows start..stop-1 (0 <= start <= stop <= len)."""
        return [self._row(j) for j in range(start, stop)]

    def take(self, indices: Sequence[int]) -> RowSequence:
        """The rows at `indices`, in that order, read through this sequence when asked: nothing is copied (8 bytes
        a row), so what is left for training after a validation hold-out from a spilled file stays off the heap
        (data/splits.py)."""
        return _Taken(self, np.asarray(indices, dtype=np.int64))


WINDOW = 65_536  # rows of a `_Taken` read together, in the base's order


class _Taken(RowSequence):
    """Rows of `base` at `indices`. Iterated or sliced, the rows are fetched `WINDOW` at a time in the base's order
    and handed out in the view's: a spilled base unpickles a chunk of rows per read, so indices out of order
    (oversampled copies, data/sampling.py) read one after another would unpickle a chunk for nearly every row."""

    def __init__(self, base: RowSequence, indices: np.ndarray) -> None:
        self._base, self._indices = base, indices

    def __len__(self) -> int:
        return len(self._indices)

    def _row(self, i: int) -> dict[str, Any]:
        return self._base._row(int(self._indices[i]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for start in range(0, len(self._indices), WINDOW):
            yield from self._slice(start, min(start + WINDOW, len(self._indices)))

    def _slice(self, start: int, stop: int) -> list[dict[str, Any]]:
        window = self._indices[start:stop]
        if len(window) < 2 or bool(np.all(window[1:] >= window[:-1])):  # already in the base's order
            return [self._base._row(int(i)) for i in window]
        out: list[dict[str, Any]] = [{}] * len(window)
        for k in np.argsort(window, kind="stable").tolist():
            out[k] = self._base._row(int(window[k]))
        return out

    def take(self, indices: Sequence[int]) -> RowSequence:
        """One view of the base however many times rows are taken (dedup, hold-out, sampling): one lookup a row."""
        return _Taken(self._base, self._indices[np.asarray(indices, dtype=np.int64)])


class FeatureStore(RowSequence):
    """The features in `path` (an Arrow IPC file), memory-mapped; `store[i]` is row i as a dict, `store[a:b]` a
    list of them. `lengths` holds every row's `input_ids` length (what batching and the position check need)
    without reading the rows."""

    def __init__(self, path: Path) -> None:
        table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        self._n = table.num_rows
        # row i lives in record batch k (starts[k] <= i < starts[k + 1]); every column is chunked alike
        sizes = [len(c) for c in table.column(0).chunks] if table.num_columns else []
        self._starts = np.cumsum([0, *sizes])
        self._lists: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._scalars: dict[str, list[np.ndarray]] = {}
        self._other: dict[str, list[pa.Array]] = {}
        for name in table.column_names:
            chunks = table.column(name).chunks
            if all(_primitive_list(a.type) and a.null_count == 0 and a.values.null_count == 0 for a in chunks):
                self._lists[name] = [(np.asarray(a.offsets), a.values.to_numpy(zero_copy_only=False)) for a in chunks]
            elif all(_primitive(a.type) and a.null_count == 0 for a in chunks):
                self._scalars[name] = [a.to_numpy(zero_copy_only=False) for a in chunks]
            else:
                self._other[name] = list(chunks)
        if "input_ids" in self._lists:
            self.lengths: list[int] = np.concatenate(
                [np.diff(offsets) for offsets, _ in self._lists["input_ids"]] or [np.zeros(0, np.int64)]).tolist()
        else:
            self.lengths = [len(f["input_ids"]) for f in self]

    def __len__(self) -> int:
        return self._n

    def _row(self, i: int) -> dict[str, Any]:
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        j = i - int(self._starts[k])
        row: dict[str, Any] = {}
        for name, chunks in self._lists.items():
            offsets, values = chunks[k]
            row[name] = values[offsets[j] : offsets[j + 1]].tolist()
        for name, arrays in self._scalars.items():
            row[name] = arrays[k][j].item()
        for name, others in self._other.items():
            row[name] = others[k][j].as_py()
        return row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._row(i) for i in range(self._n))


def _primitive(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _primitive_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _primitive(t.value_type)


def write_store(directory: Path, chunks: Iterable[Sequence[dict[str, Any]]],
                finish: Callable[[Path], None] | None = None) -> int:
    """Write the chunks into `directory`/features.arrow via a temporary sibling renamed into place, so a
    directory that exists is always complete; `finish(tmp)` adds files once the chunks are written. Another
    process that finished the same directory first wins (both wrote the same rows). Returns the rows written."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        writer = FeatureWriter(tmp / FEATURES_FILE)
        try:
            for chunk in chunks:
                writer.add(chunk)
        finally:
            writer.close()
        if finish is not None:
            finish(tmp)
        try:
            tmp.rename(directory)
        except OSError:
            if not (directory / FEATURES_FILE).exists():
                raise
        return writer.rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_root() -> Path:
    """Where the feature cache lives: `features/` in tunelab's cache ($TUNELAB_CACHE, default ~/.cache/tunelab,
    beside the materialised GGUF models)."""
    return cache_dir() / "features"


def cache_entries() -> list[dict[str, Any]]:
    """What the cache holds: one row per entry (key, task, examples, MB, path, last used)."""
    rows = []
    for directory in _entry_dirs():
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            used, mb = (directory / META_FILE).stat().st_mtime, round(dir_bytes(directory) / 2**20, 1)
        except (OSError, ValueError):  # removed or damaged as we look
            continue
        rows.append({"key": directory.name, "task": meta.get("task", "?"), "examples": meta.get("examples", "?"),
                     "mb": mb, "path": str(directory),
                     "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(used))})
    return rows


def mark_used(directory: Path) -> None:
    """An entry's last use is its meta file's mtime (written, or reused since): what `evict` orders by."""
    with contextlib.suppress(OSError):
        os.utime(directory / META_FILE)


def evict(limit_gb: float, keep: Path) -> tuple[int, float]:
    """Remove the least recently used entries until the cache holds at most `limit_gb` GiB; `keep`, the entry in
    use, stays even when it alone is larger, and so do writers' temporaries (`.KEY.PID.tmp`: another process, maybe
    on another node of a shared file system, may be filling one; `tunelab data cache --clear` removes dead ones).
    Returns (entries, MB) freed. A run that has mapped a removed entry keeps reading it (the file lives on until
    it is closed)."""
    entries = []
    for directory in _entry_dirs():
        with contextlib.suppress(OSError):  # another process may remove it as we look
            entries.append(((directory / META_FILE).stat().st_mtime, directory, dir_bytes(directory)))
    total, n, size = sum(b for _, _, b in entries), 0, 0
    for _, directory, nbytes in sorted(entries, key=lambda e: e[0]):  # oldest use first
        if total <= limit_gb * 2**30:
            break
        if directory.resolve() == keep.resolve():
            continue
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            total, n, size = total - nbytes, n + 1, size + nbytes
    return n, round(size / 2**20, 1)


def _entry_dirs() -> list[Path]:
    """Finished entries (their features and meta written and renamed into place), not writers' temporaries."""
    root = cache_root()
    return [d for d in sorted(root.iterdir()) if not d.name.startswith(".") and (d / FEATURES_FILE).exists()
            and (d / META_FILE).exists()] if root.is_dir() else []


def clear_cache() -> tuple[int, float]:
    """Delete every cache entry and any temporary left by a writer that died; returns (entries, MB) freed. A run
    that has mapped an entry keeps reading it (the file lives on until it is closed)."""
    root, n, size = cache_root(), 0, 0
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        if directory.is_dir() and ((directory / FEATURES_FILE).exists() or _dead_temporary(directory.name)):
            size += dir_bytes(directory)
            n += not directory.name.endswith(".tmp")
            shutil.rmtree(directory, ignore_errors=True)
    return n, round(size / 2**20, 1)


def _dead_temporary(name: str) -> bool:
    """`.KEY.PID.tmp` of a writer no longer running."""
    parts = name.split(".")
    if not (name.startswith(".") and name.endswith(".tmp") and len(parts) == 4 and parts[2].isdigit()):
        return False
    return not pid_alive(int(parts[2]))
