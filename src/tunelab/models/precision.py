"""Which floating-point precision a run trains and infers in (`train.precision`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_SCOPE: ContextVar[str | None] = ContextVar("tunelab_precision", default=None)


@contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """`auto` means `precision` inside the block (e.g. scoring the fp32 weights an export was made from)."""
    token = _SCOPE.set(precision)
    try:
        yield
    finally:
        _SCOPE.reset(token)


SAVED = "tunelab_precision"  # a loaded model's attribute: "fp32" where its run trained at fp32 (tunelab.json)


def keep_trained_precision(module: object, meta: dict) -> None:
    """Mark a loaded model (`module`) with the precision its run trained at, from its tunelab.json (`meta`): "fp32"
    where it trained at fp32, which `auto` then keeps (`resolve_precision`'s `saved`)."""
    if meta.get("precision") == "fp32":
        setattr(module, SAVED, "fp32")


def resolve_precision(precision: str, device: torch.device, saved: str | None = None) -> str:
    """`auto` picks bf16 only where the hardware runs it natively: on a CPU without AVX-512-BF16 or
    AMX, bf16 matmuls are ~3x slower than fp32 (measured 44 vs 147 GFLOP/s on this project's CI CPU).
    What fixes `auto` first: precision_scope, then TUNELAB_PRECISION=fp32|bf16|fp16, then `saved` (a model trained
    at fp32 is scored at fp32, as its run's metrics were)."""
    if precision == "auto":
        env = os.environ.get("TUNELAB_PRECISION", "auto")
        precision = _SCOPE.get() or (env if env != "auto" else None) or saved or "auto"
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "fp32"


def autocast_dtype(device: torch.device, precision: str = "auto", model: object = None) -> torch.dtype | None:
    """The autocast dtype for inference at `precision` (None: plain fp32); `model`: a loaded model, whose run's
    precision (its `SAVED` attribute) `auto` then keeps."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        resolve_precision(precision, device, getattr(model, SAVED, None)))
