"""What a CUDA machine adds, checked from the CLI as a user runs it (tiny models built here, no network): bf16 chosen
by `precision: auto`, LoRA and QLoRA (bitsandbytes NF4) runs that train, reload and predict, on the GPU. Prints a
table and writes JSON. Never part of CI (CI has no GPU); run it where `torch.cuda.is_available()`.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import WORDS, make_tiny_bert, make_tiny_llama, say_rows, sentiment_rows, write_jsonl  # noqa: E402

os.environ.pop("TUNELAB_PRECISION", None)  # the tests pin fp32; here `precision: auto` is what is checked


def tiny_jobs(tmp: Path) -> tuple[Path, Path, Path, Path, Path, Path]:
    """A tiny BERT and Llama built from configs, and their train / validation files (classification, chat)."""
    return (make_tiny_bert(tmp / "bert"), make_tiny_llama(tmp / "llama"),
            write_jsonl(tmp / "cls_train.jsonl", sentiment_rows(64, 0)),
            write_jsonl(tmp / "cls_val.jsonl", sentiment_rows(40, 1)),
            write_jsonl(tmp / "chat_train.jsonl", say_rows(WORDS[:10] * 3)),
            write_jsonl(tmp / "chat_val.jsonl", say_rows(WORDS[:6])))


def train(name: str, tmp: Path, sets: list[str]) -> dict:
    out = tmp / name
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "tunelab", "train", *[a for s in [*sets, f"output_dir={out}"]
                                                                      for a in ("--set", s)]],
                         capture_output=True, text=True)
    row = {"run": name, "rc": res.returncode, "wall_s": round(time.perf_counter() - start, 1)}
    if res.returncode:
        return {**row, "error": res.stderr[-1500:]}
    metrics = json.loads((out / "metrics.json").read_text())
    train_info = metrics.get("train", {})
    row |= {"precision": train_info.get("precision"), "device": train_info.get("hardware", {}).get("device"),
            "validation": dict(list({k: round(v, 4) for k, v in metrics.get("validation", {}).items()
                                     if isinstance(v, float)}.items())[:2])}
    import tunelab

    model = tunelab.load(out)
    first = model.predict([{"messages": [{"role": "user", "content": "say good"}]}] if "sft" in sets[0]
                          else ["good film"])[0]
    row["predict"] = {k: v for k, v in first.items() if k in ("pred_label", "response")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    args = parser.parse_args()
    import torch

    env = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "bf16_supported": torch.cuda.is_available() and torch.cuda.is_bf16_supported()}
    try:
        import bitsandbytes

        env["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        env["bitsandbytes"] = None
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bert, llama, cls_train, cls_val, chat_train, chat_val = tiny_jobs(tmp)
        cls = ["task=classification", f"model={bert}", f"data.train={cls_train}", f"data.validation={cls_val}",
               "train.epochs=6", "train.lr=5e-3", "train.batch_size=8", "train.save_steps=0", "train.report=false"]
        sft = ["task=sft", f"model={llama}", f"data.train={chat_train}", f"data.validation={chat_val}",
               "train.epochs=25", "train.lr=5e-3", "train.batch_size=8", "train.save_steps=0", "train.report=false"]
        for name, sets in (("classification-full-auto", [*cls, "method=full"]),
                           ("classification-lora-auto", [*cls, "method=lora", "method.r=4"]),
                           ("classification-qlora", [*cls, "method=qlora", "method.r=4"]),
                           ("sft-lora-auto", [*sft, "method=lora", "method.r=4"]),
                           ("sft-qlora", [*sft, "method=qlora", "method.r=4"])):
            rows.append(train(name, tmp, sets))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{env}\n")
    print(f"{'run':28} {'rc':>3} {'wall s':>7} {'device':>7} {'precision':>9}  validation / predict")
    for r in rows:
        shown = r.get("error", "")[-200:] or f"{r.get('validation')} {r.get('predict')}"
        print(f"{r['run']:28} {r['rc']:>3} {r['wall_s']:>7} {str(r.get('device')):>7} {str(r.get('precision')):>9}  "
              f"{shown}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"environment": env, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
