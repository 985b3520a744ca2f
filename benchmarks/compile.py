"""Does `torch.compile` speed up a training step on this CPU? One MiniLM sequence-classification step (batch 32,
AdamW fused, gradient clipping), eager against `torch.compile(model)` (inductor, static and dynamic shapes), at
fixed length 16 (about the SST-2 job's length-grouped batches) and cycling through five lengths (what length
grouping feeds a run, so every new length may recompile). Random token ids: only the step's time is measured.
One more mode, `bf16-weights`, is the other way to cut per-op work: the model's weights held in bf16 (no autocast
casts; fp32 master weights in the optimizer, its gradients cast up and the new weights copied down each step).

Both peers could compile (HF Trainer has `torch_compile=True`), so this decides whether either should.

    python benchmarks/compile.py [--precision bf16|fp32] [--steps 40] [--repeats 2]

Inductor's cache starts as a fresh directory, so the first repeat's "first step" includes the compile a user's
first run pays; later repeats compile from that warm cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import cpu_name, matmul_peak_gflops, print_table, write_json  # noqa: E402

LENGTHS = (12, 16, 20, 24, 32)


def steps(model: Any, n: int, lengths: tuple[int, ...], precision: str, bf16_weights: bool = False,
          ) -> tuple[float, float]:
    """(seconds of the first step, median seconds of the second half's steps)."""
    params = list(model.parameters())
    master = [torch.nn.Parameter(p.detach().float()) for p in params] if bf16_weights else params
    if bf16_weights:
        model.to(torch.bfloat16)
    opt = torch.optim.AdamW(master, lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(n):
        length = lengths[i % len(lengths)]
        ids = torch.randint(1000, 20000, (32, length), generator=gen)
        labels = torch.randint(0, 2, (32,), generator=gen)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16" and not bf16_weights):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        if bf16_weights:
            for p, m in zip(params, master, strict=True):
                m.grad, p.grad = p.grad.float(), None
        torch.nn.utils.clip_grad_norm_(master, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if bf16_weights:
            with torch.no_grad():
                torch._foreach_copy_(params, master)
        times.append(time.perf_counter() - t)
    rest = sorted(times[n // 2:])
    return times[0], rest[len(rest) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2, help="every mode again, in the same order (noise)")
    ap.add_argument("--modes", default="eager,compile,compile-dynamic,bf16-weights")
    ap.add_argument("--name", default="", help="result file name (default compile-<precision>)")
    args = ap.parse_args()
    if "bf16-weights" in args.modes and args.precision != "bf16":
        raise SystemExit("error: --modes bf16-weights needs --precision bf16")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="tunelab-inductor-")
    from transformers import AutoModelForSequenceClassification

    from tunelab.models.aliases import resolve_model

    path = resolve_model("minilm")
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    peak = matmul_peak_gflops(torch.bfloat16 if args.precision == "bf16" else torch.float32)
    print(f"CPU: {cpu_name()}; native bf16: {native}; threads {torch.get_num_threads()}; "
          f"precision {args.precision}; 1024^3 matmul peak {peak:.0f} GFLOP/s")
    rows = []
    for rep in range(1, args.repeats + 1):
        for mode in args.modes.split(","):
            for name, lengths in (("fixed 16", (16,)), ("5 lengths", LENGTHS)):
                torch.manual_seed(0)
                model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
                model.train()
                compiled = mode.startswith("compile")
                run = torch.compile(model, dynamic=mode == "compile-dynamic") if compiled else model
                n = args.steps if lengths == (16,) else max(args.steps, 3 * len(LENGTHS) * 4)
                t0 = time.perf_counter()
                first, median = steps(run, n, lengths, args.precision, bf16_weights=mode == "bf16-weights")
                rows.append({"repeat": rep, "mode": mode, "lengths": name, "steps": n,
                             "first step s": round(first, 2), "median step ms": round(1000 * median, 1),
                             "total s": round(time.perf_counter() - t0, 1)})
                torch._dynamo.reset()
    print_table(rows, ["repeat", "mode", "lengths", "steps", "first step s", "median step ms", "total s"])
    out = write_json(args.name or f"compile-{args.precision}", {"precision": args.precision, "bf16_native": native,
                                                   "matmul_peak_gflops": round(peak), "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
