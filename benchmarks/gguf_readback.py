"""GGUF in llama.cpp: a SmolLM2 SFT run exported with `tunelab export RUN --format gguf` (f16 and q8_0), loaded by
llama.cpp (the llama-cpp-python binding) and compared with the tuned model in transformers, all in this one
process, 2 threads. (Named gguf_readback.py, not gguf.py: the scripts put this folder first on sys.path, where a
gguf.py would shadow the `gguf` package that transformers reads GGUF models with.)

    python benchmarks/gguf_readback.py             # trains runs/bench-gguf once (alpaca-smollm2-lora.yaml, 25 steps)
    python benchmarks/gguf_readback.py --rows 20
    python benchmarks/gguf_readback.py --config examples/configs/tatoeba-en-zh-gemma3.yaml   # Gemma-3 (make gemma)

Rows: transformers fp32 eager (the tuned model, RUN/model) and bf16 autocast where the CPU has native bf16 (the
peer at its best precision), then llama.cpp on each GGUF file. Parity: next-token logits at the reply positions of
the first `--rows` validation rows (the tokens tunelab trained on), llama.cpp against transformers fp32 — greedy
agreement, the largest |Δlogit| and each model's loss on those reply tokens. Speed, batch 1: prompt processing
(one forward over the first 128 tokens of each of the 8 longest rows, tokens/s) and greedy generation of 64 new tokens
after them (tokens/s). Prints a table and
writes benchmarks/results/gguf.json with the CPU's name and flags.

llama-cpp-python is not a tunelab dependency; PyPI has its source only: `CMAKE_ARGS="-DGGML_NATIVE=ON"
pip install llama-cpp-python` builds it (about 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import ROOT, print_table, read_jsonl, write_json
from compress import cpu_flags, cpu_name
from tunelab.export.save import load_model
from tunelab.io import write_jsonl_atomic

PROMPT_TOKENS, NEW_TOKENS, PROMPTS = 128, 64, 8


def train_run(out: Path, config: Path, rows: int) -> Path:
    """The config trained 25 steps into `out` (once), validated on the first `rows` rows of its validation file."""
    import yaml

    data = out.parent / f"{out.name}-data"
    data.mkdir(parents=True, exist_ok=True)
    source = (yaml.safe_load(config.read_text()).get("data") or {}).get("validation")
    write_jsonl_atomic(data / "validation.jsonl", read_jsonl(ROOT / source, rows))
    if not (out / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "tunelab", "train", str(config), "--set", f"output_dir={out}",
                        "--set", f"data.validation={data / 'validation.jsonl'}", "--set", "train.max_steps=25",
                        "--set", "train.eval_steps=100000", "--set", "task.generation.eval_generate=false"],
                       check=True, cwd=ROOT)
    return data


def export(run: Path, quantize: str) -> Path:
    subprocess.run([sys.executable, "-m", "tunelab", "export", str(run), "--format", "gguf", "--quantize", quantize,
                    "--force"], check=True, cwd=ROOT)
    return run / "exports" / f"gguf-{quantize}" / "model.gguf"


def reply_positions(features: list[dict[str, Any]]) -> list[tuple[list[int], np.ndarray]]:
    """(token ids, positions whose next token is a trained reply token) of each row."""
    out = []
    for f in features:
        labels = np.asarray(f.get("labels", f["input_ids"]))
        keep = np.zeros(len(labels), dtype=bool)
        keep[:-1] = labels[1:] != -100
        out.append((list(f["input_ids"]), keep))
    return out


def torch_logits(model: Any, ids: list[int], precision: str) -> np.ndarray:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), ctx:
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def torch_speed(model: Any, prompts: list[list[int]], precision: str) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s): one forward over each prompt, then `generate` of NEW_TOKENS greedy
    tokens from it (KV cache) less the time of that prompt's forward."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    pp = tg = 0.0
    eos = model.config.eos_token_id
    with torch.inference_mode(), ctx:
        model(input_ids=torch.tensor([prompts[0]]))  # warm-up
        for ids in prompts:
            x = torch.tensor([ids])
            t = time.perf_counter()
            model(input_ids=x)
            prefill = time.perf_counter() - t
            t = time.perf_counter()
            model.generate(x, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                           pad_token_id=eos[0] if isinstance(eos, list) else eos)
            pp, tg = pp + prefill, tg + time.perf_counter() - t - prefill
    return sum(map(len, prompts)) / pp, len(prompts) * NEW_TOKENS / tg


def llama_model(path: Path, n_ctx: int) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, n_threads_batch=2, logits_all=True, verbose=False,
                 n_batch=512)


def llama_logits(llm: Any, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)  # a copy: `scores` is the context's own buffer


def llama_speed(llm: Any, prompts: list[list[int]]) -> tuple[float, float]:
    pp = tg = 0.0
    llama_logits(llm, prompts[0])  # warm-up
    for ids in prompts:
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        pp += time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(NEW_TOKENS - 1):  # greedy, one token at a time; the first comes from the prompt's logits
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([nxt])
        tg += time.perf_counter() - t
    return sum(map(len, prompts)) / pp, len(prompts) * NEW_TOKENS / tg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "configs" / "alpaca-smollm2-lora.yaml",
                        help="the SFT config trained 25 steps (e.g. examples/configs/tatoeba-en-zh-gemma3.yaml)")
    parser.add_argument("--run", type=Path, default=None, help="default: runs/bench-gguf, or runs/bench-gguf-CONFIG "
                        "for another config")
    parser.add_argument("--rows", type=int, default=50, help="validation rows compared position by position")
    args = parser.parse_args()
    torch.set_num_threads(2)
    os.environ["OMP_NUM_THREADS"] = "2"
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("llama-cpp-python is not installed: CMAKE_ARGS=\"-DGGML_NATIVE=ON\" pip install llama-cpp-python")
    default = args.config.name == "alpaca-smollm2-lora.yaml"
    args.run = args.run or ROOT / "runs" / ("bench-gguf" if default else f"bench-gguf-{args.config.stem}")
    train_run(args.run, args.config, args.rows)
    files = {q: export(args.run, q) for q in ("f16", "q8_0")}
    task, model, tokenizer = load_model(args.run / "model")
    model = model.float().eval()
    examples = task.parse(_table(read_jsonl(args.run.with_name(args.run.name + "-data") / "validation.jsonl")))
    rows_ = reply_positions(task.encode(examples, tokenizer))
    longest = max(len(ids) for ids, _ in rows_)
    prompts = [ids[:PROMPT_TOKENS] for ids, _ in sorted(rows_, key=lambda r: -len(r[0]))[:PROMPTS]]
    reference = [torch_logits(model, ids, "fp32") for ids, _ in rows_]
    peers: list[tuple[str, str, Any]] = [("transformers", "fp32", model)]
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        peers.append(("transformers", "bf16", model))  # the peer at its best precision on this CPU
    peers += [("llama.cpp", q, files[q]) for q in files]
    table: list[dict[str, Any]] = []
    for runtime, precision, obj in peers:
        row: dict[str, Any] = {"model": f"{runtime} {precision}"}
        if runtime == "llama.cpp":
            row["size_mb"] = round(obj.stat().st_size / 1e6, 1)
            llm = llama_model(obj, max(longest, PROMPT_TOKENS + NEW_TOKENS) + 8)
            logits = [llama_logits(llm, ids) for ids, _ in rows_]
            speed = llama_speed(llm, prompts)
        else:
            row["size_mb"] = round(sum(f.stat().st_size for f in (args.run / "model").glob("*.safetensors")) / 1e6, 1)
            logits = reference if precision == "fp32" else [torch_logits(obj, ids, precision) for ids, _ in rows_]
            speed = torch_speed(obj, prompts, precision)
        same = total = 0
        worst = nll = 0.0
        for (ids, keep), x, y in zip(rows_, reference, logits, strict=True):
            a, b = x[keep], y[keep]
            same += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += len(a)
            worst = max(worst, float(np.abs(a - b).max())) if len(a) else worst
            target = np.asarray(ids[1:])[keep[:-1]]  # the reply tokens those positions predict
            z = b.astype(np.float64)
            top = z.max(-1, keepdims=True)
            nll += float((np.log(np.exp(z - top).sum(-1)) + top[:, 0] - z[np.arange(len(z)), target]).sum())
        row.update(positions=total, reply_loss=round(nll / max(total, 1), 4),
                   greedy_agree=round(same / max(total, 1), 4), max_abs_dlogit=round(worst, 3),
                   prompt_tok_s=round(speed[0], 1), gen_tok_s=round(speed[1], 1))
        table.append(row)
    base = table[0]
    for r in table:
        r["prompt_x"] = round(r["prompt_tok_s"] / base["prompt_tok_s"], 2)
        r["gen_x"] = round(r["gen_tok_s"] / base["gen_tok_s"], 2)
    machine = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "flags": cpu_flags(), "torch": torch.__version__,
               "llama_cpp_python": __import__("llama_cpp").__version__}
    print(f"machine: {machine}")
    print_table(table, ["model", "size_mb", "positions", "reply_loss", "greedy_agree", "max_abs_dlogit",
                        "prompt_tok_s", "prompt_x", "gen_tok_s", "gen_x"])
    name = "gguf" if default else f"gguf-{args.config.stem}"
    result = {"machine": machine, "config": str(args.config), "run": str(args.run), "rows": table}
    print(f"wrote {write_json(name, result)}")


def _table(rows: list[dict[str, Any]]) -> Any:
    from tunelab.data.readers import rows_table

    return rows_table(rows)


if __name__ == "__main__":
    main()
