"""Rows given to a tuned model (`predict`, `eval`, the Python API, `serve`): read by its task, after refusing a field
that is the input of another shape of model, and cleaned as its training rows were, by the text rules it trained by
(`model_rules`). A row's other fields (an id, a date) are kept and echoed back (`with_row`). And the same field in the
rows a model is trained on, where the config would not read it (`check_pair_read`)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from tunelab.data.hygiene import clean_inputs
from tunelab.data.readers import Record, Table
from tunelab.data.records import FRESH_READ, SAY_CHANGES
from tunelab.errors import DataError
from tunelab.progress import say
from tunelab.text import json_problem, text_rules, unicode_problem

if TYPE_CHECKING:
    from tunelab.config.sections import DataConfig
    from tunelab.tasks.base import Example, Task

PAIR_FIELD = "text_pair"  # the second text of a pair, as tunelab's pair configs and Hugging Face pipelines name it


def model_examples(task: Task, table: Table, *, labelled: bool = False) -> list[Example]:
    """`task.parse(table)`, refusing first a row with a `text_pair` value when the model reads one text only (a model
    of pairs under other field names reads its own and echoes this one, as any extra field): echoed back beside a
    score of the first text alone, the row would look answered.
    One DataError naming the row, as every other bad field. The texts are then cleaned as the model's training rows
    were (its saved `data.clean`, by its text rules; none for a model saved without it), every row kept. What reading
    changed in the rows (`Task.read_counts`: NER's words split at an entity's edge) is said once for the table, as a
    training read says it of a file (data/load.py)."""
    if len(task.input_fields()) == 1 and PAIR_FIELD not in task.input_fields():
        for rec in table.records:
            if rec.data.get(PAIR_FIELD) not in (None, ""):  # an empty column (a CSV's) carries no second text
                raise DataError(rec.source, rec.line, PAIR_FIELD,
                                f"this model does not read a second text (it reads {', '.join(task.input_fields())}; "
                                "it was trained without data.text_pair_field); drop the field, or use a model "
                                "trained on text pairs")
    for rec in table.records:
        check_row_unicode(rec)
    task.read_counts()  # (what an earlier read counted)
    with model_rules(task):  # read and cleaned by the text rules the model trained by
        examples = task.parse(table, labelled=labelled)
        for _, said in task.read_counts().values():  # what reading changed (NER: words split), as training says it
            if SAY_CHANGES.get():
                say(f"{table.source}: {said}")
        clean = getattr(task.data, "clean", None)  # the model's data.clean (saved with it): its inputs cleaned alike
        return clean_inputs(examples, clean) if clean is not None else examples


def check_row_unicode(rec: Record) -> None:
    """A row given to a model holding, in any field (the text, a NER token, an SFT turn, an id echoed back), a text
    UTF-8 cannot carry (an unpaired surrogate: JSON's "\\ud800"): one DataError naming the row and the field, as
    `tunelab serve` refuses such a body (a 422 naming it). The text fields were refused so already, but a token or a
    turn reached the tokenizer (a TypeError, or its own words), and an echoed field the JSON writer (a traceback, no
    output). A NUL is refused only where the model reads it (the reader's text fields), as in training: an echoed
    field carries it back as JSON's `\\u0000`, as Hugging Face's and vLLM's servers pass fields they do not read."""
    for key, value in rec.data.items():
        if not isinstance(key, str):
            continue
        if (problem := unicode_problem(key, nul=False)) is not None:
            raise DataError(rec.source, rec.line, None, f"the name of a field: {problem}")
        if isinstance(value, str):
            if (problem := unicode_problem(value, nul=False)) is not None:
                raise DataError(rec.source, rec.line, key, problem)
        elif isinstance(value, dict | list) and (problem := json_problem(value, key, numbers=False,
                                                                          nul=False)) is not None:
            raise DataError(rec.source, rec.line, None, problem)


def model_rules(task: Task) -> AbstractContextManager[Any]:
    """The block run by the text rules a saved model's rows were read by (`task.text_rules`, set where it is loaded:
    export/save.py), so that its inputs (eval, predict, serve, chat, the API) are read and cleaned as they were (a
    grade `<B>` kept or not, SFT tool turns given ids); those in force for a task not loaded from a model."""
    return nullcontext() if task.text_rules is None else text_rules(task.text_rules)


def with_row(row: dict[str, Any], predicted: dict[str, Any]) -> dict[str, Any]:
    """An output row of `predict`: the input row, then the predicted fields. A prediction never overwrites an input
    column (gold labels survive): a predicted field whose name the row already has is written as `pred_<name>`."""
    out = dict(row)
    for key, value in predicted.items():
        name = key
        while name in row:
            name = f"pred_{name}"
        out[name] = value
    return out


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
