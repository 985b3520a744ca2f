"""Files as Windows programs save them: Excel's CSV in Windows-1252 (`café`, `it’s`) told what it is and how to
convert it; UTF-16 with its byte-order mark (Excel's "Unicode text", PowerShell's `>`) read as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.data.readers import read_table
from tunelab.errors import DataError

runner = CliRunner()

CP1252 = ("; the line reads as Western European text in Windows-1252 (cp1252, Latin-1), the encoding of a Windows in "
          "Western Europe and the Americas")


def _error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        read_table(path)
    return str(info.value)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".txt"])
def test_a_cp1252_file_is_said_so_with_its_iconv_command(tmp_path: Path, suffix: str) -> None:
    """A CSV that Excel saved on a Western Windows (`café`: 0xE9; `it’s`: 0x92) got `not valid UTF-8` alone, where a
    GBK file was told its encoding and the command that converts it."""
    sep = "\t" if suffix == ".tsv" else ","
    rows = {".jsonl": ['{"text": "good", "label": "pos"}', '{"text": "café it’s bad", "label": "neg"}'],
            ".txt": ["good", "café it’s bad"]}.get(suffix, [f"text{sep}label", f"good{sep}pos", f"café it’s{sep}neg"])
    path = tmp_path / f"excel{suffix}"
    path.write_bytes("\n".join(rows).encode("cp1252") + b"\n")
    line = len(rows)
    assert _error(path) == (f"{path}:{line}: bytes: not valid UTF-8 (byte 0xe9 at column "
                            f"{rows[-1].index('é') + 1}){CP1252} and of Excel's CSV there: save the file as UTF-8 "
                            f"(Excel: \"CSV UTF-8\"), or convert it: iconv -f CP1252 -t UTF-8 {path} > "
                            f"{tmp_path / ('excel.utf8' + suffix)}")


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
    said = _error(mixed)
    assert CP1252 in said and said.endswith("in a file otherwise UTF-8: retype or paste this line again in a UTF-8 "
                                            "editor (converting the whole file with iconv -f CP1252 would garble its "
                                            "UTF-8 lines)"), said
    for text, codec in (("Привет мир", "cp1251"), ("Γειά σου κόσμε", "cp1253"), ("这部电影很好看", "gbk")):
        other = tmp_path / "other.csv"
        other.write_bytes(f"text,label\n{text},pos\n".encode(codec))
        assert "Windows-1252" not in _error(other), codec
