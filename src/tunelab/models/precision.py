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
    AMX, bf16 matmuls are ~3x slower than fp32 where the CPU has AVX-512 (measured 44 vs 147 GFLOP/s on this project's
    CI CPU) and 30-100x where it has AVX2 only (`slow_precision_note`).
    What fixes `auto` first: precision_scope, then TUNELAB_PRECISION=fp32|bf16|fp16, then `saved` (a model trained
    at fp32 is scored at fp32, as its run's metrics were)."""
    if precision == "auto":
        env = os.environ.get("TUNELAB_PRECISION", "auto")
        precision = _SCOPE.get() or (env if env != "auto" else None) or saved or "auto"
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_runs_natively("bf16") else "fp32"


def cpu_runs_natively(precision: str) -> bool:
    """Whether this CPU multiplies `precision` (bf16 / fp16) in hardware: AVX-512-BF16 or AMX for bf16, AMX-FP16 for
    fp16 (without them oneDNN falls back to a slow path; fp32 always counts as native)."""
    if precision == "bf16":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    if precision == "fp16":
        return bool(torch.cpu._is_amx_fp16_supported())
    return True


def slow_precision_note(precision: str, device: torch.device, native: bool | None = None) -> str | None:
    """A warning where a run asked for bf16 / fp16 (`precision`, resolved) on a CPU that does not multiply it in
    hardware (`native`: None reads the CPU; `auto` never picks it there). Not a refusal: the user asked for it. The
    figures are measured (2026-12-08, 2-core AMD EPYC with AVX2 only, torch 2.13, 1024³): bf16 0.9 GFLOP/s, fp16 0.6,
    fp32 88; at a MiniLM layer's 448×384×1536 bf16 1.3 against fp32 36 — a run many times slower, not the ~3x of a
    CPU with AVX-512 but no BF16. A live probe was tried and dropped: a 256³ multiply read fp32 at 1–2 GFLOP/s while
    other processes shared the cores."""
    if device.type != "cpu" or precision not in ("bf16", "fp16"):
        return None
    if native if native is not None else cpu_runs_natively(precision):
        return None
    hardware = "AVX-512-BF16 or AMX" if precision == "bf16" else "AMX-FP16"
    return (f"warning: train.precision {precision} on a CPU without {hardware}: its {precision} matrix multiplies "
            "take a slow path (an AVX2-only CPU ran them 30-100x slower than fp32); precision: auto (fp32 on this CPU) "
            "trains faster")


def autocast_dtype(device: torch.device, precision: str = "auto", model: object = None) -> torch.dtype | None:
    """The autocast dtype for inference at `precision` (None: plain fp32); `model`: a loaded model, whose run's
    precision (its `SAVED` attribute) `auto` then keeps."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        resolve_precision(precision, device, getattr(model, SAVED, None)))
