"""Load test of `tunelab serve` on loopback: N concurrent clients for T seconds against a server started as its own
process (`tunelab serve RUN --torch`), with dynamic batching on (the defaults) and off (`--max-batch 1`); plus one
client against an in-process `Model.predict` call, and chat streams (1 and 8 concurrent) for a chat model.

    python benchmarks/serve_load.py --run runs/bench-compress --clients 200 --seconds 30
    python benchmarks/serve_load.py --run runs/bench-compress --chat runs/bench-gguf

Client and server share this machine's cores (2 here), so the numbers are a floor for a server with its own.
Prints a table and writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from common import ROOT, SHARED, print_table, read_jsonl, write_json

TEXTS = [r["text"] for r in read_jsonl(SHARED / "sst2" / "validation.jsonl", 2000)] if (SHARED / "sst2").is_dir() \
    else ["a gorgeous, witty, seductive movie", "the plot is dull", "well-conceived"] * 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(paths: list[Path], *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunelab", "serve", *map(str, paths), "--port", str(port), *args],
                            cwd=ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=60)


async def load(url: str, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def one(i: int) -> None:
            k = i
            while time.perf_counter() < end:
                start_ = time.perf_counter()
                try:
                    r = await client.post(f"{url}/v1/predict", json={"inputs": [TEXTS[k % len(TEXTS)]]})
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - start_)
                    else:
                        errors[str(r.status_code)] += 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                k += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    metrics = httpx.get(f"{url}/metrics").text
    return {"clients": clients, "client": "httpx", "requests": len(latencies), "errors": sum(errors.values()),
            "error_kinds": dict(errors),
            "rps": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "batch_sizes": batch_histogram(metrics)}


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs": ["a gorgeous, witty, seductive movie that is also quite long"]}'
"""


def load_wrk(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """The same load from wrk (a C load generator: the Python client's own CPU cost stays out of the numbers)."""
    script = Path("/tmp/tunelab-wrk.lua")
    script.write_text(WRK_SCRIPT)
    command = ["wrk", f"-t{min(2, clients)}", f"-c{clients}", f"-d{int(seconds)}s", "--latency", "--timeout", "60s",
               "-s", str(script), f"{url}/v1/predict"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def ms(text: str) -> float:
        value = float(text.rstrip("usm"))
        return value / 1000 if text.endswith("us") else value * 1000 if text.endswith("s") and not text.endswith(
            "ms") else value

    pct = {line.split()[0]: ms(line.split()[1]) for line in out.splitlines() if line.strip().startswith(
        ("50%", "90%", "99%"))}
    requests = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    errors = 0
    for line in out.splitlines():
        if "Non-2xx" in line:
            errors += int(line.split(":")[1])
        elif "Socket errors" in line:  # Socket errors: connect 0, read 0, write 0, timeout 0
            errors += sum(int(part.split()[-1]) for part in line.split(":", 1)[1].split(","))
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    metrics = httpx.get(f"{url}/metrics").text
    return {"clients": clients, "client": "wrk", "requests": requests, "errors": errors, "rps": round(rps, 1),
            "p50_ms": round(pct.get("50%", 0), 2), "p90_ms": round(pct.get("90%", 0), 2),
            "p99_ms": round(pct.get("99%", 0), 2), "batch_sizes": batch_histogram(metrics)}


def batch_histogram(metrics: str) -> dict[str, int]:
    """Batches per size bucket, from the server's own Prometheus histogram."""
    out, last = {}, 0
    for line in metrics.splitlines():
        if line.startswith("tunelab_batch_size_bucket"):
            le = line.split('le="')[1].split('"')[0]
            count = int(float(line.rsplit(" ", 1)[1]))
            out[f"<={le}"], last = count - last, count
    return {k: v for k, v in out.items() if v}


def in_process(run: Path, n: int = 200) -> float:
    """p50 ms of one `Model.predict` call on one text, the floor a server adds its overhead to."""
    import tunelab

    model = tunelab.load(run)
    model.predict([TEXTS[0]])
    times = []
    for i in range(n):
        t = time.perf_counter()
        model.predict([TEXTS[i % len(TEXTS)]])
        times.append(time.perf_counter() - t)
    return round(1000 * float(np.median(times)), 2)


async def chat_streams(url: str, streams: int, max_tokens: int = 64) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(i: int) -> int:
            body = {"messages": [{"role": "user", "content": f"Write a short story about the number {i}."}],
                    "max_tokens": max_tokens, "temperature": 0, "stream": True}
            tokens = 0
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and '"usage"' in line:
                        tokens = json.loads(line[6:])["usage"]["completion_tokens"]
            return tokens

        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(i) for i in range(streams)))
        wall = time.perf_counter() - t0
    return {"streams": streams, "tokens": sum(counts), "wall_s": round(wall, 2),
            "tokens_per_s": round(sum(counts) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-compress")
    parser.add_argument("--chat", type=Path, default=None, help="an sft run for the chat streams")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    rows = []
    for label, extra in (("batching on", []), ("batching off", ["--max-batch", "1"])):
        proc, url = start([args.run], "--torch", *extra)
        try:
            for clients in ((1, args.clients) if not extra else (args.clients,)):
                seconds = args.seconds if clients > 1 else min(args.seconds, 10)
                if shutil.which("wrk"):
                    rows.append({"server": label, **load_wrk(url, clients, seconds)})
                else:
                    rows.append({"server": label, **asyncio.run(load(url, clients, seconds))})
        finally:
            stop(proc)
    direct = in_process(args.run)
    chat = []
    if args.chat is not None:
        proc, url = start([args.chat])
        try:
            chat = [asyncio.run(chat_streams(url, n)) for n in (1, 8)]
        finally:
            stop(proc)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    print(f"machine: {machine}; in-process Model.predict p50: {direct} ms")
    print_table(rows, ["server", "client", "clients", "requests", "errors", "rps", "p50_ms", "p90_ms", "p95_ms",
                       "p99_ms", "batch_sizes"])
    if chat:
        print_table(chat, ["streams", "tokens", "wall_s", "tokens_per_s"])
    result = {"machine": machine, "in_process_p50_ms": direct, "predict": rows, "chat": chat}
    print(f"wrote {write_json('serve_load', result)}")


if __name__ == "__main__":
    main()
