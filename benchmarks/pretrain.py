"""Continued pretraining (masked LM) — HF Trainer as its `run_mlm.py` example does it vs `tunelab train` with
`task: pretrain` — at every precision this CPU runs natively, on the same texts, blocks, hyperparameters and seeds,
interleaved so the machine's noise hits both alike.

    python benchmarks/pretrain.py [--rows 4000] [--seeds 1,2] [--only hf_bf16,tunelab_bf16]

Both sides: MiniLM (`AutoModelForMaskedLM`; the sentence-transformers checkpoint has no MLM head, so both start that
head from the same seeded random weights), AG News training texts with their [CLS] ... [SEP] concatenated and cut
into blocks of 256 tokens, 15 % of the tokens masked (80 / 10 / 10) afresh for every batch, batch 16, lr 5e-5,
1 epoch, warmup 6 %. HF: `DataCollatorForLanguageModeling`, `Trainer` with `bf16=True` where the CPU has native
bf16. Wall time is the training loop only (HF `train_runtime`, tunelab's `train.wall_s`). Validation loss: the mean
NLL of the masked tokens of the first 500 AG News validation texts' blocks (HF: the collator's random masks, the
mean of per-batch means, the last partial block dropped; tunelab: its fixed evaluation masks, the mean over all
masked tokens, every block — the same expectation, not the same positions).
Writes benchmarks/results/pretrain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TUNELAB_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from classification import native_bf16  # noqa: E402
from common import SHARED, cpu_name, print_table, read_jsonl, write_json  # noqa: E402

BS, LR, EPOCHS, WARMUP, BLOCK = 16, 5e-5, 1, 0.06, 256


def blocks(tok: object, texts: list[str]) -> list[dict]:
    """run_mlm.py's group_texts: every text with its special tokens, concatenated, cut into BLOCK tokens (tunelab
    keeps the shorter last block too; here it is dropped, as run_mlm.py does)."""
    ids = [i for t in texts for i in tok(t)["input_ids"]]  # type: ignore[operator]
    return [{"input_ids": ids[s:s + BLOCK]} for s in range(0, len(ids) - BLOCK + 1, BLOCK)]


def run_hf(train: list[str], val: list[str], seed: int, model_dir: str, bf16: bool) -> dict:
    from transformers import (
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tr, va = blocks(tok, train), blocks(tok, val)
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=BS, per_device_eval_batch_size=BS, learning_rate=LR,
            num_train_epochs=EPOCHS, warmup_steps=WARMUP, seed=seed, save_strategy="no", report_to=[],
            logging_steps=50, disable_tqdm=True, use_cpu=True, bf16=bf16)
        trainer = Trainer(model=model, args=args, train_dataset=tr, data_collator=collator)
        wall = trainer.train().metrics["train_runtime"]
        loss = trainer.evaluate(va)["eval_loss"]
    return {"wall_s": wall, "val_loss": loss, "tokens": len(tr) * BLOCK, "precision": "bf16" if bf16 else "fp32"}


def run_tunelab(train_path: str, val_path: str, seed: int, out: str, precision: str) -> dict:
    from tunelab.config.run import build_config
    from tunelab.pipeline import run

    cfg = build_config({
        "task": {"name": "pretrain", "objective": "mlm"}, "model": "minilm", "output_dir": out,
        "data": {"train": train_path, "validation": val_path, "max_length": BLOCK},
        "train": {"epochs": EPOCHS, "batch_size": BS, "lr": LR, "warmup": WARMUP, "seed": seed, "save_steps": 0,
                  "eval_batch_size": BS, "eval_steps": 10**9, "precision": precision, "report": False,
                  "baseline_eval": False},
    })
    m = run(cfg)
    t = m["train"]
    return {"wall_s": t["wall_s"], "val_loss": m["validation"]["loss"],
            "tokens": round(t["real_tokens_per_s"] * t["wall_s"]), "precision": t["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000, help="AG News training texts")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--only", default=None, help="configs to run (default: every one this CPU runs natively)")
    args = ap.parse_args()
    bf16 = native_bf16()
    from tunelab.models import resolve_model

    model_dir = resolve_model("minilm")
    train = [r["text"] for r in read_jsonl(SHARED / "ag_news" / "train.jsonl", args.rows)]
    val = [r["text"] for r in read_jsonl(SHARED / "ag_news" / "validation.jsonl", 500)]
    seeds = [int(s) for s in args.seeds.split(",")]
    default = ["hf_fp32", "tunelab_fp32"] + (["hf_bf16", "tunelab_bf16"] if bf16 else [])
    names = args.only.split(",") if args.only else default
    with tempfile.TemporaryDirectory() as tmp:
        tp, vp = Path(tmp) / "train.jsonl", Path(tmp) / "val.jsonl"
        tp.write_text("".join(json.dumps({"text": t}) + "\n" for t in train))
        vp.write_text("".join(json.dumps({"text": t}) + "\n" for t in val))
        runners = {
            "hf_fp32": lambda s: run_hf(train, val, s, model_dir, False),
            "hf_bf16": lambda s: run_hf(train, val, s, model_dir, True),
            "tunelab_fp32": lambda s: run_tunelab(str(tp), str(vp), s, str(Path(tmp) / f"fp32-{s}"), "fp32"),
            "tunelab_bf16": lambda s: run_tunelab(str(tp), str(vp), s, str(Path(tmp) / f"bf16-{s}"), "bf16"),
        }
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for s in seeds:  # interleaved
            for name in names:
                runs[name].append(runners[name](s))
                print(f"{name} seed {s}: {runs[name][-1]}", file=sys.stderr, flush=True)
    results = {n: {"precision": r[0]["precision"], "wall_s": round(statistics.mean(x["wall_s"] for x in r), 2),
                   "tokens": r[0]["tokens"], "val_loss": round(statistics.mean(x["val_loss"] for x in r), 4),
                   "runs": r} for n, r in runs.items()}
    rows = []
    for name, r in results.items():
        row = {"config": name, **{k: v for k, v in r.items() if k != "runs"}}
        peer = results.get(f"hf_{r['precision']}")
        if name.startswith("tunelab") and peer:
            row["speedup_vs_hf"] = round(peer["wall_s"] / r["wall_s"], 2)
        rows.append(row)
    print(f"\nCPU: {cpu_name()}; native bf16 (AVX-512-BF16/AMX): {'yes' if bf16 else 'no'}")
    print(f"ag_news {len(train)} texts -> blocks of {BLOCK}, MiniLM masked LM, bs {BS}, lr {LR}, {EPOCHS} epoch, "
          f"seeds {seeds}; threads {torch.get_num_threads()}\n")
    print_table(rows, ["config", "precision", "wall_s", "tokens", "val_loss", "speedup_vs_hf"])
    print(f"\nwrote {write_json('pretrain', {'rows': len(train), 'results': results, 'table': rows})}")


if __name__ == "__main__":
    main()
