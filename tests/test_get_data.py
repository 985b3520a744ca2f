"""examples/get_data.py: each converter on small files in its source's own format (written here, the quirks the
real sources have included), the shipped split lists, and the script's failures (no network: one line, exit 2,
nothing written). That the real sources rebuild ../shared/data byte for byte was checked against snapshots of the
pinned commits (docs/data.md); the tests cannot download them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import example_data_builder

get_data = example_data_builder()


def files_of(name: str, files: dict[str, str | bytes], root: Path) -> Path:
    """Lay source files out as the script's --sources cache: OWNER/NAME/COMMIT/PATH."""
    source = get_data.SOURCES[name]
    for path, text in files.items():
        local = root / source.repo / source.commit / path
        local.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            local.write_bytes(text)
        else:
            local.write_text(text, encoding="utf-8")
    return root


def built(name: str, files: dict[str, str | bytes], tmp_path: Path,
          splits: dict | None = None) -> dict[str, list[dict]]:
    root = files_of(name, files, tmp_path / "sources")
    return get_data.build(name, get_data.reader(get_data.SOURCES[name], root), splits or {})


def test_bio_repairs_iob1_bmes_and_orphans() -> None:
    assert get_data.bio(["I-ORG", "O", "I-MISC", "I-MISC", "B-MISC", "I-PER"]) == [
        "B-ORG", "O", "B-MISC", "I-MISC", "B-MISC", "B-PER"]  # IOB1: B- only between two entities of one type
    assert get_data.bio(["S-NAME", "B-ORG", "M-ORG", "E-ORG", "E-LOC"]) == [
        "B-NAME", "B-ORG", "I-ORG", "I-ORG", "B-LOC"]  # BMES, and an entity that starts without B
    assert get_data.bio(["B-PER.NAM", "I-PER.NAM", "I-LOC.NOM"]) == ["B-PER.NAM", "I-PER.NAM", "B-LOC.NOM"]


def test_sst2_and_conll2003(tmp_path: Path) -> None:
    rows = built("sst2", {"data/SST-2/train.tsv": "sentence\tlabel\nfine , warm \t1\ndull\t0\n",
                          "data/SST-2/dev.tsv": "sentence\tlabel\nok\t1\n"}, tmp_path)
    assert rows == {"train": [{"text": "fine , warm", "label": "positive"}, {"text": "dull", "label": "negative"}],
                    "validation": [{"text": "ok", "label": "positive"}]}
    conll = ("-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n\n"
             "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n")
    rows = built("conll2003", {"corpus/CoNLL-2003/eng.train": conll, "corpus/CoNLL-2003/eng.testa": conll},
                 tmp_path)
    assert rows["train"] == [{"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]},
                             {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}]


def test_chinese_ner_sources(tmp_path: Path) -> None:
    resume = "高 B-NAME\n勇 E-NAME\n： O\n\n中 S-CONT\n国 M-ORG\n"
    rows = built("resume_ner", {"ResumeNER/train.char.bmes": resume, "ResumeNER/dev.char.bmes": resume}, tmp_path)
    assert rows["validation"] == [{"tokens": ["高", "勇", "："], "tags": ["B-NAME", "I-NAME", "O"]},
                                  {"tokens": ["中", "国"], "tags": ["B-CONT", "B-ORG"]}]
    # the position of the character in its word follows it, one or two digits; "3" at position 10 is "310"
    weibo = "张0\tB-PER.NAM\n三1\tI-PER.NAM\n310\tO\n\ufffd\ufffd0\tO\n1\tO\n"
    rows = built("weibo_ner", {"data/weiboNER_2nd_conll.train": weibo, "data/weiboNER_2nd_conll.dev": weibo},
                 tmp_path)
    assert rows["train"] == [{"tokens": ["张", "三", "3", "\ufffd\ufffd", "1"],
                              "tags": ["B-PER.NAM", "I-PER.NAM", "O", "O", "O"]}]


def test_scitldr(tmp_path: Path) -> None:
    paper = {"source": ["First sentence\n", "goes on.", "  Second one. "], "paper_id": "p1",
             "target": ["a tldr", "another"], "source_labels": [0, 1, 0]}
    line = json.dumps(paper) + "\n"
    rows = built("scitldr", {"SciTLDR-Data/SciTLDR-A/train.jsonl": line, "SciTLDR-Data/SciTLDR-A/dev.jsonl": line},
                 tmp_path)
    assert rows["train"] == [{"id": "p1", "document": "First sentence goes on. Second one.", "summary": "a tldr",
                              "references": ["a tldr", "another"]}]


def test_records_are_picked_by_the_split_lists(tmp_path: Path) -> None:
    csv = 'label,review\n1,"good, ""very"" good"\n0,bad\n1,\n0, awful \n'
    rows = built("chnsenticorp_htl", {"datasets/ChnSentiCorp_htl_all/ChnSentiCorp_htl_all.csv": csv}, tmp_path,
                 {"chnsenticorp_htl": {"train": [3, 0], "validation": [1]}})
    assert rows["train"] == [{"text": "awful", "label": "negative"}, {"text": 'good, "very" good', "label": "positive"}]
    assert rows["validation"] == [{"text": "bad", "label": "negative"}]
    with pytest.raises(get_data.Failure, match="does not fit the 4 source records"):
        built("chnsenticorp_htl", {}, tmp_path, {"chnsenticorp_htl": {"train": [4]}})


def test_squad_from_the_explorer_pages(tmp_path: Path) -> None:
    link = '<a href="/SQuAD-explorer/explore/1.1/dev/Oil.html{}">'
    index = link.format("") + link.format("?model=x")  # each article is linked twice
    page = ('<h1 id="title">Oil</h1><div class="para-wrap"><div class="row"><pre>'
            'The &quot;first&quot; shock, 1973. In 1973</pre></div><div class="qas-wrap">'
            '<div class="qa-wrap" data-id="q1"><p> <strong class="question">When?</strong></p>'
            '<ul class="list-unstyled"><li><p><i>Ground Truth Answers: </i><span class="answer">1973</span>'
            '<span class="answer">&quot;first&quot;</span></p></li>'
            '<li class="prediction-holder"><p></p></li></ul></div></div></div>')
    rows = built("squad_v1", {"explore/1.1/dev/index.html": index, "explore/1.1/dev/Oil.html": page}, tmp_path,
                 {"squad_v1": {"train": [0], "validation": []}})
    assert rows["train"] == [{"id": "q1", "title": "Oil", "context": 'The "first" shock, 1973. In 1973',
                              "question": "When?",
                              "answers": {"text": ["1973", '"first"'], "answer_start": [19, 4]}}]


def test_csl_category_and_fastchat(tmp_path: Path) -> None:
    tsv = "to category\t太平天国私人便章“朝勋詹记”考\t历史学\nto category\t网络结构优化设计模型及遗传算法\t理学\n"
    rows = built("csl_category", {"benchmark/cls_ctg/train.tsv": tsv, "benchmark/cls_ctg/dev.tsv": tsv}, tmp_path)
    assert rows["validation"] == [{"text": "太平天国私人便章“朝勋詹记”考", "label": "历史学"},
                                  {"text": "网络结构优化设计模型及遗传算法", "label": "理学"}]
    conversations = [{"id": "identity_0", "conversations": [{"from": "human", "value": "Who are you?"},
                                                            {"from": "gpt", "value": "I am Vicuna."}]},
                     {"id": "identity_1", "conversations": [{"from": "human", "value": "Hi"},
                                                            {"from": "gpt", "value": "Hello!"},
                                                            {"from": "human", "value": "Bye"},
                                                            {"from": "gpt", "value": "You too!"}]}]
    source = {"data/dummy_conversation.json": json.dumps(conversations, indent=2)}
    rows = built("chat_fastchat_dummy", source, tmp_path,
                 {"chat_fastchat_dummy": {"train": [1], "validation": [0]}})
    assert rows["validation"] == [{"id": "identity_0", "messages": [{"role": "user", "content": "Who are you?"},
                                                                    {"role": "assistant", "content": "I am Vicuna."}]}]
    assert [m["role"] for m in rows["train"][0]["messages"]] == ["user", "assistant", "user", "assistant"]
    conversations[0]["conversations"][0]["from"] = "system"  # a role the converter does not know: refused
    with pytest.raises(get_data.Failure, match="chat_fastchat_dummy: the source files are not in the expected format"):
        built("chat_fastchat_dummy", {"data/dummy_conversation.json": json.dumps(conversations)}, tmp_path)


def docx(*paragraphs: tuple[bool, str]) -> bytes:
    """A .docx as python-docx writes it (what the dolly files are): each paragraph one run, bold or not; a line break
    in the text is <w:br/>, a tab <w:tab/>."""
    body = []
    for bold, text in paragraphs:
        pieces = text.replace("\t", '</w:t><w:tab/><w:t xml:space="preserve">').split("\n")
        inner = "<w:br/>".join(f'<w:t xml:space="preserve">{piece}</w:t>' for piece in pieces)
        style = "<w:rPr><w:b/><w:u w:val=\"single\"/></w:rPr>" if bold else ""
        body.append(f"<w:p><w:r>{style}{inner}</w:r></w:p>" if text or bold else "<w:p/>")
    xml = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w='
           '"http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>' + "".join(body) +
           "</w:body></w:document>")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", xml)
    return buffer.getvalue()


def test_dolly_from_its_docx_files(tmp_path: Path) -> None:
    first = docx((True, "Document 0"), (True, "Instruction"), (False, "When did it start?"), (True, "Context"),
                 (False, "Virgin Blue,  in 2000.[3]\nA new line\tand a tab"), (True, "Response"),
                 (False, "31 August 2000"), (False, ""))
    second = docx((True, "Document 1"), (True, "Instruction"), (False, "Tope or Rope?"), (True, "Response"),
                  (False, "Tope"))
    parts = {f"dolly-doc-in/dolly-{i:05d}.docx": docx() for i in range(2, 14)}  # the 14 files, read in order
    files = {"dolly-doc-in/dolly-00000.docx": first, "dolly-doc-in/dolly-00001.docx": second, **parts}
    rows = built("dolly_15k", files, tmp_path, {"dolly_15k": {"train": [1], "validation": [0]}})
    assert rows == {"train": [{"id": "dolly-1", "instruction": "Tope or Rope?", "input": "", "output": "Tope"}],
                    "validation": [{"id": "dolly-0", "instruction": "When did it start?",
                                    "input": "Virgin Blue,  in 2000.[3]\nA new line\tand a tab",
                                    "output": "31 August 2000"}]}
    wrong = {"dolly-doc-in/dolly-00000.docx": second}  # Document 1 first: a part missing or out of order
    with pytest.raises(get_data.Failure, match="dolly-00000.docx: 'Document 1' where Document 0 was expected"):
        built("dolly_15k", {**files, **wrong}, tmp_path / "wrong")
    broken = {"dolly-doc-in/dolly-00003.docx": b"<html>not found</html>"}
    with pytest.raises(get_data.Failure, match="dolly-00003.docx: not a .docx"):
        built("dolly_15k", {**files, **broken}, tmp_path / "broken")
    damaged = bytearray(_deflated(first))  # a damaged compressed member (zlib's error, not the zip's): one line too
    start = damaged.index(b"word/document.xml") + len("word/document.xml") + 40
    damaged[start:start + 50] = bytes(b ^ 0x5A for b in damaged[start:start + 50])
    with pytest.raises(get_data.Failure, match="dolly-00000.docx: not a .docx"):
        built("dolly_15k", {**files, "dolly-doc-in/dolly-00000.docx": bytes(damaged)}, tmp_path / "damaged")


def _deflated(docx_bytes: bytes) -> bytes:
    """The same .docx with its members deflated (as Word and python-docx write them) and the text long enough that
    damage lands inside the compressed stream."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_bytes)) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for name in source.namelist():
            data = source.read(name)
            out.writestr(name, data.replace(b"</w:body>", b"<w:p/>" * 2000 + b"</w:body>") if name.endswith(
                "document.xml") else data)
    return buffer.getvalue()


def test_the_shipped_split_lists() -> None:
    """Every set built from records has a train and a validation list of the sizes DATA.md gives, no record twice."""
    splits = get_data.load_splits()
    sizes = {"ag_news": (8980, 1000), "chnsenticorp_htl": (6213, 776), "alpaca_en": (49976, 1000),
             "alpaca_zh": (49956, 999), "cmrc2018": (900, 102), "squad_v1": (6026, 997),
             "chat_fastchat_dummy": (450, 25), "dolly_15k": (12011, 1501)}
    assert set(splits) == set(sizes)
    for name, (train, validation) in sizes.items():
        order = splits[name]
        assert (len(order["train"]), len(order["validation"])) == (train, validation), name
        picked = order["train"] + order["validation"]
        assert len(set(picked)) == len(picked) and min(picked) >= 0, name


def test_failures_are_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    assert get_data.main(["sst2", "--sources", str(tmp_path / "empty"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: cannot download https://raw.githubusercontent.com/forest-snow/alps/")
    assert "put the file at" in error and len(error.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
    assert get_data.main(["sst3"]) == 2 and "unknown set 'sst3'" in capsys.readouterr().err
    files_of("sst2", {"data/SST-2/train.tsv": "sentence\tlabel\nfine\t7\n", "data/SST-2/dev.tsv": ""}, tmp_path / "s")
    assert get_data.main(["sst2", "--sources", str(tmp_path / "s"), "--out", str(out)]) == 2
    assert "not in the expected format" in capsys.readouterr().err and not (out / "sst2").exists()


def test_an_existing_set_is_kept_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sources = files_of("sst2", {"data/SST-2/train.tsv": "sentence\tlabel\nfine\t1\n",
                                "data/SST-2/dev.tsv": "sentence\tlabel\nbad\t0\n"}, tmp_path / "s")
    out = tmp_path / "data"
    args = ["sst2", "--sources", str(sources), "--out", str(out)]
    assert get_data.main(args) == 0
    assert (out / "sst2" / "train.jsonl").read_text() == '{"text": "fine", "label": "positive"}\n'
    (out / "sst2" / "train.jsonl").write_text("mine\n")
    assert get_data.main(args) == 0 and "exists, kept" in capsys.readouterr().err
    assert (out / "sst2" / "train.jsonl").read_text() == "mine\n"
    assert get_data.main([*args, "--force"]) == 0
    assert (out / "sst2" / "train.jsonl").read_text() == '{"text": "fine", "label": "positive"}\n'
    assert sorted(p.name for p in out.iterdir()) == ["sst2"]  # no temporary left


def test_the_script_needs_only_the_standard_library() -> None:
    """`python -S` (no site-packages at all): it runs before `make install`, as the README says."""
    script = Path(__file__).resolve().parent.parent / "examples" / "get_data.py"
    res = subprocess.run([sys.executable, "-S", str(script), "--list"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    listed = [line.split()[0] for line in res.stdout.splitlines()]
    assert listed == list(get_data.SOURCES) and "github.com/forest-snow/alps @ 3c7ef2c98249" in res.stdout
