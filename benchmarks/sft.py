"""TRL SFTTrainer (packing, completion-only loss) vs tunelab `task: sft`: the same alpaca_en rows, SmolLM2-135M,
LoRA r 16 / alpha 32 / dropout 0.05 on all linear layers, max_length 512, batch 8, lr 2e-4, warmup 3 %, one
epoch, the same seed and precision (bf16 autocast only where the CPU runs bf16 natively). Trainers: trl, tunelab,
tunelab_packed, tunelab_peft_forward (tunelab with train.fast_lora off: peft's own LoRA forward).

    python benchmarks/sft.py [--rows 300] [--val-rows 100] [--max-steps 0] [--only trl,tunelab,...] [--name NAME]
    python benchmarks/sft.py --rows 16 --val-rows 8 --max-steps 2          # smoke run
    python benchmarks/sft.py --only tunelab_packed --seed 1                # sft-seed1-tunelab_packed.json

Each trainer runs in its own subprocess, so its peak RSS (ru_maxrss of that process: model load, data
preparation, training, saving) is its own. Wall time is the training loop only (TRL: `train_runtime`;
tunelab: `metrics.json` train.wall_s); real tokens are the tokens of the training examples that were
processed — no padding, no packing filler (TRL: `num_input_tokens_seen`, its padding-free batches hold
none; tunelab: the attention-mask count of its loop). Both trained models are then scored by ONE
evaluator, tunelab's SFT validation loss (mean cross-entropy over assistant tokens, SmolLM2's own chat
template) on the same validation rows, in one further subprocess. Writes benchmarks/results/sft.json
(sft-smoke.json for runs with --max-steps or fewer than 300 rows).

Settings on each side, to give TRL its best: packing=True (best-fit decreasing, padding-free), no gradient
checkpointing (TRL's default turns it on), completion_only_loss on conversational prompt/completion rows
(alpaca → user turn "instruction\\n\\ninput", assistant turn "output", as tunelab maps them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TUNELAB_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import SHARED, print_table, read_jsonl, write_json  # noqa: E402

MAX_LEN, BS, LR, EPOCHS, WARMUP, SEED = 512, 8, 2e-4, 1, 0.03, 42
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
TRAINERS = ("trl", "tunelab", "tunelab_packed", "tunelab_peft_forward")  # the last: train.fast_lora off


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def precision() -> str:
    import torch

    from tunelab.models.precision import resolve_precision

    return resolve_precision("auto", torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def alpaca_user(row: dict[str, Any]) -> str:
    return row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")


def run_trl(work: Path, max_steps: int, model_dir: str) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    hf_logging.set_verbosity_error()
    rows = read_jsonl(work / "train.jsonl")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": alpaca_user(r)}],
                               "completion": [{"role": "assistant", "content": r["output"]}]} for r in rows])
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = SFTConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=BS, learning_rate=LR, num_train_epochs=EPOCHS,
        max_steps=max_steps or -1, warmup_steps=WARMUP, lr_scheduler_type="linear", weight_decay=0.0,
        max_grad_norm=1.0, seed=SEED, data_seed=SEED, save_strategy="no", report_to=[], logging_steps=10,
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), bf16=precision() == "bf16",
        gradient_checkpointing=False, max_length=MAX_LEN, packing=True, completion_only_loss=True,
        include_num_input_tokens_seen="all", dataloader_num_workers=0,
    )
    peft_cfg = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_cfg)
    out = trainer.train()
    trainer.save_model(str(work / "trl" / "adapter"))
    return {"wall_s": out.metrics["train_runtime"], "real_tokens": int(trainer.state.num_input_tokens_seen),
            "steps": trainer.state.global_step, "train_loss": out.training_loss, "rows_per_step": BS,
            "model": str(work / "trl" / "adapter"), "adapter_of": model_dir}


def run_tunelab(work: Path, max_steps: int, packing: bool, name: str, fast_lora: bool = True) -> dict[str, Any]:
    from tunelab.config.run import build_config
    from tunelab.pipeline import run

    train: dict[str, Any] = {"epochs": EPOCHS, "batch_size": BS, "lr": LR, "warmup": WARMUP, "seed": SEED,
                             "weight_decay": 0.0, "max_grad_norm": 1.0, "save_steps": 0, "log_steps": 10,
                             "fast_lora": fast_lora}
    if max_steps:
        train["max_steps"] = max_steps
    cfg = build_config({
        "task": {"name": "sft", "packing": packing}, "model": "smollm2-135m", "output_dir": str(work / name),
        "method": {"name": "lora", **LORA, "target_modules": "all-linear"},
        "data": {"train": str(work / "train.jsonl"), "validation_split": 0.0, "max_length": MAX_LEN},
        "train": train,
    })
    t = run(cfg)["train"]
    return {"wall_s": t["wall_s"], "real_tokens": round(t["real_tokens_per_s"] * t["wall_s"]), "steps": t["steps"],
            "train_loss": t["loss"], "padding_pct": t["padding_pct"], "model": str(work / name / "model")}


def evaluate_models(work: Path, runs: dict[str, dict[str, Any]], model_dir: str) -> dict[str, dict[str, Any]]:
    """One evaluator for every trained model: tunelab's SFT validation loss on the same rows and template."""
    from functools import partial

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.config.run import run_config_class
    from tunelab.config.sections import DataConfig
    from tunelab.data.readers import read_table

    run_config_class()
    from tunelab.tasks.sft import Sft, SftConfig

    task = Sft(SftConfig(), DataConfig(max_length=MAX_LEN))
    examples = task.parse(read_table(str(work / "validation.jsonl")))
    tok = AutoTokenizer.from_pretrained(model_dir)  # the base tokenizer for all: the same tokens and labels
    feats = task.encode(examples, tok)
    out = {}
    for name, r in {"base": {"model": model_dir}, **runs}.items():
        if "adapter_of" in r:
            from peft import PeftModel

            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(r["adapter_of"]), r["model"])
            model = model.merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(r["model"])
        with torch.no_grad():
            m = task.metrics(task.logits(model, feats, partial(task.collate, pad_id=tok.pad_token_id), 16), examples)
        out[name] = {"val_loss": round(m["loss"], 4), "val_tokens": m["tokens"]}
        print(f"eval {name}: {out[name]}", file=sys.stderr, flush=True)
    return out


def child(args: argparse.Namespace) -> None:
    from tunelab.models import resolve_model

    work = Path(args.work)
    model_dir = resolve_model("smollm2-135m")
    t0 = time.perf_counter()
    if args.child == "trl":
        result = run_trl(work, args.max_steps, model_dir)
    elif args.child == "eval":
        result = evaluate_models(work, json.loads((work / "runs.json").read_text()), model_dir)
    else:
        result = run_tunelab(work, args.max_steps, args.child == "tunelab_packed", args.child,
                             fast_lora=args.child != "tunelab_peft_forward")
    if args.child != "eval":
        result.update(peak_rss_gb=round(peak_rss_gb(), 2), process_s=round(time.perf_counter() - t0, 1),
                      precision=precision())
    (work / f"{args.child}.json").write_text(json.dumps(result))


def spawn(name: str, work: Path, max_steps: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, "--work", str(work), "--max-steps", str(max_steps),
           "--seed", str(SEED)]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: subprocess failed with exit code {proc.returncode}")
    return json.loads((work / f"{name}.json").read_text())


def main() -> None:
    global SEED
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300, help="alpaca_en training rows (the first N)")
    ap.add_argument("--val-rows", type=int, default=100, help="alpaca_en validation rows (the first N)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop each trainer after N optimizer steps (0: 1 epoch)")
    ap.add_argument("--only", default=",".join(TRAINERS))
    ap.add_argument("--seed", type=int, default=SEED, help="seed of both trainers (LoRA init, data order, dropout)")
    ap.add_argument("--name", help="the JSON's name in benchmarks/results (default: sft, or sft-seedN-...)")
    ap.add_argument("--child", choices=[*TRAINERS, "eval"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    SEED = args.seed
    if args.child:
        return child(args)
    names = args.only.split(",")
    if unknown := set(names) - set(TRAINERS):
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {', '.join(TRAINERS)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for split, n in (("train", args.rows), ("validation", args.val_rows)):
            rows = read_jsonl(SHARED / "alpaca_en" / f"{split}.jsonl", n)
            (work / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        runs = {}
        for name in names:
            runs[name] = spawn(name, work, args.max_steps)
            print(f"{name}: {runs[name]}", file=sys.stderr, flush=True)
        (work / "runs.json").write_text(json.dumps(runs))
        scores = spawn("eval", work, args.max_steps)
    table = []
    for name, r in runs.items():
        row = {"trainer": name, "wall_s": round(r["wall_s"], 1), "steps": r["steps"],
               "real_tok_per_s": round(r["real_tokens"] / max(r["wall_s"], 1e-9), 1), **scores[name],
               "peak_rss_gb": r["peak_rss_gb"], "precision": r["precision"]}
        if name != "trl" and "trl" in runs:
            trl_speed = runs["trl"]["real_tokens"] / max(runs["trl"]["wall_s"], 1e-9)  # = wall ratio on equal data
            row["speedup_vs_trl"] = round(row["real_tok_per_s"] / trl_speed, 2)
            row["rss_vs_trl"] = round(r["peak_rss_gb"] / runs["trl"]["peak_rss_gb"], 2)
        table.append(row)
    import torch

    print(f"\nalpaca_en {args.rows} train rows, {args.val_rows} validation rows, SmolLM2-135M, LoRA r {LORA['r']} "
          f"alpha {LORA['alpha']} all-linear, max_length {MAX_LEN}, batch {BS}, lr {LR}, "
          f"{f'{args.max_steps} steps' if args.max_steps else f'{EPOCHS} epoch'}, seed {SEED}; "
          f"threads {torch.get_num_threads()}; base model validation loss {scores['base']['val_loss']}\n")
    print_table(table, ["trainer", "wall_s", "steps", "real_tok_per_s", "val_loss", "peak_rss_gb", "precision",
                        "speedup_vs_trl", "rss_vs_trl"])
    smoke = bool(args.max_steps) or args.rows < 300  # a smoke run does not overwrite the real result
    name = args.name or ("sft-smoke" if smoke else "sft" if SEED == 42 else f"sft-seed{SEED}-{'+'.join(names)}")
    path = write_json(name, {
        "rows": args.rows, "val_rows": args.val_rows, "max_steps": args.max_steps,
        "settings": {"max_length": MAX_LEN, "batch_size": BS, "lr": LR, "epochs": EPOCHS, "warmup": WARMUP,
                     "seed": SEED, "lora": LORA},
        "runs": runs, "scores": scores, "table": table})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
