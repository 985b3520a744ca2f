"""`tunelab export RUN --format onnx [--quantize int8]`: a classification, NER and QA model exported, loaded back by
onnxruntime, scored beside the original and written only past the parity gate; eval / predict / the API take the
export like a model directory; a broken artifact is refused with nothing written; bad input is one line, exit 2."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import train_sentiment, write_jsonl
from test_ner import _ner_rows
from test_qa import _qa_rows
from tunelab.cli import app

pytest.importorskip("onnxruntime")


def _train(out: Path, sets: list[str]) -> Path:
    base = [f"output_dir={out}", "train.batch_size=8", "train.save_steps=0", "train.precision=fp32",
            "train.report=false"]  # (no test here reads a run's report.html)
    res = CliRunner().invoke(app, ["train", *[a for s in base + sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def cls_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentiment(tiny_bert, tmp_path_factory.mktemp("onnx-cls") / "run", sets=("train.report=false",))


def _export(*args: str) -> object:
    return CliRunner().invoke(app, ["export", *args])


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-"))] if folder.is_dir() else []


def test_int8_export_is_checked_written_and_loads_like_a_model(cls_run: Path) -> None:
    res = _export(str(cls_run), "--format", "onnx", "--quantize", "int8")
    assert res.exit_code == 0, res.output
    out = cls_run / "exports" / "onnx-int8"
    assert res.stderr.strip().splitlines()[-1] == f"export: wrote {out}"
    assert {"model.onnx", "tunelab.json", "report.json", "config.json", "tokenizer.json"} <= {p.name for p in
                                                                                               out.iterdir()}
    meta = json.loads((out / "tunelab.json").read_text())
    assert meta["export"]["format"] == "onnx" and meta["export"]["quantize"] == "int8"
    report = json.loads((out / "report.json").read_text())
    torch_row, onnx_row = report["rows"]
    assert report["refused"] is None and report["data"].endswith("val.jsonl")
    assert torch_row["metric_name"] == "accuracy" and torch_row["metric"] > 0.9  # a model worth checking
    assert onnx_row["agreement"] >= 0.99 and onnx_row["rows"] == 40
    # the weights on both sides (the original's folder also holds its tokenizer, config and card)
    assert torch_row["size_bytes"] == (cls_run / "model" / "model.safetensors").stat().st_size
    assert onnx_row["size_bytes"] == (out / "model.onnx").stat().st_size
    for row in (torch_row, onnx_row):
        assert row["size_bytes"] > 0 and row["parameters"] > 0
        for b in ("batch1", "batch32"):
            assert 0 < row[b]["p50_ms"] <= row[b]["p95_ms"] and row[b]["rows_per_s"] > 0
        assert (row["batch1"]["calls"], row["batch32"]["calls"]) == (64, 8)  # 40 rows: repeated to fill them
    # eval, predict and the API take the export like any model directory
    val = Path(report["data"])
    res = CliRunner().invoke(app, ["eval", str(out), "--data", str(val)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1])["accuracy"] == pytest.approx(onnx_row["metric"])
    text = "good great film\nawful boring plot\n"
    got = CliRunner().invoke(app, ["predict", str(out), "--input", "-"], input=text)
    want = CliRunner().invoke(app, ["predict", str(cls_run), "--input", "-"], input=text)
    assert got.exit_code == 0 and [json.loads(x)["pred_label"] for x in got.stdout.splitlines()] == [
        json.loads(x)["pred_label"] for x in want.stdout.splitlines()] == ["positive", "negative"]
    import tunelab

    model = tunelab.load(out)
    assert type(model.module).__name__ == "OnnxModule"
    assert model.predict(["love this happy movie"])[0]["pred_label"] == "positive"
    # `tunelab serve RUN` serves the run's export that passed its gate, over HTTP like any model
    import httpx

    from conftest import serve_on_loopback

    with contextlib.contextmanager(serve_on_loopback)([cls_run]) as (url, server):
        res = httpx.post(f"{url}/v1/predict", json={"inputs": ["good great film", "awful boring plot"]}, timeout=30)
        assert res.status_code == 200, res.text
        assert [r["pred_label"] for r in res.json()["outputs"]] == ["positive", "negative"]
        assert type(server.models[0].model.module).__name__ == "OnnxModule"
    assert not _leftovers(cls_run / "exports")
    # an export is not exported again
    res = _export(str(out), "--format", "onnx")
    assert res.exit_code == 2 and "already an exported onnx model" in res.stderr


def test_the_gate_refuses_a_broken_artifact(cls_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ONNX graph of the model with its classifier negated (every decision flips) goes through the real
    load-back, scoring and gate: refused with exit 1 and nothing written; --force writes it with the refusal (the
    same graph: traced once, its bytes written again for the second command, ~7 s of the exporter spared)."""
    import tunelab.export.artifact as artifact

    real, traced = artifact.export_onnx, {}

    def broken(task, model, tokenizer, out_dir, quantize):  # noqa: ANN001, ANN202
        if traced:
            (out_dir / traced["name"]).write_bytes(traced["graph"])
            return out_dir / traced["name"]
        with torch.no_grad():
            model.classifier.weight.neg_()
            model.classifier.bias.neg_()
        graph = real(task, model, tokenizer, out_dir, quantize)
        traced.update(name=graph.name, graph=graph.read_bytes())
        return graph

    monkeypatch.setattr(artifact, "export_onnx", broken)
    out = cls_run / "exports" / "broken"
    res = _export(str(cls_run), "--format", "onnx", "--output", str(out))
    assert res.exit_code == 1, res.output
    line = res.stderr.strip()
    assert line.startswith("error: export: refused, nothing written: label agreement with the original ")
    assert "--force" in line and len(line.splitlines()) == 1
    assert not out.exists() and not _leftovers(out.parent)
    res = _export(str(cls_run), "--format", "onnx", "--output", str(out), "--force")
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["forced"] and report["refused"].startswith("label agreement")
    assert report["rows"][1]["agreement"] < 0.5
    assert report["gate"] == {"min_agreement": 0.99, "max_drop_points": 0.5}  # the threshold applied (was null)


def test_ner_and_qa_export(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "ner.jsonl", _ner_rows(40))
    ner = _train(tmp_path / "ner", ["task=ner", f"model={tiny_bert}", f"data.train={train}",
                                    "data.validation_split=0.25", "train.epochs=4", "train.lr=5e-3"])
    res = _export(str(ner), "--format", "onnx")
    assert res.exit_code == 0, res.output
    rows = json.loads((ner / "exports" / "onnx-fp32" / "report.json").read_text())["rows"]
    assert rows[1]["metric_name"] == "f1" and rows[1]["agreement"] == 1.0 and rows[1]["metric"] == rows[0]["metric"]
    train = write_jsonl(tmp_path / "qa.jsonl", _qa_rows(40, 0))
    val = write_jsonl(tmp_path / "qa-val.jsonl", _qa_rows(12, 1))
    qa = _train(tmp_path / "qa", ["task={name: qa, doc_stride: 8, max_question_length: 4}", f"model={tiny_bert}",
                                  f"data.train={train}", f"data.validation={val}", "data.max_length=32",
                                  "train.epochs=3", "train.lr=1e-2"])
    res = _export(str(qa / "model"), "--format", "onnx", "--quantize", "int8", "--min-agreement", "90")
    assert res.exit_code == 0, res.output
    out = qa / "exports" / "onnx-int8"
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert rows[1]["metric_name"] == "f1" and rows[1]["agreement"] >= 0.9
    row = json.loads(CliRunner().invoke(app, ["predict", str(out), "--input", str(val)]).stdout.splitlines()[0])
    assert "answer" in row


def test_bad_input_is_one_line(cls_run: Path, tiny_chat_run: Path, tmp_path: Path) -> None:
    cases = [
        ([str(tiny_chat_run), "--format", "onnx"], "task sft does not export to onnx"),
        ([str(cls_run), "--format", "onnx", "--quantize", "q8_0"], "onnx takes int8, not 'q8_0'"),
        ([str(cls_run), "--format", "tflite"], "'tflite' is not one of onnx, gguf, torch"),
        ([str(cls_run), "--format", "onnx", "--merge"], "export: --merge and --format onnx exclude each other"),
        ([str(cls_run), "--format", "gguf"], "task classification does not export to gguf (onnx, torch)"),
        ([str(cls_run)], "say what to export"),
        ([str(tmp_path / "nowhere"), "--format", "onnx"], "no such directory"),
        ([str(cls_run / "model" / "model.safetensors"), "--format", "onnx"],
         "model.safetensors: a file, not a directory; pass the run directory (or its model/)"),
        ([str(cls_run), "--format", "onnx", "--output", str(cls_run / "model")], "would replace the model"),
        ([str(cls_run), "--format", "onnx", "--data", str(tmp_path / "none.jsonl")], "none.jsonl"),
    ]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    cases.append(([str(adapter), "--format", "onnx"], "an adapter directory holds no full weights"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    cases.append(([str(cls_run), "--format", "onnx", "--output", str(busy)],
                  "holds files tunelab did not write (notes.txt)"))
    for args, words in cases:
        res = _export(*args)
        assert res.exit_code == 2, (args, res.output)
        assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1, (args, res.stderr)
    assert (busy / "notes.txt").read_text() == "mine" and not _leftovers(cls_run / "exports")


def test_missing_onnxruntime_names_the_install(cls_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is not installed
    res = _export(str(cls_run), "--format", "onnx")
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == ["error: onnxruntime is not installed; install onnxruntime: pip install "
                                               "'tunelab[onnx]' (or pip install onnx onnxruntime)"]


def test_the_gate_refuses_a_broken_torch_int8_model(cls_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchao int8 of the model with its classifier negated: refused with exit 1, nothing written."""
    pytest.importorskip("torchao")
    import tunelab.export.artifact as artifact

    real = artifact.quantize_int8

    def broken(task, module):  # noqa: ANN001, ANN202
        with torch.no_grad():
            module.classifier.weight.neg_()
            module.classifier.bias.neg_()
        return real(task, module)

    monkeypatch.setattr(artifact, "quantize_int8", broken)
    out = cls_run / "exports" / "broken-int8"
    res = _export(str(cls_run), "--format", "torch", "--quantize", "int8", "--output", str(out))
    assert res.exit_code == 1, res.output
    assert res.stderr.strip().startswith("error: export: refused, nothing written: label agreement with the original ")
    assert not out.exists() and not _leftovers(cls_run / "exports")


def test_torchao_int8_export(cls_run: Path) -> None:
    """--format torch --quantize int8: torchao int8 linear layers in the encoder, the head fp32; reloaded from model.pt
    and taken by eval like any model directory."""
    pytest.importorskip("torchao")
    res = _export(str(cls_run), "--format", "torch", "--quantize", "int8")
    assert res.exit_code == 0, res.output
    out = cls_run / "exports" / "torch-int8"
    report = json.loads((out / "report.json").read_text())
    row = report["rows"][1]
    assert report["refused"] is None and row["name"] == "torchao" and row["agreement"] >= 0.99
    import tunelab

    model = tunelab.load(out)
    kinds = {type(m.weight).__name__ for n, m in model.module.named_modules() if isinstance(m, torch.nn.Linear)}
    assert "Parameter" in kinds and len(kinds) == 2  # quantised encoder weights beside the fp32 head
    assert model.evaluate(report["data"])["accuracy"] == pytest.approx(row["metric"])
    res = _export(str(cls_run), "--format", "torch")
    said = "error: export --format torch: needs --quantize int8 (it has no unquantised export)\n"
    assert res.exit_code == 2 and res.stderr == said


def test_embedding_tables_become_int8_rows(cls_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-row int8 embedding table (on by default above 1 M values, so forced here on the tiny model): the
    rewritten graph reads int8 rows and their scales, and its logits stay within each row's quantisation step. (The
    graph was traced from weights that need no gradient: the exporter's second trace then keeps no backward
    bookkeeping, ~11 % of an export.)"""
    import numpy as np
    import onnx
    import onnxruntime as ort

    import tunelab.export.onnx as exporter
    from tunelab.export.onnx import quantize_embeddings

    traced, forward = [], exporter._Logits.forward

    def seen(self, input_ids, attention_mask, token_type_ids=None):  # noqa: ANN001, ANN202 - (the signature traced)
        traced.append(sorted(n for n, p in self.model.named_parameters() if p.requires_grad))
        return forward(self, input_ids, attention_mask, token_type_ids)

    monkeypatch.setattr(exporter._Logits, "forward", seen)
    res = _export(str(cls_run), "--format", "onnx", "--output", str(tmp_path / "fp32"))
    assert res.exit_code == 0, res.output
    assert traced and traced == [[]] * len(traced)  # (each trace: no weight asks for a gradient)
    path = tmp_path / "fp32" / "model.onnx"
    before = onnx.load(str(path))
    ops = {n.op_type for n in before.graph.node}
    assert "Attention" in ops and not ops & {"Softmax", "Transpose", "IsNaN"}  # one fused node per layer
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    feeds = {"input_ids": np.array([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]]), "attention_mask": mask,
             "token_type_ids": np.zeros_like(mask)}
    feeds = {k: v for k, v in feeds.items() if k in {i.name for i in before.graph.input}}
    want = ort.InferenceSession(str(path)).run(None, feeds)[0]
    assert quantize_embeddings(path, min_size=1 << 30) == 0  # nothing that large: the file is left alone
    assert quantize_embeddings(path, min_size=1) >= 1
    after = onnx.load(str(path))
    int8 = [t for t in after.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8 and all(t.name.endswith("_int8") for t in int8)
    assert sum(n.op_type == "Gather" for n in after.graph.node) > sum(n.op_type == "Gather" for n in before.graph.node)
    got = ort.InferenceSession(str(path)).run(None, feeds)[0]
    assert np.abs(got - want).max() < 0.05 * max(1.0, np.abs(want).max())
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_fused_attention_is_the_same_function(tiny_bert: Path) -> None:
    """The attention the export traces (ONNX's `Attention` op, torch's reference eagerly) gives sdpa's logits on
    padded rows, and the model gets its own attention back afterwards."""
    from transformers import AutoModelForSequenceClassification

    from tunelab.export.onnx import ONNX_ATTENTION, fused_attention

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3).eval()
    ids = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    def hidden(**kwargs: torch.Tensor) -> torch.Tensor:  # the encoder's output: the logits of a random head are ~0
        return model(input_ids=ids, output_hidden_states=True, **kwargs).hidden_states[-1]

    with torch.no_grad():
        want = hidden(attention_mask=mask)
        with fused_attention(model) as opset:
            assert opset == 23 and model.config._attn_implementation == ONNX_ATTENTION
            got = hidden(attention_mask=mask)
            unmasked = hidden()
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unmasked[1, :3], want[1, :3], atol=1e-3)  # the padding mask is applied, not dropped


def test_rotary_is_what_the_config_says_its_positions_are() -> None:
    """ESM's config carries a rope_theta default beside `position_embedding_type: absolute`: not rotary (it lost the
    fused attention export for nothing); BERT is not, a Llama is."""
    from transformers import BertConfig, BertModel, EsmConfig, EsmModel, LlamaConfig, LlamaModel

    from tunelab.export.onnx import rotary

    small = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
             "vocab_size": 40}
    assert not rotary(EsmModel(EsmConfig(**small, position_embedding_type="absolute", pad_token_id=0)))
    assert rotary(EsmModel(EsmConfig(**small, position_embedding_type="rotary", pad_token_id=0)))
    assert not rotary(BertModel(BertConfig(**small)))
    assert rotary(LlamaModel(LlamaConfig(**small)))


def test_a_rotary_decoder_classifier_exports(tiny_llama: Path, tmp_path: Path) -> None:
    """A Llama (rotary positions) classifier exports without ONNX's RotaryEmbedding node, whose cos / sin cache
    the exporter traced at batch 1: onnxruntime refused every padded batch of 2 rows or more. An error inside
    onnxruntime is one line naming the graph."""
    from tunelab.errors import TunelabError
    from tunelab.models.onnx_module import OnnxModule

    run = train_sentiment(tiny_llama, tmp_path / "run", sets=("train.report=false",))
    res = _export(str(run), "--format", "onnx")
    assert res.exit_code == 0, res.output
    out = run / "exports" / "onnx-fp32"
    onnx_row = json.loads((out / "report.json").read_text())["rows"][1]
    assert onnx_row["agreement"] == 1.0 and onnx_row["rows"] == 40
    import onnx

    assert "RotaryEmbedding" not in {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    from transformers import AutoModelForSequenceClassification

    from tunelab.export.onnx import rotary

    assert rotary(AutoModelForSequenceClassification.from_pretrained(run / "model"))
    module = OnnxModule(out / "model.onnx")
    with pytest.raises(TunelabError, match=r"model\.onnx: onnxruntime failed on a batch \(input_ids \[1, 2\].*"
                       r"out of data bounds"):
        module(input_ids=torch.tensor([[10**6, 5]]), attention_mask=torch.ones(1, 2, dtype=torch.long))


def test_a_validation_file_of_its_own_is_all_export_reads(cls_run: Path, tmp_path: Path) -> None:
    """The run's training file grown or gone: export checks on the validation file, read and checked alone (it was
    refused: `train: 67 rows now, where the run used 64`); that file gone is one line that offers --data. (Every
    format reads its rows so, in export_run before its exporter: torchao int8 here, under a second where torch.onnx
    traces ~7 s; the onnx exporter's own paths are the tests above.)"""
    pytest.importorskip("torchao")
    from conftest import sentiment_rows

    train, val = cls_run.parent / "train.jsonl", cls_run.parent / "val.jsonl"
    kept, out, fmt = train.read_text(), tmp_path / "out", ("--format", "torch", "--quantize", "int8")
    try:
        write_jsonl(train, [json.loads(line) for line in kept.splitlines()] + sentiment_rows(3, 9))
        res = _export(str(cls_run), *fmt, "--output", str(out))
        assert res.exit_code == 0, res.output
        assert json.loads((out / "report.json").read_text())["rows"][1]["rows"] == 40
        train.unlink()
        res = _export(str(cls_run), *fmt, "--output", str(out))
        assert res.exit_code == 0, res.output
        val.rename(tmp_path / "val.jsonl")
        res = _export(str(cls_run), *fmt, "--output", str(tmp_path / "out2"))
        assert res.exit_code == 2 and res.stderr.strip() == (
            f"error: {val}: data.validation: file not found; the run {cls_run} read it: restore it, or pass --data "
            "FILE (labelled rows)"), res.output
    finally:
        train.write_text(kept)
        if not val.exists():
            (tmp_path / "val.jsonl").rename(val)


def test_a_test_file_gone_is_no_matter_without_dedup(cls_run: Path) -> None:
    """Without data.dedup the test file takes no validation rows: export does not need it (it was refused as not
    found)."""
    import yaml

    from tunelab.config.run import build_config
    from tunelab.data.load import run_validation
    from tunelab.registry import TASKS

    cfg = build_config(yaml.safe_load((cls_run / "config.yaml").read_text()))
    data = cfg.data.model_copy(update={"test": str(cls_run.parent / "gone-test.jsonl"), "dedup": False})
    task = TASKS.get(cfg.task.name)(cfg.task, data)
    assert len(run_validation(cls_run, data, task, cfg.train.seed) or []) == 40


def test_latency_times_full_batches_only(cls_run: Path) -> None:
    """40 rows: the batch-32 latency was one call of 32 rows and one of 8, its p50 / p95 a mix of the two."""
    from tunelab.export.artifact import labelled_rows
    from tunelab.export.parity import LATENCY_BATCHES, LATENCY_ROWS, speed
    from tunelab.export.save import load_model

    task, module, tokenizer = load_model(cls_run / "model")
    examples, _ = labelled_rows(task, cls_run, None)
    seen: list[int] = []

    class Counted(torch.nn.Module):  # the model, counting the rows of each call
        def forward(self, **batch: torch.Tensor) -> object:
            seen.append(len(batch["input_ids"]))
            return module(**batch)

    out = speed(task, Counted(), tokenizer, task.encode(examples, tokenizer), "fp32")
    assert len(examples) == 40 and out["batch1"]["calls"] == LATENCY_ROWS and out["batch32"]["calls"] == 8
    assert seen == [1] * (LATENCY_ROWS + 1) + [32] * (LATENCY_BATCHES + 1)  # (one untimed warm-up call each)
