"""A tuned classification / NER / QA model → an ONNX graph for onnxruntime, optionally with int8 weights.

Export: `torch.onnx.export(..., dynamo=True)` (the torch.export-based exporter, PyTorch's default since 2.9; the
TorchScript tracer it replaces is deprecated and can bake a traced Python branch, e.g. "no padding", into the
graph), batch and sequence axes dynamic, traced on a padded batch, attention as ONNX's fused `Attention` node
(opset 23, `fused_attention`; a model with rotary position embeddings keeps sdpa's graph at the exporter's
default opset, `rotary`). int8: onnxruntime's dynamic quantisation (`quantize_dynamic`: int8 weights per
output channel, activations quantised per call), whose MLAS kernels use the CPU's int8 dot-product instructions
(AVX-512-VNNI / AVX-VNNI / AMX where present). Only the MatMul nodes (every encoder projection) are quantised; the
task head's Gemm nodes (pooler, classifier) stay fp32: on the SST-2 MiniLM model quantising them too flipped 2.0 %
of the validation labels instead of 1.0 %, for no measurable speed. The large embedding tables become int8 with a
scale per row (`quantize_embeddings`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import TunelabError, flag, require
from tunelab.models.onnx_module import ONNX_FILE, require_onnxruntime
from tunelab.tasks.base import Task

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_ATTENTION = "tunelab_onnx_attention"
SAMPLE = ("A first sample sentence, longer than the second.", "Short one.")


def _refused(why: str) -> TunelabError:
    """An ONNX export refused: the option named as the caller spells it (`--format onnx`, or `format='onnx'`)."""
    return TunelabError(f"export {flag('format', 'onnx')}: {why}")


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
        require(package, f"export {flag('format', 'onnx')} needs the onnx and onnxscript packages: "
                "pip install 'tunelab[onnx]'")
    if not task.onnx_outputs:
        raise _refused(f"task {task.cfg.name} has no ONNX export (classification, ner, qa "
                       f"have); causal LMs export with {flag('format', 'gguf')}")
    model = model.float().eval()
    batch = sample_batch(tokenizer)
    names = tuple(batch)
    fp32 = out_dir / (ONNX_FILE if quantize is None else "fp32.onnx")
    dims = {k: {0: torch.export.Dim("batch", max=4096), 1: torch.export.Dim("sequence", max=8192)} for k in names}
    try:
        with _quiet(), fused_attention(model) as opset, _no_gradients(model):
            torch.onnx.export(_Logits(model, task.onnx_outputs), (), str(fp32), kwargs=batch, input_names=list(names),
                              output_names=list(task.onnx_outputs), dynamic_shapes=dims, dynamo=True,
                              external_data=False, verbose=False, opset_version=opset)
    except Exception as exc:  # the exporter's many error types; its summary says what it could not trace
        raise _refused(f"torch.onnx could not export this model: {_summary(exc)}") from None
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
    quantize_embeddings(target)
    return target


def quantize_embeddings(path: Path, min_size: int = 1 << 20) -> int:
    """Every embedding table of ≥ `min_size` values read by a Gather → int8 with one scale per row; rewritten in
    place, returns how many. The table is half of a small encoder's bytes (MiniLM: 11.7 M of 22.7 M parameters),
    and onnxruntime's own Gather quantisation has one scale for the whole table, which on the SST-2 MiniLM model
    flipped 2.0 % of the labels; a scale per row (per token) bounds each row's error by its own range. The graph
    gathers the int8 rows and their scales and multiplies: a few cheap ops on (batch × tokens × hidden) values."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    tables = {t.name: t for t in graph.initializer}
    nodes, done = [], 0
    for node in graph.node:
        table = tables.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is None or axis != 0 or len(table.dims) != 2 or table.data_type != onnx.TensorProto.FLOAT \
                or table.dims[0] * table.dims[1] < min_size:
            nodes.append(node)
            continue
        weights = numpy_helper.to_array(table)
        scale = np.maximum(np.abs(weights).max(axis=1, keepdims=True), 1e-12) / 127.0
        quantised = np.clip(np.rint(weights / scale), -127, 127).astype(np.int8)
        name = table.name
        graph.initializer.remove(table)
        graph.initializer.extend([numpy_helper.from_array(quantised, f"{name}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{name}_row_scale")])
        ids, out = node.input[1], node.output[0]
        nodes += [helper.make_node("Gather", [f"{name}_int8", ids], [f"{out}_int8"], axis=0),
                  helper.make_node("Gather", [f"{name}_row_scale", ids], [f"{out}_scale"], axis=0),
                  helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], to=onnx.TensorProto.FLOAT),
                  helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out])]
        done += 1
    if done:
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))
    return done


def onnx_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention as the one ONNX `Attention` node (opset 23) on (batch, tokens, heads × dim) tensors, so the
    exported graph needs no per-head transposes around it; eagerly, torch's reference of that op."""
    b, h, s, d = query.shape

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(b, t.shape[2], t.shape[1] * d)

    causal = attention_mask is None and bool(kwargs.get("is_causal", getattr(module, "is_causal", False)))
    out = torch.onnx.ops.attention(rows(query), rows(key), rows(value), attention_mask, is_causal=causal,
                                   q_num_heads=h, kv_num_heads=key.shape[1], scale=scaling,
                                   softcap=float(kwargs.get("softcap") or 0.0))[0]
    return out.view(b, s, h, d), None


@contextlib.contextmanager
def fused_attention(model: torch.nn.Module) -> Any:
    """Export through `onnx_attention` at opset 23 where the model takes transformers' attention interface (yields
    the opset to export at). The graph the exporter makes from sdpa at opset 18 computes attention as a dozen
    nodes per layer (transposes, the mask's Where / IsNaN, Softmax), 37 % of onnxruntime's int8 time on SST-2
    MiniLM at batch 32; onnxruntime runs the `Attention` node as one fused kernel. Not for a model with rotary
    position embeddings (`rotary`: Llama, Qwen, Gemma, ModernBERT): at opset 23 the exporter writes their rotation as
    ONNX's `RotaryEmbedding` node with the cos / sin cache of the traced batch's first row, which onnxruntime
    refuses on any padded batch of 2 rows or more; at the exporter's default opset (sdpa's graph) the rotation is
    plain arithmetic, exact at any batch."""
    from tunelab.training.attention import register, transformers_model

    m = transformers_model(model)
    previous = getattr(getattr(m, "config", None), "_attn_implementation", None)
    if m is None or previous not in ("sdpa", "eager") or not hasattr(torch.onnx, "ops") or rotary(m):
        yield None
        return
    register(ONNX_ATTENTION, onnx_attention)
    try:
        m.set_attn_implementation(ONNX_ATTENTION)
    except (ValueError, ImportError):  # a model class that takes no custom attention: its own graph, opset 18
        yield None
        return
    try:
        yield 23
    finally:
        m.set_attn_implementation(previous)


def rotary(model: torch.nn.Module) -> bool:
    """Whether the model rotates its queries and keys by position (RoPE): its config names a rope base
    (`rope_theta`, transformers 5's `rope_parameters`) or a module of it is a rotary embedding (`rotary_emb`); a
    config that says its `position_embedding_type` is taken at its word."""
    config = getattr(model, "config", None)
    kind = getattr(config, "position_embedding_type", None)  # (ESM: a rope_theta default beside absolute positions)
    if isinstance(kind, str):
        return kind == "rotary"
    if any(getattr(config, key, None) is not None for key in ("rope_theta", "rope_parameters", "rotary_dim")):
        return True
    return any(name.rsplit(".", 1)[-1].startswith("rotary") or "Rotary" in type(module).__name__
               for name, module in model.named_modules())


@contextlib.contextmanager
def _no_gradients(model: torch.nn.Module) -> Any:
    """The weights traced as constants of an inference graph: with `requires_grad` set, the exporter's second trace
    (AOT autograd, in `run_decompositions`) keeps the bookkeeping a backward pass would need — the same graph, byte
    for byte, 11 % later (the tiny BERT: 5.3 s of CPU -> 4.7 s). Each parameter gets its own flag back after."""
    wanted = [p for p in model.parameters() if p.requires_grad]
    for p in wanted:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in wanted:
            p.requires_grad_(True)


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
