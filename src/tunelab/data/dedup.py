"""Duplicates as an action (`data.dedup`): keep the first of rows whose texts are equal, exactly or after
normalisation, within a split and across splits; every dropped row goes to the `DataReport` with the row it repeats.

Works on parsed examples of any task: string fields `text` / `text_pair` are compared; a list field `tokens` (NER)
as the space-joined sentence — its words, where `continues` names tokens that go on the one before them (a word split
at an entity's edge), so that a sentence is one key whether it is read from tokens or from a text with spans, and
however it is labelled; `messages` (SFT) turn by turn, roles included.

A training file large enough to be spilled as it is parsed (data/load.parse_file: a `RowSequence` on disk) is
deduplicated without bringing its rows back: `_dedup_spilled` keeps 16 bytes a row (the normalised key's 128-bit
digest) instead of a table of rows, and the rows kept are an index view of the spill.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from hashlib import blake2b
from typing import Any

import numpy as np

from tunelab.data.feature_store import RowSequence
from tunelab.data.report import DataReport
from tunelab.text import join_tokens, normalize, rules_version

TEXT_KEYS = ("text", "text_pair", "tokens")
# later splits win: a training row that repeats a validation or test row is the one removed
SPLIT_PRIORITY = ("test", "validation", "train")


def compared_texts(example: dict[str, Any], roles: bool = True) -> list[str]:
    """The texts compared for duplicates: text fields, NER tokens joined as their sentence (`text.join_tokens`: a
    character-level Chinese row without spaces), SFT turns as `role: content` — an assistant turn of `"weight": 0`
    (not trained) as `assistant (weight 0): content`, so that rows that train on different turns are not one row, and
    a row's tools before them; a tool-call turn as its calls' canonical JSON (keys sorted, arguments parsed: compact
    or spaced JSON, arguments as an object or a JSON string, train the same tokens); from text rules 5 a tool result
    as `tool (call0000N): content`, the call it answers (its id as `link_calls` renamed it: results paired with other
    calls render otherwise in a template that writes ids, Mistral's; ids spelled otherwise, pairing alike, do not)."""
    rules = rules_version()  # an older run's rows read again: compared as it compared them
    parts = [v if isinstance(v, str) else " ".join(map(str, v)) if rules < 2 else join_tokens([str(t) for t in v])[0]
             for k in TEXT_KEYS if isinstance(v := _value(example, k), str | list)]
    if not roles:
        return parts + [m["content"] for m in example.get("messages", ())]
    messages = example.get("messages", ())
    weights = rules >= 3
    tools = messages[0].get("tools") if weights and messages else None  # a row's tools (tasks/sft_tools.py)
    return parts + ([f"tools: {_canonical(tools)}"] if tools else []) + \
        [f"{m['role']}{' (weight 0)' if weights and m.get('weight', 1) == 0 else ''}{_answers(m, rules)}: "
         f"{_turn(m, rules)}" for m in messages]


def _value(example: dict[str, Any], key: str) -> Any:
    """`example[key]`; its `tokens` as the words they are parts of (`continues`: tokens that go on the one before)."""
    value = example.get(key)
    joined = set(example.get("continues") or ()) if key == "tokens" and isinstance(value, list) else None
    if not joined:
        return value
    words: list[str] = []
    for i, token in enumerate(value):
        if i in joined and words:
            words[-1] += str(token)
        else:
            words.append(str(token))
    return words


def _answers(message: dict[str, Any], rules: int) -> str:
    """` (call0000N)`: the call a tool result answers, from text rules 5 (before: results had no ids)."""
    linked = message.get("tool_call_id")
    return f" ({linked})" if linked is not None and rules >= 5 else ""


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _turn(message: dict[str, Any], rules: int) -> str:
    """A turn's compared text: its content; a tool-call turn's calls (tasks/sft_tools.parse_calls) as canonical JSON
    from text rules 4 (before: the turn as written)."""
    calls = message.get("tool_calls")
    if message.get("reasoning_content"):  # (text rules 6: a row's reasoning trains; rows of other reasoning differ)
        reply = _turn({**message, "reasoning_content": ""}, rules)
        return f"(reasoning) {message['reasoning_content']} (reply) {reply}"
    return f"(tool calls) {_canonical([c['function'] for c in calls])}" if calls and rules >= 4 else message["content"]


def exact_key(example: dict[str, Any]) -> str:
    return "\x00".join(compared_texts(example))


def normalised_key(example: dict[str, Any]) -> str:
    """`text.normalize`d texts (NFKC, case-folded, whitespace collapsed, no space between two CJK characters):
    `Great  Movie` and `great movie` are one row, `早餐 一般` and `早餐一般` too. Made from the exact key (split where
    it joins), so rows with one exact key always share the normalised one, even when a text holds the joining NUL
    itself."""
    return "\x00".join(normalize(p) for p in exact_key(example).split("\x00"))


def _target(example: dict[str, Any]) -> Any:
    return example.get("label", example.get("tags"))


def _where(example: dict[str, Any]) -> str:
    return f"{example.get('source')}:{example.get('line')}"


class _Seen:
    """The rows kept so far, per split, under the hash of their normalised key. Kept rows never share a normalised
    key (a row that repeats one is dropped, across splits too), so one table finds both kinds of duplicate: the
    kept row with the same normalised key is the one an exact duplicate repeats as well. Hashes rather than key
    strings (a normalised key is a new string per row): with two tables of strings `data.dedup` added 245 MB to
    loading 1 M SST-2 rows. A hash hit is confirmed on the keys themselves, and a kept row whose hash another key
    already has goes to a small table by its key string, so a collision neither drops nor keeps a row wrongly."""

    def __init__(self) -> None:
        self.tables: dict[str, tuple[dict[int, dict[str, Any]], dict[str, dict[str, Any]]]] = {}

    def match(self, keys: tuple[str, str]) -> tuple[str, str, dict[str, Any]] | None:
        exact, normal = keys
        h = hash(normal)
        for split, (table, collided) in self.tables.items():
            first = table.get(h)
            if first is not None and normalised_key(first) != normal:
                first = collided.get(normal)
            if first is not None:
                return ("exact" if exact_key(first) == exact else "normalised"), split, first
        return None

    def add(self, split: str, example: dict[str, Any], keys: tuple[str, str]) -> None:
        table, collided = self.tables.setdefault(split, ({}, {}))
        first = table.setdefault(hash(keys[1]), example)
        if first is not example and normalised_key(first) != keys[1]:  # another key with this hash
            collided.setdefault(keys[1], example)


def duplicate_keys(example: dict[str, Any]) -> tuple[str, str]:
    """(exact, normalised) keys: what `data.dedup` compares (and `Task.dedup_keys` by default)."""
    return exact_key(example), normalised_key(example)


def _detail(first: dict[str, Any], example: dict[str, Any], match: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"match": match, "duplicate_of": _where(first)}
    if _target(first) != _target(example):
        detail["label_differs"] = True
    return detail


def _digest(key: str) -> bytes:
    return blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class KeyedRows(RowSequence):
    """Spilled rows that `_dedup_spilled` kept, with each row's normalised-key digest (16 bytes a row), so that the
    comparison with the other splits reads only the rows whose digest one of theirs has. A hold-out or sample of
    them (`take`) keeps its rows' digests."""

    def __init__(self, rows: RowSequence, digests: np.ndarray) -> None:
        self.rows, self.digests = rows, digests

    def __len__(self) -> int:
        return len(self.rows)

    def _row(self, i: int) -> dict[str, Any]:
        return self.rows._row(i)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def _slice(self, start: int, stop: int) -> list[dict[str, Any]]:
        return self.rows[start:stop]

    def take(self, indices: Sequence[int]) -> RowSequence:
        at = np.asarray(indices, dtype=np.int64)
        return KeyedRows(self.rows.take(at), self.digests[at])


def _candidates(examples: Sequence[dict[str, Any]], seen: _Seen) -> Iterable[tuple[int, dict[str, Any]]]:
    """(index, row) of the rows `_drop` must look at: all of them, or, for `KeyedRows`, those whose digest a seen
    row's normalised key has (read in order, nothing else read)."""
    if not isinstance(examples, KeyedRows):
        return enumerate(examples)
    wanted = {_digest(normalised_key(ex)) for table, collided in seen.tables.values()
              for ex in (*table.values(), *collided.values())}
    hits = np.flatnonzero([d.tobytes() in wanted for d in examples.digests]) if wanted else np.empty(0, np.int64)
    return zip(hits.tolist(), examples.take(hits), strict=True)


def _drop(examples: Sequence[dict[str, Any]], split: str, seen: _Seen, report: DataReport, within: bool,
          ) -> Sequence[dict[str, Any]]:
    """The rows `seen` has no match for (`within`: each kept row is seen by the next). Rows spilled to disk (a
    `RowSequence`, across splits only) are read once in order (`KeyedRows`: only those a digest points to), and
    the kept ones are an index view of them."""
    spilled = isinstance(examples, RowSequence)
    kept: list[dict[str, Any]] = []
    dropped: list[int] = []
    for i, ex in _candidates(examples, seen):
        keys = duplicate_keys(ex)
        hit = seen.match(keys)
        if hit is None:
            if not spilled:
                kept.append(ex)
            if within:
                seen.add(split, ex, keys)
            continue
        match, other_split, first = hit
        dropped.append(i)
        report.remove(split, ex, "duplicate" if within else f"in_{other_split}", **_detail(first, ex, match))
    if not spilled:
        return kept
    if not dropped:
        return examples
    mask = np.ones(len(examples), dtype=bool)
    mask[dropped] = False
    return examples.take(np.flatnonzero(mask))


def _dedup_spilled(rows: RowSequence, split: str, report: DataReport) -> KeyedRows:
    """`dedup_within` of spilled rows, as the in-memory table decides it, without holding rows: one pass computes
    each row's normalised key as a 128-bit digest (blake2b; two different keys share one with probability
    ~n²/2¹²⁹, 10⁻²⁵ at 10 M rows, so an equal digest is taken as an equal key); `np.unique` gives each row the
    first row with its digest; a second, ordered pass reads only the duplicates and the rows they repeat, and
    compares their exact keys for the report. 16 bytes a row, against ≈ 0.6 KB a row held whole; a few times that
    while `np.unique` sorts."""
    n = len(rows)
    buffer = bytearray(16 * n)
    for i, ex in enumerate(rows):
        buffer[16 * i : 16 * i + 16] = _digest(normalised_key(ex))
    digests = np.frombuffer(buffer, dtype="V16")
    _, first_at, inverse = np.unique(digests, return_index=True, return_inverse=True)
    first = first_at[inverse.reshape(-1)]
    del inverse, first_at
    dup = np.flatnonzero(first != np.arange(n))
    if not dup.size:
        return KeyedRows(rows, digests)
    involved = np.union1d(first[dup], dup)  # ascending: a first row always comes before the rows that repeat it
    # the first rows that others repeat: their file, line, label and exact key's digest, for the report
    firsts: dict[int, tuple[dict[str, Any], bytes]] = {}
    for i, ex in zip(involved.tolist(), rows.take(involved), strict=True):
        f = int(first[i])
        if f == i:
            firsts[i] = {"source": ex.get("source"), "line": ex.get("line"), "label": _target(ex)}, \
                _digest(exact_key(ex))
        else:
            where, exact = firsts[f]
            match = "exact" if _digest(exact_key(ex)) == exact else "normalised"
            report.remove(split, ex, "duplicate", **_detail(where, ex, match))
    kept = np.ones(n, dtype=bool)
    kept[dup] = False
    return KeyedRows(rows, digests).take(np.flatnonzero(kept))


def dedup_within(examples: Sequence[dict[str, Any]], split: str, report: DataReport) -> Sequence[dict[str, Any]]:
    """Keep the first of rows whose texts are equal exactly or after normalisation."""
    if isinstance(examples, RowSequence):
        return _dedup_spilled(examples, split, report)
    return _drop(examples, split, _Seen(), report, within=True)


def without_digests(rows: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """A spilled split's rows without the digests within-split dedup kept beside them (`KeyedRows`): 16 bytes a row
    freed once no later comparison needs them."""
    return rows.rows if isinstance(rows, KeyedRows) else rows


def dedup_across(splits: dict[str, Sequence[dict[str, Any]]], report: DataReport,
                 ) -> dict[str, Sequence[dict[str, Any]]]:
    """Remove rows that repeat a row of a higher-priority split: train loses rows found in validation
    or test, validation loses rows found in test. A spilled training split is read once more, in order; one that
    `_dedup_spilled` kept (`KeyedRows`) only where a digest matches a validation or test row."""
    seen = _Seen()
    out = dict(splits)
    for split in SPLIT_PRIORITY:
        if split in out:
            out[split] = _drop(out[split], split, seen, report, within=False)
            if split != "train":  # nothing is compared with the training rows after them
                for ex in out[split]:
                    seen.add(split, ex, duplicate_keys(ex))
    if "train" in out:  # the digests are not needed after this
        out["train"] = without_digests(out["train"])
    return out


Keys = Callable[[dict[str, Any]], tuple[str, str]]


class CopyDuplicates:
    """`data.dedup` of `data.augment`'s copies, made after the splits were deduplicated: `keep(copy)` is False for a
    copy whose normalised key a validation / test row has (augmentation would train on it again), a training row
    (its own original included) or an earlier copy; `dropped` holds each with its detail, for removed.jsonl (reason
    `augmented_duplicate`). Keeps the validation and test keys, 16 bytes a training row (a sorted digest and its
    row's index; a hit is confirmed on the row's key) and 16 bytes a copy kept (its digest; equal taken as equal, as
    `_dedup_spilled`)."""

    def __init__(self, train: Sequence[dict[str, Any]], others: dict[str, Sequence[dict[str, Any]]],
                 keys: Keys) -> None:
        self.keys, self.train = keys, train
        self.held: dict[str, tuple[str, dict[str, Any]]] = {}
        for split in ("test", "validation"):  # SPLIT_PRIORITY: a row in both is named in test
            for ex in others.get(split, ()):
                self.held.setdefault(keys(ex)[1], (split, ex))
        digests = np.fromiter((_short(keys(ex)[1]) for ex in train), dtype=np.uint64, count=len(train))
        self.order = np.argsort(digests, kind="stable")
        self.sorted = digests[self.order]
        self.copies: dict[bytes, tuple[str, bytes]] = {}
        self.dropped: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def _in_train(self, exact: str, normal: str) -> tuple[str, dict[str, Any]] | None:
        d = np.uint64(_short(normal))
        at = int(np.searchsorted(self.sorted, d))
        while at < len(self.sorted) and self.sorted[at] == d:
            first = self.train[int(self.order[at])]
            first_exact, first_normal = self.keys(first)
            if first_normal == normal:
                return ("exact" if first_exact == exact else "normalised"), first
            at += 1
        return None

    def keep(self, copy: dict[str, Any]) -> bool:
        exact, normal = self.keys(copy)
        if normal in self.held:
            split, first = self.held[normal]
            match, where = "exact" if self.keys(first)[0] == exact else "normalised", _where(first)
        elif (hit := self._in_train(exact, normal)) is not None:
            split, (match, first) = "train", hit
            where = _where(first)
        elif (seen := self.copies.get(normal_digest := _digest(normal))) is not None:
            split, where = "augmented", seen[0]
            match = "exact" if seen[1] == _digest(exact) else "normalised"
        else:
            self.copies[normal_digest] = (f"{_where(copy)} (copy)", _digest(exact))
            return True
        self.dropped.append((copy, {"match": match, "duplicate_of": where, "duplicate_in": split}))
        return False


def _short(key: str) -> int:
    return int.from_bytes(blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
