"""Compression benchmark on an SST-2 MiniLM model: torch fp32 eager, torch bf16 autocast (where the CPU runs bf16
natively), onnxruntime fp32 and onnxruntime int8, all in this one process on the same rows, 2 threads.

    python benchmarks/compress.py                      # trains runs/bench-compress (8,000 SST-2 rows, 1 epoch) once
    python benchmarks/compress.py --run runs/sst2-minilm --rows 2000

The model is exported with `tunelab export RUN --format onnx [--quantize int8]` (the parity gate on the run's
validation split, --force so that a refused export is still measured; its verdict is the `gate` column), and a
3-layer student (`tunelab distill RUN --student layers:0,2,4`, same rows, one epoch) is trained and exported to
int8 too, the torchao int8 module (`--format torch --quantize int8`) and the model with 30 % of its heads pruned
(`tunelab compress RUN --prune heads:0.3`, one recovery epoch) join them; then every variant is scored here on
two splits — `validation` (the run's, which the gate saw) and `heldout` (SST-2 rows neither training nor the gate
saw) — and timed at batch 1 (64 calls) and batch 32 (8 calls). Prints a table and writes
benchmarks/results/compress.json with the CPU's flags.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from common import ROOT, SHARED, cpu_name, print_table, read_jsonl, write_json
from tunelab.export.parity import measure
from tunelab.export.save import load_model
from tunelab.io import write_jsonl_atomic
from tunelab.methods.base import count_parameters


def cpu_flags() -> dict[str, bool]:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return {f: f in flags for f in ("avx512_bf16", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")}


def train_run(out: Path, rows: int) -> Path:
    data = out.parent / f"{out.name}-data"
    data.mkdir(parents=True, exist_ok=True)
    sst2 = SHARED / "sst2"
    write_jsonl_atomic(data / "train.jsonl", read_jsonl(sst2 / "train.jsonl", rows))
    val = read_jsonl(sst2 / "validation.jsonl")
    write_jsonl_atomic(data / "validation.jsonl", val[:1000])
    write_jsonl_atomic(data / "heldout.jsonl", val[3000:5000])
    if not (out / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "tunelab", "train", "examples/configs/sst2-minilm.yaml",
                        "--set", f"output_dir={out}", "--set", f"data.train={data / 'train.jsonl'}",
                        "--set", f"data.validation={data / 'validation.jsonl'}", "--set", "train.epochs=1",
                        "--set", "data.max_length=64", "--set", "train.eval_steps=100000"], check=True, cwd=ROOT)
    return data


def export(run: Path, quantize: str | None, fmt: str = "onnx") -> Path:
    args = [sys.executable, "-m", "tunelab", "export", str(run), "--format", fmt, "--force"]  # gate: see report
    if quantize:
        args += ["--quantize", quantize]
    subprocess.run(args, check=True, cwd=ROOT)
    return run / "exports" / f"{fmt}-{quantize or 'fp32'}"


def prune(run: Path, spec: str) -> Path:
    """`tunelab compress RUN --prune heads:0.3` with its default recovery (one epoch of the run's rows)."""
    out = run / "exports" / spec.replace(":", "-")
    subprocess.run([sys.executable, "-m", "tunelab", "compress", str(run), "--prune", spec, "--force", "--output",
                    str(out)], check=True, cwd=ROOT)
    return out


def distill(run: Path, layers: str, unlabeled: Path | None = None) -> Path:
    """The 3-layer student (the teacher's layers 0, 2, 4) distilled on the same rows for the same epoch; with
    `unlabeled`, those rows' texts join them for the soft targets alone (`--unlabeled`)."""
    student = run.with_name(run.name + (f"-student-{unlabeled.stem}" if unlabeled else "-student"))
    if not (student / "metrics.json").is_file():
        extra = ["--unlabeled", str(unlabeled)] if unlabeled else []
        subprocess.run([sys.executable, "-m", "tunelab", "distill", str(run), "--student", layers, "--output",
                        str(student), *extra], check=True, cwd=ROOT)
    return student


def unlabeled_rows(data: Path, start: int, rows: int) -> Path | None:
    """SST-2 training rows after the labelled ones, their texts only: the student's unlabelled rows."""
    if rows <= 0:
        return None
    path = data / f"unlabeled-{start}-{start + rows}.jsonl"  # the rows' positions in SST-2's train.jsonl
    if not path.is_file():
        table = read_jsonl(SHARED / "sst2" / "train.jsonl", start + rows)[start:]
        write_jsonl_atomic(path, [{"text": r["text"]} for r in table])
    return path


def variants(run: Path, layers: str, unlabeled: Path | None) -> list[tuple[str, str, Path]]:
    out = [("torch eager", "fp32", run / "model")]
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        out.append(("torch eager", "bf16", run / "model"))  # the peer at its best precision on this CPU
    out += [("onnxruntime", "fp32", export(run, None)), ("onnxruntime", "int8", export(run, "int8")),
            ("torchao", "int8", export(run, "int8", "torch")), ("heads -30% torch", "fp32", prune(run, "heads:0.3"))]
    student = distill(run, layers)
    out += [("student torch", "fp32", student / "model"), ("student onnxruntime", "int8", export(student, "int8"))]
    if unlabeled is not None:
        student = distill(run, layers, unlabeled)
        out += [("student +unlabelled torch", "fp32", student / "model"),
                ("student +unlabelled onnxruntime", "int8", export(student, "int8"))]
    return out


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "report.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-compress")
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--rows", type=int, default=2000, help="rows of each split scored")
    parser.add_argument("--student", default="layers:0,2,4", help="the distilled student (tunelab distill --student)")
    parser.add_argument("--unlabeled-rows", type=int, default=16000, help="SST-2 training texts after the labelled "
                        "rows that a second student also learns from (soft targets only; 0: none)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    os.environ["OMP_NUM_THREADS"] = "2"
    data = train_run(args.run, args.train_rows)
    splits = {"validation": read_jsonl(data / "validation.jsonl", args.rows),
              "heldout": read_jsonl(data / "heldout.jsonl", args.rows)}
    rows: list[dict[str, Any]] = []
    reference: dict[str, list[Any]] = {}
    unlabeled = unlabeled_rows(data, args.train_rows, args.unlabeled_rows)
    for runtime, precision, path in variants(args.run, args.student, unlabeled):
        task, module, tokenizer = load_model(path)
        params = count_parameters(module)["total"] if "torch" in runtime else None
        if (path / "report.json").is_file():
            row_params = json.loads((path / "report.json").read_text())["rows"][-1]["parameters"]
            params = params or row_params
        row: dict[str, Any] = {"model": f"{runtime} {precision}", "size_mb": round(size_of(path) / 1e6, 1)}
        if (path / "report.json").is_file():
            row["gate"] = json.loads((path / "report.json").read_text())["refused"] or "passed"
        for split, table in splits.items():
            examples = task.parse(_table(table))
            features = task.encode(examples, tokenizer)
            measured, predictions = measure(row["model"], task, module, tokenizer, examples, features,
                                            size_bytes=0, parameters=params or 0, precision=precision,
                                            batch_size=64, reference=reference.get(split))
            reference.setdefault(split, predictions)
            row[f"{split}_acc"] = round(measured["metric"], 4)
            row[f"{split}_agree"] = round(measured["agreement"], 4)
            if split == "validation":
                for b in ("batch1", "batch32"):
                    row[f"{b}_p50_ms"] = measured[b]["p50_ms"]
                    row[f"{b}_p95_ms"] = measured[b]["p95_ms"]
                    row[f"{b}_rows_s"] = measured[b]["rows_per_s"]
        rows.append(row)
    base = rows[0]
    for r in rows:
        r["b1_x"] = round(r["batch1_rows_s"] / base["batch1_rows_s"], 2)
        r["b32_x"] = round(r["batch32_rows_s"] / base["batch32_rows_s"], 2)
        r["smaller_x"] = round(base["size_mb"] / r["size_mb"], 2)
        r["val_drop_pts"] = round(100 * (base["validation_acc"] - r["validation_acc"]), 2)
    machine = {"cpu": cpu_name(), "threads": torch.get_num_threads(),
               "flags": cpu_flags(), "torch": torch.__version__}
    print(f"machine: {machine}")
    for r in rows:
        r["teacher_acc_pct"] = round(100 * r["validation_acc"] / base["validation_acc"], 2)
    print_table(rows, ["model", "size_mb", "smaller_x", "validation_acc", "heldout_acc", "val_drop_pts",
                       "teacher_acc_pct",
                       "validation_agree", "batch1_p50_ms", "batch1_rows_s", "b1_x", "batch32_p50_ms",
                       "batch32_rows_s", "b32_x", "gate"])
    print(f"wrote {write_json('compress', {'machine': machine, 'run': str(args.run), 'rows': rows})}")


def _table(rows: list[dict[str, Any]]) -> Any:
    from tunelab.data.readers import rows_table

    return rows_table(rows)


if __name__ == "__main__":
    main()
