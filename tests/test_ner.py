"""NER: tag schemes, subword alignment (incl. Chinese characters, [UNK] and dropped characters), spans
with character offsets, CoNLL files, rows of a text and its entities as character spans (CLUENER, doccano, spaCy,
Label Studio), errors, and train → eval → predict from the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tunelab
from conftest import write_jsonl
from tunelab.cli import app
from tunelab.config.run import run_config_class
from tunelab.config.sections import DataConfig
from tunelab.data.readers import Record, Table, read_table
from tunelab.errors import DataError

run_config_class()
from tunelab.tasks.ner import Ner, NerConfig, spans, to_bio  # noqa: E402
from tunelab.text.words import split_words  # noqa: E402

REC = Record("t.jsonl", 3, {})


@pytest.mark.parametrize(
    ("tags", "bio"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),  # BIO unchanged
        (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]),  # IOB1
        (["S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"], ["B-PER", "B-LOC", "I-LOC", "I-LOC", "B-LOC"]),  # BIOES
        (["B-ORG", "M-ORG", "E-ORG", "S-ORG"], ["B-ORG", "I-ORG", "I-ORG", "B-ORG"]),  # BMES
        (["U-PER", "B-LOC", "I-LOC", "L-LOC", "U-LOC", "L-LOC"],
         ["B-PER", "B-LOC", "I-LOC", "I-LOC", "B-LOC", "B-LOC"]),  # BILOU
    ],
)
def test_to_bio(tags: list[str], bio: list[str]) -> None:
    assert to_bio(tags, REC, "tags") == bio


def test_invalid_tag_names_line() -> None:
    with pytest.raises(DataError, match=r"t.jsonl:3: tags: invalid tag 'PER' at token 2"):
        to_bio(["O", "PER"], REC, "tags")
    with pytest.raises(DataError, match=r"t.jsonl:3: tags: tag 2 is not a string: 3 \(a tag id, as HF datasets"):
        to_bio(["O", 3], REC, "tags")  # (conll2003's ner_tags written out of datasets: ids, not names)


def test_spans_and_offsets() -> None:
    assert spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == [
        ("PER", 0, 2),
        ("LOC", 3, 4),
        ("LOC", 4, 5),
        ("ORG", 5, 6),
    ]
    text = "Dr. Smith went to 北京大学, 2024!"
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Dr", ".", "Smith", "went", "to", "北", "京", "大", "学", ",", "2024", "!"]
    assert all(text[s:e] == w for w, s, e in words)
    # a combining mark, a vowel sign, a variation selector, a skin tone, a joined emoji, a flag: in their word
    text = "Cafe\u0301 in हिन्दी: I ❤️ NY 👍🏽 👨\u200d👩\u200d👧 🇫🇷🇩🇪"
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Cafe\u0301", "in", "हिन्दी", ":", "I", "❤️", "NY", "👍🏽",
                                        "👨\u200d👩\u200d👧", "🇫🇷", "🇩🇪"]
    assert all(text[s:e] == w for w, s, e in words)


def _task(**kw: object) -> Ner:
    return Ner(NerConfig(**kw), DataConfig(max_length=64))


def _wordpiece(tmp_path: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "play", "##ing", "paris", "北", "京", "we"]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    # NFKC + strip of format characters: U+200B disappears, so its word gets no subword at all
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace("\u200b", ""), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def test_alignment_split_unk_dropped(tmp_path: Path) -> None:
    tok = _wordpiece(tmp_path)
    task = _task()
    task.labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    # "playing" splits into two subwords; "上" is [UNK]; "\u200b" vanishes; 北 京 are one char each
    ex = {
        "tokens": ["we", "playing", "上", "\u200b", "北", "京"],
        "tags": ["O", "B-PER", "O", "O", "B-LOC", "I-LOC"],
        "source": "x",
        "line": 1,
        "row": {},
    }
    (f,) = task.encode([ex], tok)
    assert ex["word_ids"] == [None, 0, 1, 1, 2, 4, 5, None]
    assert f["labels"] == [-100, 0, 3, -100, 0, 1, 2, -100]
    task_all = _task(label_all_subwords=True)
    task_all.labels = task.labels
    (g,) = task_all.encode([dict(ex)], tok)
    assert g["labels"] == [-100, 0, 3, 4, 0, 1, 2, -100]
    # decoding: first subword decides the word; the dropped word is O
    logits = np.full((8, 5), -5.0)
    for pos, lab in [(1, 0), (2, 3), (3, 1), (4, 0), (5, 1), (6, 2)]:
        logits[pos, lab] = 5.0
    assert task.word_tags(logits, ex) == ["O", "B-PER", "O", "O", "B-LOC", "I-LOC"]


def _ner_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"tokens": ["the", "actor", "is", "good"], "tags": ["O", "B-PER", "O", "O"]})
        else:
            rows.append({"tokens": ["a", "film", "story", "was", "bad"], "tags": ["O", "B-LOC", "I-LOC", "O", "O"]})
    return rows


def test_conll_reader(tmp_path: Path) -> None:
    p = tmp_path / "x.conll"
    p.write_text("-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\n\nPeter NNP B-PER\r\n"
                 "-DOCSTART- -X- O O\nParis NNP B-LOC", encoding="utf-8")  # (no blank line around: still two)
    t = read_table(p)
    assert [(r.line, r.data) for r in t.records] == [
        (3, {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}),
        (7, {"tokens": ["Peter"], "tags": ["B-PER"]}),
        (9, {"tokens": ["Paris"], "tags": ["B-LOC"]}),
    ]
    bad = tmp_path / "bad.conll"  # a tag's error names the tag's own line, not its sentence's first
    bad.write_text("paris B-LOC\nlondon I-LOC\ngood O\nmovie B_LOC\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll:4: tags: invalid tag 'B_LOC' at token 4$"):
        _task().parse(read_table(bad))



def _conll(rows: list[dict], sep: str = " ") -> str:
    return "".join("\n".join(f"{t}{sep}{g}" for t, g in zip(r["tokens"], r["tags"], strict=True)) + "\n\n"
                   for r in rows)


def test_a_conll_file_named_txt_is_read_as_conll(tiny_bert: Path, tmp_path: Path) -> None:
    """A CoNLL file named `.txt` was read as paragraphs of text for NER (`tokens: missing field`; predict tagged each
    line `EU B-ORG` as a text, tag and all). A task that reads tokens and tags (`Task.txt_as_conll`) reads a `.txt`
    whose lines are CoNLL's as CoNLL — train (data check and eval alike: `parse_file`, `read_table`), predict; any
    other task, and a prose `.txt`, read text as before, the NER one in one line saying what to do; a bad line among
    CoNLL lines is named as a `.conll` file's is."""
    train, val = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text("-DOCSTART- -X- O O\n\n" + _conll(_ner_rows(16)), encoding="utf-8")
    val.write_text(_conll(_ner_rows(4), "\t"), encoding="utf-8")
    sets = ["task=ner", f"model={tiny_bert}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={tmp_path / 'run'}", "train.max_steps=1", "train.save_steps=0", "train.precision=fp32"]
    runner = CliRunner()
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "data_summary.json").read_text())["rows_read"]["train"] == 16
    res = runner.invoke(app, ["predict", str(tmp_path / "run"), "--input", str(val)])
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["tokens"] for line in res.stdout.splitlines()] == [r["tokens"] for r in _ner_rows(4)]
    conll = tmp_path / "train.conll"
    conll.write_text(train.read_text(encoding="utf-8"), encoding="utf-8")
    assert [(r.line, r.data) for r in read_table(train, conll_txt=True).records] == \
        [(r.line, r.data) for r in read_table(conll).records]
    assert read_table(train).records[1].data == {"text": "a O\nfilm B-LOC\nstory I-LOC\nwas O\nbad O"}  # (as text)

    prose = tmp_path / "notes.txt"
    prose.write_text("The actor is good.\nA film story.\n\nIt was bad.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"notes.txt:1: tokens: a .txt read as plain text: its lines are not CoNLL's, "
                       r"a token and its tag \(`EU B-ORG`, a blank line between sentences\); name a CoNLL file "):
        _task().parse(read_table(prose, conll_txt=True))
    bad = tmp_path / "bad.txt"  # one line of fifteen without its tag: CoNLL still, the line named
    bad.write_text(_conll(_ner_rows(2)) + "Peter\n" + _conll(_ner_rows(1)), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt:12: tags: expected a token and a tag separated by a space or tab"):
        read_table(bad, conll_txt=True)


@pytest.mark.parametrize(("body", "conll"), [
    # prose the sniff took as CoNLL (predict: tokens ["Traffic"], tag "I-95", the other words dropped)
    ("Traffic is heavy on I-95\n", False), ("Vitamin B-12\n", False), ("Big O\n", False),
    ("Big O\nThe Story of O\nPlanet O\n", False),
    ("Traffic jam on I-95\nAccident near I-80\nRoad work on I-5\n", False),
    # the real sets' lines (../shared/data: CoNLL-2003, Resume's BMES, Weibo's tabs, WNUT-17), and two lines with a
    # sentence's end between them
    ("-DOCSTART- -X- -X- O\n\nEU NNP I-NP B-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP B-MISC\n", True),
    ("高 B-NAME\n勇 E-NAME\n： O\n", True), ("科\tO\n技\tO\n张\tB-PER.NAM\n", True),
    ("@paulwalk\tO\nIt\tO\n's\tO\nEmpire\tB-location\n", True), ("EU B-ORG\n\nPeter B-PER\n", True),
    # CoNLL-2003's German layout: token lemma POS chunk tag (five columns: read as prose for a while)
    ("EU EU NE I-NC B-ORG\nlehnt lehnen VVFIN I-VC O\ndeutsches deutsch ADJA I-NC B-MISC\n", True)])
def test_a_txt_is_conll_only_in_few_columns_and_lines(tmp_path: Path, body: str, conll: bool) -> None:
    """A `.txt` of one line counted as nine in ten CoNLL lines, a type of digits as a tag, a line of any width as a
    token and its columns. Now: four columns at most, a tag whose type holds a letter, lines of one width, three lines
    or a sentence's end."""
    path = tmp_path / "in.txt"
    path.write_text(body, encoding="utf-8")
    assert ("tokens" in read_table(path, conll_txt=True).records[0].data) is conll


def test_a_tab_separated_conll_keeps_a_token_holding_a_space(tiny_bert: Path, tmp_path: Path) -> None:
    """`New York<TAB>B-LOC` was cut at its space: the token `New`, `York` silently gone (and `data check` passed). A
    line with a tab is cut at tabs; a file cut at spaces stays as it was (CoNLL-2003's four columns too), and a line
    there with another number of columns than the file's first, a token holding a space, is refused in one line."""
    tabs = tmp_path / "sp.conll"
    tabs.write_text("I\tO\nlove\tO\nNew York\tB-LOC\n\nSão Paulo \t B-LOC\nrocks\tNN\tO\n\n", encoding="utf-8")
    assert [(r.line, r.data) for r in read_table(tabs).records] == [
        (1, {"tokens": ["I", "love", "New York"], "tags": ["O", "O", "B-LOC"]}),
        (5, {"tokens": ["São Paulo", "rocks"], "tags": ["B-LOC", "O"]})]
    assert [ex["tokens"] for ex in _task().parse(read_table(tabs))] == [["I", "love", "New York"],
                                                                        ["São Paulo", "rocks"]]
    four = tmp_path / "eng.conll"
    four.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n",
                    encoding="utf-8")
    assert [(r.line, r.data) for r in read_table(four).records] == [
        (3, {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}), (6, {"tokens": ["Peter"], "tags": ["B-PER"]})]
    spaced = tmp_path / "spaced.conll"  # a token + tag file: a line of three columns would lose a word
    spaced.write_text("I O\nlove O\nNew York B-LOC\n", encoding="utf-8")
    expected = (f"{spaced}:3: tags: 3 columns where line 1 has 2: columns are cut at spaces, so a token holding a "
                "space reads as two; separate this file's columns with tabs (a token then keeps its spaces)")
    with pytest.raises(DataError) as info:
        read_table(spaced)
    assert str(info.value) == expected
    # read as before (a review of the fix refused them): lines of other widths in a file of three columns or more
    # (a POS column missing on some), and a tag after a tab with a POS column before it cut at a space
    mixed = tmp_path / "mixed.conll"
    mixed.write_text("EU NNP B-ORG\nrejects O\n\nPeter\tNNP B-PER\n", encoding="utf-8")
    assert [r.data for r in read_table(mixed).records] == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
                                                           {"tokens": ["Peter"], "tags": ["B-PER"]}]
    res = CliRunner().invoke(app, ["data", "check", str(spaced), "--task", "ner", "--model", str(tiny_bert)])
    assert res.exit_code == 2 and res.stderr == f"error: {expected}\n", res.output


def test_unseen_tags_at_their_own_line_past_max_length_too(tiny_bert: Path, tmp_path: Path) -> None:
    """A tag the model never trained on is refused for every word, past max_length too (was scored silently), at the
    word's own CoNLL line (was its sentence's first line)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    task = Ner(NerConfig(), DataConfig(max_length=8))
    task.labels = ["O", "B-PER", "I-PER"]
    path = tmp_path / "dev.conll"
    path.write_text("the O\nactor B-PER\n\nthe O\nactor B-PER\nis O\ngood B-LOC\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev.conll:7: tags: tag 'B-LOC' is not among the training tags$"):
        task.encode(task.parse(read_table(path)), tok)
    words = ["the", "actor", "is", "good"] * 5
    tags = ["O", "B-PER", "O", "O"] * 4 + ["O", "B-LOC", "O", "O"]  # word 18: past the 8 tokens
    path.write_text("".join(f"{w} {t}\n" for w, t in zip(words, tags, strict=True)), encoding="utf-8")
    with pytest.raises(DataError, match=r"dev.conll:18: tags: tag 'B-LOC' is not among the training tags$"):
        task.encode(task.parse(read_table(path)), tok)
    rows = Table("d.jsonl", [Record("d.jsonl", 3, {"tokens": words, "tags": tags})])  # JSONL: the row's line
    with pytest.raises(DataError, match=r"^d.jsonl:3: tags: tag 'B-LOC' is not among the training tags$"):
        task.encode(task.parse(rows), tok)
    fine = task.parse(Table("d.jsonl", [Record("d.jsonl", 1, {"tokens": words, "tags": ["O"] * 20})]))
    task.encode(fine, tok)
    assert task.cut_note() == ("ner: 1 row longer than data.max_length (8 tokens): 14 words past it tagged O (split "
                               "long texts into sentences)")
    task.encode(fine[:0], tok)
    assert task.cut_note() is None  # of the last encode only


def test_length_mismatch_is_an_error(tmp_path: Path) -> None:
    task = _task()
    table = Table(
        "d.jsonl", [Record("d.jsonl", 1, _ner_rows(1)[0]), Record("d.jsonl", 2, {"tokens": ["a", "b"], "tags": ["O"]})]
    )
    with pytest.raises(DataError, match=r"^d.jsonl:2: tags: 1 tags for 2 tokens$"):
        task.parse(table)


def test_cli_train_eval_predict(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", _ner_rows(40))
    val = tmp_path / "val.conll"
    val.write_text(
        "".join(
            "\n".join(f"{t} {g}" for t, g in zip(r["tokens"], r["tags"], strict=True)) + "\n\n" for r in _ner_rows(6)
        ),
        encoding="utf-8",
    )
    out = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train",
            "--set",
            "task=ner",
            "--set",
            f"model={tiny_bert}",
            "--set",
            f"data.train={train}",
            "--set",
            f"data.validation={val}",
            "--set",
            f"output_dir={out}",
            "--set",
            "train.epochs=8",
            "--set",
            "train.lr=5e-3",
            "--set",
            "train.batch_size=8",
            "--set",
            "train.save_steps=0",
            "--set",
            "train.class_weights=auto",
        ],
    )
    assert res.exit_code == 0, res.output
    loss = json.loads((out / "data_summary.json").read_text())["applied"]["loss"]
    assert loss["type"] == "token_cross_entropy" and loss["class_weights"]["O"] < 1 < loss["class_weights"]["B-PER"]
    m = json.loads((out / "metrics.json").read_text())["validation"]
    assert {"f1", "precision", "recall", "token_accuracy", "per_type"} <= set(m)
    assert m["f1"] > 0.9, m
    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(val)])
    assert res.exit_code == 0 and json.loads(res.stdout.splitlines()[-1])["f1"] == m["f1"]
    text = "the actor is good, a film story was bad!"
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", "-"], input=text + "\n")
    row = json.loads(res.stdout)
    assert row["entities"] and all(row["text"][e["start"] : e["end"]] == e["text"] for e in row["entities"])
    assert {e["text"] for e in row["entities"]} >= {"actor", "film story"}
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", "-"], input=text * 40 + "\n")
    assert res.exit_code == 0 and "ner: 1 row longer than data.max_length (128 tokens): " in res.stderr, res.output
    assert "past it tagged O (split long texts into sentences)" in res.stderr
    # labelled rows are said to be cut as well (eval said nothing while their recall fell)
    long = write_jsonl(tmp_path / "long.jsonl", [{"tokens": r["tokens"] * 40, "tags": r["tags"] * 40}
                                                 for r in _ner_rows(2)])
    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(long)])
    assert res.exit_code == 0 and "ner: 2 rows longer than data.max_length (128 tokens): " in res.stderr, res.output
    assert tunelab.load(out / "model").evaluate(long)["f1"] < 1  # the API's evaluate too (stderr, once)
    # scoring settings other than the saved ones, for this eval / predict only
    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(val), "--set", "task.decoding=argmax"])
    assert res.exit_code == 0 and "eval: task.decoding=argmax (saved: bio)" in res.stderr, res.output
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", "-", "--set", "task.decoding=argmax"],
                        input=text + "\n")
    assert res.exit_code == 0 and json.loads(res.stdout)["entities"], res.output
    assert "predict: task.decoding=argmax (saved: bio)" in res.stderr
    for bad, words in ((["--set", "task.decoding=viterbi"], "--set task.decoding: Input should be 'bio' or 'argmax'"),
                       (["--set", "task.name=classification"], "only scoring settings change after training "
                        "(task.decoding, task.strict)"),
                       (["--set", "train.lr=1"], "--set train.lr: only task.KEY=VALUE")):
        res = runner.invoke(app, ["predict", str(out / "model"), "--input", "-", *bad], input=text + "\n")
        assert res.exit_code == 2 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_pretokenised_predictions_offsets() -> None:
    task = _task()
    task.labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    ex = {
        "tokens": ["Li", "visited", "北", "京", "today"],
        "word_ids": [None, 0, 1, 2, 3, 4, None],
        "source": "x",
        "line": 1,
        "row": {"id": 7},
    }
    logits = np.zeros((7, 5))
    for pos, lab in [(1, 3), (2, 0), (3, 1), (4, 2), (5, 0)]:
        logits[pos, lab] = 1.0
    (row,) = task.predictions([logits], [ex])
    assert row["id"] == 7 and row["pred_tags"] == ["B-PER", "O", "B-LOC", "I-LOC", "O"]
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in row["entities"]] == [
        ("PER", "Li", 0, 2),
        ("LOC", "北京", 11, 13),
    ]
    assert [(e["token_start"], e["token_end"]) for e in row["entities"]] == [(0, 1), (2, 4)]
    # the row also holds the text its tokens were cut from: the spans index that text, as the output echoes it
    (row,) = task.predictions([logits], [{**ex, "row": {"text": "Li visited 北京, today!"}}])
    assert [(e["text"], e["start"], e["end"]) for e in row["entities"]] == [("Li", 0, 2), ("北京", 11, 13)]
    (row,) = task.predictions([logits], [{**ex, "row": {"text": "  Li  visited北京 today"}}])
    assert all(row["text"][e["start"]:e["end"]] == e["text"] for e in row["entities"])
    assert [(e["start"], e["end"]) for e in row["entities"]] == [(2, 4), (13, 15)]


LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def _logprobs(rows: list[list[float]]) -> np.ndarray:
    x = np.array(rows, dtype=np.float64)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


@pytest.mark.parametrize(("probs", "want"), [
    # the per-word choice is valid: it is the path
    ([[.1, .6, .1, .1, .1], [.1, .1, .6, .1, .1], [.6, .1, .1, .1, .1]], ["B-LOC", "I-LOC", "O"]),
    # an orphan I-LOC after O: the best valid path begins the entity there
    ([[.7, .1, .1, .05, .05], [.1, .3, .4, .1, .1], [.6, .1, .1, .1, .1]], ["O", "B-LOC", "O"]),
    # I-PER after B-LOC is not BIO: the pair is decided together (B-LOC I-LOC beats B-PER I-PER here)
    ([[.1, .5, .1, .2, .1], [.1, .1, .3, .1, .4], [.6, .1, .1, .1, .1]], ["B-LOC", "I-LOC", "O"]),
    # an I- first: not allowed either
    ([[.1, .2, .1, .1, .5], [.1, .1, .1, .1, .6]], ["B-PER", "I-PER"]),
])
def test_bio_viterbi(probs: list[list[float]], want: list[str]) -> None:
    from tunelab.metrics.ner import bio_viterbi

    assert [LABELS[k] for k in bio_viterbi(_logprobs(probs), LABELS)] == want
    assert bio_viterbi(np.zeros((0, 5)), LABELS) == []


def test_decoding_bio_and_argmax() -> None:
    """`task.decoding`: bio (the default) decodes valid BIO, argmax keeps the per-word choice (an orphan I-)."""
    ex = {"tokens": ["a", "b", "c", "d"], "word_ids": [None, 0, 1, 2, None], "tags": ["O", "B-PER", "I-PER", "O"]}
    logits = np.log(np.array([[.2] * 5, [.1, .1, .1, .5, .2], [.1, .1, .5, .1, .2], [.6, .1, .1, .1, .1],
                              [.2] * 5]))
    task = _task()
    task.labels = LABELS
    assert task.cfg.decoding == "bio"
    assert task.word_tags(logits, ex) == ["B-PER", "I-PER", "O", "O"]  # "d" has no subword: O
    task = _task(decoding="argmax")
    task.labels = LABELS
    assert task.word_tags(logits, ex) == ["B-PER", "I-LOC", "O", "O"]


def test_data_check_ner(tiny_bert: Path, tmp_path: Path) -> None:
    """`data check --task ner` (was a KeyError: 'text'): entity types, token lengths of the words, duplicates."""
    rows = _ner_rows(12)
    path = write_jsonl(tmp_path / "ner.jsonl", [*rows, rows[0]])
    res = CliRunner().invoke(app, ["data", "check", str(path), "--task", "ner", "--model", str(tiny_bert), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)["files"][str(path)]
    assert r["rows"] == 13 and r["duplicates_exact"] == 11  # _ner_rows repeats two sentences
    want = {t: sum(1 for row in [*rows, rows[0]] for tag in row["tags"] if tag == f"B-{t}") for t in r["labels"]}
    assert r["labels"] and r["labels"] == want
    assert r["token_length"]["max"] >= max(len(row["tokens"]) for row in rows) + 2  # [CLS] ... [SEP]


def _tagged(tokens: list[str], tags: list[str], task: Ner) -> tuple[list[np.ndarray], list[dict]]:
    """Logits that predict `tags` for a row whose every token is one subword (positions 1..n)."""
    logits = np.full((len(tokens) + 2, len(task.labels)), -5.0)
    for i, tag in enumerate(tags):
        logits[i + 1, task.labels.index(tag)] = 5.0
    ex = {"tokens": tokens, "tags": tags, "word_ids": [None, *range(len(tokens)), None], "source": "x", "line": 1,
          "row": {"id": 1}}
    return [logits], [ex]


def test_character_level_chinese_rows_index_the_sentence() -> None:
    """Tokens were joined by spaces except between two CJK characters: 'T C L 集团', and for 王五1990年出生于上海 (one
    character a token) 上海 came out at 15–17 of a text nobody has instead of 10–12 of the sentence."""
    from tunelab.tasks.ner_report import highlight

    task = _task()
    task.labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    tokens = list("王五1990年出生于上海")
    tags = ["B-PER", "I-PER"] + ["O"] * 8 + ["B-LOC", "I-LOC"]
    logits, examples = _tagged(tokens, tags, task)
    (row,) = task.predictions(logits, examples)
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in row["entities"]] == [
        ("PER", "王五", 0, 2), ("LOC", "上海", 10, 12)]
    assert row["text"] == "王五1990年出生于上海"  # the sentence its offsets index, carried in the output
    assert task.records(logits, examples)[0]["text"] == "王五1990年出生于上海"
    tokens = ["T", "C", "L", "集", "团", "在", "深", "圳"]
    tags = ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "B-LOC", "I-LOC"]
    logits, examples = _tagged(tokens, tags, task)
    (row,) = task.predictions(logits, examples)
    assert [(e["text"], e["start"], e["end"]) for e in row["entities"]] == [("TCL集团", 0, 5), ("深圳", 6, 8)]
    assert row["text"] == task.records(logits, examples)[0]["text"] == task.example_text(examples[0]) == "TCL集团在深圳"
    # the report's sentences, as the records: no spaces in a character-level Chinese row
    marked = highlight(tokens, {("ORG", 0, 5)}, set(), "gold")
    assert ">TCL集团<" in marked and marked.endswith("</mark>在深圳")
    # word-segmented Chinese: a space only between two Latin words; an English row keeps its spaces
    (row,) = task.predictions(*_tagged(["我", "喜欢", "The", "Weeknd", "的", "“", "Blinding", "Lights", "”", "。"],
                                       ["O", "O", "B-PER", "I-PER"] + ["O"] * 6, task))
    assert row["text"] == "我喜欢The Weeknd的“Blinding Lights”。"
    assert [(e["text"], e["start"], e["end"]) for e in row["entities"]] == [("The Weeknd", 3, 13)]
    (row,) = task.predictions(*_tagged(["Angela", "Merkel", "visited", "Paris", "."],
                                       ["B-PER", "I-PER", "O", "B-LOC", "O"], task))
    assert row["text"] == "Angela Merkel visited Paris ." and row["entities"][1]["start"] == 22


def test_a_space_token_in_a_character_level_row(tmp_path: Path) -> None:
    """A space (U+3000 or ' ') is a token of a character-level row: JSONL refused it ('token 3 is not a non-empty
    string'), CoNLL split `\\u3000 O` at the U+3000 ('expected a token and a tag separated by whitespace')."""
    tokens, tags = ["我", "在", "\u3000", "北", "京", " ", "工", "作"], ["O", "O", "O", "B-LOC", "I-LOC", "O", "O", "O"]
    jsonl = tmp_path / "zh.jsonl"
    write_jsonl(jsonl, [{"tokens": tokens, "tags": tags}])
    conll = tmp_path / "zh.conll"
    conll.write_text("".join(f"{t} {g}\n" for t, g in zip(tokens, tags, strict=True) if t != " "), encoding="utf-8")
    task = _task()
    (ex,) = task.parse(read_table(jsonl))
    assert ex["tokens"] == tokens and ex["tags"] == tags
    (zh,) = task.parse(read_table(conll))
    assert zh["tokens"] == [t for t in tokens if t != " "] and zh["tags"][2] == "O"
    # the space has no subword: no label, predicted O
    task.labels = ["O", "B-LOC", "I-LOC"]
    tok = _wordpiece(tmp_path)
    (f,) = task.encode([ex], tok)
    assert 2 not in ex["word_ids"] and 5 not in ex["word_ids"] and len(f["labels"]) == len(ex["word_ids"])
    (row,) = task.predictions([np.zeros((len(ex["word_ids"]), 3))], [ex])
    assert row["pred_tags"][2] == row["pred_tags"][5] == "O"
    assert row["text"] == "我在\u3000北京 工作"
    # still refused, in one line naming the character: an empty token, and a CoNLL line with no ASCII separator
    write_jsonl(jsonl, [{"tokens": ["我", ""], "tags": ["O", "O"]}])
    with pytest.raises(DataError, match=r"zh.jsonl:1: tokens: token 2 is not a non-empty string: ''$"):
        task.parse(read_table(jsonl))
    # lines with another space at a column's end or inside it read as before (any whitespace splits them)
    conll.write_text("John B-PER\u00a0\nlives O\n\nJohn\u00a0NNP B-PER\nlives O\n", encoding="utf-8")
    assert [(r["tokens"], r["tags"]) for r in task.parse(read_table(conll))] == [
        (["John", "lives"], ["B-PER", "O"]), (["John", "lives"], ["B-PER", "O"])]
    conll.write_text("我 O\n\u3000O\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"zh.conll:2: tags: expected a token and a tag separated by a space or tab; "
                                        r"U\+3000 IDEOGRAPHIC SPACE is not one$"):
        task.parse(read_table(conll))
    conll.write_text("我\u3000O\n北\u3000B-LOC\n", encoding="utf-8")  # as before: a file whose only separator it is
    assert task.parse(read_table(conll))[0]["tokens"] == ["我", "北"]


def test_a_model_tuned_for_another_task_gets_a_new_head(tiny_bert: Path, tmp_path: Path) -> None:
    """A NER model continued for classification with as many labels as it had tags took the tag rows for its
    classes; a classification model continued for NER with another number of tags failed to load in transformers
    (a traceback: `classifier` of another size). Another task's head is dropped and a new one initialised."""
    from safetensors.torch import load_file

    from conftest import sentiment_rows

    def train(task: str, out: str, rows: list[dict], model: Path) -> np.ndarray:
        sets = [f"task={task}", f"model={model}", f"data.train={write_jsonl(tmp_path / f'{out}.jsonl', rows)}",
                "data.validation_split=0", f"output_dir={tmp_path / out}", "train.max_steps=2", "train.batch_size=4",
                "train.save_steps=0", "train.report=false", "train.lr=1e-9"]
        res = CliRunner().invoke(app, ["train", *[x for s in sets for x in ("--set", s)]])
        assert res.exit_code == 0, res.output
        return load_file(str(tmp_path / out / "model" / "model.safetensors"))["classifier.weight"].numpy()

    tag_rows = train("ner", "tags", _ner_rows(8), tiny_bert)  # O, B-/I-LOC, B-/I-PER
    class_rows = train("classification", "classes", sentiment_rows(10, 0, tuple("abcde")), tmp_path / "tags" / "model")
    assert tag_rows.shape == class_rows.shape and np.abs(tag_rows - class_rows).max() > 1e-3
    per = [r for r in _ner_rows(8) if "B-PER" in r["tags"]]  # O, B-PER, I-PER: 3 rows against the classifier's 5
    assert train("ner", "again", per, tmp_path / "classes" / "model").shape == (3, tag_rows.shape[1])


def test_continuing_a_tuned_ner_model_keeps_its_tags(tiny_bert: Path, tmp_path: Path) -> None:
    """`model: RUN/model` of a NER run: its tags stay on the head rows they trained (in its order), the new data's
    types are appended and the head grows — as many types renamed no longer reuse the rows under other names, and
    another number of types no longer fails to load the head."""
    from safetensors.torch import load_file

    def train(out: str, rows: list[dict], model: Path, *extra: str) -> Path:
        sets = ["task=ner", f"model={model}", f"data.train={write_jsonl(tmp_path / f'{out}.jsonl', rows)}",
                "data.validation_split=0", f"output_dir={tmp_path / out}", "train.max_steps=2", "train.batch_size=4",
                "train.save_steps=0", "train.report=false", *extra]
        res = CliRunner().invoke(app, ["train", *[x for s in sets for x in ("--set", s)]])
        assert res.exit_code == 0, res.output
        return tmp_path / out / "model"

    def head(model: Path) -> tuple[dict[str, str], np.ndarray]:
        config = json.loads((model / "config.json").read_text(encoding="utf-8"))
        return config["id2label"], load_file(str(model / "model.safetensors"))["classifier.weight"].numpy()

    first = train("first", _ner_rows(8), tiny_bert)
    old_tags, old_rows = head(first)
    assert list(old_tags.values()) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    renamed = [{**r, "tags": [t.replace("LOC", "ORG") for t in r["tags"]]} for r in _ner_rows(8)]  # as many types
    tags, rows = head(train("renamed", renamed, first, "train.lr=1e-9"))
    assert list(tags.values()) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    assert np.abs(rows[:5] - old_rows).max() < 1e-5  # each old tag's row, kept under its name
    more = [*_ner_rows(8), {"tokens": ["paris", "is", "good"], "tags": ["B-GPE", "O", "O"]}]  # one type more
    tags, rows = head(train("more", more, first, "method=lora", "method.r=2", "train.lr=1e-9"))
    assert list(tags.values()) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-GPE", "I-GPE"]
    assert np.abs(rows[:5] - old_rows).max() < 1e-5
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "more" / "model"), "--data", str(tmp_path / "more.jsonl")])
    assert res.exit_code == 0, res.output


# -- rows of a text and its entities as character spans (tasks/ner_spans.py) -------------------------------------------
_EN = "Angela Merkel visited Paris."
_ZH = "浙商银行企业信贷部叶老桂博士则从另一个角度"
_EN_TAGS = ["B-PER", "I-PER", "O", "B-LOC", "O"]
_ZH_TAGS = ["B-company", "I-company", "I-company", "I-company"] + ["O"] * 5 + ["B-name", "I-name", "I-name"] + \
    ["O"] * 9


def _ls_task(text: str, spans_: list[tuple[int, int, str]], **extra: object) -> dict:
    """A task of a Label Studio JSON export (one annotation, one labelled span a result)."""
    result = [{"value": {"start": s, "end": e, "text": text[s:e], "labels": [t]}, "from_name": "label",
               "to_name": "text", "type": "labels"} for s, e, t in spans_]
    return {"id": 1, "data": {"text": text}, "annotations": [{"id": 1, "result": result, **extra}], "predictions": []}


@pytest.mark.parametrize(("row", "tags"), [
    # CLUENER2020 (its first train row's shape): the end is INCLUSIVE, the key the entity's text
    ({"text": _ZH, "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}}}, _ZH_TAGS),
    ({"text": _EN, "label": {"PER": {"Angela Merkel": [[0, 12]]}, "LOC": {"Paris": [[22, 26]]}}}, _EN_TAGS),
    # doccano: [start, end, TYPE], end exclusive; newer doccano's entities; spaCy's; Label Studio's JSON-MIN
    ({"text": _EN, "label": [[0, 13, "PER"], [22, 27, "LOC"]]}, _EN_TAGS),
    ({"text": _ZH, "label": [[9, 12, "name"], [0, 4, "company"]]}, _ZH_TAGS),
    ({"id": 7, "text": _EN, "entities": [{"id": 1, "label": "PER", "start_offset": 0, "end_offset": 13},
                                         {"id": 2, "label": "LOC", "start_offset": 22, "end_offset": 27}],
      "relations": []}, _EN_TAGS),
    ({"text": _ZH, "entities": [[0, 4, "company"], [9, 12, "name"]]}, _ZH_TAGS),
    ({"id": 3, "text": _EN, "labels": [[0, 13, "PER"], [22, 27, "LOC"]]}, _EN_TAGS),  # doccano 1.x's export
    ({"text": _EN, "label": [{"start": 0, "end": 14, "text": "Angela Merkel ", "labels": ["PER"]},  # (a space: kept)
                             {"start": 22, "end": 27, "text": "Paris", "labels": ["LOC"]}]}, _EN_TAGS),
    # a Label Studio JSON export's task: its cancelled annotation left out
    ({**_ls_task(_ZH, [(0, 4, "company"), (9, 12, "name")]),
      "annotations": [{"was_cancelled": True, "result": []},
                      *_ls_task(_ZH, [(0, 4, "company"), (9, 12, "name")])["annotations"]]}, _ZH_TAGS),
    (_ls_task(_EN, [(0, 13, "PER"), (22, 27, "LOC")]), _EN_TAGS),
    ({"text": _EN, "entities": []}, ["O"] * 5),  # a sentence without entities
    # what ner's predict writes (`type`: read as `entity type null`), read back to correct and train again
    ({"text": _EN, "pred_tags": _EN_TAGS, "entities": [
        {"type": "PER", "text": "Angela Merkel", "start": 0, "end": 13, "token_start": 0, "token_end": 2},
        {"type": "LOC", "text": "Paris", "start": 22, "end": 27, "token_start": 3, "token_end": 4}]}, _EN_TAGS),
    # a span given twice, identically (doccano / Label Studio exports hold these), was refused as overlapping
    ({"text": _EN, "label": [[0, 13, "PER"], [22, 27, "LOC"], [0, 13, "PER"]]}, _EN_TAGS),
    ({"text": _ZH, "label": {"name": {"叶老桂": [[9, 11], [9, 11]]}, "company": {"浙商银行": [[0, 3]]}}}, _ZH_TAGS),
])
def test_span_rows_become_words_and_bio_tags(row: dict, tags: list[str]) -> None:
    """A text with character spans was refused (`tokens: missing field; ... which ner does not read`): now its words
    (as predict splits a text, each CJK character one) are tagged B-/I- where a span covers them, O elsewhere."""
    (ex,) = _task().parse(Table("d.jsonl", [Record("d.jsonl", 1, row)]))
    text = row["data"]["text"] if "data" in row else row["text"]
    assert ex["tokens"] == [w for w, _, _ in split_words(text)] and ex["tags"] == tags
    assert [text[s:e] for s, e in ex["offsets"]] == ex["tokens"]


def test_a_span_row_is_read_as_a_token_row() -> None:
    """A span row is its words and tags, as a token row: data.augment edited its text, its tokens and tags unchanged
    (copies reported as augmented); dedup / leakage compared its text and tokens, a token row's tokens only (one
    sentence, two texts); "training data has no entities" named `tags`, a field the rows lack."""
    from tunelab.config.sections import AugmentConfig
    from tunelab.data.augment import augment_examples
    from tunelab.data.dedup import duplicate_keys
    from tunelab.errors import ConfigError

    task = _task()
    a, c = task.parse(Table("d.jsonl", [Record("d.jsonl", 1, {"text": "E12 at Big", "label": [[0, 3, "ID"]]}),
                                        Record("d.jsonl", 2, {"text": "E12 at Big", "label": []})]))
    with pytest.raises(ConfigError, match="data.augment: this task's rows have no text to augment"):
        augment_examples([a], AugmentConfig(ops=["delete", "swap"], copies=1), 0, None)
    assert duplicate_keys(a) == duplicate_keys({"tokens": ["E12", "at", "Big"], "tags": ["O", "O", "O"]})
    with pytest.raises(DataError, match=r"^d.jsonl: label: training data has no entities$"):
        task.check_train([c])
    # the rows hash as the span rows of the runs made before (their `text`): an unchanged file was "changed data"
    # to report / export / --resume of such a run
    from tunelab.data.report import training_fingerprint

    before = {("text" if k == "raw_text" else k): v for k, v in a.items()}
    assert "raw_text" in a and training_fingerprint([a]) == training_fingerprint([before])


def test_a_span_edge_inside_a_word_splits_it_and_is_counted() -> None:
    """A span whose edge fell inside a word refused the whole file (Weibo NER's `E12` of `E12http`; Korean `삼성전자`
    of `삼성전자는`, a particle on the word: nearly every Korean file): the word is split there, and the splits and
    the spans given twice are counted, once for the file (`Task.read_counts`). Duplicates compare the text's words,
    so a sentence is one key however it is labelled or given."""
    from tunelab.data.dedup import duplicate_keys

    task = _task()
    rows = [{"text": "E12http at Bigwok", "label": [[0, 3, "ID"], [11, 14, "LOC"], [11, 14, "LOC"]]},
            {"text": "삼성전자는 서울에", "entities": [[0, 4, "ORG"], [6, 8, "LOC"]]},
            {"text": "E12http at Bigwok", "label": []}]
    a, b, c = task.parse(Table("d.jsonl", [Record("d.jsonl", i + 1, r) for i, r in enumerate(rows)]))
    assert (a["tokens"], a["tags"]) == (["E12", "http", "at", "Big", "wok"], ["B-ID", "O", "O", "B-LOC", "O"])
    assert (b["tokens"], b["tags"]) == (["삼성전자", "는", "서울", "에"], ["B-ORG", "O", "B-LOC", "O"])
    assert [rows[0]["text"][s:e] for s, e in a["offsets"]] == a["tokens"]
    assert task.read_counts() == {
        "words_split_at_entity_edge": (4, "4 words split at an entity's edge (e.g. 'E12http' at line 1)"),
        "duplicate_spans_taken_once": (1, "1 span given twice, identical, taken once (e.g. label span 3 [11, 14, "
                                          "\"LOC\"] at line 1)")} and task.read_counts() == {}
    token_row = {"tokens": ["E12http", "at", "Bigwok"], "tags": ["O", "O", "O"]}
    assert duplicate_keys(a) == duplicate_keys(c) == duplicate_keys(token_row)


def test_a_span_edge_between_characters_as_they_print_splits_the_word() -> None:
    """A cut between two conjuncts (Hindi `क्ष` | `त्रि`, Khmer `ក` | `ម្ពុ`), or inside a Tamil word after its pulli
    (a visible virama: two characters as they print), splits the word; Unicode's extended grapheme clusters decide."""
    rows = [{"text": "क्षत्रिय राजा", "entities": [[0, 3, "PER"]]}, {"text": "កម្ពុជា", "entities": [[0, 1, "LOC"]]},
            {"text": "சென்னை", "entities": [[0, 4, "LOC"]]}]
    a, b, c = _task().parse(Table("d.jsonl", [Record("d.jsonl", i + 1, r) for i, r in enumerate(rows)]))
    assert (a["tokens"], a["tags"]) == (["क्ष", "त्रिय", "राजा"], ["B-PER", "O", "O"])
    assert (b["tokens"], b["tags"]) == (["ក", "ម្ពុជា"], ["B-LOC", "O"])
    assert (c["tokens"], c["tags"]) == (["சென்", "னை"], ["B-LOC", "O"])


def test_what_reading_changed_is_said_for_a_models_labelled_file(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`export --data` / `compress --data` (`labelled_rows`) and eval (`model_examples`) read a labelled file without
    `Task.read_counts`: its words split at an entity's edge and its spans given twice went unsaid."""
    from tunelab.export.artifact import labelled_rows

    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "the actors", "label": [[4, 9, "PER"], [4, 9, "PER"]]}])
    task = _task()
    task.parse(Table("other.jsonl", [Record("other.jsonl", 1, {"text": "E12http", "label": [[0, 3, "ID"]]})]))
    labelled_rows(task, None, path)
    assert capsys.readouterr().err == (f"{path}: 1 word split at an entity's edge (e.g. 'actors' at line 1)\n"
                                       f"{path}: 1 span given twice, identical, taken once (e.g. label span 2 [4, 9, "
                                       "\"PER\"] at line 1)\n")


@pytest.mark.parametrize(("row", "error"), [
    ({"text": "Cafe\u0301 Paris", "entities": [[0, 4, "ORG"]]},  # a cut between a letter and its combining mark
     "entities: span 1 [0, 4, \"ORG\"]: 'Cafe' ends inside a character of the word 'Cafe\u0301' (at 0–5): 'e' and "
     "U+0301 print as one; an entity's edge must fall between characters as they print"),
    # a cut after a virama that joins two consonants into one conjunct (Hindi क्ष, Khmer's coeng): split there
    ({"text": "क्षत्रिय राजा", "entities": [[0, 2, "PER"]]},
     "entities: span 1 [0, 2, \"PER\"]: 'क्' ends inside a character of the word 'क्षत्रिय' (at 0–8): '्' and U+0937 "
     "print as one"),
    ({"text": "កម្ពុជា", "entities": [[0, 3, "LOC"]]},
     "entities: span 1 [0, 3, \"LOC\"]: 'កម្' ends inside a character of the word 'កម្ពុជា' (at 0–7): '្' and "
     "U+1796 print as one"),
    ({"text": _EN, "label": [[22, 29, "LOC"]]},
     "label: span 1 [22, 29, \"LOC\"]: outside the text, whose 28 characters are at 0 to 27 (an end is exclusive: at "
     "most 28)"),
    ({"text": _EN, "label": [[5, 5, "PER"]]},
     "label: span 1 [5, 5, \"PER\"]: an empty span: its start must be before its end (exclusive)"),
    ({"text": _EN, "label": [[0, 13, "PER"], [7, 13, "PER"]]},
     "label: span 2 [7, 13, \"PER\"]: overlaps span 1 [0, 13, \"PER\"]: nested or overlapping entities are not "
     "supported (one type a word)"),
    # CLUENER: the end is inclusive; an exclusive one is said so, an offset off by one names where the entity is
    ({"text": _ZH, "label": {"company": {"浙商银行": [[0, 4]]}}},
     "label: 'company' '浙商银行' [0, 4]: the entity '浙商银行' is not the text at its offsets, which holds "
     "'浙商银行企'; CLUENER's end is inclusive, and this one looks exclusive"),
    ({"text": _ZH, "label": {"name": {"叶老桂": [[10, 12]]}}},
     "label: 'name' '叶老桂' [10, 12]: the entity '叶老桂' is not the text at its offsets, which holds '老桂博' "
     "(the entity is at 9, -1 from start)"),
    ({"text": _ZH, "label": {"name": {"叶老桂": [[9, 21]]}}},
     "label: 'name' '叶老桂' [9, 21]: the entity '叶老桂' is not the text at its offsets, which holds "
     "'叶老桂博士则从另一个角度' (it ends at 11: the end is off)"),
    ({"text": _ZH, "label": {"name": {"王五": [[9, 21]]}}},
     "label: 'name' '王五' [9, 21]: outside the text, whose 21 characters are at 0 to 20 (CLUENER's end is inclusive)"),
    ({"text": _ZH, "label": {"name": ["叶老桂"]}},
     "label: 'name': expected {\"ENTITY\": [[start, end], ...]} (CLUENER), got [\"叶老桂\"]"),
    # Label Studio: its text named, UTF-16 offsets (an emoji counts two in JavaScript) said so
    ({"data": {"text": "👍 Angela"}, "annotations": [{"result": [
        {"value": {"start": 3, "end": 9, "text": "Angela", "labels": ["PER"]}, "type": "labels"}]}]},
     "annotations[0].result[0]: [3, 9) [\"PER\"]: the entity 'Angela' is not the text at its offsets, which holds "
     "'ngela' (3 is its UTF-16 offset, as JavaScript and Java count, an emoji as two; start counts characters: 2)"),
    ({**_ls_task(_EN, []), "annotations": []},
     "annotations: the task has no annotation (none made, or all cancelled): label it, or export only annotated "
     "tasks"),
    ({**_ls_task(_EN, []), "annotations": [{"result": []}, {"result": []}]},
     "annotations: 2 annotations of one task (several annotators): ner reads one a task; keep one"),
    ({**_ls_task(_EN, []), "annotations": [{"result": [{"type": "relation", "from_id": "a", "to_id": "b"}]}]},
     "annotations[0].result[0]: expected a labelled span {\"value\": {\"start\", \"end\", \"labels\": [\"TYPE\"]}}, "
     "got a 'relation' result (ner reads labelled spans only)"),
    ({"data": {"sentence": _EN}, "annotations": []}, "data.text: missing field (the row has: sentence)"),
    # shapes that are not spans; a text without its entities (CLUENER's test split) in training
    ({"id": 1, "text": _EN}, "tokens: missing field (the row has: id, text): a row is tokens + tags, or a text with "
                             "its entities as character spans under label, labels or entities (CLUENER, doccano, "
                             "spaCy; docs/tasks.md)"),
    ({"text": _EN, "label": "PER"},
     "label: expected CLUENER's {\"TYPE\": {\"ENTITY\": [[start, end], ...]}}, doccano's [[start, end, \"TYPE\"], ...] "
     "or [{\"start\", \"end\", \"label\"}, ...], got \"PER\""),
    ({"text": _EN, "label": [[0, 13]]}, "label: span 1 [0, 13]: expected CLUENER's"),
    ({"text": _EN, "entities": [["0", "13", "PER"]]}, "entities: span 1 [\"0\", \"13\", \"PER\"]: start and end must "
                                                      "be integers"),
    ({"text": _EN, "label": [{"start": 0, "end": 13, "labels": ["PER", "NAME"]}]},
     "label: span 1 {\"start\": 0, \"end\": 13, \"labels\": [\"PER\", \"NAME\"]}: 2 labels [\"PER\", \"NAME\"] for one "
     "span: ner gives a span one type"),
    ({"text": _EN, "entities": [[0, 13, 5]]},
     "entities: span 1 [0, 13, 5]: entity type 5: expected a name (PER, LOC ...), no space at its ends"),
    # a type that does not print was taken as a tag (CLUENER's printed raw: a two-line error); one that is a tag
    # became B-B-LOC / B-O
    ({"text": _EN, "entities": [[0, 13, "PE\nR"]]},
     "entities: span 1 [0, 13, \"PE\\nR\"]: entity type 'PE\\nR': it holds U+000A, which does not print: a type is a "
     "name of visible characters (PER, LOC ...)"),
    ({"text": _EN, "label": [{"start": 0, "end": 13, "labels": ["P\u200bER"]}]},
     "label: span 1 {\"start\": 0, \"end\": 13, \"labels\": [\"P\\u200bER\"]}: entity type 'P\\u200bER': it holds "
     "U+200B ZERO WIDTH SPACE, which does not print"),
    ({"text": _ZH, "label": {"na\tme": {"叶老桂": [[9, 11]]}}},
     "label: entity type 'na\\tme': it holds U+0009, which does not print"),
    ({"text": _ZH, "label": {"na\nme": {"叶老桂": [9, 11]}}}, "label: entity type 'na\\nme': it holds U+000A"),
    ({"text": _EN, "label": [[0, 13, "B-PER"]]},
     "label: span 1 [0, 13, \"B-PER\"]: entity type 'B-PER' is a tag, not a type: write the type name ('PER'); ner "
     "writes the B- and I- tags itself"),
    ({"text": _EN, "label": [[0, 13, "O"]]},
     "label: span 1 [0, 13, \"O\"]: entity type 'O' is a tag, not a type: write the type name (PER, LOC ...); a word "
     "outside every entity needs no span"),
    ({"text": _EN, "entities": [{"start": 0, "end": 13, "label": "PER", "type": "LOC"}]},
     "entities: span 1 {\"start\": 0, \"end\": 13, \"label\": \"PER\", \"type\": \"LOC\"}: both label and type: which "
     "is its type? keep one"),
    ({"text": _EN, "entities": [{"start": 0, "end": 13}]},
     "entities: span 1 {\"start\": 0, \"end\": 13}: no entity type (label, labels or type)"),
    ({"text": _EN, "label": [[0, 13, "PER"]], "entities": []},
     "label: the row has both label and entities: which holds its entities? keep one"),
])
def test_span_rows_refused_in_one_line(tmp_path: Path, row: dict, error: str) -> None:
    """Every bad span is one line naming the file, the row's line and the field, the span as the row writes it."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": _EN, "label": [[0, 13, "PER"]]}, row])
    with pytest.raises(DataError) as info:
        _task().parse(read_table(path))
    assert str(info.value).startswith(f"{path}:2: {error}"), str(info.value)


def test_span_rows_train_eval_predict_and_check(tiny_bert: Path, tmp_path: Path) -> None:
    """CLUENER rows train; a Label Studio export (a JSON list of tasks) and doccano rows are scored as token rows
    are; `data check` counts their entities and finds the token rows of their sentences; predict gives the entities'
    offsets in the row's text, and its output, corrected, is read back (eval, train). A word split at an entity's
    edge and a span given twice are said once on stderr, and counted in data_summary.json and data check."""
    rows = [{"text": "the actor is good", "label": {"PER": {"actor": [[4, 8]]}}},
            {"text": "a film story was bad", "label": {"LOC": {"film story": [[2, 11]]}}}] * 4
    train = write_jsonl(tmp_path / "train.jsonl", [*rows, {"text": "the actors", "label": [[4, 9, "PER"]] * 2}])
    val = tmp_path / "val.json"
    val.write_text(json.dumps([_ls_task("the actor is good", [(4, 9, "PER")]),
                               _ls_task("a film story was bad", [(2, 12, "LOC")])], indent=1), encoding="utf-8")
    out, runner = tmp_path / "run", CliRunner()
    sets = ["task=ner", f"model={tiny_bert}", f"data.train={train}", f"data.validation={val}", f"output_dir={out}",
            "train.max_steps=2", "train.batch_size=4", "train.save_steps=0", "train.precision=fp32"]
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    assert res.stderr.count(f"{train}: 1 word split at an entity's edge (e.g. 'actors' at line 9)\n") == 1
    assert res.stderr.count(f"{train}: 1 span given twice, identical, taken once (e.g. label span 2 [4, 9, "
                            "\"PER\"] at line 9)\n") == 1, res.stderr
    assert json.loads((out / "data_summary.json").read_text())["changed_as_read"] == {
        "train": {"words_split_at_entity_edge": 1, "duplicate_spans_taken_once": 1}}
    m = json.loads((out / "metrics.json").read_text())["validation"]
    assert m["n"] == 2 and set(m["per_type"]) == {"PER", "LOC"}, m
    doccano = write_jsonl(tmp_path / "dev.jsonl", [{"text": "the actor is good", "label": [[4, 9, "PER"]]},
                                                   {"text": "a film story was bad", "label": [[2, 12, "LOC"]]}])
    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(doccano)])
    assert res.exit_code == 0 and json.loads(res.stdout.splitlines()[-1])["f1"] == m["f1"], res.output
    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(train)])  # (said as training says it)
    assert res.exit_code == 0 and res.stderr.count(f"{train}: 1 word split at an entity's edge (e.g. 'actors' at "
                                                   "line 9)\n") == 1, res.output
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(val)])
    assert res.exit_code == 0, res.output
    for line in res.stdout.splitlines():
        row = json.loads(line)
        assert all(row["data"]["text"][e["start"]:e["end"]] == e["text"] for e in row["entities"])
    # predict → correct → eval and train again: its entities ({"type", "text", "start", "end", ...}) were refused
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"text": "the actor is good"}, {"text": "a film story was bad"}])
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(raw)])
    assert res.exit_code == 0, res.output
    gold = [[("PER", 4, 9, 1, 2)], [("LOC", 2, 12, 1, 3)]]
    fixed = [{**json.loads(line), "entities": [{"type": t, "text": r["text"][s:e], "start": s, "end": e,
                                                "token_start": a, "token_end": b} for t, s, e, a, b in g]}
             for line, r, g in zip(res.stdout.splitlines(), [{"text": "the actor is good"},
                                                              {"text": "a film story was bad"}], gold, strict=True)]
    corrected = write_jsonl(tmp_path / "corrected.jsonl", fixed)
    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(corrected)])
    assert res.exit_code == 0 and json.loads(res.stdout.splitlines()[-1])["f1"] == m["f1"], res.output
    again = [f"data.train={corrected}", f"data.validation={corrected}", f"output_dir={tmp_path / 'again'}"]
    res = runner.invoke(app, ["train", *[a for s in [*sets[:2], *again, *sets[5:]] for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    tokens = write_jsonl(tmp_path / "tokens.jsonl", [{"tokens": ["the", "actor", "is", "good"],
                                                      "tags": ["O", "B-PER", "O", "O"]}])
    res = runner.invoke(app, ["data", "check", str(train), str(tokens), "--task", "ner", "--model", str(tiny_bert),
                              "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["files"][str(train)]["labels"] == {"PER": 5, "LOC": 4}
    assert report["files"][str(train)]["changed_as_read"] == {"words_split_at_entity_edge": 1,
                                                               "duplicate_spans_taken_once": 1}
    assert report["overlap"] == [{"a": str(train), "b": str(tokens), "shared_texts": 1}]  # (was 0: text ≠ tokens)
    bad = write_jsonl(tmp_path / "bad.jsonl", [*rows[:2], {"text": "Cafe\u0301", "label": {"PER": {"Cafe": [[0, 3]]}}}])
    res = runner.invoke(app, ["data", "check", str(bad), "--task", "ner", "--model", str(tiny_bert)])
    assert res.exit_code == 2 and res.stderr == (f"error: {bad}:3: label: 'PER' 'Cafe' [0, 3]: 'Cafe' ends inside a "
                                                 "character of the word 'Cafe\u0301' (at 0–5): 'e' and U+0301 print "
                                                 "as one; an entity's edge must fall between characters as they "
                                                 "print\n"), res.output


@pytest.mark.parametrize(("study", "args", "subs"), [("cv", ["--folds", "2"], ["fold-1", "fold-2"]),
                                                      ("curve", ["--fractions", "1"], ["frac-1"])])
def test_a_study_says_what_reading_changed_once(tiny_bert: Path, tmp_path: Path, study: str, args: list[str],
                                                subs: list[str]) -> None:
    """cv / curve said the words split at an entity's edge again for each sub-run's files (cv/fold-k/train.jsonl:
    lines of files the user never wrote): the study's own read says them, the sub-runs count them."""
    import yaml

    rows = [{"text": "the actors", "label": [[4, 9, "PER"]]}, {"text": "a film was bad", "label": [[2, 6, "LOC"]]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows * 4)
    cfg = {"task": "ner", "model": str(tiny_bert), "output_dir": str(tmp_path / "out"),
           "data": {"train": str(train), "validation_split": 0.25},
           "train": {"max_steps": 1, "batch_size": 4, "save_steps": 0, "precision": "fp32", "report": False}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = CliRunner().invoke(app, [study, str(path), *args])
    assert res.exit_code == 0, res.output
    said = [line for line in res.stderr.splitlines() if "split at an entity's edge" in line]
    assert said == [f"{train}: 4 words split at an entity's edge (e.g. 'actors' at line 1)"], res.stderr
    for sub in subs:
        changed = json.loads((tmp_path / "out" / study / sub / "data_summary.json").read_text())["changed_as_read"]
        assert changed["train"]["words_split_at_entity_edge"] > 0, changed


def test_a_token_utf8_cannot_carry_is_one_line() -> None:
    """A token with a lone surrogate given to a model (predict, the API, eval) was a TypeError from the tokenizer
    (the CLI: a traceback, exit 1); a text holding one is refused, and `tunelab serve` refused it: now the row and
    the token are named, as for a text. A NUL in a token is read as training reads it (tagged, not refused)."""
    from tunelab.tasks.model_rows import model_examples

    def table(tokens: list[str]) -> Table:
        return Table("<input>", [Record("<input>", 1, {"tokens": ["fine"]}), Record("<input>", 2, {"tokens": tokens})])

    said = "tokens[1]: invalid Unicode: unpaired surrogate '\\ud800' at character 2"
    with pytest.raises(DataError, match="^" + re.escape(f"<input>:2: {said}")):
        model_examples(_task(), table(["good", "a\ud800"]))
    assert [ex["tokens"] for ex in model_examples(_task(), table(["a\x00b", "c"]))][1] == ["a\x00b", "c"]
