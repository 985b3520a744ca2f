"""The held-out evaluation path: metrics on a file that lacks a trained class, numeric labels from pandas / numpy,
the model's data.clean at inference, truncation said at eval and predict, an SFT model's `Model.evaluate` and
`tunelab eval`'s default replies file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score
from typer.testing import CliRunner

import tunelab
from conftest import WORDS, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.sections import CleanConfig, DataConfig
from tunelab.data.readers import Record, Table
from tunelab.errors import DataError, TunelabError
from tunelab.metrics.classification import multi_label, single_label
from tunelab.tasks import classification_report
from tunelab.tasks.classification import Classification, ClassificationConfig

runner = CliRunner()
HTML = '<div class="a"><p class="b"><span class="c">'  # 16 tokens of the tiny tokenizer: data.max_length, filled
NUMBER = {"negative": 0, "positive": 1}


def _html(rows: list[dict]) -> list[dict]:
    return [{"text": f"{HTML}{r['text']}</span></p></div>", "label": NUMBER[r["label"]]} for r in rows]


@pytest.fixture(scope="module")
def clean_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model directory of a classification run trained with data.clean on HTML-wrapped texts labelled 0 / 1,
    data.max_length 16 (a text's wrapper alone fills it); train.jsonl and val.jsonl beside the run."""
    tmp = tmp_path_factory.mktemp("clean")
    train = write_jsonl(tmp / "train.jsonl", _html(sentiment_rows(64, 0)))
    val = write_jsonl(tmp / "val.jsonl", _html(sentiment_rows(40, 1)))
    run = tunelab.train({"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp / "run"),
                         "data": {"train": str(train), "validation": str(val), "clean": True, "max_length": 16},
                         "train": {"epochs": 6, "lr": 5e-3, "batch_size": 8, "save_steps": 0, "precision": "fp32"}})
    assert run.metrics["validation"]["accuracy"] > 0.9
    return run.model_dir


# ------------------------------------------------------------------------ macro averages
def test_macro_averages_over_the_classes_of_the_split() -> None:
    """A file with 2 of the 3 trained classes, all correct: macro F1 1.0 as scikit-learn's (was 0.667)."""
    names = ["a", "b", "c"]
    gold = np.array([0, 0, 1, 1])
    m = single_label(gold, np.eye(3)[gold], names)
    assert m["f1_macro"] == m["precision_macro"] == m["recall_macro"] == 1.0 == f1_score(gold, gold, average="macro")
    assert m["per_class"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert m["confusion_matrix"]["matrix"][2] == [0, 0, 0] and m["roc_auc"] is None
    # a class predicted but never gold counts (as a 0) as scikit-learn counts it; and every average is sklearn's
    pred = np.array([0, 2, 1, 1])
    m = single_label(gold, np.eye(3)[pred], names)
    for avg in ("macro", "micro", "weighted"):
        assert m[f"f1_{avg}"] == pytest.approx(f1_score(gold, pred, average=avg, zero_division=0))
        assert m[f"precision_{avg}"] == pytest.approx(precision_score(gold, pred, average=avg, zero_division=0))
        assert m[f"recall_{avg}"] == pytest.approx(recall_score(gold, pred, average=avg, zero_division=0))
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    json.dumps(m)  # metrics.json / eval's stdout: the nulls are JSON


def test_multi_label_macro_is_scikit_learns() -> None:
    """Multi-label: over every label, as scikit-learn scores an indicator matrix (unchanged)."""
    gold = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    m = multi_label(gold, gold.astype(float), ["a", "b", "c"], 0.5)
    assert m["f1_macro"] == pytest.approx(f1_score(gold, gold, average="macro", zero_division=0))


def test_report_shows_an_absent_class_without_scores() -> None:
    recs = [{"labels": ["a", "b", "c"], "gold": "a", "prediction": "a", "probs": [0.9, 0.05, 0.05]},
            {"gold": "b", "prediction": "b", "probs": [0.1, 0.8, 0.1]}]
    metrics = single_label(np.array([0, 1]), np.array([r["probs"] for r in recs]), ["a", "b", "c"])
    html = classification_report.results(recs, metrics)
    rows = html.split("<h4>Per class</h4>")[1]
    assert "<tr><td>c</td><td>-</td><td>-</td><td>-</td>" in rows  # was 0.0000 precision / recall / f1
    assert '<tr><td>a</td><td class="num">1.00</td>' in rows


# ------------------------------------------------------------------------ numeric labels
def _parse(labels: list, values: list, **config: object) -> list:
    task = Classification(ClassificationConfig(**config), DataConfig())
    task.labels = labels
    table = Table("rows", [Record("rows", i + 1, {"text": "good", "label": v}) for i, v in enumerate(values)])
    return [ex["label"] for ex in task.parse(table)]


def test_numeric_labels_from_pandas_and_numpy() -> None:
    assert _parse([], [1, 1.0, np.int64(1), np.float64(1.0), np.float32(2.0), np.uint8(0), True, np.bool_(False),
                       "1.0"]) == ["1", "1", "1", "1", "2", "0", "true", "false", "1.0"]
    assert _parse([], [0.5, np.float64(-2.5)]) == ["0.5", "-2.5"]  # a fraction keeps its text
    assert _parse([], [[1.0, np.int64(2)]], multi_label=True) == [["1", "2"]]
    assert _parse([], [{1.0: 0.25, np.int64(2): np.float64(0.75)}]) == [{"1": 0.25, "2": 0.75}]
    # a model trained when 1.0 was the label "1.0" still reads 1.0 as it
    assert _parse(["0.0", "1.0"], [1.0, np.float64(0.0)]) == ["1.0", "0.0"]
    with pytest.raises(DataError, match=r"rows:1: label: missing label \(nan\)"):
        _parse([], [np.float64("nan")])


def test_numeric_labels_at_eval(clean_run: Path, tmp_path: Path) -> None:
    """A model trained on labels 0 / 1 scores rows whose labels are 1.0 (a DataFrame column that held a NaN, JSON)
    and numpy integers (was: `label '1.0' is not among the training labels`, `expected a label string, got int64`)."""
    import pandas as pd

    model = tunelab.load(clean_run)
    assert model.task.labels == ["0", "1"]
    rows = [json.loads(line) for line in (clean_run.parent.parent / "val.jsonl").read_text().splitlines()]
    want = model.evaluate(rows)["accuracy"]
    frame = pd.DataFrame({"text": [r["text"] for r in rows] + ["x"], "label": [r["label"] for r in rows] + [None]})
    assert frame["label"].dtype == np.float64  # the NaN made the column float
    assert model.evaluate(frame.iloc[:-1])["accuracy"] == want
    assert model.evaluate([{**r, "label": np.int64(r["label"])} for r in rows])["accuracy"] == want
    floats = write_jsonl(tmp_path / "floats.jsonl", [{**r, "label": float(r["label"])} for r in rows])
    assert floats.read_text().count('"label": 1.0') == len(rows) // 2
    res = runner.invoke(app, ["eval", str(clean_run), "--data", str(floats)])
    assert res.exit_code == 0 and json.loads(res.stdout)["accuracy"] == want, res.output
    # a CSV cell says 1.0 where JSON's number read as 1 (was: label '1.0' is not among the training labels)
    cells = tmp_path / "floats.csv"
    cells.write_text("text,label\n" + "".join(f"{r['text']},{float(r['label'])}\n" for r in rows))
    res = runner.invoke(app, ["eval", str(clean_run), "--data", str(cells)])
    assert res.exit_code == 0 and json.loads(res.stdout)["accuracy"] == want, res.output
    bad = write_jsonl(tmp_path / "half.jsonl", [{"text": "good", "label": 0.5}])
    res = runner.invoke(app, ["eval", str(clean_run), "--data", str(bad)])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        f"error: {bad}:1: label: label '0.5' is not among the training labels (0, 1)"], res.output


def test_bool_labels_written_by_pandas_are_the_models_bools(tiny_bert: Path, tmp_path: Path) -> None:
    """A model trained on JSON booleans (labels true / false) scores a CSV whose cells say True / False (pandas) or
    TRUE / FALSE (Excel): was `label 'False' is not among the training labels (false, true)`. A model whose labels are
    the texts True / False keeps them, and a text no bool is refused as before."""
    assert _parse(["false", "true"], ["True", "FALSE", "false", True, "TRUE"]) == ["true", "false", "false", "true",
                                                                                  "true"]
    assert _parse(["False", "True"], ["True", "False", True, "false"]) == ["True", "False", "True", "False"]
    assert _parse(["True", "true"], ["True", "true", "TRUE"]) == ["True", "true", "TRUE"]  # two forms: not guessed
    assert _parse(["false", "true"], ["tRUE", "yes"]) == ["tRUE", "yes"]  # no bool: refused where encoded
    rows = [{"text": r["text"], "is_spam": r["label"] == "positive"} for r in sentiment_rows(16)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    assert '"is_spam": true' in train.read_text()
    run = tunelab.train({"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "run"),
                         "data": {"train": str(train), "validation": str(train), "label_field": "is_spam"},
                         "train": {"max_steps": 1, "batch_size": 8, "save_steps": 0, "precision": "fp32"}})
    cells = tmp_path / "vb.csv"
    cells.write_text("text,is_spam\n" + "".join(f"{r['text']},{r['is_spam']}\n" for r in rows))
    assert "False" in cells.read_text()
    res = runner.invoke(app, ["eval", str(run.model_dir), "--data", str(cells)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["accuracy"] == run.metrics["validation"]["accuracy"]



def test_train_matches_a_validation_csvs_bools_to_the_training_bools(tiny_bert: Path, tmp_path: Path) -> None:
    """Training labels written as JSON booleans (true / false) and a validation CSV whose cells say True / False:
    `tunelab train` refused it (`label 'False' is not among the training labels (false, true)`) where eval and
    predict match them. The validation (and test) split is matched to the training labels as eval matches to a
    model's (`label_text`), `1.0` cells to `1` too; `tunelab data check` sees no unseen label."""
    rows = [{"text": r["text"], "label": r["label"] == "positive"} for r in sentiment_rows(16)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cells = tmp_path / "val.csv"
    cells.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    assert "True" in cells.read_text() and "true" in train.read_text()
    sets = ["task=classification", f"model={tiny_bert}", f"data.train={train}", f"data.validation={cells}",
            f"data.test={train}", f"output_dir={tmp_path / 'run'}", "train.max_steps=1", "train.batch_size=8",
            "train.save_steps=0", "train.precision=fp32", "data.dedup=false"]
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())  # the same rows, as CSV and as JSON
    assert {k: v for k, v in metrics["validation"].items() if k != "runtime_s"} == \
        {k: v for k, v in metrics["test"].items() if k != "runtime_s"}
    res = runner.invoke(app, ["data", "check", "--model", str(tiny_bert), "--json", str(train), str(cells)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"][str(cells)]["labels"] == {"false": 8, "true": 8}
    # numbers: 0 / 1 in JSON, 0.0 / 1.0 in a CSV column pandas made float
    task = Classification(ClassificationConfig(), DataConfig())
    task.check_train(task.parse(Table("t", [Record("t", i, {"text": "a", "label": i % 2}) for i in range(4)])))
    floats = Table("v", [Record("v", i, {"text": "a", "label": f"{i % 2}.0"}) for i in range(4)])
    assert [ex["label"] for ex in task.parse(floats)] == ["0", "1", "0", "1"]

# ------------------------------------------------------------------------ data.clean at inference
def test_the_model_cleans_its_inputs_as_its_training_rows(clean_run: Path, tmp_path: Path) -> None:
    """eval of the run's own validation file gives its metrics.json (was 0.5: the HTML filled max_length), through
    the CLI and the API; predict cleans the same way, every row kept and echoed as given."""
    assert json.loads((clean_run / "tunelab.json").read_text())["data"]["clean"] == CleanConfig().model_dump()
    val = clean_run.parent.parent / "val.jsonl"
    saved = json.loads((clean_run.parent / "metrics.json").read_text())["validation"]
    res = runner.invoke(app, ["eval", str(clean_run), "--data", str(val)])
    assert res.exit_code == 0 and json.loads(res.stdout)["accuracy"] == saved["accuracy"], res.output
    model = tunelab.load(clean_run)
    assert model.evaluate(val)["f1_macro"] == pytest.approx(saved["f1_macro"])
    raw = f"{HTML}good great &amp; fine</span></p></div>"
    out = model.predict([raw, "good great & fine", "<br/>", "a"])  # emptied, and under any min_chars: kept
    assert out[0]["scores"] == out[1]["scores"] and out[0]["text"] == raw and len(out) == 4
    res = runner.invoke(app, ["predict", str(clean_run), "--input", "-"], input=raw + "\n")
    assert res.exit_code == 0 and json.loads(res.stdout)["scores"] == out[1]["scores"], res.output
    # a model saved without the key (before it was saved) reads its input as it is, as before
    old = shutil.copytree(clean_run, tmp_path / "model")
    meta = json.loads((old / "tunelab.json").read_text())
    del meta["data"]["clean"]
    (old / "tunelab.json").write_text(json.dumps(meta))
    assert tunelab.load(old).predict([raw])[0]["scores"] != out[1]["scores"]


def test_a_saved_models_inputs_are_read_by_the_text_rules_it_trained_by(clean_run: Path, tmp_path: Path) -> None:
    """A model records the text rules its rows were read by (tunelab.json `text_rules`) and its inputs (eval,
    predict, serve, chat, the API) are read by them: a model of rules 4 had `grade <B>` cleaned to `grade` in
    training, so its inputs are too (they were read by today's rules: a grade kept). A model saved before they were
    recorded: its run's data_summary.json's (1 where that has none), else 4 (the rules that read it then)."""
    from tunelab.tasks.sft import Sft, SftConfig
    from tunelab.text import TEXT_RULES

    grade = "grade <B> in maths"
    assert json.loads((clean_run / "tunelab.json").read_text())["text_rules"] == TEXT_RULES
    assert [e["text"] for e in tunelab.load(clean_run).parse_inputs([grade])] == [grade]
    model = shutil.copytree(clean_run, tmp_path / "run" / "model")
    meta = json.loads((model / "tunelab.json").read_text())
    summary = tmp_path / "run" / "data_summary.json"
    for recorded, summarised, want in ((4, None, "grade in maths"), (None, {"text_rules": 4}, "grade in maths"),
                                       (None, {"text_rules": 5}, grade), (None, {"removed_total": 0}, "grade in maths"),
                                       (None, None, "grade in maths")):
        (model / "tunelab.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "text_rules"}
                                                       | ({} if recorded is None else {"text_rules": recorded})))
        summary.unlink(missing_ok=True)
        if summarised is not None:
            summary.write_text(json.dumps(summarised))
        loaded = tunelab.load(model)
        assert [e["text"] for e in loaded.parse_inputs([grade])] == [want], (recorded, summarised)
        assert loaded.predict([grade])[0]["scores"] == loaded.predict([want])[0]["scores"]
    sft = Sft(SftConfig(), DataConfig(clean=True))
    sft.text_rules = 4  # a chat's turns (tunelab chat, serve): by the model's rules too
    assert (sft.chat_turn(grade), Sft(SftConfig(), DataConfig(clean=True)).chat_turn(grade)) == ("grade  in maths",
                                                                                                   grade)


def test_clean_inputs_keep_every_row_and_ner_offsets() -> None:
    from tunelab.data.hygiene import clean_inputs
    from tunelab.tasks.sft import Sft, SftConfig

    cfg = CleanConfig(min_chars=50)
    rows = [{"text": "<p>Caf\u00e9  ok</p>", "text_pair": "x&amp;y", "row": {"text": "<p>Caf\u00e9  ok</p>"}},
            {"text": "<br/>"},
            {"text": "Ｐａｒｉｓ <b>x</b>", "tokens": ["Ｐａｒｉｓ", "<b>", "x"], "offsets": [(0, 5), (6, 9), (9, 10)]},
            {"messages": [{"role": "user", "content": "<b>hi</b>\n\n\n  there  "}]}]
    out = clean_inputs(rows, cfg)
    assert [o.get("text") for o in out] == ["Café ok", "", "Ｐａｒｉｓ <b>x</b>", None]
    assert out[0]["text_pair"] == "x&y" and out[0]["row"] == rows[0]["row"]
    assert out[2]["tokens"] == ["Paris", "<b>", "x"]  # token by token; an emptied token keeps its text
    assert out[3]["messages"][0]["content"] == "hi\n\n  there"  # a turn's layout kept, as in training
    sft = Sft(SftConfig(), DataConfig(clean=True))
    assert sft.chat_turn("<b>hi</b>  there \n") == "hi  there"  # chat turns: cleaned as the training turns were
    assert Sft(SftConfig(), DataConfig()).chat_turn("<b>hi</b>") == "<b>hi</b>"


# ------------------------------------------------------------------------ truncation said
def test_cut_rows_are_said_at_eval_and_predict(clean_run: Path, tiny_bert: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    from transformers import AutoTokenizer

    long = "good " * 30
    res = runner.invoke(app, ["predict", str(clean_run), "--input", "-"], input=f"{long}\nbad\n")
    assert res.exit_code == 0 and ("classification: 1 row longer than data.max_length (16 tokens): only its first "
                                   "tokens read (data.truncation: head; sliding_window reads all of a text)"
                                   ) in res.stderr, res.output
    data = write_jsonl(tmp_path / "long.jsonl", [{"text": long, "label": 1}, {"text": long, "label": 0}])
    res = runner.invoke(app, ["eval", str(clean_run), "--data", str(data)])
    assert res.exit_code == 0 and ("classification: 2 rows longer than data.max_length (16 tokens): only their "
                                   "first tokens read") in res.stderr, res.output
    capsys.readouterr()
    tunelab.load(clean_run).evaluate(data)
    assert capsys.readouterr().err.count("classification: 2 rows longer") == 1
    res = runner.invoke(app, ["eval", str(clean_run), str(clean_run), "--data", str(data)])  # an ensemble: said once
    assert res.exit_code == 0 and res.stderr.count("classification: 2 rows longer") == 1, res.output
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    rows = Table("d", [Record("d", 1, {"text": long, "label": "1"}), Record("d", 2, {"text": "bad", "label": "0"})])
    for mode, said in (("tail", "only its last tokens"), ("head+tail", "only its first and last tokens"),
                       ("sliding_window", None)):
        task = Classification(ClassificationConfig(), DataConfig(max_length=16, truncation=mode, window_stride=4))
        task.labels = ["0", "1"]
        task.encode(task.parse(rows), tok)
        note = task.cut_note()
        assert note is None if said is None else said in note, (mode, note)


# ------------------------------------------------------------------------ sft: the API's evaluate, the replies file
def test_api_evaluate_scores_replies_as_the_cli(tiny_chat_run: Path, clean_run: Path, tmp_path: Path) -> None:
    """`Model.evaluate` of an sft model gives `tunelab eval`'s metrics, generation ones included (was: loss,
    perplexity and tokens only); it writes replies only where `predictions=` says."""
    model_dir = tiny_chat_run / "model"
    val = write_jsonl(tmp_path / "heldout.jsonl", [{"prompt": f"say {w}", "completion": w} for w in WORDS[:3]]
                      + [{"prompt": "say fine", "completion": "not fine"}])
    res = runner.invoke(app, ["eval", str(model_dir), "--data", str(val), "--predictions", str(tmp_path / "c.jsonl")])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout.splitlines()[-1])
    model = tunelab.load(model_dir)
    api = model.evaluate(val)
    assert api == cli and api["generated"] == 4 and api["exact_match"] == 0.75
    assert {"loss", "perplexity", "bleu", "chrf", "rouge1", "rouge2", "rougeL"} <= set(api)
    assert not (tiny_chat_run / "predictions" / "eval-heldout.generations.jsonl").exists()
    assert "bleu" not in model.evaluate(val, generate=False) and model.evaluate(val, generate=False)["loss"] > 0
    out = tmp_path / "api.jsonl"
    m = model.evaluate(str(val), limit=2, num_beams=2, max_new_tokens=4, predictions=out)
    assert m["generated"] == 2 and len(out.read_text().splitlines()) == 2
    with pytest.raises(TunelabError, match=r"^predictions: .*api.jsonl exists; pass overwrite=True to replace it$"):
        model.evaluate(val, predictions=out)
    assert model.evaluate(val, predictions=out, overwrite=True)["generated"] == 4
    for kw, line in (({"num_beams": 99}, "num_beams: must be 1 to 32"),
                     ({"max_new_tokens": 10**6}, "max_new_tokens: 1000000 is more than the model's")):
        with pytest.raises(TunelabError, match=f"^{line}"):
            model.evaluate(tmp_path / "missing.jsonl", **kw)  # before the data is read
    with pytest.raises(TunelabError, match=r"^evaluate: num_beams: generation is for models of task sft"):
        tunelab.load(clean_run).evaluate([{"text": "good", "label": 1}], num_beams=2)
    with pytest.raises(TunelabError, match=r"^evaluate: predictions: generation is for models of task sft"):
        tunelab.load(clean_run).evaluate([{"text": "good", "label": 1}], predictions=out)  # (not: out exists)


def test_the_default_replies_file_outside_a_run_is_not_replaced(tiny_chat_run: Path, tmp_path: Path) -> None:
    """Beside a model directory that is not in a run, an existing default replies file is refused without
    --overwrite, before any work (was replaced); the run's own is replaced as before."""
    val = write_jsonl(tmp_path / "val.jsonl", [{"prompt": f"say {w}", "completion": w} for w in WORDS[:2]])
    model_dir = shutil.copytree(tiny_chat_run / "model", tmp_path / "models" / "chat")
    default = tmp_path / "models" / "predictions" / "eval-val.generations.jsonl"
    default.parent.mkdir()
    default.write_text("my own file\n")
    res = runner.invoke(app, ["eval", str(model_dir), "--data", str(val)])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        f"error: eval: {default} exists (the default replies file; {model_dir} is not in a run directory): pass "
        "--overwrite to replace it, or --predictions FILE to write elsewhere"], res.output
    assert default.read_text() == "my own file\n"
    for args in (["--no-generate"], ["--predictions", str(tmp_path / "elsewhere.jsonl")]):
        res = runner.invoke(app, ["eval", str(model_dir), "--data", str(val), *args])
        assert res.exit_code == 0 and default.read_text() == "my own file\n", res.output
    res = runner.invoke(app, ["eval", str(model_dir), "--data", str(val), "--overwrite"])
    assert res.exit_code == 0 and len(default.read_text().splitlines()) == 2, res.output
    own = tiny_chat_run / "predictions" / "eval-val-run.generations.jsonl"
    own.write_text("an earlier eval\n")
    run_val = shutil.copy(val, tmp_path / "val-run.jsonl")
    res = runner.invoke(app, ["eval", str(tiny_chat_run / "model"), "--data", str(run_val)])
    assert res.exit_code == 0 and len(own.read_text().splitlines()) == 2, res.output
    (tmp_path / "link").symlink_to(tiny_chat_run / "model")  # the run's model by a link: still the run's file
    own.write_text("an earlier eval\n")
    res = runner.invoke(app, ["eval", str(tmp_path / "link"), "--data", str(run_val)])
    assert res.exit_code == 0 and len(own.read_text().splitlines()) == 2, res.output
