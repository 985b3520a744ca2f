"""Augmentation: EDA ops, determinism by seed, Chinese characters, synonym sources, `tunelab data augment`."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import WORDS, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.sections import AugmentConfig, DataConfig
from tunelab.data import augment as aug
from tunelab.data.synonyms import EmbeddingNeighbours, SynonymTable, whole_word_tokens
from tunelab.errors import ConfigError, DataError

SYN = SynonymTable({"good": ["great", "fine"], "movie": ["film"], "bad": ["awful"]})
TEXT = "the movie was really good but the plot was bad"


def _examples(n: int = 12) -> list[dict]:
    return [{"text": r["text"], "label": r["label"], "source": "t.jsonl", "line": i + 1, "row": r}
            for i, r in enumerate(sentiment_rows(n, 3))]


def test_same_seed_same_output_other_seed_differs() -> None:
    cfg = AugmentConfig(ratio=0.3, copies=2)
    first, stats = aug.augment_examples(_examples(), cfg, 7, SYN)
    again, _ = aug.augment_examples(_examples(), cfg, 7, SYN)
    other, _ = aug.augment_examples(_examples(), cfg, 8, SYN)
    assert [e["text"] for e in first] == [e["text"] for e in again]
    assert [e["text"] for e in first] != [e["text"] for e in other]
    assert len(first) == 12 + stats["copies_added"] and stats["copies_added"] + stats["unchanged_not_added"] == 24
    assert sum(stats["by_op"].values()) == stats["copies_added"]
    copy = first[12]
    assert copy["augmented_from"] == 1 and copy["row"]["augmented_from"] == 1 and copy["label"] == first[0]["label"]
    assert copy["row"]["text"] == copy["text"] != first[0]["text"]
    assert all("augmented_from" not in e for e in first[:12])  # originals untouched


def test_each_op() -> None:
    words = TEXT.split()
    rng = random.Random(0)
    deleted = [u for u, _ in aug.op_delete(words, rng, 0.2, None)]
    assert len(deleted) == len(words) - 2 and all(w in words for w in deleted)
    assert aug.op_delete(["one"], rng, 0.5, None) == [("one", 0)]  # never empties a row
    swapped = aug.op_swap(words, rng, 0.1, None)
    assert Counter(u for u, _ in swapped) == Counter(words) and [u for u, _ in swapped] != words
    assert sorted(i for _, i in swapped) == list(range(len(words)))  # origins: a permutation
    replaced = aug.op_synonym(words, rng, 0.2, SYN)
    changed = [(words[i], u) for u, i in replaced if u != words[i]]
    assert len(changed) == 2 and all(new in SYN(old) for old, new in changed)
    inserted = aug.op_insert(words, rng, 0.1, SYN)
    new = [u for u, i in inserted if i == -1]
    assert len(inserted) == len(words) + 1 and new[0] in {"great", "fine", "film", "awful"}
    assert [u for u, i in inserted if i != -1] == words
    assert aug.op_insert(["zzz", "qqq"], rng, 0.5, SYN) == [("zzz", 0), ("qqq", 1)]  # no synonyms: no change


def test_synonym_keeps_punctuation_and_case() -> None:
    out = aug.op_synonym(["Good!", "MOVIE,"], random.Random(0), 1.0, SYN)
    assert out[0][0] in ("Great!", "Fine!") and out[1][0] == "FILM,"


def test_augment_text_falls_back_to_an_op_that_changes_the_text() -> None:
    # no word has a synonym: insert/synonym cannot change anything, delete or swap is used
    text, op = aug.augment_text("zzz qqq xxx", ["insert", "synonym", "delete"], random.Random(1), 0.3, SYN)
    assert op == "delete" and len(text.split()) == 2
    assert aug.augment_text("zzz", ["swap", "synonym"], random.Random(1), 0.3, SYN) is None
    with pytest.raises(ConfigError, match="data.augment.ops: insert and synonym need"):
        aug.augment_examples(_examples(2), AugmentConfig(ops=["synonym"]), 0, None)


def test_chinese_character_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aug, "jieba_or_none", lambda: None)
    assert aug.is_chinese("这部电影很好看") and not aug.is_chinese("a good movie 好")
    units, lang = aug.split_units("这部电影很好看，Python 3 不错", "auto")
    assert lang == "zh" and units == ["这", "部", "电", "影", "很", "好", "看", "，", "Python", "3", "不", "错"]
    assert aug.join_units(units, "zh") == "这部电影很好看，Python 3不错"
    syn = SynonymTable({"好": ["棒"]})
    text, op = aug.augment_text("这部电影很好看", ["synonym"], random.Random(0), 0.1, syn)
    assert (text, op) == ("这部电影很棒看", "synonym")
    text, _ = aug.augment_text("这部电影很好看", ["delete"], random.Random(0), 0.3, None)
    assert len(text) == 5 and " " not in text
    en, lang = aug.split_units("这部电影很好看", "en")  # forced word level: one whitespace word
    assert en == ["这部电影很好看"] and lang == "en"


def test_chinese_uses_jieba_words() -> None:
    """The real jieba (declared: the `zh` extra, installed by `make install`): Chinese is edited word by word."""
    jieba = pytest.importorskip("jieba")
    assert aug.jieba_or_none() is jieba
    units, lang = aug.split_units("这部电影很好看", "zh")
    assert lang == "zh" and units == ["这部", "电影", "很", "好看"] == jieba.lcut("这部电影很好看")
    syn = SynonymTable({"好看": ["精彩"]})
    text, op = aug.augment_text("这部电影很好看", ["synonym"], random.Random(0), 0.3, syn)
    assert (text, op) == ("这部电影很精彩", "synonym")  # a whole word replaced, not a character
    text, _ = aug.augment_text("这部电影很好看", ["delete"], random.Random(0), 0.3, None)
    assert text in {"电影很好看", "这部很好看", "这部电影好看", "这部电影很"}  # one of the four words gone


def test_synonym_file(tmp_path: Path) -> None:
    tsv = tmp_path / "syn.tsv"
    tsv.write_text("# comment\ngood\tgreat, fine\n\nMovie\tfilm\ngood\tnice\n", encoding="utf-8")
    table = SynonymTable.load(tsv)
    assert table("good") == ["great", "fine", "nice"] and table("Good") == ["great", "fine", "nice"]
    assert table("movie") == ["film"] and table("plot") == []
    js = tmp_path / "syn.json"
    js.write_text(json.dumps({"good": ["great", "good"], "bad": "awful,poor"}), encoding="utf-8")
    assert SynonymTable.load(js)("good") == ["great"] and SynonymTable.load(js)("bad") == ["awful", "poor"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("good\tgreat\nmovie film\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv:2: synonyms: expected word<TAB>synonym"):
        SynonymTable.load(bad)
    (tmp_path / "e.tsv").write_text("good\t , \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"e.tsv:1: synonyms: expected a word and at least one synonym"):
        SynonymTable.load(tmp_path / "e.tsv")
    with pytest.raises(DataError, match="synonym file not found"):
        SynonymTable.load(tmp_path / "missing.tsv")


def test_embedding_neighbours_on_tiny_bert(tiny_bert: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert)
    words = whole_word_tokens(tok)
    assert set(words) == {w for w in WORDS if len(w) > 1}  # no specials, no single characters
    emb = model.get_input_embeddings().weight
    near = EmbeddingNeighbours(tok, emb, k=3)
    got = near("good")
    vecs = torch.nn.functional.normalize(emb[list(words.values())].detach(), dim=-1)
    sims = vecs @ vecs[list(words).index("good")]
    ranked = [w for _, w in sorted(zip(sims.tolist(), words, strict=True), reverse=True) if w != "good"]
    assert got == ranked[:3]
    assert near("GOOD") == got and near("unknownword") == []


def test_whole_word_tokens_of_subword_vocabularies() -> None:
    class Tok:
        all_special_tokens = ["<s>"]

        def __init__(self, vocab: list[str]) -> None:
            self.vocab = {t: i for i, t in enumerate(vocab)}

        def get_vocab(self) -> dict[str, int]:
            return self.vocab

    assert set(whole_word_tokens(Tok(["<s>", "good", "##ness", "a", "好", "12", "bad"]))) == {"good", "好", "bad"}
    assert set(whole_word_tokens(Tok(["<s>", "\u2581good", "ness", "\u2581bad", "\u2581x"]))) == {"good", "bad"}
    assert set(whole_word_tokens(Tok(["\u0120good", "ness", "\u0120film"]))) == {"good", "film"}


def test_augment_config() -> None:
    assert DataConfig(augment=True).augment == AugmentConfig()
    assert AugmentConfig().ops == ["delete", "swap", "insert", "synonym"]
    with pytest.raises(ValueError, match="ops"):
        AugmentConfig(ops=[])


def test_cli_data_augment(tiny_bert: Path, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"review": r["text"], "label": r["label"], "id": i}
                                               for i, r in enumerate(sentiment_rows(6, 0))])
    syn = tmp_path / "syn.tsv"
    syn.write_text("".join(f"{w}\t{WORDS[(i + 1) % len(WORDS)]}\n" for i, w in enumerate(WORDS)), encoding="utf-8")
    out = tmp_path / "out" / "aug.jsonl"
    runner = CliRunner()
    args = ["data", "augment", str(src), "--output", str(out), "--set", "data.text_field=review",
            "--set", "data.augment={copies: 2, ratio: 0.3}", "--set", f"data.augment.synonyms={syn}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    originals = [json.loads(x) for x in src.read_text().splitlines()]
    assert rows[:6] == originals and len(rows) == 6 + 12
    for row in rows[6:]:
        first = originals[row["augmented_from"] - 1]
        assert row["id"] == first["id"] and row["label"] == first["label"] and row["review"] != first["review"]
    assert "wrote 6 rows + 12 augmented copies" in res.output
    before = out.read_bytes()  # an existing --output is replaced only with --overwrite
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and res.output == f"error: --output: {out} exists; pass --overwrite to replace it\n"
    assert out.read_bytes() == before
    res = runner.invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0 and [json.loads(x) for x in out.read_text().splitlines()] == rows
    res = runner.invoke(app, [*args[:2], str(src), "--output", str(src), "--overwrite", *args[5:]])
    assert res.exit_code == 2 and "is the input file" in res.output  # never its own input
    # embedding neighbours of a model instead of a file
    res = runner.invoke(app, [*args[:-2], "--model", str(tiny_bert), "--seed", "3", "--overwrite"])
    assert res.exit_code == 0, res.output
    # ops needing synonyms without a source: one line, exit 2
    res = runner.invoke(app, ["data", "augment", str(src), "--output", str(out), "--set", "data.text_field=review",
                              "--overwrite"])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "insert and synonym need --model" in res.output
    res = runner.invoke(app, ["data", "augment", str(src), "--output", str(out), "--set", "data.text_field=review",
                              "--set", "data.augment.ops=[delete,swap]", "--overwrite"])
    assert res.exit_code == 0, res.output


def test_cli_data_augment_of_a_dataset_folder_names_each_copys_file_and_line(tmp_path: Path) -> None:
    """A folder of several Parquet files: lines restart in each file, so a copy's `augmented_from` is `file:line`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [{"text": r["text"], "label": r["label"], "id": i} for i, r in enumerate(sentiment_rows(8, 0))]
    files = [folder / "a.parquet", folder / "b.parquet"]
    pq.write_table(pa.Table.from_pylist(rows[:4]), files[0])
    pq.write_table(pa.Table.from_pylist(rows[4:]), files[1])
    out = tmp_path / "aug.jsonl"
    res = CliRunner().invoke(app, ["data", "augment", str(folder), "--output", str(out),
                                   "--set", "data.augment={ops: [delete, swap], copies: 2, ratio: 0.3}"])
    assert res.exit_code == 0, res.output
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert got[:8] == rows and len(got) > 8
    where = {f"{f}:{n}": row for f, part in zip(files, (rows[:4], rows[4:]), strict=True)
             for n, row in enumerate(part, start=1)}
    assert {copy["augmented_from"].rsplit(":", 1)[0] for copy in got[8:]} == {str(f) for f in files}
    for copy in got[8:]:
        first = where[copy["augmented_from"]]
        assert copy["id"] == first["id"] and copy["label"] == first["label"] and copy["text"] != first["text"]


def test_cli_data_augment_copies_a_second_text_it_does_not_rewrite(tmp_path: Path) -> None:
    """Rows with a `text_pair` field and no data.text_pair_field: copied through with it (training on them is what
    refuses an unread second text, not a copy that keeps every field)."""
    rows = [{**r, "text_pair": "the plot"} for r in sentiment_rows(6, 0)]
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "aug.jsonl"
    res = CliRunner().invoke(app, ["data", "augment", str(src), "--output", str(out),
                                   "--set", "data.augment={ops: [delete, swap], copies: 1, ratio: 0.3}"])
    assert res.exit_code == 0, res.output
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert got[:6] == rows and len(got) > 6 and all(copy["text_pair"] == "the plot" for copy in got[6:])


def test_cli_data_augment_names_a_row_without_the_label_the_others_have(tmp_path: Path) -> None:
    """One row without a label among labelled ones: that row's line, not every row's label left unchecked."""
    rows = sentiment_rows(6, 0)
    src = write_jsonl(tmp_path / "in.jsonl", [*rows[:3], {"text": rows[3]["text"]}, *rows[4:]])
    out = tmp_path / "aug.jsonl"
    res = CliRunner().invoke(app, ["data", "augment", str(src), "--output", str(out),
                                   "--set", "data.augment.ops=[delete,swap]"])
    assert res.exit_code == 2, res.output
    assert res.output == f"error: {src}:4: label: missing field (the row has: text)\n", res.output
    assert not out.exists()
    unlabelled = write_jsonl(tmp_path / "texts.jsonl", [{"text": r["text"]} for r in rows])  # none: no labels asked
    res = CliRunner().invoke(app, ["data", "augment", str(unlabelled), "--output", str(out),
                                   "--set", "data.augment.ops=[delete,swap]"])
    assert res.exit_code == 0, res.output


NEGATED = ["the film was not good at all", "I don't like it , never again", "No , it can’t be fine without music"]
NEGATION_WORDS = {"not", "don't", "never", "No", "can’t", "without"}


@pytest.mark.parametrize("text", NEGATED)
def test_no_op_deletes_moves_replaces_or_inserts_a_negation(text: str) -> None:
    """`delete` dropped `not` and `swap` moved it (`the film was not good` → `the film was good`), label kept; now each
    negation stays, no unit crosses one, and none is put in or taken out by a synonym."""
    words = text.split()
    negations = [w for w in words if w in NEGATION_WORDS]
    syn = SynonymTable({"good": ["not bad", "fine"], "fine": ["never mind"], "like": ["love"], "not": ["hardly"],
                        "the": ["no"], "again": ["nor"], "music": ["songs"], "without": ["with"]})
    for seed in range(200):
        for name, op in aug.OPS.items():
            out = op(words, random.Random(seed), 0.5, syn)
            units = [u for u, _ in out]
            assert [u for u in units if u in NEGATION_WORDS | {"no", "nor", "hardly", "with"} or "not" in u or
                    "never" in u] == negations, (name, units)
            for at, (_, i) in enumerate(out):  # a unit from the text has the same negations before it as there
                if i >= 0:
                    assert [w for w in words[:i] if w in NEGATION_WORDS] == \
                        [w for w in units[:at] if w in NEGATION_WORDS], (name, units)
    assert all(aug.is_negation(w) for w in negations) and not any(aug.is_negation(w) for w in ("nothing", "note"))


@pytest.mark.parametrize("segmenter", ["characters", "jieba"])
def test_chinese_negations_stay(segmenter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Character by character (no jieba) 不 is a unit of its own; jieba keeps it inside a word (不好, 没有): either
    way `delete` and `swap` leave 不 and 没 where they are among the text's other characters."""
    if segmenter == "characters":
        monkeypatch.setattr(aug, "jieba_or_none", lambda: None)
    elif aug.jieba_or_none() is None:
        pytest.skip("jieba is not installed")
    text = "这部电影不好看，剧情没有意思"
    for seed in range(100):
        for name in ("delete", "swap"):
            got = aug.augment_text(text, [name], random.Random(seed), 0.5, None, "zh")
            if got is None:  # swaps that undid each other
                continue
            assert [c for c in got[0] if c in "不没"] == ["不", "没"], got
            before, after = got[0].split("不")[0], got[0].split("没")[1]
            assert set(before) <= set(text.split("不")[0]) and set(after) <= set(text.split("没")[1]), got
    assert aug.is_negation("不") and aug.is_negation("没有") and not aug.is_negation("好看")


def test_augmented_copies_that_repeat_a_kept_row_are_dropped_under_dedup(tiny_bert: Path, tmp_path: Path) -> None:
    """Cross-split dedup ran before augmentation: `delete` copies of `alpha beta` equal to the validation rows `alpha`
    and `beta` were trained on, and copies of `Good good` repeated one another. With data.dedup each is dropped into
    removed.jsonl (`augmented_duplicate`), counted, and the summary's counts add up."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "alpha beta", "label": "pos"},
                                                   {"text": "Good good", "label": "pos"},
                                                   {"text": "gamma delta", "label": "neg"}])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": t, "label": lab} for t, lab in
                                               (("alpha", "pos"), ("beta", "pos"), ("gamma", "neg"), ("delta", "neg"))])
    out = tmp_path / "run"
    sets = [f"model={tiny_bert}", "task=classification", f"data.train={train}", f"data.validation={val}",
            f"output_dir={out}", "data.dedup=true", "data.augment={ops: [delete], copies: 3}", "train.max_steps=1",
            "train.save_steps=0"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "data_summary.json").read_text())
    removed = [json.loads(x) for x in (out / "removed.jsonl").read_text().splitlines()]
    assert summary["removed"] == {"train": {"augmented_duplicate": 8}}
    assert Counter(r["duplicate_in"] for r in removed) == {"validation": 6, "augmented": 2}
    assert {r["row"]["text"] for r in removed if r["duplicate_in"] == "validation"} <= {"alpha", "beta", "gamma",
                                                                                         "delta"}
    assert all(r["row"]["augmented_from"] == r["line"] for r in removed)
    assert summary["rows_added"] == {"train": {"augmented": 9}}
    assert summary["applied"]["augment"]["copies_added"] == 1 and summary["applied"]["augment"][
        "duplicates_dropped"] == 8
    assert summary["rows_used"]["train"] == 3 - 8 + 9 == 4
