"""`tunelab export RUN --format onnx [--quantize int8]` / `--format gguf [--quantize f16|q8_0]`: build the artifact
in a temp dir next to its target, load it back, score it beside the run's model on labelled rows, and move it into
place only when it passes the parity gate.

The artifact is a model directory like RUN/model: the graph, the tokenizer, config.json, tunelab.json (the task
settings plus an `export` record) and report.json (the measured rows), so `tunelab eval` / `predict` / the API load
it by its path. Default place: RUN/exports/<format>-<quantize or fp32>; for a compressed model, beside it
(<its folder>-<format>-<quantize or fp32>).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunelab import __version__
from tunelab.config.run import build_config, read_config_file
from tunelab.data.load import run_data, run_validation
from tunelab.data.readers import read_table
from tunelab.errors import TunelabError, flag, option
from tunelab.evaluation.evaluate import logits_for
from tunelab.export.gguf import check_exportable, write_gguf
from tunelab.export.onnx import export_onnx
from tunelab.export.output import claim, commit, run_reads, staged
from tunelab.export.parity import (
    Gate,
    ParityError,
    check,
    headline,
    least_agreement,
    measure,
    measure_fp32,
    weights_bytes,
)
from tunelab.export.save import GGUF_FILE, META_FILE, load_gguf, load_model, saved_rules
from tunelab.export.torch_int8 import load_int8, quantize_int8, require_torchao, save_int8
from tunelab.io import Read, read_json, write_json_atomic
from tunelab.methods.base import count_parameters
from tunelab.models.onnx_module import ONNX_FILE, OnnxModule, require_onnxruntime
from tunelab.models.precision import precision_scope
from tunelab.models.tokenizer_save import save_tokenizer
from tunelab.tasks.base import Task
from tunelab.tasks.model_rows import model_examples

REPORT_FILE = "report.json"
FORMATS = {"onnx": (None, "int8"), "gguf": (None, "f16", "q8_0"), "torch": ("int8",)}  # format: its --quantize values


@dataclass
class ExportResult:
    output: Path
    rows: list[dict[str, Any]]
    refused: str | None  # why the gate refused it (written anyway with --force)
    data: str


def locate_model(path: Path) -> tuple[Path, Path | None]:
    """(model dir, run dir or None) for a run directory, its model/ or another tunelab model directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TunelabError(f"{path}: a file, not a directory; pass the run directory (or its model/)")
    if not path.is_dir():
        raise TunelabError(f"{path}: no such directory")
    if (path / "adapter_config.json").is_file() and not (path / META_FILE).is_file():
        raise TunelabError(f"{path}: an adapter directory holds no full weights; pass the run directory (its model/ "
                           "holds the merged model)")
    if (path / "model" / META_FILE).is_file():
        return path / "model", path
    if (path / META_FILE).is_file():
        meta = read_json(path / META_FILE)
        if "export" in meta:
            raise TunelabError(f"{path}: already an exported {meta['export'].get('format')} model; export from the "
                               "run directory")
        compressed = meta.get("compressed", {})  # a compressed model: the run it came from (compressed twice too)
        source, recorded = Path(compressed.get("from", path)), compressed.get("run")
        run = next((d for d in (*([Path(recorded)] if isinstance(recorded, str) else []), path.parent, source.parent)
                    if (d / "config.yaml").is_file()), None)
        return path, run
    raise TunelabError(f"{path}: not a run or model directory (no model/{META_FILE}); pass a run's output_dir")


def labelled_rows(task: Task, run: Path | None, data: Path | None,
                  splits: dict[str, list[dict[str, Any]]] | None = None,
                  verb: str = "export") -> tuple[list[dict[str, Any]], str]:
    """(examples, where they came from): --data, else the run's validation split as training made it (`splits`:
    the run's splits when the caller has read them already); `verb`: the command its errors name."""
    if data is not None:
        return model_examples(task, read_table(data, task.txt_as_conll), labelled=True), str(data)
    if run is None:
        raise TunelabError(f"{verb}: no run config.yaml next to the model to find its validation split; pass "
                           f"{option('--data FILE', 'data=FILE')} (labelled rows)")
    cfg = build_config(read_config_file(run / "config.yaml"), saved=True)
    # a validation file of its own is read alone: the training file may have changed or gone since
    rows = splits.get("validation") if splits is not None else run_validation(
        run, cfg.data, task, cfg.train.seed, hint=f", or pass {option('--data FILE', 'data=FILE')} (labelled rows)")
    if rows is None:
        raise TunelabError(f"{verb}: the run {run} has no validation split; pass "
                           f"{option('--data FILE', 'data=FILE')} (labelled rows)")
    data_cfg = run_data(run, cfg.data)  # the files as training read them
    return rows, data_cfg.validation or f"{data_cfg.train} (held-out validation split)"


def inputs_of(model_dir: Path, run: Path | None, data: Path | None, role: str = "the model it exports") -> list[Read]:
    """What an export or compress reads, which its --output never replaces: the model, the --data file, the run
    (`run_reads`: its own files and the data files its config names)."""
    return [Read(role, model_dir), *([Read(f"the {flag('data')} file", Path(data))] if data is not None else []),
            *run_reads(run)]


def default_output(model_dir: Path, run: Path | None, name: str) -> Path:
    """Where an export or compress of `model_dir` goes without --output: RUN/exports/NAME for a run's model; beside a
    compressed model (its tunelab.json `compressed`; or a model in an exports/ folder), as <its folder>-NAME — never
    the folder an export of the run's own model has (`serve RUN` would then serve the pruned one); beside a model
    folder of no run too (`cp -r RUN/model deploy/a`: deploy/a-NAME; it went to deploy/exports/NAME, where the export
    of deploy/b then replaced it)."""
    model_dir = model_dir.resolve()  # (`.`: the folder's own name)
    if run is None or model_dir.parent.name == "exports" or "compressed" in read_json(model_dir / META_FILE):
        return model_dir.parent / f"{model_dir.name}-{name}"
    return run / "exports" / name


def export_run(path: Path, fmt: str, quantize: str | None = None, output: Path | None = None,
               data: Path | None = None, gate: Gate | None = None, force: bool = False,
               batch_size: int = 64, overwrite: bool = False) -> ExportResult:
    """Export, measure and gate; raises ParityError (nothing written) when the gate refuses and not `force`.
    `overwrite`: replace an --output folder that holds other files, or is a link (`check_output`), said first."""
    if fmt not in FORMATS:
        raise TunelabError(f"export {flag('format')}: {fmt!r} is not one of {', '.join(FORMATS)}")
    if quantize not in FORMATS[fmt]:
        takes = " or ".join(q for q in FORMATS[fmt] if q)
        if quantize is None:  # a format with no unquantised export (torch: torchao int8 only)
            raise TunelabError(f"export {flag('format', fmt)}: needs {flag('quantize', takes)} (it has no "
                               "unquantised export)")
        raise TunelabError(f"export {flag('quantize')}: {fmt} takes {takes}, not {quantize!r}")
    gate = gate or Gate()
    if fmt == "gguf":
        quantize = quantize or "f16"  # GGUF's own default type (llama.cpp's converter writes f16 too)
    if fmt == "onnx":
        require_onnxruntime()  # before minutes of loading and scoring
    if fmt == "torch":
        require_torchao()
    model_dir, run = locate_model(path)
    task, module, tokenizer = load_model(model_dir)
    if fmt not in task.export_formats:
        raise TunelabError(f"export {flag('format', fmt)}: task {task.cfg.name} does not export to {fmt} "
                           f"({', '.join(task.export_formats) or 'no format yet'})")
    output = Path(output) if output is not None else default_output(model_dir, run, f"{fmt}-{quantize or 'fp32'}")
    replaced = claim("export", output, inputs_of(model_dir, run, data), overwrite)
    examples, source = labelled_rows(task, run, data)
    if not examples:
        raise TunelabError(f"{source}: no labelled rows to check the export on")
    features = task.encode(examples, tokenizer)
    build = {"onnx": _onnx, "gguf": _gguf, "torch": _torch}[fmt]
    with staged(output) as tmp:
        save_tokenizer(tokenizer, tmp, output)
        shutil.copy2(model_dir / "config.json", tmp / "config.json")
        meta = read_json(model_dir / META_FILE)
        meta.setdefault("text_rules", saved_rules(model_dir, meta))  # (a model saved before they were recorded)
        meta["export"] = {"format": fmt, "quantize": quantize, "from": str(model_dir.resolve()),
                          "tunelab_version": __version__}
        write_json_atomic(tmp / META_FILE, meta)
        rows = build(task, module, tokenizer, examples, features, tmp, quantize, model_dir, batch_size)
        del module
        refused = gate_and_commit("export", tmp, output, rows, gate, force, source, loss=fmt == "gguf",
                                  replaced=replaced)
    return ExportResult(output, rows, refused, source)


def gate_and_commit(verb: str, tmp: Path, output: Path, rows: list[dict[str, Any]], gate: Gate, force: bool,
                    source: str, loss: bool = False, replaced: list[str] | None = None, **extra: Any) -> str | None:
    """Judge the artifact (rows[1]) against the original (rows[0]); write TMP/report.json; move TMP into place unless
    the gate refuses it without --force (then ParityError: nothing written). Returns the refusal, or None.
    `replaced`: what --overwrite said it replaces at `output` (None: no --overwrite)."""
    refused = check(rows[0], rows[1], gate, loss=loss)
    write_json_atomic(tmp / REPORT_FILE, {"data": source, "gate": {"min_agreement": least_agreement(gate, loss),
                                          "max_drop_points": gate.max_drop}, "refused": refused,
                                          "forced": bool(refused and force), **extra, "rows": rows})
    if refused and not force:
        raise ParityError(f"{verb}: refused, nothing written: {refused}; {flag('force', True)} writes it anyway")
    commit(tmp, output, replaced)
    return refused


def _onnx(task: Task, module: Any, tokenizer: Any, examples: list[dict[str, Any]], features: list[dict[str, Any]],
          tmp: Path, quantize: str | None, model_dir: Path, batch_size: int) -> list[dict[str, Any]]:
    """The fp32 original (the weights the graph is made of) and the onnxruntime graph, measured alike."""
    original, reference = measure_fp32("torch", task, module, tokenizer, examples, features, model_dir, batch_size)
    graph = export_onnx(task, module, tokenizer, tmp, quantize)
    artifact = OnnxModule(graph)
    row, _ = measure("onnx", task, artifact, tokenizer, examples, features, size_bytes=weights_bytes(tmp),
                     parameters=onnx_parameters(graph), precision=quantize or "fp32", batch_size=batch_size,
                     reference=reference)
    return [original, row]


def _torch(task: Task, module: Any, tokenizer: Any, examples: list[dict[str, Any]], features: list[dict[str, Any]],
           tmp: Path, quantize: str | None, model_dir: Path, batch_size: int) -> list[dict[str, Any]]:
    """The fp32 original and the torchao int8 module reloaded from disk, measured alike."""
    original, reference = measure_fp32("torch", task, module, tokenizer, examples, features, model_dir, batch_size)
    save_int8(quantize_int8(task, module), tmp)
    back = load_int8(task, tmp)
    row, _ = measure("torchao", task, back, tokenizer, examples, features,
                     size_bytes=weights_bytes(tmp), parameters=original["parameters"], precision="int8",
                     batch_size=batch_size, reference=reference)
    return [original, row]


def _gguf(task: Task, module: Any, tokenizer: Any, examples: list[dict[str, Any]], features: list[dict[str, Any]],
          tmp: Path, quantize: str | None, model_dir: Path, batch_size: int) -> list[dict[str, Any]]:
    """The tuned model and the GGUF file as transformers reads it back: next-token logits on the first rows' trained
    positions (max |Δ|, greedy agreement) and the task metric (validation loss) of each."""
    assert quantize is not None  # export_run: f16 unless asked otherwise
    check_exportable(module, tokenizer)
    write_gguf(module, tokenizer, tmp / GGUF_FILE, quantize, name=str(read_json(tmp / META_FILE)["base_model"]))
    back = load_gguf(task, tmp)
    params = count_parameters(module)["total"]
    rows = []
    for name, model, precision, nbytes in (("torch", module, "fp32", weights_bytes(model_dir)),
                                           ("gguf", back, quantize, weights_bytes(tmp))):
        with precision_scope("fp32"):
            metrics = task.metrics(logits_for(task, model, tokenizer, examples, batch_size, features), examples)
        metric_name, value = headline(metrics)
        rows.append({"name": name, "precision": precision, "size_bytes": nbytes, "parameters": params,
                     "metric_name": metric_name, "metric": value, "agreement": 1.0, "rows": len(examples)})
    rows[1]["agreement"], rows[1]["max_abs_logit_diff"], rows[1]["positions"] = next_token_parity(
        module, back, features[:PARITY_ROWS])
    return rows


PARITY_ROWS = 50  # rows whose every position is compared token by token


def next_token_parity(a: Any, b: Any, features: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(greedy next-token agreement, max |Δlogit|, positions compared) of two causal LMs on the features' tokens:
    the positions that predict a trained token (an SFT reply, every token of a pretraining block), where the model's
    greedy choice is what generation emits; the prompt's positions are near-ties that no one samples from."""
    same = total = 0
    worst = 0.0
    with torch.inference_mode():
        for f in features:
            ids = torch.as_tensor([f["input_ids"]])
            labels = torch.as_tensor(f.get("labels", f["input_ids"]))
            keep = torch.zeros(ids.shape[1], dtype=torch.bool)
            keep[:-1] = labels[1:] != -100
            x, y = a(input_ids=ids).logits[0, keep].float(), b(input_ids=ids).logits[0, keep].float()
            if not len(x):
                continue
            worst = max(worst, float((x - y).abs().max()))
            same += int((x.argmax(-1) == y.argmax(-1)).sum())
            total += len(x)
    return same / max(total, 1), round(worst, 6), total


def onnx_parameters(graph: Path) -> int:
    """Elements of the graph's weights (initializers), quantisation scales included."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return sum(math.prod(t.dims) for t in model.graph.initializer)


__all__ = ["FORMATS", "ONNX_FILE", "ExportResult", "Gate", "ParityError", "export_run", "locate_model"]
