"""HF Trainer (group_by_length) vs tunelab on CoNLL-2003 NER with MiniLM: the same sentences,
hyperparameters and seeds (interleaved), at fp32 and — where the CPU has native bf16 — both at bf16
(`bf16=True` / bf16 autocast); both scored by one evaluator (tunelab's seqeval metrics on first-subword
word tags). Each tunelab row is compared with the HF row of the same precision.

    python benchmarks/ner.py [--rows 4000] [--epochs 1] [--seeds 1]

Writes benchmarks/results/ner.json.
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from common import SHARED, print_table, read_jsonl, write_json  # noqa: E402

BS, LR, MAX_LEN, WARMUP = 32, 1e-4, 128, 0.06


def _task(labels: list[str]):
    from tunelab.config.run import run_config_class
    from tunelab.config.sections import DataConfig

    run_config_class()
    from tunelab.tasks.ner import Ner, NerConfig

    task = Ner(NerConfig(), DataConfig(max_length=MAX_LEN))
    task.labels = labels
    return task


def run_hf(train: list[dict], val: list[dict], labels: list[str], epochs: float, seed: int, model_dir: str,
           bf16: bool = False) -> dict:
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(model_dir)
    task = _task(labels)
    tr_ex = [
        {"tokens": r["tokens"], "tags": r["tags"], "source": "t", "line": i, "row": r} for i, r in enumerate(train)
    ]
    va_ex = [{"tokens": r["tokens"], "tags": r["tags"], "source": "v", "line": i, "row": r} for i, r in enumerate(val)]
    tr = [{**f, "attention_mask": [1] * len(f["input_ids"])} for f in task.encode(tr_ex, tok)]
    va = [{**f, "attention_mask": [1] * len(f["input_ids"])} for f in task.encode(va_ex, tok)]
    torch.manual_seed(seed)
    model = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=len(labels))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=BS,
            per_device_eval_batch_size=64,
            learning_rate=LR,
            num_train_epochs=epochs,
            warmup_steps=WARMUP,
            weight_decay=0.01,
            seed=seed,
            save_strategy="no",
            report_to=[],
            logging_steps=50,
            disable_tqdm=True,
            use_cpu=True,
            train_sampling_strategy="group_by_length",
            bf16=bf16,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=tr, data_collator=DataCollatorForTokenClassification(tok)
        )
        wall = trainer.train().metrics["train_runtime"]
        # transformers 5 also length-groups (shuffles) evaluation batches under group_by_length, so
        # predictions would come back out of order: predict with a plain sequential Trainer
        pred_args = TrainingArguments(output_dir=out, per_device_eval_batch_size=64, report_to=[],
                                      disable_tqdm=True, use_cpu=True)
        logits = Trainer(model=model, args=pred_args, data_collator=DataCollatorForTokenClassification(tok)
                         ).predict(va).predictions
    per_row = [lg[: len(f["input_ids"])] for lg, f in zip(logits, va, strict=True)]
    m = task.metrics(per_row, va_ex)
    real = sum(len(f["input_ids"]) for f in tr) * epochs
    return {"wall_s": round(wall, 2), "f1": round(100 * m["f1"], 2), "real_tok_per_s": round(real / wall, 1),
            "precision": "bf16" if bf16 else "fp32"}


def run_tunelab(train_path: str, val_path: str, epochs: float, seed: int, out: str, precision: str) -> dict:
    from tunelab.config.run import build_config
    from tunelab.pipeline import run

    cfg = build_config(
        {
            "task": "ner",
            "model": "minilm",
            "output_dir": out,
            "data": {"train": train_path, "validation": val_path, "max_length": MAX_LEN},
            "train": {
                "epochs": epochs,
                "batch_size": BS,
                "lr": LR,
                "warmup": WARMUP,
                "weight_decay": 0.01,
                "seed": seed,
                "save_steps": 0,
                "eval_steps": 10**9,
                "precision": precision,
                "report": False,
            },
        }
    )
    m = run(cfg)
    t = m["train"]
    return {
        "wall_s": t["wall_s"],
        "f1": round(100 * m["validation"]["f1"], 2),
        "real_tok_per_s": t["real_tokens_per_s"],
        "precision": t["precision"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--seeds", default="1")
    args = ap.parse_args()
    from classification import native_bf16
    from tunelab.models import resolve_model

    train = read_jsonl(SHARED / "conll2003" / "train.jsonl", args.rows)
    val = read_jsonl(SHARED / "conll2003" / "validation.jsonl")
    types = sorted({t[2:] for r in train for t in r["tags"] if t != "O"})
    labels = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
    seeds = [int(x) for x in args.seeds.split(",")]
    precisions = ["fp32", "bf16"] if native_bf16() else ["fp32"]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tp, vp = Path(tmp) / "train.jsonl", Path(tmp) / "val.jsonl"
        tp.write_text("".join(json.dumps(r) + "\n" for r in train))
        vp.write_text("".join(json.dumps(r) + "\n" for r in val))
        for seed in seeds:  # interleaved: the machine's noise hits every configuration alike
            for p in precisions:
                hf = run_hf(train, val, labels, args.epochs, seed, resolve_model("minilm"), bf16=p == "bf16")
                print(f"hf_grouped {p} seed {seed}: {hf}", file=sys.stderr, flush=True)
                ours = run_tunelab(str(tp), str(vp), args.epochs, seed, str(Path(tmp) / f"run-{p}-{seed}"), p)
                print(f"tunelab {p} seed {seed}: {ours}", file=sys.stderr, flush=True)
                runs.setdefault(f"hf_grouped_{p}", []).append(hf)
                runs.setdefault(f"tunelab_{p}", []).append(ours)
    mean = {k: {m: round(sum(r[m] for r in v) / len(v), 2) for m in ("wall_s", "f1", "real_tok_per_s")}
            | {"precision": v[0]["precision"]} for k, v in runs.items()}
    rows = []
    for p in precisions:
        hf, ours = mean[f"hf_grouped_{p}"], mean[f"tunelab_{p}"]
        rows += [{"config": f"hf_grouped_{p}", **hf},
                 {"config": f"tunelab_{p}", **ours, "speedup": round(hf["wall_s"] / ours["wall_s"], 2),
                  "f1_delta": round(ours["f1"] - hf["f1"], 2)}]
    print(f"\nnative bf16 (AVX-512-BF16/AMX): {'yes' if native_bf16() else 'no'}; CoNLL-2003 {len(train)} train "
          f"sentences, {len(val)} validation, MiniLM, bs {BS}, lr {LR}, {args.epochs} epoch(s), max_length {MAX_LEN}, "
          f"seeds {seeds} (means)\n")
    print_table(rows, ["config", "precision", "wall_s", "real_tok_per_s", "f1", "speedup", "f1_delta"])
    path = write_json("ner", {"rows": len(train), "epochs": args.epochs, "seeds": seeds, "native_bf16": native_bf16(),
                              "table": rows, "runs": runs})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
