"""The rows of several LLaMA-Factory datasets joined into one JSONL file, for `tunelab config import`
(config/peer_data.py `Joined`): each dataset's rows in its file's order, the datasets one after another as the YAML
names them (LLaMA-Factory's `mix_strategy: concat`), each row converted by the task's `peer_row` hook into the one
form the file is read with (the sft task's: `messages` rows). Every row is read: a bad one is the task reader's one
line naming its dataset's file, line and field, and then nothing is written (each file goes to a temp file beside it
first, renamed into place once every row of every file is read)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tunelab.config.peer_data import lines
from tunelab.data.decode import numbered_lines
from tunelab.data.readers import read_table, row_stream, streamable
from tunelab.data.records import Record
from tunelab.errors import DataError
from tunelab.io import Read, check_outputs, json_line, temp_beside


def _rows(spec: str) -> Iterator[Record]:
    """A dataset's rows (a file, a datasets folder, an `hf:` dataset read through datasets' cache), one at a time
    where the format allows; a .txt file's as LLaMA-Factory reads them (datasets' text builder): each line a row's
    `text` (a blank line is no text: left out, as tunelab's own .txt reading leaves it)."""
    if lines(spec):
        return (Record(spec, n, {"text": line}) for n, line in numbered_lines(Path(spec)) if line.strip())
    if streamable(spec):
        return row_stream(spec)[1]
    return iter(read_table(spec).records)


def check_joins(joins: Sequence[Any], overwrite: bool) -> None:
    """Refuse, before a row is read, a joined file that exists (without `overwrite`), is a dataset it reads, or
    cannot be written: one line naming --output, which the file is named from."""
    inputs = [Read(f"the file of dataset {s.name}", Path(s.spec)) for j in joins for s in j.sources
              if not s.spec.startswith("hf:")]
    for join in joins:
        check_outputs("--output", [join.path], inputs, overwrite, what="joined rows")


def write_joins(joins: Sequence[Any], task: type[Any]) -> list[str]:
    """Write each `Joined`'s file, its rows converted by `task.peer_row`; the line said of each (`wrote
    run.train.jsonl: 1,091 rows (identity 91, alpaca_en_demo 1,000)`). Nothing is written where a row is refused."""
    temps: list[tuple[Path, Path]] = []
    said = []
    try:
        for join in joins:
            join.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_beside(join.path)
            temps.append((tmp, join.path))
            counts: dict[str, int] = {}
            with tmp.open("w", encoding="utf-8") as out:
                for source in join.sources:
                    n = 0
                    for rec in _rows(source.spec):
                        out.write(json_line(task.peer_row(source.settings, rec)))
                        n += 1
                    if not n:
                        raise DataError(source.spec, None, None, f"empty: no data rows (dataset {source.name})")
                    counts[source.name] = n
            each = ", ".join(f"{name} {n:,}" for name, n in counts.items())
            said.append(f"config import: wrote {join.path}: {sum(counts.values()):,} rows ({each})")
        for tmp, final in temps:
            tmp.replace(final)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
    return said
