"""Easy data augmentation (EDA) of training rows: random deletion, swap, synonym insertion and
synonym replacement, reproducible by seed.

English (any whitespace-separated language) works on words; Chinese on characters, or on jieba
words when `jieba` is importable. Each op maps a list of units to `[(unit, origin)]`, where origin is
the index of the unit it came from (-1: inserted), so token-level tasks (NER) can carry tags along.
Back-translation is not implemented.

No op deletes, moves, replaces or inserts a negation (`NEGATIONS`; in Chinese a unit holding 不 没 别 无 非 未, a
jieba word such as 没有 or a single character), and a swap never carries a word across one: a copy keeps its label's
meaning (`the film was not good` never becomes `the film was good`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoModel, AutoTokenizer

from tunelab.config.run import parse_overrides
from tunelab.config.sections import AugmentConfig
from tunelab.data.check import _configs
from tunelab.data.feature_store import RowSequence
from tunelab.data.readers import read_table
from tunelab.data.records import read_again
from tunelab.data.row_spill import Joined, spill_anywhere
from tunelab.data.synonyms import synonym_source
from tunelab.errors import ConfigError
from tunelab.io import Read, check_outputs, write_jsonl_atomic
from tunelab.models import load_named
from tunelab.text import CJK_UNIT, is_chinese, is_cjk, jieba_or_none

Synonyms = Callable[[str], list[str]]
Units = list[tuple[str, int]]

_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)
NEEDS_SYNONYMS = ("insert", "synonym")
NEGATIONS = frozenset({"not", "no", "never", "nor", "cannot", "without", "n't"})  # English words (and -n't)
NEGATIONS_ZH = frozenset("不没别无非未")  # Chinese: a unit holding one (a character, or a jieba word: 没有, 不错)


# ---------------------------------------------------------------------------- units
def split_units(text: str, language: str) -> tuple[list[str], str]:
    """(units, language): words for en; for zh, jieba words if installed, else single characters
    (a run of letters or digits, such as `Python`, stays one unit)."""
    lang = language if language != "auto" else ("zh" if is_chinese(text) else "en")
    if lang == "en":
        return text.split(), lang
    jieba = jieba_or_none()
    if jieba is not None:
        return [w for w in jieba.lcut(text) if w.strip()], lang
    return CJK_UNIT.findall(text), lang


def _latin(char: str) -> bool:
    return char.isalnum() and not is_cjk(char)


def join_units(units: Sequence[str], language: str) -> str:
    if language == "en":
        return " ".join(units)
    out = ""
    for unit in units:  # a space only between two latin words or numbers (`Python 3`)
        if out and _latin(out[-1]) and _latin(unit[0]):
            out += " "
        out += unit
    return out


# ---------------------------------------------------------------------------- ops
def _count(n: int, ratio: float) -> int:
    return max(1, round(ratio * n))


def is_negation(unit: str) -> bool:
    """A unit no op may touch: an English negation (`not`, `Never,`, `don't`, `can’t`) or one holding a Chinese
    negation character; a synonym that is one is never put in."""
    core = _CORE.match(unit).group(2).casefold().replace("\u2019", "'")  # type: ignore[union-attr]
    return core in NEGATIONS or core.endswith("n't") or any(c in NEGATIONS_ZH for c in unit)


def _free(units: Sequence[str]) -> list[int]:
    """The positions of the units an op may change (not negations)."""
    return [i for i, u in enumerate(units) if not is_negation(u)]


def _segments(units: Sequence[str]) -> list[list[int]]:
    """The runs of free positions between negations, of two or more: a swap stays inside one."""
    runs: list[list[int]] = [[]]
    for i, u in enumerate(units):
        if is_negation(u):
            runs.append([])
        else:
            runs[-1].append(i)
    return [r for r in runs if len(r) > 1]


def _synonyms_of(unit: str, lookup: Synonyms) -> tuple[str, str, str, list[str]]:
    """(leading punctuation, word, trailing punctuation, synonyms of word): none for a negation, and none that is or
    holds one."""
    lead, core, trail = _CORE.match(unit).groups()  # type: ignore[union-attr]
    if not core or is_negation(unit):
        return lead, core, trail, []
    return lead, core, trail, [s for s in lookup(core) if not any(is_negation(w) for w in s.split() or [s])]


def _cased(syn: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return syn.upper()
    if like[:1].isupper():
        return syn[:1].upper() + syn[1:]
    return syn


def op_delete(units: list[str], rng: random.Random, ratio: float, lookup: Synonyms | None) -> Units:
    """Delete ratio·n units (at least one; never the last other than negations, never a negation)."""
    free = _free(units)
    if len(free) < 2:
        return [(u, i) for i, u in enumerate(units)]
    gone = set(rng.sample(free, min(_count(len(units), ratio), len(free) - 1)))
    return [(u, i) for i, u in enumerate(units) if i not in gone]


def op_swap(units: list[str], rng: random.Random, ratio: float, lookup: Synonyms | None) -> Units:
    """Swap two random units, ratio·n times (at least once); never a negation, nor across one."""
    out = [(u, i) for i, u in enumerate(units)]
    segments = _segments(units)
    if not segments:
        return out
    for _ in range(_count(len(units), ratio)):
        a, b = rng.sample(rng.choice(segments), 2)
        out[a], out[b] = out[b], out[a]
    return out


def op_synonym(units: list[str], rng: random.Random, ratio: float, lookup: Synonyms | None) -> Units:
    """Replace ratio·n units (at least one) that have synonyms by a random synonym."""
    out = [(u, i) for i, u in enumerate(units)]
    todo = _count(len(units), ratio)
    for i in rng.sample(range(len(units)), len(units)):
        if todo == 0 or lookup is None:
            break
        lead, core, trail, syns = _synonyms_of(units[i], lookup)
        if syns:
            out[i] = (lead + _cased(rng.choice(syns), core) + trail, i)
            todo -= 1
    return out


def op_insert(units: list[str], rng: random.Random, ratio: float, lookup: Synonyms | None) -> Units:
    """ratio·n times (at least once): a synonym of a random unit is inserted at a random position."""
    out = [(u, i) for i, u in enumerate(units)]
    for _ in range(_count(len(units), ratio)):
        for i in rng.sample(range(len(units)), len(units)):
            syns = _synonyms_of(units[i], lookup)[3] if lookup else []
            if syns:
                out.insert(rng.randint(0, len(out)), (rng.choice(syns), -1))
                break
        else:
            break  # no unit has a synonym
    return out


OPS: dict[str, Callable[[list[str], random.Random, float, Synonyms | None], Units]] = {
    "delete": op_delete, "swap": op_swap, "insert": op_insert, "synonym": op_synonym,
}


def augment_text(text: str, ops: Sequence[str], rng: random.Random, ratio: float, lookup: Synonyms | None,
                 language: str = "auto") -> tuple[str, str] | None:
    """(new text, op) with the first op, in a seeded random order, that changes the text; None if none does."""
    units, lang = split_units(text, language)
    order = list(ops)
    rng.shuffle(order)
    for name in order:
        if name in NEEDS_SYNONYMS and lookup is None:
            continue
        changed = [u for u, _ in OPS[name](units, rng, ratio, lookup)]
        if changed != units:
            return join_units(changed, lang), name
    return None


# ---------------------------------------------------------------------------- examples & files
def augment_examples(examples: Sequence[dict[str, Any]], cfg: AugmentConfig, seed: int, lookup: Synonyms | None,
                     text_field: str = "text", cache: bool = True, several_files: bool = False,
                     keep: Callable[[], Callable[[dict[str, Any]], bool]] | None = None,
                     ) -> tuple[Sequence[dict[str, Any]], dict[str, Any]]:
    """The examples followed by `cfg.copies` augmented copies of each (in order). A copy carries
    `augmented_from` (the original's line; `file:line` where `several_files` — a dataset folder's rows, whose lines
    restart in each file) in the example and its `row`. Copy j of row i draws from
    its own RNG, seeded by (seed, i, j): the output depends only on the seed and the input. Rows spilled to disk (a
    `RowSequence`: a large training file) get their copies spilled as they are made (in the feature cache's folder
    unless `cache` is off), so neither is held whole; the rows are the same. `keep` makes, for each attempt at the
    copies (a spill that cannot be written starts again), the test a copy must pass to be added (`data.dedup`:
    `dedup.CopyDuplicates`); the others are counted as `duplicates_dropped`."""
    if lookup is None and set(cfg.ops) <= set(NEEDS_SYNONYMS):
        raise ConfigError("config: data.augment.ops: insert and synonym need data.augment.synonyms "
                          "(or a model for embedding neighbours)")
    counts: dict[str, Any] = {}

    def copies() -> Iterator[list[dict[str, Any]]]:
        counts.update(by_op=Counter(), unchanged=0, added=0, dropped=0)
        wanted = keep() if keep is not None else None
        part: list[dict[str, Any]] = []
        for i, ex in enumerate(examples):
            if "text" not in ex:
                raise ConfigError("config: data.augment: this task's rows have no text to augment")
            for copy in range(cfg.copies):
                rng = random.Random(f"augment:{seed}:{i}:{copy}")
                result = augment_text(ex["text"], cfg.ops, rng, cfg.ratio, lookup, cfg.language)
                if result is None:
                    counts["unchanged"] += 1
                    continue
                text, op = result
                origin = f"{ex.get('source')}:{ex.get('line')}" if several_files else ex.get("line")
                row = {**ex.get("row", {}), text_field: text, "augmented_from": origin}
                made = {**ex, "text": text, "augmented_from": origin, "row": row}
                if wanted is not None and not wanted(made):
                    counts["dropped"] += 1
                    continue
                counts["by_op"][op] += 1
                part.append(made)
            if len(part) >= 4096:
                counts["added"] += len(part)
                yield part
                part = []
        counts["added"] += len(part)
        yield part

    spilled = spill_anywhere(copies, cache) if isinstance(examples, RowSequence) else None
    if spilled is not None:
        out: Sequence[dict[str, Any]] = Joined(examples, spilled)  # type: ignore[arg-type] - a RowSequence
    else:
        out = [*examples, *(ex for part in copies() for ex in part)]
    stats = {"copies_added": counts["added"], "by_op": dict(sorted(counts["by_op"].items())),
             "unchanged_not_added": counts["unchanged"], **({"duplicates_dropped": counts["dropped"]} if keep else {})}
    return out, stats


def augment_file(path: str, output: str, overrides: list[str], model: str | None, seed: int,
                 overwrite: bool = False) -> dict[str, Any]:
    """`tunelab data augment`: write the file's rows followed by their augmented copies as JSONL; a copy's
    `augmented_from` is its original's line, or `file:line` where the rows come from several files (a folder).
    `--output` is never the input (or a file of an input folder); an existing file only with `overwrite`."""
    check_outputs("--output", [Path(output)], [Read("the input file", Path(path))], overwrite,
                  "rows and their copies")
    task, data = _configs("classification", parse_overrides(overrides), "data augment", fixed=True)
    cfg = data.augment or AugmentConfig()
    table = read_table(path)
    sources, labelled = set(), False
    for r in table.records:  # one pass: a dataset folder's several files (their lines restart), and labels
        sources.add(r.source)
        labelled = labelled or data.label_field in r.data  # one row with a label: all need one (parse names a gap)
    with read_again():  # copied through as they are: a second text is kept, whether the config reads it or not
        examples = task.parse(table, labelled=labelled)
    tokenizer = net = None
    if model is not None and not cfg.synonyms and set(cfg.ops) & set(NEEDS_SYNONYMS):
        tokenizer, net = load_named("--model", model, lambda where: (AutoTokenizer.from_pretrained(where),
                                                                     AutoModel.from_pretrained(where)))
    lookup, source = synonym_source(cfg.synonyms, cfg.neighbours, tokenizer, net)
    if lookup is None and set(cfg.ops) & set(NEEDS_SYNONYMS):
        raise ConfigError("config: data.augment.ops: insert and synonym need --model (embedding neighbours) or "
                          "--set data.augment.synonyms=FILE; or use --set data.augment.ops=[delete,swap]")
    rows, stats = augment_examples(examples, cfg, seed, lookup, data.text_field, several_files=len(sources) > 1)
    out = write_jsonl_atomic(output, [ex["row"] for ex in rows])
    return {"rows": len(examples), **stats, "synonym_source": source, "output": str(out)}
