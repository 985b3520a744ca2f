"""HF Trainer vs tunelab, each at its best configuration and at every precision this CPU runs natively: the
same 4,000 SST-2 rows, MiniLM, identical hyperparameters (bs 32, lr 5e-5, 1 epoch, max_length 128, warmup 6 %),
the same seeds, interleaved so the machine's noise hits every configuration alike. HF Trainer runs with
length grouping, fp32 and (where the CPU has AVX-512-BF16 / AMX) `bf16=True`; tunelab at fp32 and bf16 autocast.
Each tunelab row is compared with the fastest HF row of the same precision.

    python benchmarks/classification.py [--rows 4000] [--seeds 1,2,3] [--eval-rows 0]
    python benchmarks/classification.py --dataset ag_news --max-length 256 --rows 2000   # long texts

Prints wall time (training loop only, model load and tokenisation excluded for both), real
(non-pad) tokens/s, model-FLOPs utilisation against this machine's matmul peak (fp32, or bf16 for a
bf16 run) measured in the same run, and validation accuracy (mean over seeds).
Writes benchmarks/results/classification.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TUNELAB_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import (  # noqa: E402
    SHARED,
    cpu_name,
    encoder_train_flops,
    matmul_peak_gflops,
    print_table,
    read_jsonl,
    write_json,
)

BS, LR, EPOCHS, WARMUP = 32, 5e-5, 1, 0.06
MAX_LEN = 128  # --max-length


def native_bf16() -> bool:
    """The CPU multiplies bf16 natively (AVX-512-BF16 or AMX); without it bf16 is ~3x slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def load_data(dataset: str, rows: int, eval_rows: int) -> tuple[list[dict], list[dict]]:
    train = read_jsonl(SHARED / dataset / "train.jsonl", rows)
    val = read_jsonl(SHARED / dataset / "validation.jsonl", eval_rows or None)
    return train, val


def run_hf(train: list[dict], val: list[dict], seed: int, group: bool, model_dir: str, bf16: bool = False) -> dict:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    labels = sorted({r["label"] for r in train})
    tok = AutoTokenizer.from_pretrained(model_dir)

    class DS(torch.utils.data.Dataset):
        def __init__(self, rows: list[dict]) -> None:
            enc = tok([r["text"] for r in rows], truncation=True, max_length=MAX_LEN)
            self.items = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                           "attention_mask": enc["attention_mask"][i], "labels": labels.index(r["label"])}
                          for i, r in enumerate(rows)]

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> dict:
            return self.items[i]

    tr, va = DS(train), DS(val)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=BS, per_device_eval_batch_size=64, learning_rate=LR,
            num_train_epochs=EPOCHS, warmup_steps=WARMUP, seed=seed, save_strategy="no", report_to=[],
            logging_steps=50, disable_tqdm=True, use_cpu=True, bf16=bf16,
            train_sampling_strategy="group_by_length" if group else "random",
        )
        trainer = Trainer(model=model, args=args, train_dataset=tr, data_collator=DataCollatorWithPadding(tok))
        wall = trainer.train().metrics["train_runtime"]
        pred = trainer.predict(va)
    acc = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    return {"wall_s": wall, "accuracy": acc, "real_tokens": sum(len(x["input_ids"]) for x in tr.items),
            "precision": "bf16" if bf16 else "fp32"}


def run_tunelab(train_path: str, val_path: str, seed: int, out: str, precision: str = "auto",
                sparse: bool = True) -> dict:
    from tunelab.config.run import build_config
    from tunelab.pipeline import run

    cfg = build_config({
        "task": "classification", "model": "minilm", "output_dir": out,
        "data": {"train": train_path, "validation": val_path, "max_length": MAX_LEN},
        "train": {"epochs": EPOCHS, "batch_size": BS, "lr": LR, "warmup": WARMUP, "seed": seed,
                  "save_steps": 0, "eval_batch_size": 64, "eval_steps": 10**9, "precision": precision,
                  "report": False, "sparse_embeddings": sparse},
    })
    m = run(cfg)
    t = m["train"]
    return {"wall_s": t["wall_s"], "accuracy": m["validation"]["accuracy"],
            "real_tokens": round(t["real_tokens_per_s"] * t["wall_s"]), "precision": t["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--eval-rows", type=int, default=0, help="0 = the whole validation split")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--dataset", default="sst2", help="a folder of ../shared/data with train/validation.jsonl")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--only", default=None, help="configs to run (default: every one this CPU runs natively)")
    args = ap.parse_args()
    global MAX_LEN
    MAX_LEN = args.max_length
    bf16 = native_bf16()
    default = ["hf_grouped", "tunelab_fp32"] + (["hf_grouped_bf16", "tunelab_bf16"] if bf16 else [])
    from transformers import AutoConfig

    from tunelab.models import resolve_model

    model_dir = resolve_model("minilm")
    config = AutoConfig.from_pretrained(model_dir)
    train, val = load_data(args.dataset, args.rows, args.eval_rows)
    seeds = [int(s) for s in args.seeds.split(",")]
    peaks = {"fp32": matmul_peak_gflops(), "bf16": matmul_peak_gflops(torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        import json

        tp, vp = Path(tmp) / "train.jsonl", Path(tmp) / "val.jsonl"
        tp.write_text("".join(json.dumps(r) + "\n" for r in train))
        vp.write_text("".join(json.dumps(r) + "\n" for r in val))
        runners = {
            "hf_default": lambda s: run_hf(train, val, s, False, model_dir),
            "hf_grouped": lambda s: run_hf(train, val, s, True, model_dir),
            "hf_grouped_bf16": lambda s: run_hf(train, val, s, True, model_dir, bf16=True),
            "tunelab_fp32": lambda s: run_tunelab(str(tp), str(vp), s, str(Path(tmp) / f"fp32-{s}"), "fp32"),
            "tunelab_bf16": lambda s: run_tunelab(str(tp), str(vp), s, str(Path(tmp) / f"bf16-{s}"), "bf16"),
            # train.sparse_embeddings off: what the word-embedding row gradients buy (not in the default set)
            "tunelab_fp32_dense": lambda s: run_tunelab(str(tp), str(vp), s, str(Path(tmp) / f"fd-{s}"), "fp32", False),
            "tunelab_bf16_dense": lambda s: run_tunelab(str(tp), str(vp), s, str(Path(tmp) / f"bd-{s}"), "bf16", False),
        }
        names = args.only.split(",") if args.only else default
        all_runs: dict[str, list[dict]] = {n: [] for n in names}
        for s in seeds:  # interleaved, so a slow patch of the machine hits every configuration alike
            for name in names:
                r = runners[name](s)
                print(f"{name} seed {s}: {r}", file=sys.stderr, flush=True)
                all_runs[name].append(r)
        results = {}
        for name, runs in all_runs.items():
            wall = statistics.mean(r["wall_s"] for r in runs)
            tokens = runs[0]["real_tokens"]
            mean_len = tokens / len(train)
            flops = encoder_train_flops(config, tokens, mean_len)
            precision = runs[0]["precision"]
            peak = peaks.get(precision, peaks["fp32"])
            results[name] = {"precision": precision,
                "wall_s": round(wall, 2), "real_tok_per_s": round(tokens / wall, 1),
                "mfu_pct": round(100 * flops / wall / (peak * 1e9), 1),
                "accuracy": round(100 * statistics.mean(r["accuracy"] for r in runs), 2),
                "accuracy_std": round(100 * (statistics.stdev(r["accuracy"] for r in runs) if len(runs) > 1 else 0), 2),
                "runs": runs,
            }
    rows = []
    for name, r in results.items():
        row = {"config": name, **{k: v for k, v in r.items() if k != "runs"}}
        peers = [k for k, v in results.items() if k.startswith("hf") and v["precision"] == r["precision"]]
        if name.startswith("tunelab") and peers:  # against the fastest HF configuration of the same precision
            best = min(peers, key=lambda k: results[k]["wall_s"])
            row["vs"] = best
            row["speedup_vs_best_hf"] = round(results[best]["wall_s"] / r["wall_s"], 2)
            row["acc_delta_vs_best_hf"] = round(r["accuracy"] - results[best]["accuracy"], 2)
        rows.append(row)
    cpu = cpu_name()
    print(f"\nCPU: {cpu}; native bf16 (AVX-512-BF16/AMX): {'yes' if bf16 else 'no'}")
    print(f"{args.dataset} {len(train)} rows, MiniLM, bs {BS}, lr {LR}, {EPOCHS} epoch, max_length {MAX_LEN}, "
          f"warmup {WARMUP:.0%}, seeds {seeds}; matmul peak fp32 {peaks['fp32']:.0f}, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s (MFU against the run's precision); "
          f"validation {len(val)} rows; threads {torch.get_num_threads()}\n")
    print_table(rows, ["config", "precision", "wall_s", "real_tok_per_s", "mfu_pct", "accuracy", "accuracy_std",
                       "vs", "speedup_vs_best_hf", "acc_delta_vs_best_hf"])
    name = "classification" if args.dataset == "sst2" else f"classification-{args.dataset}-{MAX_LEN}"
    path = write_json(name, {"dataset": args.dataset, "max_length": MAX_LEN, "cpu": cpu, "native_bf16": bf16,
                             "rows": len(train), "seeds": seeds, "peak_gflops": peaks,
                                         "results": results, "table": rows, "numpy": np.__version__})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
