"""The training split tokenised once: its features (`Task.encode`, then `Task.train_features`) kept on disk under a
key of everything they depend on, memory-mapped by the next run with the same key and by every process of a
distributed run (the node's first process tokenises, the others wait and map the file).

The key: the examples themselves (after cleaning, dedup, sampling, augmentation — hashed, so an edited file, another
seed's augmentation or another subset is another key), the task's config and the data settings (file paths left
out: the same rows from another path are the same features), the label map, the tokenizer (its full serialised
form, chat template and special tokens), the transformers / tokenizers versions and tunelab's own code. A change to
any of them is a new entry; nothing is ever served stale. The training config is not in the key: the runs of a
`tune` study or a learning-rate sweep share one entry.

`data.cache: true | false`, default on from `AUTO_ROWS` training examples. Where: `features/` in tunelab's cache
directory (`$TUNELAB_CACHE`, default `~/.cache/tunelab`); `tunelab data cache` lists it, `--clear` empties it.
Every new entry is followed by an eviction of the least recently used ones down to `data.cache_limit_gb` (every
change of tunelab's code is a new key, so old versions' entries would otherwise pile up). A
cache that cannot be written (read-only, disk full) or read is a warning, and the run tokenises in memory as it
would without one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import tokenizers
import transformers

from tunelab.data.feature_store import (
    FEATURES_FILE,
    META_FILE,
    FeatureStore,
    cache_root,
    evict,
    mark_used,
    write_store,
)
from tunelab.errors import first_line
from tunelab.io import write_json_atomic
from tunelab.progress import say
from tunelab.tasks.base import TOKENIZE_CHUNK, Example, Features, Task

AUTO_ROWS = 20_000  # data.cache unset: cache a training split of at least this many examples
FORMAT = 1  # bumped when the store's layout changes
# data settings the features do not depend on
PATH_FIELDS = ("train", "validation", "test", "unlabeled", "cache", "cache_limit_gb")


@dataclass
class TrainFeatures:
    """The engine's training rows (a list, or a `FeatureStore` mapped from the cache), the longest encoded input
    before `train_features` (what the position check needs), and the cache entry used (None: in memory)."""

    features: Sequence[Features]
    longest: int
    cached: Path | None = None


def training_features(task: Task, examples: Sequence[Example], tokenizer: Any, use_cache: bool | None,
                      first: Any = None) -> TrainFeatures:
    """The training split's features for the engine, from the cache when `use_cache` (None: at least `AUTO_ROWS`
    examples). `first`: a context under which the node's first process goes first (accelerate's
    `PartialState.local_main_process_first()`), so that one process per node tokenises."""
    if not (use_cache if use_cache is not None else len(examples) >= AUTO_ROWS):
        return _in_memory(task, examples, tokenizer)
    task.bind_tokenizer(tokenizer)
    with first if first is not None else contextlib.nullcontext():
        try:
            directory = cache_root() / feature_key(task, examples, tokenizer)
            if (directory / FEATURES_FILE).exists():
                try:
                    mark_used(directory)
                    return _open(directory, hit=True)
                except Exception as e:  # noqa: BLE001 - a damaged entry is rebuilt, never trusted
                    say(f"warning: cached features at {directory} unreadable ({type(e).__name__}); tokenising again")
                    shutil.rmtree(directory, ignore_errors=True)
            meta: dict[str, Any] = {"format": FORMAT, "task": task.cfg.name, "examples": len(examples)}
            write_store(directory, _built(task, examples, tokenizer, meta),
                        lambda tmp: write_json_atomic(tmp / META_FILE, meta))
            _keep_within_limit(task.data.cache_limit_gb, directory)
            return _open(directory, hit=False)
        except (OSError, pa.ArrowException) as e:  # unwritable; features Arrow cannot hold in one schema
            say(f"warning: the feature cache ({cache_root()}) cannot be used ({first_line(e, 200)}); tokenising in "
                "memory")
            return _in_memory(task, examples, tokenizer)


def _keep_within_limit(limit_gb: float | None, keep: Path) -> None:
    if limit_gb is None:
        return
    try:
        n, mb = evict(limit_gb, keep)
    except OSError as e:  # the entry just written is fine; only the clean-up failed
        say(f"warning: the feature cache ({cache_root()}) could not be trimmed to {limit_gb:g} GiB "
            f"({first_line(e, 200)})")
        return
    if n:
        say(f"features: the cache was over data.cache_limit_gb ({limit_gb:g} GiB): removed the {n} least recently "
            f"used entries ({mb} MB)")


def _in_memory(task: Task, examples: Sequence[Example], tokenizer: Any) -> TrainFeatures:
    feats = task.encode(examples, tokenizer)
    say_training_cuts(task)
    return TrainFeatures(task.train_features(feats), _longest(feats))


def say_training_cuts(task: Task, split: str | None = None) -> None:
    """The task's `cut_note` on the rows it just encoded to train on, where it says one (`Task.training_cuts_said`):
    once for the split, after all its parts; `split` named after the task's name (`sft (unlabeled): ...`) where the
    rows are not the training split's."""
    if task.training_cuts_said:
        say_cut_note(task.cut_note(), split)


def say_cut_note(note: str | None, split: str | None) -> None:
    """A task's `cut_note` on stderr (nothing for None), `split` named after the task's name (`sft (validation):
    ...`, `classification (unlabeled): ...`)."""
    if note:
        head, colon, rest = note.partition(": ")
        say(f"{head} ({split}): {rest}" if split and colon else note)


def _open(directory: Path, hit: bool) -> TrainFeatures:
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    store = FeatureStore(directory / FEATURES_FILE)
    if hit:
        for line in meta.get("messages", []):  # what the task said while tokenising (e.g. sft's truncation count)
            print(line, file=sys.stderr)
        say(f"features: {len(store)} tokenised training rows reused from {directory}")
    else:
        say(f"features: {len(store)} tokenised training rows cached in {directory}")
    return TrainFeatures(store, int(meta["longest"]), directory)


def _built(task: Task, examples: Sequence[Example], tokenizer: Any, meta: dict[str, Any]) -> Iterator[list[Features]]:
    """The features in chunks (`Task.training_parts`: memory of one part where the task encodes in parts); `meta`
    gets the longest input and the messages the task printed while encoding."""
    longest, said = 0, io.StringIO()
    parts = task.training_parts(examples, tokenizer)
    while True:
        with _tee_stderr(said):  # only the task's own output: not what the store's writer says between parts
            part = next(parts, None)
        if part is None:
            with _tee_stderr(said):  # (kept with the entry: a hit says it again)
                say_training_cuts(task)
            break
        feats, part_longest = part
        longest = max(longest, part_longest)
        for s in range(0, len(feats), TOKENIZE_CHUNK):
            yield feats[s : s + TOKENIZE_CHUNK]
    meta["longest"] = longest
    meta["messages"] = [line for line in said.getvalue().splitlines() if line.strip()]


@contextlib.contextmanager
def _tee_stderr(copy: io.StringIO) -> Iterator[None]:
    real = sys.stderr

    class Tee(io.TextIOBase):
        def write(self, s: str) -> int:
            copy.write(s)
            return real.write(s)

        def flush(self) -> None:
            real.flush()

    sys.stderr = Tee()
    try:
        yield
    finally:
        sys.stderr = real


def _longest(features: Sequence[Features]) -> int:
    return max((len(f["input_ids"]) for f in features), default=0)


def feature_key(task: Task, examples: Sequence[Example], tokenizer: Any) -> str:
    """The cache key of a training split's features (see the module docstring)."""
    h = hashlib.sha256()
    data = {k: v for k, v in task.data.model_dump(mode="json").items() if k not in PATH_FIELDS}
    for part in (f"format {FORMAT}", _code_digest(), transformers.__version__, tokenizers.__version__,
                 type(task).__qualname__, task.cfg.model_dump_json(exclude=set(task.cfg.scoring_only)),
                 json.dumps(data, sort_keys=True),
                 json.dumps(task.metadata(), sort_keys=True, default=str)):
        h.update(part.encode("utf-8") + b"\0")
    h.update(tokenizer_fingerprint(tokenizer))
    h.update(str(len(examples)).encode())
    for start in range(0, len(examples), TOKENIZE_CHUNK):  # pickled a chunk at a time: bounded memory
        h.update(pickle.dumps(list(examples[start : start + TOKENIZE_CHUNK]), protocol=5))
    return h.hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: Any) -> bytes:
    """A digest of how `tokenizer` turns text into ids: its whole serialised form (vocabulary, normaliser,
    pre-tokeniser, post-processor, added tokens) for a fast tokenizer, else its vocabulary; plus the chat template,
    special tokens, sides and length limit."""
    h = hashlib.sha256(type(tokenizer).__qualname__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode("utf-8"))
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    for attr in ("chat_template", "special_tokens_map", "padding_side", "truncation_side", "model_max_length",
                 "add_bos_token", "add_eos_token"):
        h.update(f"{attr}={getattr(tokenizer, attr, None)!r}\0".encode())
    return h.digest()


@cache
def _code_digest() -> str:
    """tunelab's own code: any change to how features are made is a new key."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()
