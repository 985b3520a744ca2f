"""Where a tunelab training step spends its time: torch.profiler over 60 optimizer steps of the SST-2 MiniLM job
of benchmarks/classification.py (bs 32, max_length 128), at one precision. Prints the per-op table (self CPU time)
and writes benchmarks/results/profile-<precision>.json.

    python benchmarks/profile_step.py [--precision bf16|fp32] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TUNELAB_NO_PROGRESS", "1")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from common import SHARED, read_jsonl, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    from tunelab.config.run import build_config
    from tunelab.pipeline import run

    train = read_jsonl(SHARED / "sst2" / "train.jsonl", 32 * args.steps)
    val = read_jsonl(SHARED / "sst2" / "validation.jsonl", 32)
    with tempfile.TemporaryDirectory() as tmp:
        tp, vp = Path(tmp) / "train.jsonl", Path(tmp) / "val.jsonl"
        tp.write_text("".join(json.dumps(r) + "\n" for r in train))
        vp.write_text("".join(json.dumps(r) + "\n" for r in val))
        cfg = build_config({
            "task": "classification", "model": "minilm", "output_dir": str(Path(tmp) / "run"),
            "data": {"train": str(tp), "validation": str(vp), "max_length": 128},
            "train": {"epochs": 1, "batch_size": 32, "lr": 5e-5, "warmup": 0.06, "save_steps": 0,
                      "eval_steps": 10**9, "precision": args.precision, "report": False},
        })
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            metrics = run(cfg)
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages)
    top = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:20]
    rows = [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1000, 1),
             "self_pct": round(100 * e.self_cpu_time_total / total, 1)} for e in top]
    print(f"precision {metrics['train']['precision']}, {metrics['train']['steps']} steps, training loop "
          f"{metrics['train']['wall_s']} s (profiled, so slower than unprofiled), threads {torch.get_num_threads()}")
    print("| op | calls | self ms | % of profiled self time |\n|---|---|---|---|")
    for r in rows:
        print(f"| `{r['op']}` | {r['calls']} | {r['self_ms']} | {r['self_pct']} |")
    write_json(f"profile-{args.precision}", {"precision": args.precision, "steps": metrics["train"]["steps"],
                                             "train_wall_s": metrics["train"]["wall_s"], "top_ops": rows})


if __name__ == "__main__":
    main()
