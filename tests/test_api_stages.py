"""The Python API past evaluation: `tunelab.check_data`, `tunelab.export_model` and `tunelab.compress_model` (and
`Run.export` / `Run.compress`) call what `tunelab data check`, `tunelab export` and `tunelab compress` call, with the
same defaults, and give what they give (the `--json` report; the folder written); a mistake is the CLI's line, its
options named as the API spells them. They were CLI-only: `tunelab.check_data` was an AttributeError."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import tunelab
from conftest import WORDS, say_rows, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.errors import ArgumentError, ConfigError, DataRefused, ParityError, TunelabError

runner = CliRunner()


def _train(model: Path, tmp: Path, method: str = "full", **train: object) -> tunelab.Run:
    data = {"train": str(write_jsonl(tmp / "train.jsonl", sentiment_rows(64, 0))),
            "validation": str(write_jsonl(tmp / "validation.jsonl", sentiment_rows(40, 1)))}
    return tunelab.train({"task": "classification", "model": str(model), "method": method, "data": data,
                          "output_dir": str(tmp / "run"),
                          "train": {"batch_size": 8, "lr": 5e-3, "save_steps": 0, "precision": "fp32", **train}})


@pytest.fixture(scope="module")
def run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tunelab.Run:
    """A tiny classification run (conftest's train_sentiment: > 0.9 validation accuracy) to export and compress."""
    return _train(tiny_bert, tmp_path_factory.mktemp("api-stages"), epochs=6)


def _cli_json(*args: str) -> dict:
    res = runner.invoke(app, ["data", "check", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_check_data_is_the_cli_report(tiny_bert: Path, tmp_path: Path) -> None:
    """The dict `--json` prints, number for number: files given, or a run config's (with overrides on top)."""
    train = write_jsonl(tmp_path / "t.jsonl", sentiment_rows(12) + sentiment_rows(2))  # two duplicates
    val = write_jsonl(tmp_path / "v.jsonl", sentiment_rows(4, 1) + sentiment_rows(1))  # one shared with train
    report = tunelab.check_data(train, str(val), model=str(tiny_bert))
    assert report == _cli_json(str(train), str(val), "--model", str(tiny_bert))
    assert report["files"][str(train)]["rows"] == 14 and report["files"][str(train)]["duplicates_exact"] == 2
    assert report["overlap"] == [{"a": str(train), "b": str(val), "shared_texts": 1}]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"task": "classification", "model": str(tiny_bert), "output_dir": "out",
                                      "data": {"train": str(train), "validation": str(val)}}))
    report = tunelab.check_data(config=config, **{"data.max_length": 8})
    assert report == _cli_json("--config", str(config), "--set", "data.max_length=8")
    assert report["max_length"] == 8 and report["files"][str(train)]["over_max_length"] > 0
    assert tunelab.check_data(config=tunelab.make_config(config), **{"data.max_length": 8}) == report


def test_check_data_mistakes_are_the_cli_lines(tiny_bert: Path, tiny_llama: Path, tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "c.jsonl", sentiment_rows(4))
    with pytest.raises(ConfigError, match=r"^data check: give the files to check, or config=RUN\.yaml \(its "):
        tunelab.check_data()
    res = runner.invoke(app, ["data", "check"])
    assert res.stderr.startswith("error: data check: give the files to check, or --config RUN.yaml (its ")
    with pytest.raises(ConfigError, match=r"^config: data\.max_lenght: unknown key; did you mean data\.max_length\?"):
        tunelab.check_data(rows, model=str(tiny_bert), **{"data.max_lenght": 12})
    with pytest.raises(ConfigError, match=r"^config: task: ner: task says classification; give the task once$"):
        tunelab.check_data(rows, model=str(tiny_bert), task="classification", **{"task.name": "ner"})  # (review12b)
    res = runner.invoke(app, ["data", "check", str(rows), "--model", str(tiny_bert), "--task", "classification",
                              "--set", "task.name=ner"])
    assert res.stderr.endswith("task: ner: --task says classification; give the task once\n"), res.stderr
    with pytest.raises(ArgumentError, match=r"^files: expected a data file \(a str or Path\), got int$"):
        tunelab.check_data(5)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"^files: expected data files \(each a str or Path\), got a list; pass "):
        tunelab.check_data([rows, rows])  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"^model: expected a name \(a str\), got PosixPath$"):
        tunelab.check_data(rows, model=tiny_bert)  # type: ignore[arg-type]
    # a row train refuses: train's line, as the CLI exits 2 with it after its report; the report comes with it
    long = {"messages": [{"role": "user", "content": " ".join(WORDS * 2)}, {"role": "assistant", "content": "ok"}]}
    chat = write_jsonl(tmp_path / "chat.jsonl", [*say_rows(["good", "bad"]), long])
    with pytest.raises(DataRefused, match=rf"^{chat}:3: messages: the assistant reply starts after "
                                          r"data\.max_length=16 tokens") as caught:
        tunelab.check_data(chat, task="sft", model=str(tiny_llama), **{"data.max_length": 16})
    assert caught.value.report["files"][str(chat)]["replies_fully_cut"] == [f"{chat}:3"]
    res = runner.invoke(app, ["data", "check", str(chat), "--task", "sft", "--model", str(tiny_llama), "--set",
                              "data.max_length=16", "--json"])
    assert res.exit_code == 2 and res.stderr == f"error: {caught.value}\n", res.output
    assert json.loads(res.stdout) == caught.value.report


def test_export_model_writes_an_onnx_graph_onnxruntime_runs(run: tunelab.Run) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = run.export("onnx")  # tunelab.export_model(run.dir, "onnx")
    assert out == run.dir / "exports" / "onnx-fp32" and (out / "report.json").is_file()
    session = ort.InferenceSession(str(out / "model.onnx"))
    model = tunelab.load(out)
    texts = ["good great fine movie", "awful boring bad plot"]
    batch = model.tokenizer(texts, padding=True, return_tensors="np")
    feeds = {i.name: batch[i.name].astype("int64") for i in session.get_inputs()}
    labels = json.loads((out / "config.json").read_text())["id2label"]
    (logits,) = session.run(None, feeds)
    assert [labels[str(i)] for i in logits.argmax(-1)] == [r["pred_label"] for r in run.load().predict(texts)]
    assert [r["pred_label"] for r in model.predict(texts)] == [r["pred_label"] for r in run.load().predict(texts)]
    # the name is not `export`: importing tunelab.export (as every export does) sets tunelab.export to the package
    assert callable(tunelab.export_model) and not callable(tunelab.export)


def test_a_refused_gguf_export_names_the_option_as_python_spells_it(tiny_chat_run: Path) -> None:
    """GGUF's and ONNX's own refusals said `export --format gguf: ...` to an API caller (review12b)."""
    with pytest.raises(TunelabError, match=r"^export format='gguf': the tokenizer is neither a byte-level BPE "):
        tunelab.export_model(tiny_chat_run, "gguf")  # (the tiny tokenizer: word level)
    res = runner.invoke(app, ["export", str(tiny_chat_run), "--format", "gguf"])
    assert res.exit_code == 2 and res.stderr.startswith("error: export --format gguf: the tokenizer is neither "), \
        res.stderr


def test_export_model_merges_an_adapter(tiny_bert: Path, tmp_path: Path) -> None:
    """`merge=True`: `tunelab export --merge`, the run's adapter merged into its base weights."""
    lora = _train(tiny_bert, tmp_path, "lora", max_steps=2)
    merged = lora.export(merge=True, tolerance=1e-4)  # tunelab.export_model(lora.dir, merge=True, ...)
    assert merged == lora.dir / "merged" and json.loads((merged / "tunelab.json").read_text())["merged_from"]
    texts = ["good great fine movie", "awful boring bad plot"]
    assert [r["pred_label"] for r in tunelab.load(merged).predict(texts)] == [
        r["pred_label"] for r in lora.load().predict(texts)]


def test_export_model_mistakes_are_the_cli_lines(run: tunelab.Run, tmp_path: Path) -> None:
    """Each the CLI's line (checked beside it), its options as the API names them; nothing written."""
    cases = [
        ({"format": "tflite"}, "export format: 'tflite' is not one of onnx, gguf, torch",
         ["--format", "tflite"], "export --format: 'tflite' is not one of onnx, gguf, torch"),
        ({"format": "onnx", "merge": True}, "export: merge=True and format='onnx' exclude each other: ",
         ["--format", "onnx", "--merge"], "export: --merge and --format onnx exclude each other: "),
        ({}, "export: say what to export: merge=True (merge the adapter into the base weights) or format='onnx' / "
         "'gguf' / 'torch'", [], "export: say what to export: --merge (merge the adapter into the base weights) "
         "or --format onnx|gguf|torch"),
        ({"merge": True, "max_drop": 0.5}, "export merge=True: max_drop does not apply (a merge is checked by its "
         "logits against the adapter model's, within tolerance: ", ["--merge", "--max-drop", "0.5"],
         "export --merge: --max-drop does not apply (a merge is checked by its logits against the adapter model's, "
         "within --tolerance: "),
        ({"format": "onnx", "tolerance": 1e-3}, "export format: tolerance does not apply (it is merge=True's)",
         ["--format", "onnx", "--tolerance", "1e-3"], "export --format: --tolerance does not apply (it is --merge's)"),
        ({"format": "onnx", "min_agreement": 0.98}, "min_agreement=0.98: a percentage; write 98 for 98 %",
         ["--format", "onnx", "--min-agreement", "0.98"], "--min-agreement 0.98: a percentage; write 98 for 98 %"),
        ({"format": "torch"}, "export format='torch': needs quantize='int8' (it has no unquantised export)",
         ["--format", "torch"], "export --format torch: needs --quantize int8 (it has no unquantised export)"),
        ({"merge": True}, f"{run.dir}: no adapter ({run.dir / 'adapter'}/adapter_config.json); export merge=True "
         "needs the run of a LoRA or DoRA model", ["--merge"], f"{run.dir}: no adapter ({run.dir / 'adapter'}/"
         "adapter_config.json); export --merge needs the run of a LoRA or DoRA model"),
        ({"format": "onnx", "output": run.model_dir}, f"output: {run.model_dir} would replace the model it exports; "
         "choose another output", ["--format", "onnx", "--output", str(run.model_dir)],
         f"--output: {run.model_dir} would replace the model it exports; choose another --output"),
    ]
    for kwargs, said, args, cli in cases:
        with pytest.raises(TunelabError) as caught:
            tunelab.export_model(run.dir, **kwargs)
        assert str(caught.value).startswith(said), (kwargs, str(caught.value))
        res = runner.invoke(app, ["export", str(run.dir), *args])
        assert res.exit_code == 2 and res.stderr.startswith(f"error: {cli}"), (args, res.stderr)
    for kwargs, said in [({"format": 5}, "format: expected a name (a str), got int"),
                         ({"format": "onnx", "max_drop": -1}, "max_drop: expected a number of at least 0, got -1"),
                         ({"format": "onnx", "min_agreement": 120}, "min_agreement: expected a number from 0 to 100"),
                         ({"format": "onnx", "batch_size": 0}, "batch_size: expected a whole number of at least 1"),
                         ({"merge": "yes"}, "merge: expected True or False, got 'yes'")]:
        with pytest.raises(ArgumentError, match=f"^{re.escape(said)}"):
            tunelab.export_model(run.dir, **kwargs)
    with pytest.raises(TunelabError, match=r": no adapter "):  # force=False is no --force: not refused as given
        tunelab.export_model(run.dir, merge=True, force=False)
    with pytest.raises(ArgumentError, match=r"^path: expected a run or model directory \(a str or Path\), got int$"):
        tunelab.export_model(5, "onnx")  # type: ignore[arg-type]
    with pytest.raises(TunelabError, match=rf"^{tmp_path / 'nowhere'}: no such directory$"):
        tunelab.export_model(tmp_path / "nowhere", "onnx")
    assert not (run.dir / "exports" / "onnx-int8").exists() and not (run.dir / "exports" / "torch-int8").exists()


def test_compress_model_writes_a_model_load_reads(run: tunelab.Run) -> None:
    out = run.compress("magnitude:0.3", recover_epochs=0, force=True)  # tunelab.compress_model(run.dir, ...)
    assert out == run.dir / "exports" / "magnitude-0.3"
    report = json.loads((out / "report.json").read_text())
    assert report["compress"]["prune"] == "magnitude:0.3" and report["rows"][1]["sparsity"] > 0.29
    model = tunelab.load(out)
    assert model.evaluate(run.config.data.validation)["accuracy"] == pytest.approx(report["rows"][1]["metric"])
    assert model.predict("good film")[0]["pred_label"] in ("negative", "positive")


def test_compress_model_mistakes_are_the_cli_lines(run: tunelab.Run, tmp_path: Path) -> None:
    for prune, kwargs, said, args, cli in [
        ("rows:0.3", {}, "compress prune: 'rows:0.3': expected heads:<fraction> or magnitude:<fraction>", [],
         "compress --prune: 'rows:0.3': expected heads:<fraction> or magnitude:<fraction>"),
        ("heads:0.05", {}, "compress prune='heads:0.05': would cut no head", [],
         "compress --prune heads:0.05: would cut no head"),
        ("heads:0.5", {"min_agreement": 0.98}, "min_agreement=0.98: a percentage", ["--min-agreement", "0.98"],
         "--min-agreement 0.98: a percentage"),
    ]:
        with pytest.raises(TunelabError) as caught:
            tunelab.compress_model(run.dir, prune, **kwargs)
        assert str(caught.value).startswith(said), str(caught.value)
        res = runner.invoke(app, ["compress", str(run.dir), "--prune", prune, *args])
        assert res.exit_code == 2 and res.stderr.startswith(f"error: {cli}"), res.stderr
    with pytest.raises(ArgumentError, match=r"^recover_epochs: expected a number of at least 0, got -1$"):
        tunelab.compress_model(run.dir, "heads:0.5", recover_epochs=-1)
    with pytest.raises(ArgumentError, match=r"^prune: expected \"heads:<fraction>\" or \"magnitude:<fraction>\""):
        tunelab.compress_model(run.dir, 0.3)  # type: ignore[arg-type]
    # the gate refuses (nearly every weight gone, no recovery): ParityError, nothing written, as the CLI's exit 1
    out = tmp_path / "gone"
    with pytest.raises(ParityError, match=r"^compress: refused, nothing written: .* \(max_drop=0\); force=True "
                                          r"writes it anyway$"):
        tunelab.compress_model(run.dir, "magnitude:0.99", recover_epochs=0, output=out, min_agreement=0, max_drop=0)
    assert not out.exists()


def test_the_names_are_listed_documented_and_light() -> None:
    """In `dir(tunelab)` and `__all__` after a bare `import tunelab`, which still loads no torch; each documented."""
    code = ("import sys, tunelab; print(sorted({'check_data', 'export_model', 'compress_model'} & set(dir(tunelab)) "
            "& set(tunelab.__all__)), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['check_data', 'compress_model', 'export_model'] False"
    for fn in (tunelab.check_data, tunelab.export_model, tunelab.compress_model, tunelab.Run.export,
               tunelab.Run.compress):
        assert fn.__doc__ and fn.__annotations__.get("return"), fn
