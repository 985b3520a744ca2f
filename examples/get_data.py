"""Build the example data sets that a clone does not ship, from their pinned public sources.

    python examples/get_data.py                 # every set the example configs read from ../shared/data
    python examples/get_data.py sst2 conll2003  # some of them
    python examples/get_data.py --list          # what each set is, where it comes from, its licence

Each set is read from the public GitHub repository and commit pinned below (`--list` prints them; the maintainers'
`../shared/data/DATA.md` names the same), as `https://raw.githubusercontent.com/OWNER/NAME/COMMIT/PATH`, kept under
`--sources` (default `~/.cache/tunelab/sources`, same layout as the URL: a second run downloads nothing), converted
to tunelab's JSON Lines and written as `OUT/SET/{train,validation}.jsonl`, the files the example configs read. The
train / validation rows are those the results in docs/results.md were measured on: sets with official splits are
converted as they are; for sets split at random (AG News, ChnSentiCorp, Alpaca en/zh, CMRC 2018 trial, SQuAD dev,
FastChat's dummy conversations, dolly-15k) `examples/data/splits.json.gz` lists which source records (by position)
form each split, in order — only numbers, no text. Nothing is redistributed: the text comes from its source, under
its licence (`--list`).

Standard library only, so it runs before `make install`. A set is written into a temporary folder and renamed
into place; an existing folder is left alone unless `--force`. Errors are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import html
import io
import json
import os
import re
import shutil
import sys
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPLITS = HERE / "data" / "splits.json.gz"
RAW = "https://raw.githubusercontent.com"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # get_data_sets.py, beside this file, however this file is loaded
from get_data_sets import chat_fastchat_dummy, csl_category, dolly_15k  # noqa: E402

Row = dict
Read = Callable[..., str]  # a path inside the set's repository → its text (its bytes with binary=True)


class Failure(Exception):
    """One line for the user; exit code 2."""


@dataclass(frozen=True)
class Source:
    repo: str
    commit: str
    licence: str
    build: Callable[[Read], dict[str, list[Row]]]  # split name → rows; "records" = rows picked by splits.json.gz


def _tsv(text: str) -> Iterator[list[str]]:
    for line in text.splitlines():
        if line:
            yield line.split("\t")


def sst2(read: Read) -> dict[str, list[Row]]:
    names = {"0": "negative", "1": "positive"}

    def rows(path: str) -> list[Row]:
        lines = list(_tsv(read(path)))[1:]  # header: sentence, label
        return [{"text": text.strip(), "label": names[label]} for text, label in lines]

    return {"train": rows("data/SST-2/train.tsv"), "validation": rows("data/SST-2/dev.tsv")}


def ag_news(read: Read) -> dict[str, list[Row]]:
    records = [line.rsplit("\t", 1) for line in read("data/agnews/dev.tsv").splitlines() if line]
    return {"records": [{"text": text.strip(), "label": label} for text, label in records]}


def chnsenticorp_htl(read: Read) -> dict[str, list[Row]]:
    reader = csv.DictReader(io.StringIO(read("datasets/ChnSentiCorp_htl_all/ChnSentiCorp_htl_all.csv")))
    names = {"0": "negative", "1": "positive"}
    return {"records": [{"text": (r["review"] or "").strip(), "label": names[r["label"]]} for r in reader]}


def _blocks(text: str) -> Iterator[list[list[str]]]:
    """CoNLL-style files: one token per line, sentences separated by blank lines."""
    block: list[list[str]] = []
    for line in text.splitlines():
        if line.strip():
            block.append(line.split())
        elif block:
            yield block
            block = []
    if block:
        yield block


def bio(tags: Iterable[str]) -> list[str]:
    """IOB1 / BMES / broken BIO → BIO (IOB2): an entity starts with B-, whatever the source said."""
    out: list[str] = []
    for tag in tags:
        if tag == "O":
            out.append(tag)
            continue
        kind, _, label = tag.partition("-")
        inside = kind in ("I", "M", "E") and out and out[-1] != "O" and out[-1][2:] == label
        out.append(("I-" if inside else "B-") + label)
    return out


def conll2003(read: Read) -> dict[str, list[Row]]:
    def rows(path: str) -> list[Row]:
        blocks = [b for b in _blocks(read(path)) if b[0][0] != "-DOCSTART-"]
        return [{"tokens": [t[0] for t in b], "tags": bio(t[-1] for t in b)} for b in blocks]

    base = "corpus/CoNLL-2003/eng."
    return {"train": rows(base + "train"), "validation": rows(base + "testa")}


def resume_ner(read: Read) -> dict[str, list[Row]]:
    def rows(path: str) -> list[Row]:
        return [{"tokens": [t[0] for t in b], "tags": bio(t[-1] for t in b)} for b in _blocks(read(path))]

    return {"train": rows("ResumeNER/train.char.bmes"), "validation": rows("ResumeNER/dev.char.bmes")}


def weibo_ner(read: Read) -> dict[str, list[Row]]:
    def rows(path: str) -> list[Row]:
        out = []
        for block in _blocks(read(path)):
            # "字0\tB-PER.NAM": the character, then its position in its word (0–15, dropped); a few tokens are
            # runs of U+FFFD in the source, kept as they are
            tokens = [re.match("\ufffd+|.", t[0]).group() for t in block]
            out.append({"tokens": tokens, "tags": bio(t[-1] for t in block)})
        return out

    return {"train": rows("data/weiboNER_2nd_conll.train"), "validation": rows("data/weiboNER_2nd_conll.dev")}


def _alpaca(records: Iterable[dict]) -> dict[str, list[Row]]:
    keys = ("instruction", "input", "output")
    return {"records": [{k: r[k] for k in keys} for r in records]}


def alpaca_en(read: Read) -> dict[str, list[Row]]:
    starts = [0, 3252, 6382, 9407, 12345, 15323, 18280, 21320, 24319, 27270, 30186, 33190, 36122, 39162,
              42148, 45095, 48066, 51009, 52002]
    records: list[dict] = []
    for start, end in zip(starts, starts[1:], strict=False):
        records += json.loads(read(f"history/原始英文数据/alpaca_data-{start}-{end}-英文.json"))
    return _alpaca(records)


def alpaca_zh(read: Read) -> dict[str, list[Row]]:
    records: list[dict] = []
    for part in range(53):
        records += json.loads(read(f"data/alpaca_chinese_part_{part}.json"))
    return _alpaca(records)


def _squad_style(data: dict) -> list[Row]:
    """SQuAD-format JSON → one row per question; an answer's start is its first place in the context."""
    rows = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                texts = [a["text"] for a in qa["answers"]]
                rows.append({"id": qa["id"], "title": article.get("title", ""), "context": context,
                             "question": qa["question"],
                             "answers": {"text": texts, "answer_start": [context.find(t) for t in texts]}})
    return rows


ANSWER = r'<span class="answer">(.*?)</span>'


def squad_v1(read: Read) -> dict[str, list[Row]]:
    """The SQuAD v1.1 dev set from the explorer's pages (the repository's JSON files are too large to snapshot)."""
    base = "explore/1.1/dev/"
    pages = re.findall(r'href="/SQuAD-explorer/explore/1\.1/dev/([^"?]+\.html)"', read(base + "index.html"))
    articles = []
    for page in dict.fromkeys(pages):
        text = read(base + page)
        paragraphs = []
        for block in text.split('<div class="para-wrap">')[1:]:
            qas = [{"id": qid, "question": html.unescape(question),
                    "answers": [{"text": html.unescape(a)} for a in re.findall(ANSWER, body)]}
                   for qid, question, body in re.findall(
                       r'<div class="qa-wrap" data-id="([^"]+)"><p> <strong class="question">(.*?)</strong>(.*?)'
                       r'<li class="prediction-holder">', block)]
            context = re.search(r"<pre>(.*?)</pre>", block, re.S)
            paragraphs.append({"context": html.unescape(context.group(1)), "qas": qas})
        title = re.search(r'<h1 id="title">(.*?)</h1>', text)
        articles.append({"title": html.unescape(title.group(1)), "paragraphs": paragraphs})
    return {"records": _squad_style({"data": articles})}


def cmrc2018(read: Read) -> dict[str, list[Row]]:
    return {"records": _squad_style(json.loads(read("squad-style-data/cmrc2018_trial.json")))}


def _sentences(sentences: list[str]) -> str:
    """The abstract's sentences, each stripped, joined by one space."""
    return " ".join(t for t in (s.strip() for s in sentences) if t)


def scitldr(read: Read) -> dict[str, list[Row]]:
    def rows(path: str) -> list[Row]:
        out = []
        for line in read(path).splitlines():
            if line.strip():
                paper = json.loads(line)
                out.append({"id": paper["paper_id"], "document": _sentences(paper["source"]),
                            "summary": paper["target"][0], "references": paper["target"]})
        return out

    base = "SciTLDR-Data/SciTLDR-A/"
    return {"train": rows(base + "train.jsonl"), "validation": rows(base + "dev.jsonl")}


NC = "research / non-commercial only"
SOURCES: dict[str, Source] = {
    "sst2": Source("forest-snow/alps", "3c7ef2c98249fc975a897b27f275695f97d5b7a9",
                   "SST/GLUE: no explicit licence (Socher et al. 2013); the alps repository is MIT", sst2),
    "ag_news": Source("forest-snow/alps", "3c7ef2c98249fc975a897b27f275695f97d5b7a9",
                      f"AG's corpus: {NC}", ag_news),
    "conll2003": Source("synalp/NER", "c0ea07c81ec3512b5047dcd804b0ac2b10a3bdfc",
                        "Reuters RCV1 text under NIST/Reuters research-use terms: keep it internal", conll2003),
    "chnsenticorp_htl": Source("SophonPlus/ChineseNlpCorpus", "a0b781d72158bde242c0626c9e354d2b328865ff",
                               "no licence stated", chnsenticorp_htl),
    "resume_ner": Source("jiesutd/LatticeLSTM", "24d17f4270f11d2f75046789d8b67eaa2b907dce",
                         "no licence stated", resume_ner),
    "weibo_ner": Source("hltcoe/golden-horse", "7a73c08e45ed94312af4ef2d97cc35a47d029e99",
                        "annotations CC BY-SA 3.0; the messages under Weibo's terms", weibo_ner),
    "alpaca_en": Source("hikariming/alpaca_chinese_dataset", "a32705cdfdde2a111ef08bc5fb47f5efaa874cfa",
                        f"Stanford Alpaca data, CC BY-NC 4.0: {NC}", alpaca_en),
    "alpaca_zh": Source("open-chinese/alpaca-chinese-dataset", "7ae6bb212fa9ca487469537e12f35f8386e8eea0",
                        f"a translation of Alpaca (CC BY-NC 4.0): {NC}", alpaca_zh),
    "cmrc2018": Source("ymcui/cmrc2018", "c0eb1b6ba219847457e6af3180da722bbeb656af", "CC BY-SA 4.0", cmrc2018),
    "scitldr": Source("allenai/scitldr", "5ccad9c00a60ad75c9e04abf7f27d0f53f983b20",
                      "the repository's Apache-2.0; the abstracts are the papers' authors'", scitldr),
    "squad_v1": Source("rajpurkar/SQuAD-explorer", "e0c66cfec263165fb3c15cb76a22175e371b71d7",
                       "SQuAD: CC BY-SA 4.0", squad_v1),
    "csl_category": Source("ydli-ai/CSL", "0f1ac0626d584cd3c72f8be26d329eb4f967cfd0", "Apache-2.0", csl_category),
    "chat_fastchat_dummy": Source("lm-sys/FastChat", "0e6d3e4beaab66f4d3f93db72541a4abab8af28d",
                                  "Apache-2.0 (synthetic conversations)", chat_fastchat_dummy),
    "dolly_15k": Source("spyysalo/databricks-dolly-translation", "2ee771db87ba66de909ee0506a18d9e6ffb720e9",
                        "CC BY-SA 3.0 (share-alike)", dolly_15k),
}


def reader(source: Source, cache: Path) -> Read:
    def read(path: str, binary: bool = False) -> str | bytes:
        local = cache / source.repo / source.commit / path
        if not local.is_file():
            url = f"{RAW}/{source.repo}/{source.commit}/{urllib.request.quote(path)}"
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    body = response.read()
            except OSError as error:
                raise Failure(f"cannot download {url}: {error} (no network? put the file at {local})") from None
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(local.name + f".{os.getpid()}.part")
            partial.write_bytes(body)
            partial.replace(local)
        body = local.read_bytes()
        if binary:
            return body
        try:
            return body.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise Failure(f"{local}: not UTF-8 ({error}); delete it and run again") from None

    return read


def load_splits(path: Path = SPLITS) -> dict[str, dict[str, list[int]]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def build(name: str, read: Read, splits: dict[str, dict[str, list[int]]]) -> dict[str, list[Row]]:
    """Split name → rows of one set."""
    try:
        built = SOURCES[name].build(read)
    except (KeyError, ValueError, IndexError, AttributeError, TypeError) as error:
        raise Failure(f"{name}: the source files are not in the expected format ({error!r})") from None
    if "records" not in built:
        return built
    records = built["records"]
    try:
        return {split: [records[i] for i in order] for split, order in splits[name].items()}
    except (KeyError, IndexError):
        raise Failure(f"{name}: {SPLITS.name} does not fit the {len(records)} source records") from None


def write(name: str, rows: dict[str, list[Row]], out: Path, force: bool) -> Path:
    target = out / name
    if target.exists() and not force:
        raise Failure(f"{target} exists; --force replaces it")
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for split, split_rows in rows.items():
        with open(temporary / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as handle:
            for row in split_rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    if target.exists():
        shutil.rmtree(target)
    temporary.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="*", help=f"which sets (default: all): {', '.join(SOURCES)}")
    parser.add_argument("--out", type=Path, default=HERE.parent.parent / "shared" / "data",
                        help="where the set folders go (default: ../shared/data, where the example configs read)")
    parser.add_argument("--sources", type=Path, default=Path.home() / ".cache" / "tunelab" / "sources",
                        help="downloaded source files, OWNER/NAME/COMMIT/PATH (default: ~/.cache/tunelab/sources)")
    parser.add_argument("--force", action="store_true", help="replace set folders that exist")
    parser.add_argument("--list", action="store_true", help="list the sets, their sources and licences")
    args = parser.parse_args(argv)
    if args.list:
        width = max(map(len, SOURCES))
        for name, source in SOURCES.items():
            print(f"{name:{width}} github.com/{source.repo} @ {source.commit[:12]}  — {source.licence}")
        return 0
    try:
        unknown = [name for name in args.sets if name not in SOURCES]
        if unknown:
            raise Failure(f"unknown set {unknown[0]!r}; known: {', '.join(SOURCES)}")
        splits = load_splits()
        for name in args.sets or list(SOURCES):
            if (args.out / name).exists() and not args.force:
                print(f"{name}: {args.out / name} exists, kept (--force replaces it)", file=sys.stderr)
                continue
            rows = build(name, reader(SOURCES[name], args.sources), splits)
            target = write(name, rows, args.out, args.force)
            sizes = ", ".join(f"{split} {len(r):,}" for split, r in rows.items())
            print(f"{name}: {sizes} rows → {target}  ({SOURCES[name].licence})", file=sys.stderr)
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
