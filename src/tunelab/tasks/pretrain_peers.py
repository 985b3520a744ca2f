"""A LLaMA-Factory dataset_info.json entry as pretrain settings (`Pretrain.peer_dataset`, for `tunelab config import`
of `stage: pt`): LLaMA-Factory's pt trains on the text of each row's `prompt` column (data/README.md: `columns:
{prompt: text}`; a `.txt` file's lines are its rows, under `text`), which tunelab's pretrain reads as
`data.text_field`.

Anything else that pt would read into the text (a `query` column, joined to the prompt; alpaca `history`) or that
tunelab's pretrain does not train on (sharegpt turns, a response, images, preference pairs) is a `PeerRefusal`
naming the key. Several datasets are joined into one file of `{"text": ...}` rows (`joined_row`)."""

from __future__ import annotations

from typing import Any

from tunelab.config.peer_data import PeerRefusal
from tunelab.data.readers import require_text
from tunelab.data.records import Record

JOINED = {"data.text_field": "text"}  # how the file of several datasets' rows is read
TASK = {"task.objective": "clm"}  # LLaMA-Factory's pt trains causal LMs
# other tasks' settings the peer file may name, said as not carried
SAID = {"task.packing": "tunelab's pretrain always packs documents, each ended by EOS, into blocks of data.max_length "
        "tokens, as LLaMA-Factory's pt does by default; its last, shorter block is kept"}
NOT_READ = ("response", "history", "system", "tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag")


def dataset_settings(entry: dict[str, Any]) -> dict[str, Any]:
    """`data.text_field`: the column LLaMA-Factory's pt reads a row's text from (`columns.prompt`)."""
    if entry["formatting"] != "alpaca":
        raise PeerRefusal("formatting", f"{entry['formatting']}: LLaMA-Factory's pt reads alpaca entries (columns: "
                          "{prompt: text}) only, and so does tunelab's pretrain")
    if entry["ranking"]:
        raise PeerRefusal("ranking", "preference pairs: tunelab's pretrain trains on text rows")
    cols = entry["columns"]
    prompt = cols["prompt"]
    if not prompt:
        raise PeerRefusal("columns.prompt", "missing: the text column (columns: {prompt: text})")
    if cols["query"]:
        raise PeerRefusal("columns.query", f"{cols['query']!r} beside the text column {prompt!r}: tunelab's pretrain "
                          "reads one text column (data.text_field); register the text alone, columns: {prompt: "
                          f"{prompt}}}, or join the columns into one in the file")
    extra = next((k for k in NOT_READ if cols.get(k)), None)
    if extra is not None:
        raise PeerRefusal(f"columns.{extra}", f"{cols[extra]!r}: not carried: tunelab's pretrain trains on the text "
                          "column (columns.prompt) alone; register it alone")
    return {"data.text_field": prompt}


def joined_row(settings: dict[str, Any], rec: Record) -> dict[str, Any]:
    """A row of a registered dataset as a `{"text": ...}` row; a DataError (file:line: field) for a missing or empty
    text, as the row would be refused read from its own file."""
    return {"text": require_text(rec, settings["data.text_field"], list(rec.data))}
