"""Issue-5 experiments on SST-2 with MiniLM, run through the CLI as a user would:

  imbalance  a 10:1 imbalanced 3,000-row subset, trained with and without `train.class_weights: auto`
             → macro-F1 (and per-class recall) on the full validation split;
  augment    a 500-row subset with and without `data.augment` → validation accuracy, mean of the seeds.

Every run is `tunelab train` with the same hyperparameters except the lever under test. Prints a table
and writes benchmarks/results/training_levers.json.

    .venv/bin/python benchmarks/training_levers.py [--only imbalance|augment] [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, SHARED, print_table, read_jsonl, write_json

TUNELAB = str(Path(sys.executable).parent / "tunelab")
COMMON = ["model=minilm", "task=classification", "train.batch_size=32", "train.lr=5e-5", "train.warmup=0.06",
          "train.weight_decay=0.01", "train.save_steps=0", "train.log_steps=20", "data.max_length=128"]


def subset(rows: list[dict[str, Any]], counts: dict[str, int], seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for label, n in counts.items():
        out += rng.sample([r for r in rows if r["label"] == label], n)
    rng.shuffle(out)
    return out


def train(name: str, train_file: Path, sets: list[str], work: Path) -> dict[str, Any]:
    out = work / name
    cmd = [TUNELAB, "train", *[a for s in [*COMMON, f"data.train={train_file}",
                                           f"data.validation={SHARED / 'sst2' / 'validation.jsonl'}",
                                           f"output_dir={out}", *sets] for a in ("--set", s)]]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    metrics = json.loads((out / "metrics.json").read_text())
    v = metrics["validation"]
    summary = json.loads((out / "data_summary.json").read_text())
    return {"run": name, "wall_s": round(wall, 1), "train_rows": metrics["train"]["rows"]["train"],
            "accuracy": round(100 * v["accuracy"], 2), "macro_f1": round(100 * v["f1_macro"], 2),
            "recall_negative": round(100 * v["per_class"]["negative"]["recall"], 2),
            "recall_positive": round(100 * v["per_class"]["positive"]["recall"], 2),
            "loss": summary["applied"]["loss"], "augment": summary["applied"].get("augment"),
            "command": " ".join(cmd[1:])}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["imbalance", "augment", "search"])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seeds", default="1,2,3", help="Seeds of the augmentation comparison.")
    parser.add_argument("--work", default=str(ROOT / "runs" / "training-levers"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = read_jsonl(SHARED / "sst2" / "train.jsonl")
    results: dict[str, Any] = {}
    if args.only in (None, "imbalance"):
        data = write_rows(work / "imbalanced-3000.jsonl", subset(rows, {"positive": 2727, "negative": 273}, 0))
        runs = [train(f"imbalance-{name}", data, ["train.epochs=3", *extra], work)
                for name, extra in (("plain", []), ("class-weights-auto", ["train.class_weights=auto"]))]
        print_table(runs, ["run", "train_rows", "wall_s", "accuracy", "macro_f1", "recall_negative",
                           "recall_positive"])
        results["imbalance"] = runs
    if args.only in (None, "augment"):
        seeds = [int(s) for s in args.seeds.split(",")]
        data = write_rows(work / "balanced-500.jsonl", subset(rows, {"positive": 250, "negative": 250}, 0))
        aug = "data.augment={ops: [delete, swap, insert, synonym], ratio: 0.1, copies: 2}"
        runs = [train(f"augment-{name}-seed{seed}", data, ["train.epochs=5", f"train.seed={seed}", *extra], work)
                for seed in seeds for name, extra in (("none", []), ("on", [aug]))]
        print_table(runs, ["run", "train_rows", "wall_s", "accuracy", "macro_f1"])
        for name in ("none", "on"):
            acc = [r["accuracy"] for r in runs if f"-{name}-" in r["run"]]
            print(f"augment {name:4}: accuracy {statistics.mean(acc):.2f} ± {statistics.pstdev(acc):.2f} "
                  f"over seeds {seeds}")
        results["augment"] = runs
    if args.only in (None, "search"):
        results["search"] = search(rows, work, args.trials)
    path = ROOT / "benchmarks" / "results" / "training_levers.json"
    if path.exists():  # keep the parts not rerun now
        results = {**json.loads(path.read_text()), **results}
    write_json("training_levers", results)


SEARCH_SPACE = {
    "train.lr": {"type": "float", "low": 1.0e-5, "high": 2.0e-4, "log": True},
    "train.batch_size": {"type": "categorical", "choices": [16, 32]},
    "train.epochs": {"type": "categorical", "choices": [2, 3, 4]},
    "train.warmup": {"type": "float", "low": 0.0, "high": 0.2},
    "train.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
}


def search(rows: list[dict[str, Any]], work: Path, trials: int) -> dict[str, Any]:
    import yaml

    train_file = write_rows(work / "search-train-2000.jsonl", subset(rows, {"positive": 1000, "negative": 1000}, 1))
    validation = read_jsonl(SHARED / "sst2" / "validation.jsonl")
    random.Random(2).shuffle(validation)
    val_a = write_rows(work / "search-val-a.jsonl", validation[:2000])
    val_b = write_rows(work / "search-val-b.jsonl", validation[2000:])
    base = {"task": "classification", "model": "minilm", "output_dir": str(work / "search"),
            "data": {"train": str(train_file), "validation": str(val_a), "max_length": 128},
            "train": {"save_steps": 0, "log_steps": 20, "seed": 42}}
    config = work / "search.yaml"
    config.write_text(yaml.safe_dump({**base, "search": {"metric": "accuracy", "space": SEARCH_SPACE}}))
    t = time.perf_counter()
    subprocess.run([TUNELAB, "tune", str(config), "--trials", str(trials)], check=True, stdout=subprocess.DEVNULL)
    search_wall = time.perf_counter() - t
    table = json.loads((work / "search" / "tune" / "results.json").read_text())
    # the default config (tunelab's defaults for full fine-tuning) and the best trial's config, scored on val-B
    default_cfg = work / "default.yaml"
    default_cfg.write_text(yaml.safe_dump({**base, "output_dir": str(work / "search-default"),
                                           "data": {**base["data"], "test": str(val_b)}}))
    best = yaml.safe_load((work / "search" / "tune" / "best.yaml").read_text())
    best_cfg = work / "best.yaml"
    best["data"]["test"], best["output_dir"] = str(val_b), str(work / "search-best")
    best_cfg.write_text(yaml.safe_dump(best))
    scores = {}
    for name, cfg in (("default", default_cfg), ("best", best_cfg)):
        subprocess.run([TUNELAB, "train", str(cfg)], check=True, stdout=subprocess.DEVNULL)
        m = json.loads((work / f"search-{name}" / "metrics.json").read_text())
        scores[name] = {"val_a_accuracy": round(100 * m["validation"]["accuracy"], 2),
                        "val_b_accuracy": round(100 * m["test"]["accuracy"], 2),
                        "train": {k: yaml.safe_load(cfg.read_text())["train"].get(k) for k in
                                  ("lr", "batch_size", "epochs", "warmup", "weight_decay")}}
    print_table([{"config": k, **v, **v["train"]} for k, v in scores.items()],
                ["config", "val_a_accuracy", "val_b_accuracy", "lr", "batch_size", "epochs", "warmup",
                 "weight_decay"])
    return {"trials": table, "search_wall_s": round(search_wall, 1), "scores": scores, "space": SEARCH_SPACE}


if __name__ == "__main__":
    main()
