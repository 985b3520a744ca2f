"""Cost as the data grows: wall time and peak RSS of `tunelab data check` and of `tunelab train
--set train.max_steps=10` (data loading, cleaning, tokenisation, model set-up and 10 steps) on SST-2 grown to
10 k, 100 k and 1 M rows, each command in its own process (peak RSS = that process's ru_maxrss). `train` runs
twice with default settings into one empty feature cache: the first run tokenises (and, from 20 k rows, writes the
cache: data.cache), the second maps the cached features instead.

    python benchmarks/growth.py [--sizes 10000,100000,1000000]
    python benchmarks/growth.py --sizes 10000000 --sft 0 --name growth-10m   # 10 M rows: ~25 min on 2 cores
    python benchmarks/growth.py --sizes 1000000 --sft 0 --format csv --name growth-csv   # as CSV (json, parquet, arrow)
    python benchmarks/growth.py --sizes 1000000 --sft 0 --set data.clean.min_chars=3 --name growth-clean
    python benchmarks/growth.py --sizes 1000000 --sft 0 --format conll --name growth-conll   # NER: CoNLL-2003
    python benchmarks/growth.py --sizes 2000000 --sft 0 --format txt --name growth-txt   # pretrain: paragraphs
    python benchmarks/growth.py --sizes 200000 --sft 0 --format squad --name growth-squad   # QA: a SQuAD .json

Rows are SST-2's train rows repeated, each copy made distinct (a trailing " #k") so that deduplication keeps
them all; with `--format conll`, CoNLL-2003's training sentences (task ner, a CoNLL file; copies end in a token
"#k" tagged O); with `--format txt`, SST-2's sentences as the paragraphs of a .txt corpus (task pretrain, MLM);
with `--format squad`, the shared SQuAD sample's questions (copies end in " #k") as one SQuAD `.json` object, an
article per question (task qa).
Writes benchmarks/results/growth.json and docs/growth-time.svg, docs/growth-rss.svg.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from itertools import islice
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


def write_rows(path: Path, rows: Iterator[dict]) -> None:
    """JSONL, a JSON array, CSV (text, label), Parquet (row groups of 65,536), an Arrow file (record batches of
    65,536), CoNLL (tokens, tags) or plain text (a paragraph per row) by the path's suffix, a row at a time."""
    if path.suffix in (".conll", ".txt"):
        with path.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write("".join(f"{t} {g}\n" for t, g in zip(r["tokens"], r["tags"], strict=True)) + "\n"
                        if path.suffix == ".conll" else r["text"] + "\n\n")
        return
    if path.suffix in (".parquet", ".arrow"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("text", pa.string()), ("label", pa.string())])
        with pq.ParquetWriter(path, schema) if path.suffix == ".parquet" else pa.ipc.new_file(str(path), schema) as out:
            while part := list(islice(rows, 65_536)):
                out.write_table(pa.Table.from_pylist(part, schema))
        return
    if path.suffix == ".json" and path.stem.startswith("qa-"):  # SQuAD's shape: one object, an article per row
        with path.open("w", encoding="utf-8") as f:
            f.write('{"version": "1.1", "data": [\n')
            for i, r in enumerate(rows):
                qa = {"id": f"{r['id']}-{i}", "question": r["question"], "answers": [
                    {"text": t, "answer_start": a} for t, a in zip(*r["answers"].values(), strict=True)]}
                article = {"title": r["title"], "paragraphs": [{"context": r["context"], "qas": [qa]}]}
                f.write((",\n" if i else "") + json.dumps(article, ensure_ascii=False))
            f.write("\n]}\n")
        return
    if path.suffix == ".json":
        with path.open("w", encoding="utf-8") as f:
            f.write("[\n")
            for i, r in enumerate(rows):
                f.write((",\n" if i else "") + json.dumps(r, ensure_ascii=False))
            f.write("\n]\n")
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        if path.suffix == ".csv":
            out = csv.DictWriter(f, ["text", "label"])
            out.writeheader()
            out.writerows(rows)
        else:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def grow(tmp: Path, kind: str, n: int, base: list[dict], val: Path, fmt: str = "jsonl",
         overrides: tuple[str, ...] = ()) -> dict:
    """One size: the file of `n` rows, `data check`, then `train` twice into one fresh feature cache (tunelab's
    cache directory moved to a temporary one whose `models/` is the real one: the GGUF models stay materialised)."""
    tunelab = [sys.executable, "-m", "tunelab"]
    tp = tmp / f"{kind}-{n}.{'json' if fmt == 'squad' else fmt}"
    field = {"sft": "instruction", "qa": "question"}.get(kind, "text")

    def rows() -> Iterator[dict]:
        for i in range(n):
            r, copy = dict(base[i % len(base)]), i // len(base)
            if kind == "ner":
                r["tokens"], r["tags"] = r["tokens"] + [f"#{copy}"] * bool(copy), r["tags"] + ["O"] * bool(copy)
            else:
                r[field] += f" #{copy}" if copy else ""
            yield r

    write_rows(tp, rows())
    model, extra = ("smollm2-135m", ["method=lora", "data.max_length=1024", "train.batch_size=8"]) if kind == "sft" \
        else ("minilm", [])
    check = measure([*tunelab, "data", "check", str(tp), "--task", kind, "--model", model,
                     *(["--set", "data.max_length=1024"] if kind == "sft" else [])])
    home = tmp / f"cache-{kind}-{n}"
    home.mkdir()
    models = Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab")) / "models"
    if models.is_dir():
        (home / "models").symlink_to(models)
    runs = []
    for k in (1, 2):
        sets = [f"task={kind}", f"model={model}", f"data.train={tp}", f"data.validation={val}",
                f"output_dir={tmp / f'run-{kind}-{n}-{k}'}", "train.max_steps=10", "train.save_steps=0",
                "train.report=false", *extra, *overrides]
        runs.append(measure([*tunelab, "train", *[a for s in sets for a in ("--set", s)]],
                            {"TUNELAB_CACHE": str(home)}))
    train, again = runs
    cached = sum(f.stat().st_size for f in (home / "features").rglob("*") if f.is_file())
    size_mb = round(tp.stat().st_size / 2**20, 1)
    tp.unlink()
    return {"task": kind, "format": fmt, "sets": list(overrides), "rows": n, "file_mb": size_mb,
            "check_s": check["wall_s"], "check_rss_mb": check["peak_rss_mb"],
            "train10_s": train["wall_s"], "train10_rss_mb": train["peak_rss_mb"],
            "again_s": again["wall_s"], "again_rss_mb": again["peak_rss_mb"], "cache_mb": round(cached / 2**20, 1),
            "errors": (check["err"] + train["err"] + again["err"])[-400:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--sft", type=int, default=200_000, help="conversations of the SFT row (0: none)")
    ap.add_argument("--format", default="jsonl", choices=["jsonl", "json", "csv", "parquet", "arrow", "conll", "txt",
                                                         "squad"],
                    help="the grown SST-2 file's format (the SFT file is JSONL); conll: CoNLL-2003 NER, txt: a "
                    "pretraining corpus")
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                    help="a config override for both `train` runs (repeatable), e.g. data.clean.min_chars=3")
    ap.add_argument("--name", default="growth", help="results/NAME.json; the plot only for the default name")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        kinds = {"conll": ("ner", "conll2003"), "txt": ("pretrain", "sst2"), "squad": ("qa", "squad_v1")}
        kind, data = kinds.get(args.format, ("classification", "sst2"))
        val = tmp / "val.jsonl"
        val.write_text("".join(json.dumps({"text": r["text"]} if kind == "pretrain" else r) + "\n"
                               for r in read_jsonl(SHARED / data / "validation.jsonl", 200)))
        base = read_jsonl(SHARED / data / "train.jsonl", None)
        for n in [int(x) for x in args.sizes.split(",") if x]:
            rows.append(grow(tmp, kind, n, base, val, args.format, tuple(args.sets)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.sft:
            chat_val = tmp / "chat-val.jsonl"
            chat_val.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                        for r in read_jsonl(SHARED / "alpaca_en" / "validation.jsonl", 200)))
            rows.append(grow(tmp, "sft", args.sft, read_jsonl(SHARED / "alpaca_en" / "train.jsonl", None), chat_val))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print_table(rows, ["task", "format", "rows", "file_mb", "check_s", "check_rss_mb", "train10_s", "train10_rss_mb",
                       "again_s", "again_rss_mb", "cache_mb"])
    print(f"\nwrote {write_json(args.name, {'rows': rows})}")
    if args.name == "growth" and any(r["task"] == "classification" for r in rows):
        plot(rows)


def plot(rows: list[dict]) -> None:
    """docs/growth-time.svg and docs/growth-rss.svg: wall time and peak RSS against rows, log-log (tunelab's own
    charts; `python -c "import json, benchmarks.growth as g; g.plot(json.load(open(
    'benchmarks/results/growth.json'))['rows'])"` redraws them from the results)."""
    from tunelab.plots import lines, svg_document

    grown = [r for r in rows if r["task"] == "classification"]
    xs = [r["rows"] for r in grown]
    steps = (("check", "data check"), ("train10", "train, 10 steps"), ("again", "train again (cached features)"))
    for name, title, key, scale in (("time", "wall time (s)", "_s", 1), ("rss", "peak RSS (GiB)", "_rss_mb", 1024)):
        chart = lines({label: (xs, [r[f"{k}{key}"] / scale for r in grown]) for k, label in steps}, title,
                      "training rows (SST-2 repeated)", markers=True, logx=True, logy=True)
        (ROOT / "docs" / f"growth-{name}.svg").write_text(svg_document(chart), encoding="utf-8")

if __name__ == "__main__":
    main()
