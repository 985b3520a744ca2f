"""Shared helpers for the benchmark scripts: data location, FLOP peak, tables and JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNELAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if limit and len(rows) >= limit:
                    break
    return rows


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, n: int = 1024, reps: int = 20) -> float:
    """This machine's dense matmul throughput, measured now (the MFU denominator)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def encoder_train_flops(config: Any, real_tokens: int, mean_len: float) -> float:
    """Model FLOPs of training on `real_tokens` (forward + backward = 3x forward): the dense layers
    (2 FLOPs per weight per token) plus attention scores and mixing (4 * seq * hidden per layer)."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    dense = 2 * layers * (4 * h * h + 2 * h * inter)
    attention = 4 * layers * mean_len * h
    return 3.0 * (dense + attention) * real_tokens


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def cpu_name() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    name = " ".join(next((x.split(":", 1)[1] for x in lines if x.startswith("model name")), "").split())
    return name or platform.processor() or platform.machine()


def write_json(name: str, data: dict[str, Any]) -> Path:
    """benchmarks/results/<name>.json, with the machine's CPU and the date unless the script set them."""
    data = {"cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), **data}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
