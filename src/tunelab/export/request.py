"""What `tunelab export` and `tunelab.export_model` are asked, checked and run in one place: a merge of the run's
adapter into its base weights (`merge`) or an export to a format (`fmt`), never both; each reads its own options,
and one given to the other kind is refused, not ignored; the parity gate's percentage (`parity.gate_of`). The merge
is `merge.merge_run`'s, the export `artifact.export_run`'s."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from tunelab.errors import TunelabError, flag, option
from tunelab.export.artifact import FORMATS, ExportResult, export_run
from tunelab.export.merge import MergeReport, merge_run
from tunelab.export.parity import gate_of

MERGE_ONLY = ("tolerance",)  # the options that a merge alone reads; an export to a format reads these:
FORMAT_ONLY = ("quantize", "data", "min_agreement", "max_drop", "force", "batch_size")
MAX_DROP, BATCH_SIZE, TOLERANCE = 0.5, 64, 1e-4  # the defaults of --max-drop, --batch-size, --tolerance


def check_request(merge: bool, fmt: str | None, given: Collection[str]) -> None:
    """One line for `merge` and `fmt` together or neither, and for an option `given` (by name, as the CLI's
    parameters and the API's arguments spell it) that this kind of export does not read: a merge checks no rows,
    an export to a format merges nothing."""
    if merge and fmt is not None:
        raise TunelabError(f"export: {flag('merge', True)} and {flag('format', fmt)} exclude each other: "
                           f"{flag('merge', True)} writes the run's adapter merged into the base weights, "
                           f"{flag('format')} exports the run's model (RUN/model, merged already); give one")
    if not merge and fmt is None:
        formats = option(f"--format {'|'.join(FORMATS)}", f"format={' / '.join(map(repr, FORMATS))}")
        raise TunelabError(f"export: say what to export: {flag('merge', True)} (merge the adapter into the base "
                           f"weights) or {formats}")
    unused = [name for name in (FORMAT_ONLY if merge else MERGE_ONLY) if name in given]
    if unused:
        why = ("a merge is checked by its logits against the adapter model's, within "
               f"{flag('tolerance')}: no rows, no parity gate, no quantisation" if merge else
               f"it is {flag('merge', True)}'s")
        one = len(unused) == 1
        raise TunelabError(f"export {flag('merge', True) if merge else flag('format')}: "
                           f"{', '.join(flag(name) for name in unused)} {'does' if one else 'do'} not apply ({why}); "
                           f"leave {'it' if one else 'them'} out")


def export_model(path: Path, fmt: str | None = None, merge: bool = False, *, quantize: str | None = None,
                 output: Path | None = None, data: Path | None = None, min_agreement: float | None = None,
                 max_drop: float = MAX_DROP, force: bool = False, batch_size: int = BATCH_SIZE,
                 tolerance: float = TOLERANCE, overwrite: bool = False,
                 given: Collection[str] = ()) -> ExportResult | MergeReport:
    """`tunelab export PATH --merge` (a `MergeReport`) or `--format FMT` (an `ExportResult`), its options checked
    first (`check_request`; `given`: the options the caller was given, whatever their value). `min_agreement` is a
    percentage (the CLI's, 98 for 98 %). Raises ParityError, nothing written, where the check refuses the result
    (and, for an export, not `force`)."""
    check_request(merge, fmt, given)
    if merge:
        return merge_run(path, output, tolerance, overwrite)
    assert fmt is not None  # (check_request)
    return export_run(path, fmt, quantize, output, data, gate_of(min_agreement, max_drop), force, batch_size,
                      overwrite)
