"""Rows given to a tuned model (`predict`, `eval`, the Python API, `serve`): read by its task, after refusing a field
that is the input of another shape of model, and cleaned as its training rows were. A row's other fields (an id, a
date) are kept and echoed back. And the same field in the rows a model is trained on, where the config would not
read it (`check_pair_read`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunelab.data.hygiene import clean_inputs
from tunelab.data.readers import Record, Table
from tunelab.data.records import FRESH_READ
from tunelab.errors import DataError

if TYPE_CHECKING:
    from tunelab.config.sections import DataConfig
    from tunelab.tasks.base import Example, Task

PAIR_FIELD = "text_pair"  # the second text of a pair, as tunelab's pair configs and Hugging Face pipelines name it


def model_examples(task: Task, table: Table, *, labelled: bool = False) -> list[Example]:
    """`task.parse(table)`, refusing first a row with a `text_pair` value when the model reads one text only (a model
    of pairs under other field names reads its own and echoes this one, as any extra field): echoed back beside a
    score of the first text alone, the row would look answered.
    One DataError naming the row, as every other bad field. The texts are then cleaned as the model's training rows
    were (its saved `data.clean`; none for a model saved without it), every row kept."""
    if len(task.input_fields()) == 1 and PAIR_FIELD not in task.input_fields():
        for rec in table.records:
            if rec.data.get(PAIR_FIELD) not in (None, ""):  # an empty column (a CSV's) carries no second text
                raise DataError(rec.source, rec.line, PAIR_FIELD,
                                f"this model does not read a second text (it reads {', '.join(task.input_fields())}; "
                                "it was trained without data.text_pair_field); drop the field, or use a model "
                                "trained on text pairs")
    examples = task.parse(table, labelled=labelled)
    clean = getattr(task.data, "clean", None)  # the model's data.clean (saved with it): its inputs cleaned alike
    return clean_inputs(examples, clean) if clean is not None else examples


def check_pair_read(rec: Record, data: DataConfig) -> None:
    """A data row (training, data check) with a `text_pair` value while data.text_pair_field is unset: one DataError
    naming it, as `model_examples` refuses one given to a model of one text; trained, the second text would be left
    out unsaid. Only that name (the one predict and serve read a second text by), and not when the config reads it
    as another field (the text, the label). Rows read again (`data.records.read_again`: a finished run's splits for
    its report and exports, `data augment`'s copies) are not refused."""
    if (FRESH_READ.get() and not data.text_pair_field and rec.data.get(PAIR_FIELD) not in (None, "")
            and PAIR_FIELD not in (data.text_field, data.label_field)):
        raise DataError(rec.source, rec.line, PAIR_FIELD,
                        f"data.text_pair_field is not set, so this second text would not be read (only "
                        f"{data.text_field} is); set data.text_pair_field={PAIR_FIELD} to use it, or drop the field")
