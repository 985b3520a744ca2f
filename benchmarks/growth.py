"""Cost as the data grows: wall time and peak RSS of `tunelab data check` and of `tunelab train
--set train.max_steps=10` (data loading, cleaning, tokenisation, model set-up and 10 steps) on SST-2 grown to
10 k, 100 k and 1 M rows, each command in its own process (peak RSS = that process's ru_maxrss). `train` runs
twice with default settings into one empty feature cache: the first run tokenises (and, from 20 k rows, writes the
cache: data.cache), the second maps the cached features instead.

    python benchmarks/growth.py [--sizes 10000,100000,1000000]

Rows are SST-2's train rows repeated, each copy made distinct (a trailing " #k") so that deduplication keeps
them all. Writes benchmarks/results/growth.json and docs/growth.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, SHARED, print_table, read_jsonl, write_json  # noqa: E402


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Wall time and peak RSS of one command run in a child that reports its own ru_maxrss."""
    probe = ("import resource,subprocess,sys,time,json;t=time.perf_counter();"
             "r=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
             "print(json.dumps({'rc':r.returncode,'wall_s':round(time.perf_counter()-t,1),"
             "'peak_rss_mb':round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024),"
             "'err':r.stderr[-600:] if r.returncode else ''}))")
    res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True,
                         env={**os.environ, "TUNELAB_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", **(env or {})})
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    args = ap.parse_args()
    base = read_jsonl(SHARED / "sst2" / "train.jsonl", None)
    val = read_jsonl(SHARED / "sst2" / "validation.jsonl", 200)
    tunelab = [sys.executable, "-m", "tunelab"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        vp = tmp / "val.jsonl"
        vp.write_text("".join(json.dumps(r) + "\n" for r in val))
        for n in [int(x) for x in args.sizes.split(",")]:
            tp = tmp / f"train-{n}.jsonl"
            with tp.open("w") as f:
                for i in range(n):
                    r = base[i % len(base)]
                    copy = i // len(base)
                    f.write(json.dumps({"text": r["text"] + (f" #{copy}" if copy else ""), "label": r["label"]}) + "\n")
            size_mb = round(tp.stat().st_size / 2**20, 1)
            check = measure([*tunelab, "data", "check", str(tp), "--task", "classification", "--model", "minilm"])
            cache = {"TUNELAB_CACHE": str(tmp / f"cache-{n}")}
            train, again = (measure([*tunelab, "train", "--set", "task=classification", "--set", "model=minilm",
                                     "--set", f"data.train={tp}", "--set", f"data.validation={vp}",
                                     "--set", f"output_dir={tmp / f'run-{n}-{k}'}", "--set", "train.max_steps=10",
                                     "--set", "train.save_steps=0", "--set", "train.report=false"], cache)
                            for k in (1, 2))
            cached = sum(f.stat().st_size for f in (tmp / f"cache-{n}").rglob("*") if f.is_file())
            row = {"rows": n, "file_mb": size_mb, "check_s": check["wall_s"], "check_rss_mb": check["peak_rss_mb"],
                   "train10_s": train["wall_s"], "train10_rss_mb": train["peak_rss_mb"],
                   "again_s": again["wall_s"], "again_rss_mb": again["peak_rss_mb"],
                   "cache_mb": round(cached / 2**20, 1),
                   "errors": (check["err"] + train["err"] + again["err"])[-400:]}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            tp.unlink()
    print_table(rows, ["rows", "file_mb", "check_s", "check_rss_mb", "train10_s", "train10_rss_mb", "again_s",
                       "again_rss_mb", "cache_mb"])
    print(f"\nwrote {write_json('growth', {'rows': rows})}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
        xs = [r["rows"] for r in rows]
        for key, label in (("check", "data check"), ("train10", "train, 10 steps"),
                           ("again", "train again (cached features)")):
            a.plot(xs, [r[f"{key}_s"] for r in rows], marker="o", label=label)
            b.plot(xs, [r[f"{key}_rss_mb"] / 1024 for r in rows], marker="o", label=label)
        for ax, title in ((a, "wall time (s)"), (b, "peak RSS (GiB)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("training rows")
            ax.set_title(title)
            ax.legend()
        fig.tight_layout()
        fig.savefig(ROOT / "docs" / "growth.png", dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)


if __name__ == "__main__":
    main()
