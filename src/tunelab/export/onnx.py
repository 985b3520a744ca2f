"""A tuned classification / NER / QA model → an ONNX graph for onnxruntime, optionally with int8 weights.

Export: `torch.onnx.export(..., dynamo=True)` (the torch.export-based exporter, PyTorch's default since 2.9; the
TorchScript tracer it replaces is deprecated and can bake a traced Python branch, e.g. "no padding", into the
graph), batch and sequence axes dynamic, traced on a padded batch. int8: onnxruntime's dynamic quantisation
(`quantize_dynamic`: int8 weights per output channel, activations quantised per call), whose MLAS kernels use the
CPU's int8 dot-product instructions (AVX-512-VNNI / AVX-VNNI / AMX where present). Only the MatMul nodes (every
encoder projection) are quantised; the task head's Gemm nodes (pooler, classifier) stay fp32: on the SST-2 MiniLM
model quantising them too flipped 2.0 % of the validation labels instead of 1.0 %, for no measurable speed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import TunelabError, require
from tunelab.models.onnx_module import ONNX_FILE, require_onnxruntime
from tunelab.tasks.base import Task

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SAMPLE = ("A first sample sentence, longer than the second.", "Short one.")


class _Logits(torch.nn.Module):
    """The model with named tensor inputs and its logits outputs as a tuple (what the exporter wants)."""

    def __init__(self, model: torch.nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return tuple(out[name] for name in self.outputs)


def sample_batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    """Two rows of different lengths, so the traced graph holds the padding mask."""
    enc = tokenizer(list(SAMPLE), padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in INPUTS}


def export_onnx(task: Task, model: torch.nn.Module, tokenizer: Any, out_dir: Path, quantize: str | None) -> Path:
    """Write OUT_DIR/model.onnx (fp32, or int8 weights with `quantize="int8"`); return its path."""
    require_onnxruntime()
    for package in ("onnx", "onnxscript"):  # the exporter's own requirements, checked here for a clear message
        require(package, "export --format onnx needs the onnx and onnxscript packages: pip install 'tunelab[onnx]'")
    if not task.onnx_outputs:
        raise TunelabError(f"export --format onnx: task {task.cfg.name} has no ONNX export (classification, ner, qa "
                           "have); causal LMs export with --format gguf")
    model = model.float().eval()
    batch = sample_batch(tokenizer)
    names = tuple(batch)
    fp32 = out_dir / (ONNX_FILE if quantize is None else "fp32.onnx")
    dims = {k: {0: torch.export.Dim("batch", max=4096), 1: torch.export.Dim("sequence", max=8192)} for k in names}
    try:
        with _quiet():
            torch.onnx.export(_Logits(model, task.onnx_outputs), (), str(fp32), kwargs=batch, input_names=list(names),
                              output_names=list(task.onnx_outputs), dynamic_shapes=dims, dynamo=True,
                              external_data=False, verbose=False)
    except Exception as exc:  # the exporter's many error types; its summary says what it could not trace
        raise TunelabError(f"export --format onnx: torch.onnx could not export this model: {_summary(exc)}") from None
    if quantize is None:
        return fp32
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = out_dir / ONNX_FILE
    with _quiet():
        quantize_dynamic(str(fp32), str(target), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    for f in out_dir.glob("fp32.onnx*"):
        f.unlink()
    return target


def _summary(exc: BaseException) -> str:
    """The line of the exporter's message that names the cause (it follows '## Exception summary')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.startswith("## Exception summary"):
            return lines[i + 1][:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter prints its progress and the quantiser a pre-processing tip on the root logger: one line per
    artifact is what the user reads, from the command."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "torch._dynamo", "torch.export")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
