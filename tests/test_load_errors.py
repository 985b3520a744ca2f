"""Damaged or mismatched files in a model, export, adapter or run directory: each command that reads one says what is
wrong in one line (`error: PATH: ...`), exit code 2, no traceback — never a library's exception."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import train_sentiment
from tunelab.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def cls_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentiment(tiny_bert, tmp_path_factory.mktemp("load-errors-cls") / "run")


@pytest.fixture(scope="module")
def lora_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentiment(tiny_bert, tmp_path_factory.mktemp("load-errors-lora") / "run",
                           sets=("method=lora", "method.r=4", "train.epochs=1"))


def _one_line(args: list[str], said: str) -> None:
    res = runner.invoke(app, [str(a) for a in args])
    out = res.output.strip()
    assert res.exit_code == 2, (args, out, res.exception)
    assert "Traceback" not in out and len(out.splitlines()) == 1, (args, out)
    assert out.startswith("error: ") and said in out, (args, out)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def _cut(path: Path, keep: float | int) -> None:
    """The file truncated: to `keep` bytes (an int) or that fraction of it."""
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])


def _rows(cls_run: Path) -> Path:
    return cls_run.parent / "val.jsonl"


def test_label_maps_that_do_not_fit_the_head(cls_run: Path, tmp_path: Path) -> None:
    """tunelab.json with 3 labels for a 2-label head (was: zip() ValueError on the first prediction); config.json
    with 3 (was: transformers' size-mismatch RuntimeError); both with 3 over 2-label weights."""
    labels3 = {"0": "a", "1": "b", "2": "c"}
    meta = _copy(cls_run / "model", tmp_path / "meta")
    _edit_json(meta / "tunelab.json", labels=["a", "b", "c"])
    config = _copy(cls_run / "model", tmp_path / "config")
    _edit_json(config / "config.json", id2label=labels3, label2id={v: int(k) for k, v in labels3.items()})
    both = _copy(config, tmp_path / "both")
    _edit_json(both / "tunelab.json", labels=["a", "b", "c"])
    rows = _rows(cls_run)
    for model, said in ((meta, "meta: tunelab.json lists 3 labels but config.json's id2label has 2"),
                        (config, "config: tunelab.json lists 2 labels but config.json's id2label has 3"),
                        (both, "both: the weights do not have the shapes config.json gives them")):
        _one_line(["predict", model, "--input", rows], said)
        _one_line(["eval", model, "--data", rows], said)


def test_nan_weights_are_named_not_scored(cls_run: Path, tmp_path: Path) -> None:
    """A classifier whose weights are NaN: eval said sklearn's `Input contains NaN`; predict wrote NaN scores. One
    whose outputs are infinite (a bias of -inf) is refused alike, as serve answers such a row with error (predict
    wrote its scores, `-Infinity` logits read as NaN probabilities)."""
    import torch
    from safetensors.torch import load_file, save_file

    for name, value in (("inf", float("-inf")), ("nan", float("nan"))):
        model = _copy(cls_run / "model", tmp_path / name)
        weights = load_file(model / "model.safetensors")
        weights = {k: (torch.full_like(v, value) if name == "nan" or k == "classifier.bias" else v)
                   if k.startswith("classifier") else v for k, v in weights.items()}
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
        said = f"{name}: the model's outputs are NaN or infinite for 40 of 40 examples"
        _one_line(["eval", model, "--data", _rows(cls_run)], said)
        _one_line(["predict", model, "--input", _rows(cls_run)], said)


def test_damaged_exports(cls_run: Path, tmp_path: Path) -> None:
    """A truncated model.pt of a torchao int8 export (was: PytorchStreamReader RuntimeError or `[Errno 22]`); an
    ONNX export folder without model.onnx (was: "no file named model.safetensors")."""
    rows = _rows(cls_run)
    onnx = _copy(cls_run / "model", tmp_path / "onnx")  # what `export --format onnx` leaves, its graph deleted
    (onnx / "model.safetensors").unlink()
    _edit_json(onnx / "tunelab.json", export={"format": "onnx", "quantize": None})
    _one_line(["predict", onnx, "--input", rows], "onnx: no model.onnx (the model of this `tunelab export "
                                                  "--format onnx` directory)")
    pytest.importorskip("torchao")
    out = tmp_path / "int8"
    res = runner.invoke(app, ["export", str(cls_run), "--format", "torch", "--quantize", "int8", "--output", str(out)])
    assert res.exit_code == 0, res.output
    _cut(out / "model.pt", 0.5)
    _one_line(["predict", out, "--input", rows], "int8/model.pt: not a readable PyTorch file (truncated or damaged?)")
    data = (out / "model.pt").read_bytes()  # cut, then padded back to a longer file: no zip directory at the end
    (out / "model.pt").write_bytes(data + bytes(len(data) * 2))
    _one_line(["eval", out, "--data", rows], "int8/model.pt: not a readable PyTorch file (truncated or damaged?): "
                                             "PytorchStreamReader failed")


def test_a_missing_tokenizer_file_is_named(cls_run: Path, tmp_path: Path) -> None:
    """A run whose model/ lost tokenizer.json (was: "cannot load the model: Couldn't instantiate the backend tokenizer
    from one of:") or tokenizer_config.json (was: loaded without its special tokens, a chat model's end of turn among
    them): the file, by its path, for every command that loads the model, and for a model to train from."""
    rows = _rows(cls_run)
    no_vocab, no_config = _copy(cls_run, tmp_path / "no-vocab"), _copy(cls_run, tmp_path / "no-config")
    (no_vocab / "model" / "tokenizer.json").unlink()
    (no_config / "model" / "tokenizer_config.json").unlink()
    for run, said in ((no_vocab, "tokenizer.json: missing: the tokenizer cannot be loaded without it"),
                      (no_config, "tokenizer_config.json: missing: without it the tokenizer would load without its "
                                  "special tokens")):
        for args in (["predict", run, "--input", rows], ["eval", run, "--data", rows],
                     ["export", run, "--format", "onnx"], ["chat", run]):
            _one_line(args, f"{run / 'model'}/{said}")
    _one_line(["serve", no_vocab, "--port", "0"], f"{no_vocab / 'model'}/tokenizer.json: missing")
    said = f"cannot load {no_vocab / 'model'}: {no_vocab / 'model'}/tokenizer.json is missing: the tokenizer cannot " \
           "be loaded without it"
    _one_line(["data", "check", rows, "--model", no_vocab / "model"], f"--model: {said}")
    _one_line(["train", "--set", "task=classification", "--set", f"model={no_vocab / 'model'}", "--set",
               f"data.train={rows}", "--set", f"output_dir={tmp_path / 'again'}"], f"--set model: {said}")


def test_a_chat_model_without_its_template(tiny_llama: Path, tmp_path: Path) -> None:
    """A chat model folder without chat_template.jinja (was: chat's traceback "Cannot use chat template functions";
    predict and eval blamed the first row: "chats.jsonl:1: messages: chat template: ...")."""
    model = _copy(tiny_llama, tmp_path / "chat")
    (model / "tunelab.json").write_text(json.dumps({"task": {"name": "sft"}, "data": {}}), encoding="utf-8")
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "say good"},
                                              {"role": "assistant", "content": "good"}]}) + "\n", encoding="utf-8")
    said = f"{model}/chat_template.jinja: missing: a chat model's conversations are rendered with it"
    for args in (["predict", model, "--input", chats], ["eval", model, "--data", chats], ["chat", model]):
        _one_line(args, said)


def test_onnx_graph_of_other_labels(cls_run: Path, tmp_path: Path) -> None:
    """An ONNX export whose label files name 3 labels for a graph that scores 2 (was: zip() ValueError)."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    res = runner.invoke(app, ["export", str(cls_run), "--format", "onnx", "--output", str(out)])
    assert res.exit_code == 0, res.output
    labels3 = {"0": "a", "1": "b", "2": "c"}
    _edit_json(out / "tunelab.json", labels=["a", "b", "c"])
    _edit_json(out / "config.json", id2label=labels3, label2id={v: int(k) for k, v in labels3.items()})
    _one_line(["predict", out, "--input", _rows(cls_run)], "onnx: tunelab.json lists 3 labels but model.onnx "
                                                           "scores 2")


def test_truncated_gguf(tiny_llama: Path, tmp_path: Path) -> None:
    """A cut model.gguf (was: struct.error from gguf's reader) for predict and eval."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    model = tmp_path / "gguf"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama / name, model / name)
    (model / "tunelab.json").write_text(json.dumps({"task": {"name": "sft"}, "data": {},
                                                    "export": {"format": "gguf", "quantize": "f16"}}))
    writer = gguf.GGUFWriter(str(model / "model.gguf"), "llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((16, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _cut(model / "model.gguf", 60)
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "say good"},
                                              {"role": "assistant", "content": "good"}]}) + "\n", encoding="utf-8")
    said = "gguf/model.gguf: not a readable GGUF file (truncated or damaged?)"
    _one_line(["predict", model, "--input", chats], said)
    _one_line(["eval", model, "--data", chats], said)


def _damaged_adapters(lora_run: Path, tmp_path: Path, *bases: str) -> tuple[Path, Path, Path, list[Path]]:
    """Copies of a LoRA run: adapter weights missing, adapter_config.json cut, weights cut; and `bases` copies whose
    adapter names a base model that is gone."""
    missing = _copy(lora_run, tmp_path / "missing")
    (missing / "adapter" / "adapter_model.safetensors").unlink()
    config = _copy(lora_run, tmp_path / "config")
    _cut(config / "adapter" / "adapter_config.json", 100)
    weights = _copy(lora_run, tmp_path / "weights")
    _cut(weights / "adapter" / "adapter_model.safetensors", 0.3)
    gone = [_copy(lora_run, tmp_path / name) for name in bases]
    for run in gone:
        _edit_json(run / "adapter" / "adapter_config.json", base_model_name_or_path=str(tmp_path / "gone"))
        _edit_json(run / "model" / "tunelab.json", base_model=str(tmp_path / "gone"))
    return missing, config, weights, gone


def test_damaged_adapters_for_merge(lora_run: Path, tmp_path: Path) -> None:
    """export --merge with the adapter weights missing (was: HFValidationError), adapter_config.json cut (was:
    JSONDecodeError), the weights cut (was: SafetensorError), the base model's folder gone (was: "Repo id must be in
    the form ...")."""
    missing, config, weights, (base,) = _damaged_adapters(lora_run, tmp_path, "base")
    for run, said in ((missing, "missing/adapter: no adapter weights (adapter_model.safetensors"),
                      (config, "config/adapter/adapter_config.json: not valid JSON"),
                      (weights, "weights/adapter/adapter_model.safetensors: cannot read the adapter weights "
                                "(truncated or damaged?)"),
                      (base, f"base/adapter/adapter_config.json: the base model it names ({tmp_path / 'gone'}, "
                             "base_model_name_or_path) does not exist")):
        _one_line(["export", run, "--merge", "--output", tmp_path / f"{run.name}-merged"], said)
        assert not (tmp_path / f"{run.name}-merged").exists()


def test_damaged_adapters_for_serve(lora_run: Path, tmp_path: Path) -> None:
    """`tunelab serve` of LoRA runs of one base (served as adapters over one copy of it), one adapter damaged as
    above: export --merge's line at start-up, exit code 2, nothing served (was: peft's or safetensors' traceback, the
    base model's "Repo id must be in the form ...", and a cut adapter_config.json left that run unshared unsaid).
    What `tunelab serve` loads before it starts, called in-process (a `tunelab serve` process per case took 50 s of
    the suite; the CLI prints any TunelabError as its one line with exit code 2)."""
    from tunelab.errors import TunelabError
    from tunelab.serve.models import served_models

    good = _copy(lora_run, tmp_path / "good")
    missing, config, weights, bases = _damaged_adapters(lora_run, tmp_path, "base", "base-too")  # one base: shared
    for runs, said in (((good, missing), "missing/adapter: no adapter weights (adapter_model.safetensors or "
                                         "adapter_model.bin); tunelab serve needs the adapter as training wrote it"),
                       ((config, good), "config/adapter/adapter_config.json: not valid JSON"),
                       ((good, weights), "weights/adapter/adapter_model.safetensors: cannot read the adapter weights "
                                         "(truncated or damaged?)"),
                       (bases, f"base/adapter/adapter_config.json: the base model it names ({tmp_path / 'gone'}, "
                               "base_model_name_or_path) does not exist")):
        with pytest.raises(TunelabError) as e:
            served_models(list(runs))
        assert said in str(e.value) and "\n" not in str(e.value), (runs, str(e.value))


def test_compress_recover_epochs_must_be_finite(cls_run: Path, tmp_path: Path) -> None:
    """--recover-epochs inf (was: OverflowError from the training loop)."""
    _one_line(["compress", cls_run, "--prune", "heads:0.25", "--recover-epochs", "inf", "--output", tmp_path / "c"],
              "--recover-epochs: inf is not a number of epochs")
    assert not (tmp_path / "c").exists()


def test_damaged_run_files_for_report_and_compare(cls_run: Path, tmp_path: Path) -> None:
    """A cut predictions/validation.jsonl and a broken line inside metrics.jsonl (was: JSONDecodeError), named
    with their line; a metrics.json whose split is not an object (was: AttributeError in compare)."""
    records = _copy(cls_run, tmp_path / "records")
    _cut(records / "predictions" / "validation.jsonl", 0.5)
    n = len((records / "predictions" / "validation.jsonl").read_text(encoding="utf-8").splitlines())
    log = _copy(cls_run, tmp_path / "log")
    lines = (log / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 3
    lines[1] = lines[1][:10]  # one line cut in the middle of the log (a torn last line is still skipped)
    (log / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    metrics = _copy(cls_run, tmp_path / "metrics")
    (metrics / "metrics.json").write_text('{"validation": 5}\n', encoding="utf-8")
    for run, said in ((records, f"records/predictions/validation.jsonl:{n}: not valid JSON"),
                      (log, "log/metrics.jsonl:2: not valid JSON")):
        _one_line(["report", run], said)
        _one_line(["compare", cls_run, run, "--output", tmp_path / f"{run.name}-cmp.html"], said)
    _one_line(["compare", metrics, cls_run, "--output", tmp_path / "m-cmp.html"],
              "metrics/metrics.json: validation: not a JSON object of metrics but 5")
