"""Files as Windows programs save them: Excel's CSV in Windows-1252 (`café`, `it’s`) told what it is and how to
convert it; UTF-16 with its byte-order mark (Excel's "Unicode text", PowerShell's `>`) read as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import read_error, sentiment_rows
from tunelab.cli import app
from tunelab.data.decode import decoded_lines
from tunelab.data.readers import read_rows, read_table
from tunelab.errors import DataError

runner = CliRunner()

CP1252 = ("; the line reads as Western European text in Windows-1252 (cp1252, Latin-1), the encoding of a Windows in "
          "Western Europe and the Americas")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".txt", ".conll"])
def test_a_cp1252_file_is_said_so_with_its_iconv_command(tmp_path: Path, suffix: str) -> None:
    """A CSV that Excel saved on a Western Windows (`café`: 0xE9; `it’s`: 0x92) got `not valid UTF-8` alone, where a
    GBK file was told its encoding and the command that converts it. Excel (its CSV, its "CSV UTF-8") is named for
    the files it writes only: a CoNLL, JSONL or text file was told of Excel's CSV too."""
    sep = "\t" if suffix == ".tsv" else ","
    rows = {".jsonl": ['{"text": "good", "label": "pos"}', '{"text": "café it’s bad", "label": "neg"}'],
            ".txt": ["good", "café it’s bad"], ".conll": ["good O", "", "café B-LOC"],
            }.get(suffix, [f"text{sep}label", f"good{sep}pos", f"café it’s{sep}neg"])
    path = tmp_path / f"excel{suffix}"
    path.write_bytes("\n".join(rows).encode("cp1252") + b"\n")
    line, excel = len(rows), suffix in (".csv", ".tsv")
    said = (" and of Excel's CSV there: save the file as UTF-8 (Excel: \"CSV UTF-8\")" if excel
            else ": save the file as UTF-8")
    assert read_error(path) == (f"{path}:{line}: bytes: not valid UTF-8 (byte 0xe9 at column "
                                f"{rows[-1].index('é') + 1}){CP1252}{said}, or convert it: iconv -f CP1252 -t UTF-8 "
                                f"{path} > {tmp_path / ('excel.utf8' + suffix)}")


def test_cp1252_in_train_a_config_and_a_utf8_file(tiny_bert: Path, tmp_path: Path) -> None:
    """Through `tunelab train`: one line, exit 2; a config saved by Notepad in Windows-1252 is told so (no Excel); one
    Windows-1252 line in an otherwise UTF-8 file is to be fixed where it is; Cyrillic in Windows-1251 (`Привет`, which
    decodes as `Ïðèâåò`) and Chinese in GBK are not said to be Windows-1252."""
    train = tmp_path / "train.csv"
    train.write_bytes(b"text,label\ngood,pos\nna\xefve \x93plot\x94,neg\n")
    res = runner.invoke(app, ["train", "--set", "task=classification", "--set", f"model={tiny_bert}",
                              "--set", f"data.train={train}", "--set", f"output_dir={tmp_path / 'run'}"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert res.stderr.startswith(f"error: {train}:3: bytes: not valid UTF-8 (byte 0xef at column 3){CP1252}") \
        and res.stderr.endswith(f"iconv -f CP1252 -t UTF-8 {train} > {tmp_path / 'train.utf8.csv'}\n"), res.stderr
    assert not (tmp_path / "run").exists()

    config = tmp_path / "run.yaml"
    config.write_bytes("task: classification  # critères\nmodel: minilm\n".encode("cp1252"))
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and res.stderr == (f"error: {config}:1: not valid UTF-8 (byte 0xe8){CP1252}: save the "
                                                 f"file as UTF-8, or convert it: iconv -f CP1252 -t UTF-8 {config} > "
                                                 f"{tmp_path / 'run.utf8.yaml'}\n"), res.stderr

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes('{"text": "crème brûlée", "label": "pos"}\n'.encode() + b'{"text": "caf\xe9", "label": "neg"}\n')
    said = read_error(mixed)
    assert CP1252 in said and said.endswith("in a file otherwise UTF-8: retype or paste this line again in a UTF-8 "
                                            "editor (converting the whole file with iconv -f CP1252 would garble its "
                                            "UTF-8 lines)"), said
    for text, codec in (("Привет мир", "cp1251"), ("Γειά σου κόσμε", "cp1253"), ("这部电影很好看", "gbk")):
        other = tmp_path / "other.csv"
        other.write_bytes(f"text,label\n{text},pos\n".encode(codec))
        assert "Windows-1252" not in read_error(other), codec


NAMED = {"GB18030": "Chinese in GBK", "BIG5": "Chinese in Big5", "SHIFT_JIS": "Japanese in Shift_JIS",
         "CP1252": "Western European text in Windows-1252", "EUC-KR": "Korean in EUC-KR"}


@pytest.mark.parametrize(("text", "codec", "said"), [
    # what the reviewer saw: GBK, Shift_JIS and Big5 lines told they were Windows-1252 (`¡°²»´í¡±`, `“Œ‹ž`, `¥x¥_`),
    # with an iconv -f CP1252 that garbled them silently
    ("“不错”,positive", "gbk", "GB18030"), ("東京 B-LOC", "shift_jis", "SHIFT_JIS"),
    ("台北101很高,positive", "big5", "BIG5"),
    # lines of ../shared/data (alpaca_zh, tatoeba_en_zh, csl_category) so saved
    ("字符串 helloWorld =“Hello， world！”;", "gbk", "GB18030"), ("我欠他1000美元。", "big5", "BIG5"),
    ("她是Tom的姐姐。", "big5", "BIG5"), ("二期梅毒疹1例", "big5", "BIG5"),
    # one rare character: neither Chinese nor Windows-1252 is said (no guess, rather than a wrong one)
    ("謝,O", "gbk", None), ("買 O", "gbk", None),
    # Windows-1252: an accent inside a Latin word, or ’ between letters
    ("Champs-Élysées,pos", "cp1252", "CP1252"), ("naïve “plot”,neg", "cp1252", "CP1252"),
    ("it’s bad,neg", "cp1252", "CP1252"), ("Zoë’s,pos", "cp1252", "CP1252"), ("São Paulo,pos", "cp1252", "CP1252"),
    # GBK lines that read as EUC-KR too (Hangul and Hanja mixed) were called Korean (0.6 % of the shared Chinese sets'
    # lines); Korean text is Hangul with few Hanja
    ("我对音乐有兴趣。,pos", "gbk", "GB18030"), ("城市林业与林木引种", "gbk", "GB18030"),
    ("안녕하세요 반갑습니다,pos", "euc-kr", "EUC-KR"),
    # a Latin-1 sign before an ASCII letter decodes as one Big5 character (0xB0 0x43): `°C` was called Big5
    ("The water boils at 100°C.,positive", "cp1252", None), ("5µg daily,pos", "cp1252", None)])
def test_cjk_is_not_said_to_be_windows_1252(tmp_path: Path, text: str, codec: str, said: str | None) -> None:
    """The Windows-1252 hint took any line without a word of accented letters alone, and won where no character of a
    GBK or Big5 reading was a common one: Chinese and Japanese files were told to be converted from CP1252."""
    path = tmp_path / ("x.conll" if " B-" in text or " O" in text else "x.csv")
    path.write_bytes(("" if path.suffix == ".conll" else "text,label\n").encode() + text.encode(codec) + b"\n")
    error = read_error(path)
    assert error.count("reads as") == (said is not None) and (said is None or NAMED[said] in error), error
    assert said is None or error.endswith(f"iconv -f {said} -t UTF-8 {path} > {path.with_suffix('')}.utf8{path.suffix}")


ROWS = [("good café 好看", "pos"), ("it’s “bad”", "neg"), ("two\r\nlines", "pos")]
BODIES = {  # each format's text, with CRLF line ends as Windows writes them
    ".csv": "text,label\r\n" + "".join(f'"{t}",{lab}\r\n' for t, lab in ROWS),
    ".tsv": "text\tlabel\r\n" + "".join(f"{t.replace(chr(13) + chr(10), ' ')}\t{lab}\r\n" for t, lab in ROWS),
    ".jsonl": "".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\r\n" for t, lab in ROWS),
    ".json": json.dumps([{"text": t, "label": lab} for t, lab in ROWS], ensure_ascii=False, indent=1),
    ".txt": "first paragraph\r\nof two lines\r\n\r\nsecond, café\rold Mac line\r\n",
    ".conll": "EU\tB-ORG\r\nrejects\tO\r\n\r\nPeter\tB-PER\r\nBlackburn\tI-PER\r\n",
}


@pytest.mark.parametrize("suffix", list(BODIES))
@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_file_is_read(tmp_path: Path, suffix: str, codec: str) -> None:
    """A UTF-16 file with its byte order mark (Excel's "Unicode text", PowerShell's `>`, Notepad's "Unicode") was
    refused with an iconv command: its BOM says its encoding and byte order without doubt, so it is read — the same
    rows, at the same lines, as the file saved as UTF-8."""
    body = BODIES[suffix]
    utf8 = tmp_path / f"utf8{suffix}"
    utf8.write_bytes(body.encode())
    wide = tmp_path / f"wide{suffix}"
    bom = {"utf-16-be": b"\xfe\xff"}.get(codec, b"")  # (Python's utf-16 / utf-32 write their BOM themselves)
    wide.write_bytes(bom + body.encode(codec))
    got, want = read_table(wide), read_table(utf8)
    assert [(r.line, r.data) for r in got.records] == [(r.line, r.data) for r in want.records]
    assert got.columns == want.columns and len(got.records) >= 2
    if suffix == ".txt":  # predict's .txt: one row a line
        rows = [[r.data for r in read_rows(p, "text").records] for p in (wide, utf8)]
        assert rows[0] == rows[1]


def test_a_utf16_file_of_lone_carriage_returns_is_read_a_block_at_a_time(tmp_path: Path) -> None:
    """A UTF-16 file whose lines end in a lone "\r" (an old Mac's) was held whole until its end, its text joined and
    cut again at each 64 KiB block read (time growing as the square of its size): it is read a block at a time, the
    same lines and rows as the file in UTF-8 — its first line yielded before its last bytes, here bad, are decoded."""
    body = "text\tlabel\r" + "".join(f"row {i} café\tpos\r" for i in range(5000)) + "last\tneg"  # (3 blocks)
    utf8, wide, cut = tmp_path / "mac.tsv", tmp_path / "wide.tsv", tmp_path / "cut.tsv"
    utf8.write_bytes(body.encode())
    wide.write_bytes(body.encode("utf-16"))
    assert list(decoded_lines(wide)) == list(decoded_lines(utf8))
    got, want = read_table(wide), read_table(utf8)
    assert [(r.line, r.data) for r in got.records] == [(r.line, r.data) for r in want.records]
    assert len(got.records) == 5001 and got.records[-1].line == 5002
    cut.write_bytes(body.encode("utf-16") + "\ud800".encode("utf-16-le", "surrogatepass"))
    lines = decoded_lines(cut)
    assert next(lines) == (1, "text\tlabel\r")
    with pytest.raises(DataError, match=r"cut.tsv:5002: bytes: not valid UTF-16, the encoding its byte order mark "
                                        r"names \(unexpected end of data at column 9\)$"):
        list(lines)


def test_a_utf8_file_of_lone_carriage_returns_is_read_a_block_at_a_time(tmp_path: Path) -> None:
    """A UTF-8 file whose lines end in a lone "\r" (an old Mac's) was one line to `for line in f`: read whole into
    memory, then cut. It is read a block at a time — its first line comes out with at most one block read — with the
    rows and line numbers of the same file with "\n" line ends (JSONL, CoNLL, CSV), and a bad byte named by its line
    and column."""
    import io

    from tunelab.data import decode

    jsonl = "".join(json.dumps({"text": f"row {i} café", "label": "pos"}, ensure_ascii=False) + "\n"
                    for i in range(5000))
    conll = "".join(f"café{i} B-LOC\nist O\n\n" for i in range(3000))
    csv = "text,label\n" + "".join(f"row {i} café,pos\n" for i in range(5000))
    for name, body in (("a.jsonl", jsonl), ("a.conll", conll), ("a.csv", csv)):  # (each over 2 blocks)
        unix, mac = tmp_path / f"unix-{name}", tmp_path / f"mac-{name}"
        unix.write_bytes(body.encode())
        mac.write_bytes(body.replace("\n", "\r").encode())
        assert [(n, t.rstrip("\r\n")) for n, t in decoded_lines(mac)] == \
            [(n, t.rstrip("\r\n")) for n, t in decoded_lines(unix)]
        got, want = read_table(mac), read_table(unix)
        assert [(r.line, r.data) for r in got.records] == [(r.line, r.data) for r in want.records], name
        assert len(got.records) in (3000, 5000) and got.records[-1].line > 2999
    stream = io.BytesIO(jsonl.replace("\n", "\r").encode())
    lines = decode.utf8_lines(stream, tmp_path / "stdin")
    assert next(lines) == (1, '{"text": "row 0 café", "label": "pos"}\r')
    assert stream.tell() <= decode._BLOCK < len(stream.getvalue()) // 2  # not the whole stream read for one line
    assert sum(1 for _ in lines) == 4999
    bad = tmp_path / "bad.jsonl"  # a Windows-1252 byte on line 4000, and "\r\n" ends mixed in
    bad.write_bytes(jsonl.replace("\n", "\r").encode().replace("row 3999 café".encode(), b"row 3999 caf\xe9")
                    .replace(b"\r", b"\r\n", 7))
    with pytest.raises(DataError, match=r"bad.jsonl:4000: bytes: not valid UTF-8 \(byte 0xe9 at column 23\); the "
                                        r"line reads as Western European text in Windows-1252 .* in a file otherwise "
                                        r"UTF-8"):
        list(decoded_lines(bad))


def test_a_utf16_file_trains_and_its_bad_bytes_are_named(tiny_bert: Path, tmp_path: Path) -> None:
    """`tunelab data check` reads an Excel "Unicode text" file; an unpaired surrogate or a file cut inside a
    character is one line naming the line and column, in UTF-16's words."""
    train = tmp_path / "excel.tsv"  # what Excel's "Unicode Text (*.txt)" holds, tab-separated
    train.write_bytes(("text\tlabel\r\n" + "".join(f"{r['text']}\t{r['label']}\r\n" for r in sentiment_rows(12)))
                      .encode("utf-16"))
    res = runner.invoke(app, ["data", "check", "--model", str(tiny_bert), "--json", str(train)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"][str(train)]["labels"] == {"negative": 6, "positive": 6}

    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe" + "text,label\na,b\nxx\ud800yy,c\n".encode("utf-16-le", "surrogatepass"))
    assert read_error(bad) == (f"{bad}:3: bytes: not valid UTF-16, the encoding its byte order mark names (illegal "
                               "UTF-16 surrogate at column 3)")
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes('{"text": "a", "label": "b"}\n'.encode("utf-16") + b"{")
    assert read_error(cut) == (f"{cut}:2: bytes: not valid UTF-16, the encoding its byte order mark names (truncated "
                           "data at column 1)")


def _gbk_besides(tmp_path: Path, utf8: list[str], gbk: list[str]) -> tuple[Path, str]:
    """A CSV of UTF-8 lines, then GBK ones: the file and what reading it says."""
    path = tmp_path / "products.csv"
    path.write_bytes(b"\n".join([b"text,label", *(f"{t},1".encode() for t in utf8),
                                 *(f"{t},1".encode("gbk") for t in gbk)]) + b"\n")
    return path, read_error(path)


@pytest.mark.parametrize("utf8", ["Kitchen · Dining · Bar stool {i}", "Room {i}:\u00a0clean\u00a0and quiet",
                                  "Price ¥{i}9 · free"])
def test_a_gbk_line_among_utf8_lines_of_latin1_signs_is_to_be_fixed_there(tmp_path: Path, utf8: str) -> None:
    """UTF-8 lines of `·` (0xC2 0xB7, GBK's 路), `¥` or no-break spaces were taken for GBK that decodes as UTF-8 (as
    `谢谢` is UTF-8's `лл`): a CSV of them and one GBK line was told to convert whole from GB18030, which turns
    `Kitchen · Dining` into `Kitchen 路 Dining`. A line with a Latin-1 sign or a no-break space is UTF-8 text."""
    path, said = _gbk_besides(tmp_path, [utf8.format(i=i) for i in range(3)], ["这款凳子很好"])
    assert said.startswith(f"{path}:5: bytes: not valid UTF-8 (byte 0xd5 at column 1); the line reads as Chinese in "
                           "GBK (GB18030)"), said
    assert "in a file otherwise UTF-8: retype" in said and "iconv -f GB18030 -t UTF-8" not in said, said


@pytest.mark.parametrize("utf8", [["для", "СССР"], ["λδ"]])
def test_a_gbk_line_whose_other_lines_read_as_utf8_or_gbk_alike_is_told_both_ways(tmp_path: Path,
                                                                                   utf8: list[str]) -> None:
    """UTF-8's `для` and `λδ` read as GBK's common characters, as GBK's `谢谢` reads as UTF-8's `лл`: beside one GBK
    line the file was told to convert whole from GB18030, which garbles them. Which it is is not known: both ways
    said, the file's iconv command last; where another line is not UTF-8 either, the file is GBK."""
    path, said = _gbk_besides(tmp_path, utf8, ["这家酒店很好"])
    assert said.endswith("(GB18030), the encoding of a Chinese Windows and of Excel's CSV there; the file's other "
                         "non-ASCII lines read as UTF-8 but may be GB18030 too: if only this line is GB18030, retype "
                         "or paste it again in a UTF-8 editor; if the whole file is, save the file as UTF-8 (Excel: "
                         f"\"CSV UTF-8\"), or convert it: iconv -f GB18030 -t UTF-8 {path} > "
                         f"{tmp_path / 'products.utf8.csv'}"), said
    path, said = _gbk_besides(tmp_path, utf8, ["这家酒店很好", "服务也不错"])
    assert "if only this line" not in said and said.endswith(f"iconv -f GB18030 -t UTF-8 {path} > "
                                                             f"{tmp_path / 'products.utf8.csv'}"), said


@pytest.mark.parametrize(("codec", "text", "named"), [("gbk", "这家酒店很好，服务也不错", "GB18030"),
                                                      ("big5", "這家酒店很好，服務也不錯", "BIG5")])
def test_a_long_one_line_file_is_told_its_encoding_from_around_its_bad_byte(tmp_path: Path, codec: str, text: str,
                                                                             named: str) -> None:
    """A one-line JSON file of 24 MB in GBK was decoded whole for its hint, a character at a time, and twice (46 s,
    2.8 GB): 64 KB around the bad byte are read. So a file cut inside its last character (a download broken off),
    whose whole line is no GBK, is told its encoding too; the bad byte far into the line, or a run of Chinese longer
    than what is read, is read from and to where a character starts."""
    rows = [{"text": f"review {i}", "label": 0} for i in range(4000)] + [{"text": text, "label": 1}] * 4000
    array = json.dumps(rows, ensure_ascii=False).encode(codec)
    for name, body in (("whole", array), ("cut", array[:-2] + text.encode(codec)[:-1]),
                       ("run", b'{"text":"' + text.encode(codec) * 9000 + b'", "label": 1}')):
        path = tmp_path / f"{name}.json"
        path.write_bytes(body)
        said = read_error(path)
        assert said.startswith(f"{path}:1: bytes: not valid UTF-8"), said
        assert said.endswith(f"iconv -f {named} -t UTF-8 {path} > {tmp_path / (name + '.utf8.json')}"), (name, said)
