"""A LLaMA-Factory dataset_info.json entry as sft settings (`Sft.peer_dataset`, for `tunelab config import`): what
its `formatting`, `columns` and `tags` say, checked against what the sft task reads (tasks/sft_rows.py).

- alpaca with the columns instruction / input / output → `task.format: alpaca`; another prompt and response column
  (and no query column) → `task.prompt_template: '{PROMPT}'`, `task.response_field: RESPONSE`;
- sharegpt / openai whose turns are in `conversations` or `messages` → `task.format: sharegpt` / `messages`, where
  every tag names a role as tunelab reads it (from / role, value / content, human / user, gpt / assistant,
  observation / tool, function_call, system);
- a `system`, `tools` or alpaca `history` column read under that name only.

Anything else (a renamed system column, images, preference pairs, a user tag tunelab reads as another role) is a
`PeerRefusal` naming the key: tunelab reads these names only, and would otherwise read the rows differently from
how they were trained.

Several datasets are joined into one file of `messages` rows (`joined_row`, `Sft.peer_row`): each row read as its
dataset's settings read it (a bad row is the reader's one line, naming the dataset's file and line), then written as
a row that reads the same: a conversation's turns as they are (`conversations` or `messages`, either key style), its
`system` and `tools` columns beside them; an alpaca or template row's turns as tunelab reads them (system, history,
instruction and input joined by a blank line, the reply), its `tools` column beside them."""

from __future__ import annotations

from typing import Any

from tunelab.config.peer_data import PeerRefusal
from tunelab.data.records import Record
from tunelab.tasks.sft_rows import ROLE_NAMES, row_messages, template_row

MESSAGES = {"conversations": "sharegpt", "messages": "messages"}  # the turns' column → task.format
SAME = ("system", "tools")  # read under these names only (alpaca's history too)
ROLE_OF = {"user_tag": "user", "assistant_tag": "assistant", "system_tag": "system", "observation_tag": "tool"}
TURN_KEYS = {"role_tag": ("from", "role"), "content_tag": ("value", "content")}
TEXT_ONLY = ("images", "videos", "audios", "chosen", "rejected", "kto_tag")
JOINED: dict[str, str] = {}  # the joined file's rows: messages, detected (task.format auto, so eval / predict
# of the model read a file in any of the datasets' formats)


def dataset_settings(entry: dict[str, Any]) -> dict[str, Any]:
    """The sft settings (`task.format`, ...) that read rows as the entry says LLaMA-Factory reads them."""
    cols = entry["columns"]
    if entry["ranking"]:
        raise PeerRefusal("ranking", "preference pairs: tunelab's sft trains on one reply a row")
    extra = next((k for k in TEXT_ONLY if cols.get(k)), None)
    if extra is not None:
        raise PeerRefusal(f"columns.{extra}", "not carried: tunelab's sft trains on text turns only")
    for key in SAME:
        if cols[key] not in (None, key):
            raise PeerRefusal(f"columns.{key}", f"{cols[key]!r}: tunelab reads the {key} column as {key!r} only; "
                              "rename it in the file")
    if entry["formatting"] == "alpaca":
        return _alpaca(cols)
    if entry["formatting"] in ("sharegpt", "openai"):
        return _sharegpt(cols, entry["tags"])
    raise PeerRefusal("formatting", f"{entry['formatting']}: tunelab reads alpaca, sharegpt and openai")


def _alpaca(cols: dict[str, Any]) -> dict[str, Any]:
    prompt, query, response, history = cols["prompt"], cols["query"], cols["response"], cols["history"]
    if history not in (None, "history"):
        raise PeerRefusal("columns.history", f"{history!r}: tunelab reads alpaca's history as 'history' only; "
                          "rename it in the file")
    if prompt == "instruction" and response == "output" and query in (None, "input"):
        return {"task.format": "alpaca"}
    if not prompt or not response:
        raise PeerRefusal("columns.prompt" if not prompt else "columns.response", "missing: alpaca rows need one")
    if query is not None:
        raise PeerRefusal("columns.query", f"{query!r} beside the prompt column {prompt!r}: tunelab reads a second "
                          "input as 'input' beside 'instruction' only; name the columns instruction / input / output")
    if not prompt.isidentifier():  # (a {field} placeholder: letters, digits and _)
        raise PeerRefusal("columns.prompt", f"{prompt!r}: tunelab names a prompt column of letters, digits and _ "
                          "only")
    return {"task.prompt_template": "{" + prompt + "}", "task.response_field": response}


def _sharegpt(cols: dict[str, Any], tags: dict[str, Any]) -> dict[str, Any]:
    if cols["messages"] not in MESSAGES:
        raise PeerRefusal("columns.messages", f"{cols['messages']!r}: tunelab reads the turns from 'conversations' "
                          "or 'messages' only; rename the column in the file")
    for key, names in TURN_KEYS.items():
        if tags[key] not in names:
            raise PeerRefusal(f"tags.{key}", f"{tags[key]!r}: tunelab reads a turn's {key.split('_')[0]} as "
                              f"{' or '.join(names)} only; rename it in the file")
    for key, role in ROLE_OF.items():
        if tags[key] is not None and ROLE_NAMES.get(tags[key]) != role:
            names = [n for n, r in ROLE_NAMES.items() if r == role and n != "function_call"]
            raise PeerRefusal(f"tags.{key}", f"{tags[key]!r}: tunelab reads a {role} turn named "
                              f"{' or '.join(names)}; rename the role in the file")
    if tags["function_tag"] not in (None, "function_call"):
        raise PeerRefusal("tags.function_tag", f"{tags['function_tag']!r}: tunelab reads a tool call turn named "
                          "'function_call' only; rename the role in the file")
    return {"task.format": MESSAGES[cols["messages"]]}


def joined_row(settings: dict[str, Any], rec: Record) -> dict[str, Any]:
    """A row of a registered dataset read by `settings` (`dataset_settings`'), as a `messages` row that reads the
    same; a DataError (file:line: field) where the row would be refused read from its own file."""
    if "task.prompt_template" in settings:
        _, msgs = template_row(rec, settings["task.prompt_template"], settings["task.response_field"], True)
        keep: tuple[str, ...] = ("tools",)
    else:
        field, msgs = row_messages(rec, settings["task.format"], True)
        if field in MESSAGES:  # (a conversation: its turns as written)
            msgs, keep = rec.data[field], ("system", "tools")
        else:
            keep = ("tools",)
    return {"messages": msgs, **{k: rec.data[k] for k in keep if rec.data.get(k) is not None}}
