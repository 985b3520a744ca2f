"""What `predict --input -` and `chat` read from standard input is UTF-8 whatever the locale: bytes that are not are
one line naming stdin's line and byte (predict: exit code 2; chat: that line is not sent, the conversation goes on),
never "unpaired surrogate" or a traceback from the tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

runner = CliRunner()
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tunelab_dir(base: Path, out: Path, meta: dict) -> Path:
    """A tiny model folder as tunelab writes one: the base's files and tunelab.json (an untrained head: what it
    answers does not matter here)."""
    shutil.copytree(base, out)
    (out / "tunelab.json").write_text(json.dumps(meta), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def classifier(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tunelab_dir(tiny_bert, tmp_path_factory.mktemp("stdin") / "cls", {
        "task": {"name": "classification"}, "data": {}, "labels": ["LABEL_0", "LABEL_1"]})


def test_predict_names_the_line_of_stdin_that_is_not_utf8(classifier: Path) -> None:
    for given, said in ((b"good film\nbad caf\xe9\n", "<stdin>:2: bytes: not valid UTF-8 (byte 0xe9 at column 8); the "
                         "line reads as Western European text in Windows-1252 (cp1252, Latin-1), the encoding of a "
                         "Windows in Western Europe and the Americas: if all the input is, convert it on its way in: "
                         "... | iconv -f CP1252 -t UTF-8 | tunelab ...; if only this line is, fix the line"),
                        ("hi\n".encode("utf-16"), "<stdin>:1: bytes: not valid UTF-8 (byte 0xff at column 1); it "
                                                  "starts with UTF-16's byte order mark (what Excel saves as "
                                                  '"Unicode text"): convert it on its way in: ... | iconv -f UTF-16 '
                                                  "-t UTF-8 | tunelab ...")):
        res = runner.invoke(app, ["predict", str(classifier), "--input", "-"], input=given)
        assert res.exit_code == 2, res.output
        assert res.stderr == f"error: {said}\n" and "Traceback" not in res.output
    res = runner.invoke(app, ["predict", str(classifier), "--input", "-"],
                        input='\ufeffgood film\n{"text": "caf\u00e9 au lait", "id": 7}\n'.encode())
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r["text"], r.get("id")) for r in rows] == [("good film", None), ("caf\u00e9 au lait", 7)]


def test_gbk_on_stdin_is_piped_through_iconv(classifier: Path) -> None:
    """The GBK hint for standard input suggested `iconv -f GB18030 -t UTF-8 <stdin> > <stdin>.utf8`, which a shell
    cannot run: it says to pipe the text through iconv before the tunelab command."""
    res = runner.invoke(app, ["predict", str(classifier), "--input", "-"], input="这部电影很好看\n".encode("gb18030"))
    assert res.exit_code == 2, res.output
    assert res.stderr == ("error: <stdin>:1: bytes: not valid UTF-8 (byte 0xd5 at column 1); the line reads as Chinese "
                          "in GBK (GB18030), the encoding of a Chinese Windows: convert it on its way in: ... | "
                          "iconv -f GB18030 -t UTF-8 | tunelab ...\n")


def test_chat_leaves_a_line_that_is_not_utf8_unsent(tiny_llama: Path, tmp_path: Path) -> None:
    model = _tunelab_dir(tiny_llama, tmp_path / "chat", {"task": {"name": "sft"}, "data": {}})
    (model / "chat_template.jinja").write_text(CHATML, encoding="utf-8")
    res = runner.invoke(app, ["chat", str(model), "--max-new-tokens", "2"], input=b"say \xff nice\nsay good\nexit\n")
    assert res.exit_code == 0, res.output
    assert "(line 1 of the input is not UTF-8 text (byte 0xff at column 5); not sent)" in res.stderr
    assert res.stdout.count(">>> ") == 3 and "Traceback" not in res.output  # the next line was answered
