"""More of `get_data.py`'s converters (split out to keep each file short): CSL's discipline labels, FastChat's dummy
conversations and databricks-dolly-15k read from .docx files. Standard library only, as `get_data.py`."""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from collections.abc import Callable, Iterator
from xml.etree import ElementTree

Row = dict
Read = Callable[..., str]  # a path inside the set's repository → its text (its bytes with binary=True)


def csl_category(read: Read) -> dict[str, list[Row]]:
    def rows(path: str) -> list[Row]:  # "to category", the paper's title, its discipline
        lines = (line.split("\t") for line in read(path).splitlines() if line)
        return [{"text": title, "label": label} for _, title, label in lines]

    return {"train": rows("benchmark/cls_ctg/train.tsv"), "validation": rows("benchmark/cls_ctg/dev.tsv")}


def chat_fastchat_dummy(read: Read) -> dict[str, list[Row]]:
    roles = {"human": "user", "gpt": "assistant"}
    return {"records": [{"id": r["id"], "messages": [{"role": roles[t["from"]], "content": t["value"]}
                                                     for t in r["conversations"]]}
                        for r in json.loads(read("data/dummy_conversation.json"))]}


WORD = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
TEXT = {WORD + "t": "", WORD + "br": "\n", WORD + "cr": "\n", WORD + "tab": "\t"}


def _paragraphs(path: str, docx: bytes) -> Iterator[tuple[bool, str]]:
    """A .docx's paragraphs: whether its first run is bold, and its text (a line break is \\n, a tab \\t)."""
    try:
        with zipfile.ZipFile(io.BytesIO(docx)) as archive:
            root = ElementTree.fromstring(archive.read("word/document.xml"))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError, zlib.error, EOFError, NotImplementedError,
            ) as error:  # (a damaged member: zlib.error; an unsupported compression: NotImplementedError)
        raise ValueError(f"{path}: not a .docx ({error})") from None
    for paragraph in root.iter(WORD + "p"):
        runs = paragraph.findall(WORD + "r")
        bold = bool(runs) and runs[0].find(f"{WORD}rPr/{WORD}b") is not None
        yield bold, "".join(e.text or "" if e.tag == WORD + "t" else TEXT[e.tag] for r in runs for e in r
                            if e.tag in TEXT)


def dolly_15k(read: Read) -> dict[str, list[Row]]:
    """databricks-dolly-15k's first release, from the .docx files it was put in for translation (its .jsonl is too
    large to snapshot): a bold "Document N", then bold "Instruction", "Context" (where there is one) and "Response",
    each followed by its text. Context → input, response → output; the category is not in them."""
    fields = {"Instruction": "instruction", "Context": "input", "Response": "output"}
    records: list[Row] = []
    for part in range(14):
        path = f"dolly-doc-in/dolly-{part:05d}.docx"
        field = None
        for bold, text in _paragraphs(path, read(path, binary=True)):
            if bold and text.startswith("Document "):
                if text != f"Document {len(records)}":
                    raise ValueError(f"{path}: {text!r} where Document {len(records)} was expected")
                records.append({"id": f"dolly-{len(records)}", "instruction": "", "input": "", "output": ""})
                field = None
            elif bold:
                if text not in fields:
                    raise ValueError(f"{path}: heading {text!r} in document {len(records) - 1}, not {list(fields)}")
                field = fields[text]
            elif not text:  # an empty paragraph: an empty field's, or none
                continue
            elif field is None or records[-1][field]:
                raise ValueError(f"{path}: text outside a field of document {len(records) - 1}: {text[:40]!r}")
            else:
                records[-1][field] = text
    return {"records": records}
