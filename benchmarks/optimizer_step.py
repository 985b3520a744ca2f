"""The optimizer end of a MiniLM step, alone: gradient norm + clip + fused AdamW over the encoder's dense parameter
shapes (6 layers of 384 / 1536, biases, layer norms, position embeddings), with the clip as a separate multiply
(what torch's clip_grad_norm_ and tunelab do) or folded into the fused kernel as its `grad_scale`.

    python benchmarks/optimizer_step.py [--steps 40] [--repeats 3]

Prints ms per step for each; writes benchmarks/results/optimizer_step.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import cpu_name, write_json  # noqa: E402

SHAPES = [(384, 384)] * 4 * 6 + [(1536, 384), (384, 1536)] * 6 + [(384,)] * 60 + [(1536,)] * 6 + [(512, 384), (2, 384)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    for p in params:
        p.grad = torch.randn_like(p)
    grads = [p.grad for p in params]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def multiply() -> None:
        norm = torch.nn.utils.get_total_norm(grads)
        torch._foreach_mul_(grads, torch.clamp(1.0 / (norm + 1e-6), max=1.0))
        opt.step()

    def folded() -> None:
        norm = torch.nn.utils.get_total_norm(grads)
        opt.grad_scale = torch.clamp(norm + 1e-6, min=1.0)  # the kernel divides each gradient by it
        opt.step()
        del opt.grad_scale

    def ms(step: object) -> float:
        for _ in range(5):
            step()  # type: ignore[operator]
        start = time.perf_counter()
        for _ in range(args.steps):
            step()  # type: ignore[operator]
        return 1000 * (time.perf_counter() - start) / args.steps

    rows = [{"repeat": r + 1, "multiply_ms": round(ms(multiply), 2), "folded_ms": round(ms(folded), 2)}
            for r in range(args.repeats)]
    print(f"CPU: {cpu_name()}, threads {torch.get_num_threads()}")
    print("| repeat | clip as a multiply, ms | clip folded into AdamW, ms |\n|---|---|---|")
    for r in rows:
        print(f"| {r['repeat']} | {r['multiply_ms']} | {r['folded_ms']} |")
    write_json("optimizer_step", {"parameters": sum(p.numel() for p in params), "rows": rows})


if __name__ == "__main__":
    main()
