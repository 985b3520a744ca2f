"""FSDP2 and DeepSpeed ZeRO on a CUDA machine, from the CLI as a user runs them (`tunelab train --nproc N` with
`train.distributed`), each beside the same run in one plain process: the loss curves, the validation metric, the saved
model's size and tensors, and a resume from a mid-run checkpoint. Prints a table and writes JSON. Never part of CI;
run it where `torch.cuda.is_available()` (and `pip install deepspeed` for the ZeRO rows).

    python benchmarks/gpu_distributed.py --nproc 1 --out benchmarks/results/gpu_distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_check import tiny_jobs  # noqa: E402

os.environ.pop("TUNELAB_PRECISION", None)  # `precision: auto` (bf16 on the GPU) is what runs


def train(out: Path, sets: list[str], launch: list[str], resume: str | None = None) -> tuple[int, float, str]:
    cmd = [sys.executable, "-m", "tunelab", "train", *[a for s in [*sets, f"output_dir={out}"] for a in ("--set", s)],
           *launch, *(["--resume", resume] if resume else [])]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TUNELAB_NO_PROGRESS": "1"})
    log = res.stdout + res.stderr
    where = [line for line in log.splitlines() if "tunelab/" in line or "Error" in line][-12:]
    return res.returncode, round(time.perf_counter() - start, 1), "\n".join(where) + "\n" + log[-800:]


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def compare(out: Path, ref: Path) -> dict:
    """This run beside the one-process reference: curve, metric, model files."""
    from safetensors.torch import load_file

    got, want = losses(out), losses(ref)
    common = sorted(set(got) & set(want))
    rel = max(abs(got[s] - want[s]) / max(abs(want[s]), 1e-9) for s in common)
    m, r = (json.loads((d / "metrics.json").read_text()) for d in (out, ref))
    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (out, ref))
    return {
        "steps": m["train"]["steps"], "precision": m["train"]["precision"], "device": m["train"]["hardware"]["device"],
        "processes": m["train"]["hardware"]["processes"], "loss_curve_max_rel_diff": round(rel, 6),
        "validation": {k: round(v, 4) for k, v in m["validation"].items() if k in ("accuracy", "loss")},
        "reference_validation": {k: round(v, 4) for k, v in r["validation"].items() if k in ("accuracy", "loss")},
        "model_bytes": (out / "model" / "model.safetensors").stat().st_size,
        "reference_model_bytes": (ref / "model" / "model.safetensors").stat().st_size,
        "same_tensor_names_shapes": {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape)
                                                                                 for k, v in b.items()},
        "max_abs_weight_diff": round(max(float((a[k].float() - b[k].float()).abs().max()) for k in b), 6),
        "nonzero_fraction": round(sum(int((v != 0).sum()) for v in a.values()) / sum(v.numel() for v in a.values()), 6),
        "reference_nonzero_fraction": round(sum(int((v != 0).sum()) for v in b.values())
                                            / sum(v.numel() for v in b.values()), 6),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--only", action="append", default=[], help="JOB:STRATEGY rows to run (repeatable).")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_distributed.json"))
    args = parser.parse_args()
    import torch

    env = {"torch": torch.__version__, "gpus": torch.cuda.device_count(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import deepspeed

        env["deepspeed"] = deepspeed.__version__
    except Exception as e:  # noqa: BLE001 - an import that fails for any reason means no ZeRO rows
        env["deepspeed"] = f"unavailable: {type(e).__name__}: {e}"[:300]
    rows: list[dict] = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bert, llama, cls_train, cls_val, chat_train, chat_val = tiny_jobs(tmp)
        common = ["train.batch_size=8", "train.save_steps=4", "train.report=false", "train.log_steps=1",
                  "train.dropout=0", "train.save_total_limit=10"]
        jobs = {
            "classification-full": ["task=classification", f"model={bert}", f"data.train={cls_train}",
                                    f"data.validation={cls_val}", "train.epochs=3", "train.lr=5e-3", "method=full",
                                    *common],
            "sft-lora": ["task=sft", f"model={llama}", f"data.train={chat_train}", f"data.validation={chat_val}",
                         "train.epochs=6", "train.lr=5e-3", "method=lora", "method.r=4", *common],
        }
        strategies = [("fsdp", ["train.distributed.strategy=fsdp"]),
                      ("deepspeed-zero2", ["train.distributed.strategy=deepspeed", "train.distributed.zero_stage=2"]),
                      ("deepspeed-zero3", ["train.distributed.strategy=deepspeed", "train.distributed.zero_stage=3"]),
                      ("deepspeed-zero2-offload", ["train.distributed.strategy=deepspeed",
                                                   "train.distributed.offload=true"])]
        for job, sets in jobs.items():
            if args.only and not any(o.startswith(f"{job}:") for o in args.only):
                continue
            ref = tmp / f"{job}-ref"
            rc, wall, log = train(ref, sets, [])
            rows.append({"job": job, "strategy": "one process (reference)", "rc": rc, "wall_s": wall,
                         **({"error": log} if rc else {"validation": losses(ref) and json.loads(
                             (ref / "metrics.json").read_text())["validation"].get("accuracy")})})
            print(json.dumps(rows[-1]), flush=True)
            for name, extra in strategies:
                if args.only and f"{job}:{name}" not in args.only:
                    continue
                out = tmp / f"{job}-{name}"
                rc, wall, log = train(out, [*sets, *extra], ["--nproc", str(args.nproc)])
                row: dict = {"job": job, "strategy": name, "nproc": args.nproc, "rc": rc, "wall_s": wall}
                if rc:
                    row["error"] = log
                else:
                    row |= compare(out, ref)
                    # resume from the step-4 checkpoint (the later history is replaced): the same curve again
                    first = dict(losses(out))
                    rc2, _, log2 = train(out, [*sets, *extra], ["--nproc", str(args.nproc)],
                                         resume=str(out / "checkpoints" / "step-00000004"))
                    again = losses(out) if rc2 == 0 else {}
                    row["resume_rc"] = rc2
                    row["resume_curve_max_rel_diff"] = round(max(
                        (abs(again[s] - first[s]) / max(abs(first[s]), 1e-9) for s in first if s in again),
                        default=float("nan")), 6) if again else None
                    if rc2:
                        row["resume_error"] = log2
                rows.append(row)
                print(json.dumps(rows[-1]), flush=True)
                Path(args.out).write_text(json.dumps({"environment": env, "runs": rows}, indent=1) + "\n")
                shutil.rmtree(out, ignore_errors=True)
    print(f"\n{env}\n")
    print(f"{'job':20} {'strategy':24} {'rc':>3} {'wall s':>7} {'prec':>5} {'curve Δ':>9} {'weights Δ':>9} "
          f"{'bytes = ref':>11} {'resume Δ':>9}")
    for r in rows:
        print(f"{r['job']:20} {r['strategy']:24} {r['rc']:>3} {r['wall_s']:>7} {str(r.get('precision', '')):>5} "
              f"{str(r.get('loss_curve_max_rel_diff', '')):>9} {str(r.get('max_abs_weight_diff', '')):>9} "
              f"{str(r.get('model_bytes') == r.get('reference_model_bytes') if 'model_bytes' in r else ''):>11} "
              f"{str(r.get('resume_curve_max_rel_diff', '')):>9}  {r.get('error', '')[-300:]}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"environment": env, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
