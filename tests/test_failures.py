"""Every command on a broken input: one line on stderr naming what is wrong, exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

runner = CliRunner()


def _cases(tmp: Path) -> list[tuple[list[str], str]]:
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("task: classification\nmodel: [minilm\n", encoding="utf-8")
    not_a_run = tmp / "not-a-run"
    not_a_run.mkdir()
    missing = tmp / "missing.jsonl"
    base = ["--set", "task=classification", "--set", "model=minilm", "--set", f"data.train={missing}"]
    return [
        (["train", str(bad_yaml)], "bad.yaml:3: invalid YAML"),
        (["train", str(tmp / "nope.yaml")], "config file not found"),
        (["train", *base], f"{missing}: file not found"),
        (["train", "--set", "task=classification", "--set", "model=minilm", "--set", "train.lerning_rate=1"],
         "--set train.lerning_rate: unknown key"),
        (["tune", str(bad_yaml), "--trials", "2"], "invalid YAML"),
        (["cv", str(bad_yaml)], "invalid YAML"),
        (["curve", str(bad_yaml)], "invalid YAML"),
        (["compare", str(not_a_run)], "compare: pass at least two run directories"),
        (["compare", str(not_a_run), str(not_a_run)], "not-a-run"),
        (["baseline", *base], f"{missing}: file not found"),
        (["eval", str(not_a_run), "--data", str(missing)], "not a tunelab model directory"),
        (["predict", str(not_a_run), "--input", "-"], "not a tunelab model directory"),
        (["chat", str(not_a_run)], "not a tunelab model directory"),
        (["export", str(not_a_run)], "export: say what to export"),
        (["export", str(not_a_run), "--merge"], "no adapter"),
        (["report", str(not_a_run)], "is not a run directory (no config.yaml"),
        (["data", "check", str(missing)], f"{missing}: file not found"),
        (["data", "augment", str(missing), "--output", str(tmp / "aug.jsonl")], f"{missing}: file not found"),
        (["env", str(bad_yaml)], "invalid YAML"),
    ]


@pytest.mark.parametrize("index", range(19))
def test_broken_input_is_one_line(index: int, tmp_path: Path) -> None:
    args, said = _cases(tmp_path)[index]
    res = runner.invoke(app, args)
    out = res.output.strip()
    assert res.exit_code == 2, (args, out)
    assert "Traceback" not in out and len(out.splitlines()) == 1, (args, out)
    assert out.startswith("error: ") and said in out, (args, out)
    assert not (tmp_path / "aug.jsonl").exists()  # nothing half-written


def _one_line(args: list[str], said: str) -> None:
    res = runner.invoke(app, args)
    out = res.output.strip()
    assert res.exit_code == 2, (args, out)
    assert "Traceback" not in out and len(out.splitlines()) == 1, (args, out)
    assert out.startswith("error: ") and said in out, (args, out)


def test_broken_model_directories_and_output_paths_are_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    """A model directory with a damaged tunelab.json, without a tokenizer or without weights, for every command
    that loads one; an --output that is a directory, under a file, or somewhere nothing can be written; a --model
    that cannot be loaded."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "good film", "label": "a"}\n{"text": "bad film", "label": "b"}\n', encoding="utf-8")
    (tmp_path / "one.txt").write_text("good film\n", encoding="utf-8")
    damaged, no_tok, no_weights = tmp_path / "damaged", tmp_path / "no-tok", tmp_path / "no-weights"
    for d in (damaged, no_tok, no_weights):
        d.mkdir()
    (damaged / "tunelab.json").write_text("{bad", encoding="utf-8")
    meta = '{"task": {"name": "classification"}, "data": {}, "labels": ["a", "b"]}'
    for d in (no_tok, no_weights):
        (d / "tunelab.json").write_text(meta, encoding="utf-8")
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):  # a tokenizer, no weights
        (no_weights / name).write_bytes((tiny_bert / name).read_bytes())
    (tmp_path / "afile").write_text("", encoding="utf-8")
    for model, said in ((damaged, "damaged/tunelab.json: not valid JSON (Expecting property name"),
                        (no_tok, "no-tok: no tokenizer (tokenizer.json"),
                        (no_weights, "no-weights: cannot load the model: ")):
        for args in (["predict", str(model), "--input", str(tmp_path / "one.txt")],
                     ["eval", str(model), "--data", str(rows)], ["serve", str(model), "--port", "0"],
                     ["export", str(model), "--format", "onnx"]):
            _one_line(args, said)
    augment = ["data", "augment", str(rows), "--set", "data.augment.ops=[delete,swap]", "--output"]
    _one_line([*augment, str(tmp_path)], f"--output: {tmp_path} is a directory; name a file to write")
    _one_line([*augment, str(tmp_path / "afile" / "x.jsonl")],
              f"x.jsonl cannot be written: {tmp_path / 'afile'} is a file, not a directory")
    _one_line([*augment, "/proc/x.jsonl"], "--output: /proc/x.jsonl cannot be written: nothing can be created in "
              "/proc")  # before the augmentation is done
    _one_line(["data", "check", str(rows), "--model", str(tmp_path / "afile")], "--model: cannot load")
    _one_line(["data", "check", str(rows), "--model", "nosuchmodel"], "--model: cannot load nosuchmodel: not a known "
              "alias")  # at once: no hub lookup (and its retries) for a name that cannot be a hub id
    _one_line(["data", "check", str(rows), "--set", "data.nosuch=1"], "--set data.nosuch: unknown key")


def test_a_missing_data_file_names_its_key_and_the_folder_it_is_read_from(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A config's relative data path is read from the current folder, not the config file's: run from elsewhere it
    said `error: 数据/训练 集.jsonl: file not found` (no file, line or key, nor which folder); a missing test file
    is said before the other files are read, and no run folder is made; augment's synonyms alike, and a URL is told it
    is not read."""
    project, elsewhere = tmp_path / "项目 it's", tmp_path / "别处"
    (project / "数据").mkdir(parents=True)
    elsewhere.mkdir()
    (project / "数据" / "训练 集.jsonl").write_text('{"text": "good", "label": "a"}\n{"text": "bad", "label": "b"}\n',
                                                     encoding="utf-8")
    config = project / "run #1.yaml"
    config.write_text("task: classification\nmodel: minilm\ndata:\n  train: 数据/训练 集.jsonl\noutput_dir: 运行/a\n",
                      encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    _one_line(["train", str(config)], f"error: {config}:4: data.train: 数据/训练 集.jsonl: file not found (a relative "
              f"path is read from the current folder, {elsewhere})")
    monkeypatch.chdir(project)
    _one_line(["train", str(config), "--set", "data.test=file:///x.jsonl"],
              "error: --set data.test: file:///x.jsonl: file not found (a file: URL; give its path)")
    _one_line(["train", str(config), "--set", "data.test=https://x/t.jsonl"],  # (was told a relative path's folder)
              "error: --set data.test: https://x/t.jsonl: file not found (a URL is not read; give a local path or "
              "hf:org/name)")
    _one_line(["train", str(config), "--set", "data.augment.ops=[synonym]", "--set", "data.augment.synonyms=同义.tsv"],
              f"error: --set data.augment.synonyms: 同义.tsv: file not found (a relative path is read from the current "
              f"folder, {project})")  # (was said after the data was read and the model loaded, without its key's line)
    assert not (project / "运行").exists()
    _one_line(["cv", str(config), "--set", "data.test=/nope/测试.jsonl"],
              "error: --set data.test: /nope/测试.jsonl: file not found")


def test_data_check_refuses_max_length_above_the_positions_as_train_does(tiny_bert: Path, tmp_path: Path) -> None:
    from conftest import WORDS

    long = tmp_path / "long.jsonl"  # the tiny BERT has 128 learned positions
    text = " ".join(WORDS * 8)
    long.write_text(f'{{"text": "{text}", "label": "a"}}\n{{"text": "good", "label": "b"}}\n', encoding="utf-8")
    args = ["data", "check", str(long), "--model", str(tiny_bert)]
    _one_line([*args, "--set", "data.max_length=512"], "data.max_length: 512 is above the model's 128 positions")
    assert runner.invoke(app, [*args, "--set", "data.max_length=128"]).exit_code == 0
    docs = tmp_path / "docs.jsonl"  # pretraining packs blocks of max_length tokens whatever the documents' lengths
    docs.write_text('{"text": "good film"}\n{"text": "bad plot"}\n', encoding="utf-8")
    pretrain = ["data", "check", str(docs), "--task", "pretrain", "--model", str(tiny_bert)]
    _one_line([*pretrain, "--set", "data.max_length=512"], "data.max_length: 512 is more than the model's 128")
    assert runner.invoke(app, [*pretrain, "--set", "data.max_length=64"]).exit_code == 0


@pytest.mark.parametrize(("args", "said"), [
    (["train", "--nosuch"], "error: No such option: --nosuch"),
    (["tune"], "error: Missing argument 'config'."),
    (["data", "cache", "--nosuch"], "error: No such option: --nosuch"),
    (["ui", "--port", "notaport"], "error: Invalid value for '--port'"),
    (["eval", "run", "--data", "x.jsonl", "--batch-size", "0"], "error: Invalid value for '--batch-size'"),
    (["predict", "run", "--input", "-", "--batch-size", "-3"], "error: Invalid value for '--batch-size'"),
])
def test_usage_mistakes_are_one_line(args: list[str], said: str) -> None:
    res = runner.invoke(app, args)
    out = res.output.strip()
    assert res.exit_code == 2 and len(out.splitlines()) == 1 and out.startswith(said) and "-h for help)" in out, out


def test_no_arguments_prints_the_help_once() -> None:
    """`tunelab` / `tunelab data` alone: their help, once, on stdout, exit code 2 (click's no_args_is_help; it was
    printed twice)."""
    for args in ([], ["data"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and res.stderr == "", res.output
        assert res.stdout.count("Usage: ") == 1 and res.stdout.count("Commands") == 1, res.stdout


def test_refused_before_anything_is_written(tiny_bert: Path, tmp_path: Path) -> None:
    """A port in use or a host that does not resolve (before a model loads); a tune storage that cannot be opened;
    LoRA target modules the model does not have (before the run directory is touched); augmenting a file into
    itself; a run directory where a model directory is expected (chat reads its model/)."""
    import socket

    from conftest import sentiment_rows, write_jsonl

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        _one_line(["serve", str(tmp_path), "--port", port], f"--host/--port: cannot listen on 127.0.0.1:{port}: ")
        _one_line(["ui", "--runs", str(tmp_path / "runs"), "--port", port], "cannot listen on")
    _one_line(["serve", str(tmp_path), "--host", "no-such-host.invalid"], "cannot listen on no-such-host.invalid")
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(8, 1))
    base = ["--set", "task=classification", "--set", f"model={tiny_bert}", "--set", f"data.train={train}",
            "--set", f"data.validation={val}", "--set", "train.max_steps=1", "--set", "train.batch_size=8"]
    out = tmp_path / "run"
    _one_line(["train", *base, "--set", f"output_dir={out}", "--set", "method=lora",
               "--set", "method.target_modules=[nosuch]"], "method.target_modules: no module of the model is named "
              "nosuch (its linear layers: ")
    assert not out.exists()
    search = tmp_path / "search.yaml"
    search.write_text("search:\n  metric: accuracy\n  direction: maximize\n  space:\n    train.lr: {type: float, "
                      "low: 1.0e-5, high: 1.0e-4}\n", encoding="utf-8")
    (tmp_path / "db").mkdir()
    _one_line(["tune", str(search), *base, "--set", f"output_dir={tmp_path / 'tune'}", "--trials", "1",
               "--storage", str(tmp_path / "db")], "--storage: cannot open sqlite:///")
    before = train.read_bytes()
    _one_line(["data", "augment", str(train), "--output", str(train), "--set", "data.augment.ops=[delete,swap]"],
              "is the input file")
    assert train.read_bytes() == before
    assert runner.invoke(app, ["train", *base, "--set", f"output_dir={out}"]).exit_code == 0
    _one_line(["chat", str(out)], "chat needs a model trained with task")  # RUN read as RUN/model
