"""An ONNX file run by onnxruntime, behind the call signature of a transformers model, so that every scoring path
(`eval`, `predict`, reports, ensembles) takes an exported artifact like a torch model.

Hand-written because optimum's `ORTModelFor*` classes are one more package pinned to other transformers releases;
what tunelab needs of them is a session and three input names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.errors import TunelabError, require

ONNX_FILE = "model.onnx"
# onnxruntime's SkipLayerNormalization kernel (the residual Add + LayerNormalization it fuses) was the slow part of
# encoder graphs on the CPU: SST-2 MiniLM int8, batches of 32 real rows, 2 threads, on an AMD EPYC (AVX-512) 63.7 →
# 44.4 ms a batch without the fusion (the plain LayerNormalization + Add take 5.6 ms where the fused kernel took 13),
# and on an Intel Xeon the fused kernel was 24 % of the int8 graph's time; batch 1 is unchanged.
SLOW_FUSIONS = ("SkipLayerNormFusion",)
INSTALL_HINT = "install onnxruntime: pip install 'tunelab[onnx]' (or pip install onnx onnxruntime)"


def require_onnxruntime() -> Any:
    """The onnxruntime module, or a one-line TunelabError naming the install command."""
    return require("onnxruntime", f"onnxruntime is not installed; {INSTALL_HINT}")


class Outputs(dict):
    """Model outputs by name that also read as attributes (`out.logits`), as transformers' ModelOutput does."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class OnnxModule(torch.nn.Module):
    """`module(input_ids=..., attention_mask=..., token_type_ids=...)` → `Outputs(logits=...)` (or start/end logits),
    computed by an onnxruntime session on the CPU with `torch.get_num_threads()` threads."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or torch.get_num_threads()
        # none: the exporter's unused-initializer notes are not the user's, and an error is raised as one line
        options.log_severity_level = 4
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                                disabled_optimizers=list(SLOW_FUSIONS))
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise TunelabError(f"{path}: onnxruntime cannot load it: {str(exc).splitlines()[0]}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.path = Path(path)
        # forward_logits asks a model for its device through its parameters: an empty one says "cpu"
        self.anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, **inputs: torch.Tensor) -> Outputs:
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None and name == "token_type_ids":
                value = torch.zeros_like(inputs["input_ids"])
            if value is None:
                raise TunelabError(f"{self.path}: the ONNX model needs input {name!r}")
            feed[name] = np.ascontiguousarray(value.detach().cpu().numpy().astype(np.int64))
        try:
            results = self.session.run(self.output_names, feed)
        except Exception as exc:  # onnxruntime's InvalidArgument / Fail / RuntimeException: the graph's own error
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items())
            raise TunelabError(f"{self.path}: onnxruntime failed on a batch ({shapes}): "
                               f"{_ort_message(exc)}") from None
        return Outputs({n: torch.from_numpy(r) for n, r in zip(self.output_names, results, strict=True)})


def _ort_message(exc: BaseException) -> str:
    """onnxruntime's message without its `[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :` prefix, on one line."""
    text = " ".join(str(exc).split())
    return (text.rsplit(" : ", 1)[-1] if text.startswith("[ONNXRuntimeError]") else text)[:400] or type(exc).__name__
