"""What data preparation did to a run's data: `RUN/data_summary.json` and `RUN/removed.jsonl`.

Every row that cleaning, deduplication or undersampling drops is recorded with its file, line, reason and the row
itself, and counted per split and reason, and every row that oversampling or augmentation adds is counted: nothing is
dropped silently, and per split `rows_read − removed − held_out_for_validation + rows_added = rows_used` (train;
a held-out validation split starts from `held_out_for_validation` instead of rows read).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunelab.data.records import ItemLine
from tunelab.errors import DataError
from tunelab.io import write_json_atomic, write_text_atomic
from tunelab.text import TEXT_RULES, rules_version

SUMMARY_FILE = "data_summary.json"
FINGERPRINT = "training_rows_sha256"  # in SUMMARY_FILE: what a resume checks its training rows against
DATA_FOLDER = "data_folder"  # in SUMMARY_FILE: the folder training ran in, which its relative data paths are from
REMOVED_FILE = "removed.jsonl"


class DataReport:
    """Collects removals and the steps applied while the splits are prepared."""

    def __init__(self) -> None:
        self.removed: list[dict[str, Any]] = []
        self.rows_read: dict[str, int] = {}
        self.cleaned: Counter[str] = Counter()
        self.applied: dict[str, Any] = {}
        self.distribution: dict[str, dict[str, float]] = {}
        self.fingerprint: str | None = None  # training_fingerprint of the training rows, where a run checkpoints
        self.added: dict[str, Counter[str]] = defaultdict(Counter)  # rows made, per split and how (oversampled ...)
        self.held_out = 0  # training rows held out as the validation split (data.validation_split)
        self.changed: dict[str, Counter[str]] = defaultdict(Counter)  # what reading changed: `Task.read_counts`

    def read(self, split: str, n: int) -> None:
        self.rows_read[split] = self.rows_read.get(split, 0) + n

    def merge(self, other: DataReport) -> None:
        """Add what `other` counted (rows read, removals, cleaned rows) to this report."""
        self.removed.extend(other.removed)
        for split, n in other.rows_read.items():
            self.read(split, n)
        self.cleaned.update(other.cleaned)
        for split, made in other.added.items():
            self.added[split].update(made)

    def add(self, split: str, how: str, n: int) -> None:
        """`n` rows made for `split` (`oversampled`, `augmented`): counted in the summary's `rows_added`."""
        if n:
            self.added[split][how] += n

    def remove(self, split: str, example: dict[str, Any], reason: str, *, with_row: bool = True, **detail: Any) -> None:
        """One removed row, by file and line — a JSON array's item by its row too, its place in the array from 1
        (`array_row`: an array on one line has every item on line 1) — and, unless `with_row` is False, the row
        itself (undersampling a file too large to hold keeps no copy of each row it drops)."""
        line = example.get("line")
        self.removed.append({"split": split, "file": example.get("source"), "line": line,
                             **({"array_row": line.row} if isinstance(line, ItemLine) else {}), "reason": reason,
                             **detail, **({"row": example.get("row")} if with_row else {})})

    def removed_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for r in self.removed:
            counts[r["split"]][r["reason"]] += 1
        return {split: dict(c) for split, c in counts.items()}

    def summary(self, splits: dict[str, list[Any]] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"rows_read": dict(self.rows_read)}
        if splits is not None:
            out["rows_used"] = {name: len(rows) for name, rows in splits.items()}
        out["removed"] = self.removed_counts()
        out["removed_total"] = len(self.removed)
        out["removed_file"] = REMOVED_FILE
        if self.added:
            out["rows_added"] = {split: dict(made) for split, made in self.added.items()}
        if self.held_out:
            out["held_out_for_validation"] = self.held_out
        if self.cleaned:
            out["rows_changed_by_cleaning"] = dict(self.cleaned)
        if any(self.changed.values()):  # per split, what the task's reading changed (NER: words split)
            out["changed_as_read"] = {split: dict(c) for split, c in self.changed.items() if c}
        out["applied"] = self.applied
        out["text_rules"] = rules_version()  # how rows were compared and measured (text.TEXT_RULES)
        out["class_distribution"] = self.distribution
        if self.fingerprint is not None:
            out[FINGERPRINT] = self.fingerprint
        return out

    def take_fingerprint(self, train: Sequence[dict[str, Any]], save_steps: int | None,
                         resume_from: Path | None) -> None:
        """The training rows' fingerprint where the run checkpoints (a resume checks its rows are these), checked
        against the resumed run's (`resume_from`, RUN/checkpoints/step-N) before anything is written."""
        if save_steps != 0 or resume_from is not None:  # (None: a checkpoint each epoch)
            self.fingerprint = training_fingerprint(train)
        if resume_from is not None and resume_from.parent.name == "checkpoints":
            check_resumed_rows(resume_from.parent.parent, self.fingerprint)

    def write(self, out_dir: Path, splits: dict[str, list[Any]] | None = None) -> dict[str, Any]:
        """Write removed.jsonl (always, empty when nothing was removed) and data_summary.json (with the folder its
        relative data paths were read from)."""
        lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in self.removed)
        write_text_atomic(out_dir / REMOVED_FILE, lines)
        summary = {**self.summary(splits), DATA_FOLDER: _cwd()}  # a run's data read again: load.run_data
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
        return summary


NOT_THE_ROW = ("source", "line", "row", "first_item_line", "generated", "word_ids")


# an example's key hashed by its former name, so that the rows of runs made before the rename hash as they did (NER's
# span rows held their text as `text` until they became token rows that keep it beside them, 2026-12-07)
KEPT_AS = {"raw_text": "text"}


def training_fingerprint(examples: Sequence[dict[str, Any]]) -> str:
    """SHA-256 of the training examples as prepared (cleaned, sampled, augmented: what the task parsed — text,
    label, tokens, messages ...) as canonical JSON, without the file and line they came from and the raw row (its
    columns the task does not read): the same rows read from a moved or copied file are the same, whatever strings
    the reader shared; an edited text, label or order is not. What scoring writes into an example (a generated
    reply, NER's word ids) is not the row either: a report's validation rows hash as the baselines' did."""
    h = hashlib.sha256(str(len(examples)).encode())
    for start in range(0, len(examples), 4096):
        part = [{KEPT_AS.get(k, k): v for k, v in ex.items() if k not in NOT_THE_ROW}
                for ex in examples[start : start + 4096]]
        h.update(json.dumps(part, sort_keys=True, ensure_ascii=False, default=repr).encode("utf-8"))
    return h.hexdigest()


def summary_rules(summary: dict[str, Any]) -> int:
    """The text rules a run's rows were compared and measured by: its summary's `text_rules`, 1 for a run from before
    they were recorded (the current ones for no summary: nothing to read again as it was)."""
    rules = summary.get("text_rules", 1) if summary else TEXT_RULES
    return rules if isinstance(rules, int) else TEXT_RULES


def read_summary(run_dir: Path, strict: bool = False) -> dict[str, Any]:
    """RUN/data_summary.json; {} for an older run (none), or a damaged summary unless `strict` (a resume's check of
    its rows: one line saying so, not a check skipped as for an older run)."""
    path = run_dir / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        if strict:
            raise DataError(str(path), None, "data.train", f"cannot be read ({str(e)[:80]}), so the training rows "
                            "of the run being resumed cannot be checked: delete it to resume without that check, "
                            "or start a new output_dir") from None
        return {}
    if not isinstance(summary, dict) and strict:
        raise DataError(str(path), None, "data.train", "not a JSON object, so the training rows of the run being "
                        "resumed cannot be checked: delete it to resume without that check, or start a new "
                        "output_dir")
    return summary if isinstance(summary, dict) else {}


def check_resumed_rows(run: Path, fingerprint: str) -> None:
    """A resumed run's training rows are those the run it resumes trained on (`run`'s SUMMARY_FILE): the batch order
    it skips into is over them. A run without the fingerprint (an older tunelab) is not checked."""
    saved = read_summary(run, strict=True).get(FINGERPRINT)
    if saved is not None and saved != fingerprint:
        raise DataError(str(run / SUMMARY_FILE), None, "data.train", "the training rows differ from those the run "
                        "being resumed trained on (an edited file, other cleaning or sampling): resume with its data, "
                        "or start a new output_dir")


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the folder was deleted under the process
        return None
