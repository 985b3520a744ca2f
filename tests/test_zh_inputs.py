"""What a Chinese-speaking user types: a run named in Chinese in the web UI (and told why not in Chinese), full-width
punctuation in a config YAML, files in GBK / Big5 / UTF-16, a CSV header with a full-width comma, a QA answer_start
counted in UTF-8 bytes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import unicodedata
from pathlib import Path
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from conftest import read_error, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.errors import DataError

runner = CliRunner()

LOCAL = "http://127.0.0.1"  # TestClient's Host (its default, `testserver`, is a name ui/guard.py refuses)


def test_the_ui_launches_a_run_named_in_chinese_and_refuses_a_bad_name_in_chinese(tiny_bert: Path,
                                                                                   tmp_path: Path) -> None:
    """POST /launch?lang=zh with name=情感 was refused (an ASCII-only name rule), in English on the Chinese page,
    though a CLI run in runs/情感分类 is listed and usable."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunelab.ui.app import LIBRARY, create_app

    runs = tmp_path / "runs"
    runs.mkdir()
    client = TestClient(create_app(runs), base_url=LOCAL)
    assert LIBRARY.wait(timeout=120)
    form = {"task": "classification", "model": str(tiny_bert), "method": "full",
            "train": str(write_jsonl(tmp_path / "t.jsonl", sentiment_rows(8))), "extra": "train.max_steps=1"}

    def said(res: object) -> str:
        line = re.search(r'id="error">([^<]*)<', res.text)  # type: ignore[attr-defined]
        return line.group(1).replace("&#39;", "'") if line else ""

    for bad in ("../情感", ".情感", "-x", "情/感", "a b"):
        res = client.post("/launch?lang=zh", data={**form, "name": bad})
        assert res.status_code == 422 and said(res).startswith(f"名称：{bad!r} — 只能用字母（含中文）"), said(res)
    nfd = unicodedata.normalize("NFD", "한국")  # looks as 한국, another folder
    for bad in ("\u3164", nfd, "ｒｕｎ", "ﬁle", "\U00020000" * 80):  # blank-looking, other forms, 320 bytes
        res = client.post("/launch?lang=zh", data={**form, "name": bad})
        assert res.status_code == 422 and said(res).startswith(f"名称：{bad!r} — 请用常规写法"), said(res)
    res = client.post("/launch?lang=en", data={**form, "name": "../x"})
    assert said(res).startswith("name: '../x' — letters (Chinese too), digits"), said(res)
    (runs / "占用").write_text("a file")
    res = client.post("/launch?lang=zh", data={**form, "name": "占用"})
    assert res.status_code == 422 and "是一个文件，不是运行文件夹" in said(res), said(res)
    assert sorted(p.name for p in runs.iterdir()) == ["占用"]  # nothing written, nothing started

    res = client.post("/launch?lang=zh", data={**form, "name": "情感_v1.2"}, follow_redirects=False)
    job = runs / ".ui" / "情感_v1.2" / "job.json"
    pid = json.loads(job.read_text())["pid"] if job.is_file() else 0
    try:
        assert res.status_code == 303, said(res)
        assert res.headers["location"] == "/runs/" + quote("情感_v1.2")
        assert client.get(res.headers["location"] + "?lang=zh").status_code == 200
        assert "情感_v1.2" in {r["name"] for r in client.get("/api/runs").json()}
    finally:
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


CONFIG = "task: classification\nmodel: minilm\ndata:\n  train: t.jsonl\ntrain:\n  lr: 1e-5\n"


@pytest.mark.parametrize(("body", "line", "said"), [
    # line 11 of 12: YAML said line 12, "mapping values are not allowed here" / "could not find expected ':'"
    (CONFIG + "  batch_size: 8\n  max_length: 64\n  seed: 1\n  warmup: 0\n  epochs：1\n  precision: fp32\n", 11,
     "a full-width colon '：' after 'epochs'; YAML needs ':'"),
    (CONFIG + "  epochs：1\n", 7, "a full-width colon '：' after 'epochs'"),  # the last line: YAML said line 8
    ("task: classification\nmodel： minilm\ntrain:\n  lr: 1\n", 2, "a full-width colon '：' after 'model'"),
    (CONFIG + "\u3000 epochs: 1\n  seed: 2\n", 7, "a full-width space '\u3000' (U+3000) in the indentation"),
    # valid YAML (U+3000 is no indentation: the key `　seed`): was `config: 　seed: unknown key`, no file, no line;
    # indented so throughout, the section was null and `train: Input should be a valid dictionary` was said
    (CONFIG + "\u3000seed: 2\n", 7, "\u3000seed: unknown key; a full-width space '\u3000' (U+3000) before 'seed' "
     "(a Chinese input method's): YAML indents with ASCII spaces"),
    (CONFIG + "  \u3000seed: 2\n", 7, "train.\u3000seed: unknown key; a full-width space '\u3000' (U+3000) before"),
    ("task: classification\nmodel: minilm\ntrain:\n\u3000\u3000seed: 2\n", 4, "\u3000\u3000seed: unknown key; a "
     "full-width space '\u3000' (U+3000) before 'seed'"),
    (CONFIG + "tags: {a: 1， b: 2}\n", 7, "a full-width comma '，' in a flow list or mapping; YAML needs ','"),
    # valid YAML (the key `epochs： 1`): was `config: train.epochs： 1: unknown key`, no line, the colon unsaid
    ("task: classification\nmodel: minilm\ntrain: {lr: 1e-5, epochs： 1}\n", 3,
     "train.epochs： 1: unknown key; a full-width colon '：' after 'epochs' (a Chinese input method's): YAML needs "
     "'key: value', with an ASCII colon and a space"),
    # a block scalar's '：' is its text: the error named is YAML's own, on its line
    ("task: sft\nprompt: |\n  问题：{q}\n  回答：\nmodel: minilm\ntrain: [\n", 7, "invalid YAML: expected the node"),
])
def test_a_full_width_mark_in_a_config_is_named_on_its_line(tmp_path: Path, body: str, line: int, said: str) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(body, encoding="utf-8")
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.stderr.startswith(f"error: {config}:{line}: {said}") and len(res.stderr.splitlines()) == 1, res.stderr


def test_a_full_width_mark_that_is_valid_yaml_does_not_hide_the_real_error(tmp_path: Path) -> None:
    """A '：' or '，' that is text (a list item, a plain value's next line, a block scalar's line, a value with
    brackets) was named in place of YAML's own error further down, which it is not the cause of."""
    config = tmp_path / "run.yaml"
    config.write_text("task: sft\nanswers:\n    - 答案：\nsystem: 你是\n  你是助手：回答问题\nnote: 见[1]，如下\n"
                      "prompts:\n  - |\n    问题：什么\ntrain:\n  epochs: 1\n   lr: 0.1\n", encoding="utf-8")
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.stderr == f"error: {config}:12: invalid YAML: mapping values are not allowed here\n", res.stderr


def test_a_label_list_written_with_a_full_width_comma_is_said_so(tiny_bert: Path, tmp_path: Path) -> None:
    """`labels: [正面，负面]` is valid YAML for one label: the first row was only "label '正面' is not among the
    training labels (正面，负面)", which reads as two."""
    rows = [{"text": "很好", "label": "正面"}, {"text": "很差", "label": "负面"}] * 4
    data = write_jsonl(tmp_path / "zh.jsonl", rows)
    config = tmp_path / "run.yaml"
    config.write_text(f"task:\n  name: classification\n  labels: [正面，负面]\nmodel: {tiny_bert}\ndata:\n"
                      f"  train: {data}\n  validation_split: 0\noutput_dir: {tmp_path / 'run'}\n", encoding="utf-8")
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.stderr.splitlines()[-1] == (
        f"error: {data}:1: label: label '正面' is not among the training labels (正面，负面); task.labels has "
        "'正面，负面' as one label: a YAML list separates its items with an ASCII comma, not '，' or '、' "
        "(write [正面, 负面])"), res.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json", ".txt"])
def test_a_gbk_line_in_a_utf8_file_is_to_be_fixed_there_not_the_file_converted(tmp_path: Path, suffix: str) -> None:
    """A UTF-8 file with one GB18030 line (line 150 of 200) was told to `iconv -f GB18030` the whole file, which
    garbles its 199 UTF-8 lines: iconv only where the file holds no UTF-8 text besides ASCII."""
    def row(text: str, label: str = "正面") -> str:
        return {".jsonl": json.dumps({"text": text, "label": label}, ensure_ascii=False), ".csv": f"{text},{label}",
                ".json": json.dumps({"text": text, "label": label}, ensure_ascii=False) + ",",
                ".txt": text}[suffix]

    head = {".csv": "text,label\n", ".json": "[\n"}.get(suffix, "")
    first = 1 + head.count("\n")
    rows = [row(f"第{i}条评论，很好看") for i in range(200)]
    body = (head + "\n".join(rows[:149])).encode() + b"\n" + row("这条是GBK").encode("gb18030") + b"\n" \
        + "\n".join(rows[150:]).encode()
    said = read_error(_write(tmp_path / f"mixed{suffix}", body))
    assert f"mixed{suffix}:{first + 149}: bytes: not valid UTF-8" in said
    assert "reads as Chinese in GBK (GB18030)" in said and "in a file otherwise UTF-8: retype or paste this line " \
        "again in a UTF-8 editor (converting the whole file with iconv -f GB18030 would garble its UTF-8 lines)" in said
    # ASCII before, UTF-8 Chinese after: mixed too
    ascii_rows = [row(f"review {i}", "pos") for i in range(149)]
    body = (head + "\n".join(ascii_rows)).encode() + b"\n" + row("这条是GBK").encode("gb18030") + b"\n" \
        + "\n".join(rows[150:]).encode()
    assert "in a file otherwise UTF-8" in read_error(_write(tmp_path / f"after{suffix}", body))
    # ASCII lines, then GBK to the end: the whole file is GBK, converted by iconv
    body = (head + "\n".join(ascii_rows)).encode() + b"\n" + "\n".join(rows[150:]).encode("gb18030")
    path = _write(tmp_path / f"gbk{suffix}", body)
    assert f"iconv -f GB18030 -t UTF-8 {path} > {tmp_path / ('gbk.utf8' + suffix)}" in read_error(path)


@pytest.mark.parametrize("other", ["Привет, мир", "Καλημέρα κόσμε", "שלום עולם", "مرحبا بالعالم"])
def test_a_gbk_line_in_a_utf8_file_of_another_script_is_to_be_fixed_there(tmp_path: Path, other: str) -> None:
    """A UTF-8 file whose other lines are Cyrillic, Greek, Hebrew or Arabic (two-byte characters, no accented Latin
    letter) was told to convert whole from GB18030, which garbles those lines."""
    rows = [json.dumps({"text": f"{other} {i}", "label": "pos"}, ensure_ascii=False).encode() for i in range(20)]
    rows[10] = json.dumps({"text": "这条是GBK", "label": "pos"}, ensure_ascii=False).encode("gb18030")
    for suffix in (".jsonl", ".txt"):
        said = read_error(_write(tmp_path / f"mixed{suffix}", b"\n".join(rows) + b"\n"))
        assert f"mixed{suffix}:11: bytes: not valid UTF-8" in said and "in a file otherwise UTF-8: retype" in said \
            and "iconv -f GB18030 -t UTF-8" not in said, said


@pytest.mark.parametrize("suffix", [".jsonl", ".conll", ".json", ".yaml"])
def test_a_gbk_file_whose_later_lines_decode_as_utf8_is_still_converted(tmp_path: Path, suffix: str) -> None:
    """A GBK line of two-byte UTF-8 characters (`谢谢` is 0xD0 0xBB 0xD0 0xBB, UTF-8's `лл`; `学习` `ѧϰ`) was taken
    for UTF-8 text: the whole-GBK file was told it was `otherwise UTF-8`, to retype its first bad line alone — which
    left `лл` to be trained on. A line that reads as Chinese in the bad line's encoding, of the characters Chinese is
    mostly written with, is not; a UTF-8 Russian word beside one GBK line still is (`мир` reads as `屑懈褉`)."""
    lines = {".jsonl": [json.dumps({"text": t, "label": "pos"}, ensure_ascii=False) for t in ("这个产品很好用", "谢谢",
                                                                                             "学习")],
             ".conll": ["北京 B-LOC", "", "学习 O", "", "谢谢 O"],
             ".json": ["[", '{"text": "很好用", "label": "pos"},', '{"text": "谢谢", "label": "pos"}]'],
             ".yaml": ["task: classification  # 情感分类", "# 谢谢", "model: minilm"]}[suffix]
    path = _write(tmp_path / f"cn{suffix}", "\n".join(lines).encode("gbk") + b"\n")
    assert "лл" in "\n".join(lines).encode("gbk").decode("utf-8", errors="replace")
    if suffix == ".yaml":
        res = runner.invoke(app, ["train", str(path)])
        assert res.exit_code == 2, res.output
        said = res.stderr.rstrip("\n")
    else:
        said = read_error(path)
    assert said.endswith(f"iconv -f GB18030 -t UTF-8 {path} > {tmp_path / ('cn.utf8' + suffix)}"), said
    mixed = _write(tmp_path / "mixed.jsonl", '{"text": "мир", "label": "pos"}\n{"text": "лл", "label": "pos"}\n'
                   .encode() + '{"text": "这条是GBK", "label": "pos"}\n'.encode("gbk"))
    assert "in a file otherwise UTF-8: retype" in read_error(mixed)


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_a_gbk_line_in_a_utf8_config_is_to_be_fixed_there(tmp_path: Path) -> None:
    config = _write(tmp_path / "run.yaml", "task: classification  # 情感分类\n".encode() + "# 中文注释\n".encode("gbk")
                    + b"model: minilm\n")
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(f"error: {config}:2: not valid UTF-8 (byte 0xd6); the line reads as Chinese in GBK "
                                 "(GB18030)"), res.output
    assert "in a file otherwise UTF-8: retype" in res.stderr and "iconv -f GB18030 -t" not in res.stderr


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".conll"])
def test_a_big5_file_is_said_so_with_its_iconv_command(tmp_path: Path, suffix: str) -> None:
    """A Traditional Chinese file saved in Big5 (a Windows in Taiwan or Hong Kong, its Excel's CSV) got no hint."""
    text = {".csv": "text,label\n這部電影很好看，推薦！,正面\n台灣,正面\n",
            ".jsonl": '{"text": "這部電影很好看", "label": "正面"}\n',
            ".conll": "台 B-LOC\n北 I-LOC\n好 O\n"}[suffix]
    path = _write(tmp_path / f"zh_tw{suffix}", text.encode("big5"))
    said = read_error(path)
    excel = " and of Excel's CSV there" if suffix == ".csv" else ""  # Excel's files only: not JSONL's, CoNLL's
    assert "; the line reads as Chinese in Big5 (Traditional Chinese), the encoding of a Windows in Taiwan or Hong " \
        f"Kong{excel}: save the file as UTF-8" in said, said
    assert ("Excel" in said) == (suffix == ".csv"), said
    assert said.endswith(f"iconv -f BIG5 -t UTF-8 {path} > {tmp_path / ('zh_tw.utf8' + suffix)}"), said
    # Simplified Chinese in GBK is still GBK (much of it also decodes as Big5)
    gbk = _write(tmp_path / f"zh_cn{suffix}", text.replace("這部電影", "这部电影").replace("推薦", "推荐")
                 .replace("台灣", "台湾").encode("gbk"))
    assert "iconv -f GB18030 -t UTF-8" in read_error(gbk)


# Traditional Chinese as a user in Taiwan writes it, one character a line (a character-level CoNLL file) or short
# reviews labelled in English; each file's first line reads as Chinese in GBK as well as in Big5, with as many of each
# one's common characters (國 in Big5 is 0xB0 0xEA, GBK's 瓣; 說 0xBB 0xA1, GBK's 弧)
TRADITIONAL = {
    ".conll": [f"{c} {t}" for c, t in zip("國立臺灣大學", ["B-ORG"] + ["I-ORG"] * 5, strict=True)]
    + ["的 O", "學 O", "生 O", "說 O", "", "謝 O", "謝 O", "你 O", "們 O"],
    ".jsonl": [json.dumps({"text": t, "label": lab}, ensure_ascii=False) for t, lab in (
        ("國際", "pos"), ("學習", "pos"), ("這個產品很好用", "pos"), ("說明書看不懂", "neg"), ("謝謝", "pos"))],
    ".csv": ["text,label", "推薦,pos", "對話,pos", "這個產品很好用,pos", "時間太久,neg", "謝謝你們,pos"],
    ".json": ["[", *(f'{{"text": "{t}", "label": "pos"}},' for t in ("學習", "臺灣", "們說會時個來")),
              '{"text": "國", "label": "neg"}]'],
}
SIMPLIFIED = {  # the same in Simplified Chinese, saved by a Chinese Windows
    ".conll": [f"{c} {t}" for c, t in zip("国立台湾大学", ["B-ORG"] + ["I-ORG"] * 5, strict=True)]
    + ["的 O", "学 O", "生 O", "说 O", "", "谢 O", "谢 O", "你 O", "们 O"],
    ".jsonl": [json.dumps({"text": t, "label": lab}, ensure_ascii=False) for t, lab in (
        ("国际", "pos"), ("学会", "pos"), ("这个产品很好用", "pos"), ("说明书看不懂", "neg"), ("谢谢你", "pos"))],
    ".csv": ["text,label", "推荐,pos", "对话,pos", "这个产品很好用,pos", "时间太久,neg", "谢谢你们,pos"],
    ".json": ["[", *(f'{{"text": "{t}", "label": "pos"}},' for t in ("学会", "台湾", "们说会时个来")),
              '{"text": "国", "label": "neg"}]'],
}


@pytest.mark.parametrize("suffix", list(TRADITIONAL))
def test_big5_and_gbk_are_told_apart_by_the_files_lines(tmp_path: Path, suffix: str) -> None:
    """A Big5 file whose first bad line reads as Chinese in GBK too, with as many common characters (a character-level
    CoNLL line `國 B-ORG`, a review `國際`), was said to be GBK, GBK winning the tie: its `iconv -f GB18030` wrote
    `瓣 B-ORG`. The file's other lines, and which reading is of the characters Chinese is mostly written with,
    decide; Simplified Chinese in GBK is still GBK."""
    lines = TRADITIONAL[suffix]
    big5 = _write(tmp_path / f"tw{suffix}", "\n".join(lines).encode("big5") + b"\n")
    said = read_error(big5)
    assert "; the line reads as Chinese in Big5 (Traditional Chinese)" in said, said
    assert said.endswith(f"iconv -f BIG5 -t UTF-8 {big5} > {tmp_path / ('tw.utf8' + suffix)}"), said
    gbk = _write(tmp_path / f"cn{suffix}", "\n".join(SIMPLIFIED[suffix]).encode("gbk") + b"\n")
    said = read_error(gbk)
    assert said.endswith(f"iconv -f GB18030 -t UTF-8 {gbk} > {tmp_path / ('cn.utf8' + suffix)}"), said
    # one line alone: the characters Chinese is mostly written with decide it (`說` is Big5's, `弧` GBK's)
    for text, codec, named in (("說 O", "big5", "BIG5"), ("國 B-LOC", "big5", "BIG5"), ("对 O", "gbk", "GB18030"),
                               ("国 B-LOC", "gbk", "GB18030"), ("學習,pos", "big5", "BIG5"),
                               ("学会,pos", "gbk", "GB18030")):
        one = _write(tmp_path / ("one.conll" if " " in text else "one.csv"),
                     ("" if " " in text else "text,label\n").encode() + text.encode(codec) + b"\n")
        assert f"iconv -f {named} -t UTF-8" in read_error(one), text


def test_a_big5_character_level_conll_file_through_data_check(tmp_path: Path) -> None:
    """What the user ran: `tunelab data check` of a Big5 character-level CoNLL file was told to convert it from
    GB18030."""
    path = _write(tmp_path / "tw.conll", "\n".join(TRADITIONAL[".conll"]).encode("big5") + b"\n")
    res = runner.invoke(app, ["data", "check", str(path), "--task", "ner"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.stderr == (f"error: {path}:1: bytes: not valid UTF-8 (byte 0xb0 at column 1); the line reads as "
                          "Chinese in Big5 (Traditional Chinese), the encoding of a Windows in Taiwan or Hong Kong: "
                          f"save the file as UTF-8, or convert it: iconv -f BIG5 -t UTF-8 {path} > "
                          f"{tmp_path / 'tw.utf8.conll'}\n"), res.stderr


@pytest.mark.parametrize(("text", "codec", "named"), [
    ("日本語のテキストです,正面\n", "euc_jp", "EUC-JP"), ("これは日本語です,正面\n", "shift_jis", "SHIFT_JIS"),
    ("영화가 정말 재미있어요,긍정\n", "euc_kr", "EUC-KR"), ("안녕하세요,긍정\n", "cp949", "EUC-KR")])
def test_a_japanese_or_korean_file_is_not_said_to_be_chinese(tmp_path: Path, text: str, codec: str,
                                                              named: str) -> None:
    """EUC-JP was said to be Big5, Shift_JIS and EUC-KR / CP949 GB18030, each with an iconv that garbles them."""
    path = _write(tmp_path / "ja_ko.csv", ("text,label\n" + text).encode(codec))
    said = read_error(path)
    assert "reads as Chinese" not in said and said.endswith(f"iconv -f {named} -t UTF-8 {path} > "
                                                            f"{tmp_path / 'ja_ko.utf8.csv'}"), said


def test_a_utf16_config_is_given_its_iconv_command(tmp_path: Path) -> None:
    """A config saved as UTF-16 with its byte order mark (Windows Notepad's "Unicode") was recognised, but no command
    given. (A UTF-16 data file is read: tests/test_file_encodings.py.)"""
    config = _write(tmp_path / "run.yaml", "task: classification\n".encode("utf-16"))
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and res.stderr.rstrip().endswith(f"iconv -f UTF-16 -t UTF-8 {config} > "
                                                               f"{tmp_path / 'run.utf8.yaml'}"), res.output


def test_a_gbk_line_past_the_first_of_standard_input_is_told_both_ways() -> None:
    """Standard input is not read again: past its first line, whether the rest is GBK too is not known."""
    import io
    from types import SimpleNamespace

    from tunelab.data.readers import stdin_lines

    for given, said in ((b"good\n" + "好看".encode("gbk") + b"\n", "if all the input is, convert it on its way in: "
                         "... | iconv -f GB18030 -t UTF-8 | tunelab ...; if only this line is, fix the line"),
                        ("好看\n".encode("gbk"), "convert it on its way in: ... | iconv -f GB18030 -t UTF-8 | tunelab "
                         "...")):
        with pytest.raises(DataError) as info:
            stdin_lines(SimpleNamespace(buffer=io.BytesIO(given)))
        assert str(info.value).endswith(said), str(info.value)


def test_a_header_written_with_a_full_width_comma_is_said_so(tiny_bert: Path, tmp_path: Path) -> None:
    """`text，label` (a Chinese input method's comma) was only `missing column (columns: text，label)`."""
    for name, said in (("t.csv", "','"), ("t.tsv", "a tab")):
        path = tmp_path / name
        path.write_text("text，label\n好看，正面\n", encoding="utf-8")
        res = runner.invoke(app, ["train", "--set", "task=classification", "--set", f"model={tiny_bert}", "--set",
                                  f"data.train={path}", "--set", f"output_dir={tmp_path / 'run'}"])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert res.stderr == (f"error: {path}:1: text: missing column (columns: text，label); the header separates "
                              f"its names with '，' (U+FF0C, a full-width comma), not {said}\n"), res.stderr


def test_a_qa_answer_start_counted_in_utf8_bytes_is_said_so(tiny_bert: Path, tmp_path: Path) -> None:
    """answer_start 18, the UTF-8 byte offset of 北京 in the context (its character offset is 6): the mismatch was
    said, but not why."""
    context = "中国的首都是北京。"
    byte = context.encode().index("北京".encode())
    rows = [{"id": "1", "context": context, "question": "中国的首都是哪里？",
             "answers": {"text": ["北京"], "answer_start": [byte]}}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    res = runner.invoke(app, ["train", "--set", "task=qa", "--set", f"model={tiny_bert}", "--set",
                              f"data.train={path}", "--set", f"output_dir={tmp_path / 'run'}"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.stderr == (f"error: {path}:1: answers: answer 1 '北京' does not match the context at answer_start 18 "
                          "(the context there: '') (18 is its UTF-8 byte offset; answer_start counts characters: 6); "
                          "fix the offset, or use -1 outside training\n"), res.stderr


def test_a_qa_answer_start_counted_in_utf16_units_is_said_so(tmp_path: Path) -> None:
    """answer_start 11, the offset a browser annotation tool (JavaScript: UTF-16 code units) gives 北京 in a review
    with an emoji and a rare character (😀, 𠮷: two units each; 9 characters): only the mismatch was said."""
    from tunelab.config.sections import DataConfig
    from tunelab.data.readers import read_table
    from tunelab.registry import TASKS

    context = "我喜欢😀和𠮷野家，北京很大。"
    units = len(context[:context.index("北京")].encode("utf-16-le")) // 2
    path = write_jsonl(tmp_path / "qa.jsonl", [{"id": "1", "context": context, "question": "哪里很大？",
                                                "answers": {"text": ["北京"], "answer_start": [units]}}])
    qa = TASKS.get("qa")
    task = qa(qa.Config(), DataConfig())
    with pytest.raises(DataError) as info:
        task.parse(read_table(path))
    assert str(info.value) == (f"{path}:1: answers: answer 1 '北京' does not match the context at answer_start 11 "
                               "(the context there: '很大') (11 is its UTF-16 offset, as JavaScript and Java count, an "
                               "emoji as two; answer_start counts characters: 9); fix the offset, or use -1 outside "
                               "training")


_QUOTE = "a curly quote (a word processor's or a Chinese input method's): JSON needs '\"'"


@pytest.mark.parametrize(("row", "column", "said", "named"), [
    ('{“text”: “很差”, “label”: “负面”}', 2, "Expecting property name enclosed in double quotes",
     f"'“' (U+201C) there is {_QUOTE}"),
    ('{"text"： "很差"， "label"： "负面"}', 8, "Expecting ':' delimiter",
     "'：' (U+FF1A) there is a full-width colon (a Chinese input method's): JSON needs ':'"),
    ('{"text": "很差", "label": "负面"，}', 29, "Expecting ',' delimiter",
     "'，' (U+FF0C) there is a full-width comma (a Chinese input method's): JSON needs ','"),
    ('{"text": "很差",\u3000"label": "负面"}', 15, "Expecting property name enclosed in double quotes",
     "'\\u3000' (U+3000) there is a full-width space (a Chinese input method's): JSON needs ' '")])
def test_a_full_width_mark_in_json_is_named(tmp_path: Path, row: str, column: int, said: str, named: str) -> None:
    """A JSON row typed with a Chinese input method's marks was `invalid JSON (Expecting ':' delimiter at column 8)`:
    the colon there looks like the one it wants. The mark is named, in JSONL, a JSON array (read whole or a block at a
    time) and a JSON config."""
    from tunelab.data.jsonl import iter_json_array

    jsonl = _write(tmp_path / "zh.jsonl", ('{"text": "很好", "label": "正面"}\n' + row + "\n").encode())
    assert read_error(jsonl) == f"{jsonl}:2: json: invalid JSON ({said} at column {column}; {named})"
    array = _write(tmp_path / "zh.json", ('[{"text": "很好", "label": "正面"},\n' + row + "]\n").encode())
    assert read_error(array) == f"{array}:2: json: invalid JSON ({said}; {named})"
    with pytest.raises(DataError) as info:
        list(iter_json_array(array, block=8))
    assert str(info.value) == f"{array}:2: json: invalid JSON ({said}; {named})"
    config = _write(tmp_path / "run.json", ("\n" + row.replace("text", "task").replace("label", "model") + "\n")
                    .encode())
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and res.stderr == (f"error: {config}:2: invalid JSON: {said} (column {column}); "
                                                 f"{named}\n"), res.output


@pytest.mark.parametrize(("row", "said"), [
    ('{"text": "好", "label": 1}，', "Extra data at column 26"),  # a ',' there is wrong too
    ('{"text": "好", "label": ：1}', "Expecting value at column 24"),  # as a ':' is
    ('{"text"， "好", "label": 1}', "Expecting ':' delimiter at column 8"),
    ('{"text": ["好", "差"】, "label": 1}', "Expecting ',' delimiter at column 19; '】' (U+3011) there is a lenticular "
                                         "bracket (a Chinese input method's): JSON needs ']'"),  # (',' or ']' there)
    ('{"text": 【"好"], "label": 1}', "Expecting value at column 10; '【' (U+3010) there is a lenticular bracket (a "
                                     "Chinese input method's): JSON needs '['"),
    ('{"text": 「好」, "label": 1}', "Expecting value at column 10; '「' (U+300C) there is a corner bracket (a Chinese "
                                   "input method's): JSON needs '\"'")])
def test_a_full_width_mark_in_json_is_named_only_where_its_ascii_mark_is_wanted(tmp_path: Path, row: str,
                                                                                  said: str) -> None:
    """`，` after a JSONL row was named to be ',' ("Extra data"), `：` where a value was wanted to be ':': neither
    mends it. A mark is named where the decoder's message wants its ASCII one there; `，` between a JSON array's
    items, read a block at a time, was not named."""
    from tunelab.data.jsonl import iter_json_array

    jsonl = _write(tmp_path / "zh.jsonl", ('{"text": "很好", "label": 1}\n' + row + "\n").encode())
    assert read_error(jsonl) == f"{jsonl}:2: json: invalid JSON ({said})"
    # the closing brace / bracket typed full-width, the commonest slip at a row's end: JSON wants '}' / ']' there
    from tunelab.text.full_width import json_mark

    for doc, closer in (('{"a": 1｝', "}"), ('[1, 2］', "]"), ('{"a": [1, 2】}', "]"), ('{｝', "}"), ('[］', "]")):
        with pytest.raises(json.JSONDecodeError) as bad:
            json.loads(doc)
        assert json_mark(bad.value.doc, bad.value.pos, bad.value.msg).endswith(f"JSON needs {closer!r}"), doc
    array = _write(tmp_path / "zh.json", '[{"text": "很好", "label": 1}，{"text": "差", "label": 0}]'.encode())
    named = "; '，' (U+FF0C) there is a full-width comma (a Chinese input method's): JSON needs ','"
    assert read_error(array) == f"{array}:1: json: invalid JSON (Expecting ',' delimiter{named})"
    with pytest.raises(DataError) as info:
        list(iter_json_array(array, block=8))
    assert str(info.value) == f"{array}:1: json: invalid JSON (Expecting ',' delimiter{named})"


def test_a_setting_typed_with_full_width_marks_is_said_so(tiny_bert: Path, tmp_path: Path) -> None:
    """`--set train.epochs＝3` was only `expected key=value`, `--set train.epochs=３` and `epochs: ３` in a config
    `unable to parse string as a number (got '３')`: the full-width equals sign and digit look like the ASCII ones."""
    data = write_jsonl(tmp_path / "zh.jsonl", [{"text": "好", "label": "正面"}, {"text": "差", "label": "负面"}] * 4)
    base = ["train", "--set", "task=classification", "--set", f"model={tiny_bert}", "--set", f"data.train={data}",
            "--set", f"output_dir={tmp_path / 'run'}"]
    for setting, said in (
            ("train.epochs＝3", "--set 'train.epochs＝3': expected key=value (e.g. train.lr=1e-4); '＝' (U+FF1D) is a "
                               "full-width equals sign (a Chinese input method's): type '='"),
            ("train.epochs：3", "--set 'train.epochs：3': expected key=value (e.g. train.lr=1e-4); '：' (U+FF1A) is a "
                               "full-width colon (a Chinese input method's): type '='"),
            ("train.lr=１e-5", "--set train.lr: Input should be a valid number, unable to parse string as a number "
                              "(got '１e-5'); it is written in full-width characters (a Chinese input method's): type "
                              "'1e-5'")):
        res = runner.invoke(app, [*base, "--set", setting])
        assert res.exit_code == 2 and res.stderr == f"error: {said}\n", res.output
    config = _write(tmp_path / "run.yaml", f"task: classification\nmodel: {tiny_bert}\ndata:\n  train: {data}\n"
                    f"train:\n  epochs: ３\noutput_dir: {tmp_path / 'run'}\n".encode())
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and res.stderr == (
        f"error: {config}:6: train.epochs: Input should be a valid number, unable to parse string as a number (got "
        "'３'); it is written in full-width characters (a Chinese input method's): type '3'\n"), res.output
    assert not (tmp_path / "run").exists()
    # the web UI's more settings, one key=value a line
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunelab.ui.app import create_app

    client = TestClient(create_app(tmp_path / "runs"), base_url=LOCAL)
    form = {"task": "classification", "model": str(tiny_bert), "method": "full", "train": str(data), "name": "情感",
            "extra": "train.max_steps=1\ntrain.epochs＝3"}
    res = client.post("/launch?lang=zh", data=form)
    assert res.status_code == 422 and "more settings: &#39;train.epochs＝3&#39; is not key=value; &#39;＝&#39; " \
        "(U+FF1D) is a full-width equals sign (a Chinese input method&#39;s): type &#39;=&#39;" in res.text


def test_a_full_width_value_is_given_its_ascii_form_only_where_that_is_right(tiny_bert: Path, tmp_path: Path) -> None:
    """`train:` over `  epochs：3` (one text, not a mapping) was told to type 'epochs:3', `--set train.epochs=３，` to
    type '3,': neither validates. The ASCII form is given where the config validates with it; a full-width colon
    where a section was wanted is said to want `key: value`; else the full-width characters are named."""
    data = write_jsonl(tmp_path / "zh.jsonl", [{"text": "好", "label": "正面"}, {"text": "差", "label": "负面"}] * 4)
    config = _write(tmp_path / "run.yaml", f"task: classification\nmodel: {tiny_bert}\ndata:\n  train: {data}\n"
                    f"train:\n  epochs：3\noutput_dir: {tmp_path / 'run'}\n".encode())
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and res.stderr == (
        f"error: {config}:5: train: Input should be a valid dictionary or instance of TrainConfig (got 'epochs：3'); a "
        "full-width colon '：' after 'epochs' (a Chinese input method's): YAML needs 'key: value', with an ASCII colon "
        "and a space\n"), res.output
    wide = "it is written in full-width characters (a Chinese input method's)"
    for command, said in (
            (["train", "--set", "task=classification", "--set", f"model={tiny_bert}", "--set", f"data.train={data}",
              "--set", f"output_dir={tmp_path / 'run'}", "--set", "train.epochs=３，"],
             f"--set train.epochs: Input should be a valid number, unable to parse string as a number (got '３，'); "
             f"{wide}: '３' (U+FF13), '，' (U+FF0C)"),
            (["data", "check", str(data), "--set", "data.max_length=６４，"],
             f"--set data.max_length: Input should be a valid integer, unable to parse string as an integer (got "
             f"'６４，'); {wide}: '６' (U+FF16), '４' (U+FF14), '，' (U+FF0C)"),
            (["data", "check", str(data), "--set", "data.max_length=６４"],
             f"--set data.max_length: Input should be a valid integer, unable to parse string as an integer (got "
             f"'６４'); {wide}: type '64'")):
        res = runner.invoke(app, command)
        assert res.exit_code == 2 and res.stderr == f"error: {said}\n", res.output
    assert not (tmp_path / "run").exists()
