"""The command line as a user runs it: train → eval → predict, and continuing from a tuned model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app

runner = CliRunner()


def _train(*sets: str) -> object:
    args = ["train"]
    for s in sets:
        args += ["--set", s]
    return runner.invoke(app, args)


def test_train_eval_predict(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = sentiment_files
    out = tmp_path / "run"
    res = _train(
        "task=classification",
        f"model={tiny_bert}",
        f"data.train={train}",
        f"data.validation={val}",
        f"output_dir={out}",
        "train.epochs=2",
        "train.batch_size=8",
        "train.lr=5e-3",
        "train.log_steps=2",
    )
    assert res.exit_code == 0, res.output
    for name in (
        "config.yaml",
        "metrics.json",
        "metrics.jsonl",
        "model/config.json",
        "model/model.safetensors",
        "model/tunelab.json",
        "model/tokenizer.json",
    ):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["lr"] == 5e-3 and saved["method"] == {"name": "full"}
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4, 6, 8, 10, 12]
    assert any("eval/accuracy" in r for r in lines)  # end of epoch 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "f1_macro", "f1_micro", "f1_weighted", "roc_auc", "per_class", "confusion_matrix"} <= set(
        metrics["validation"]
    )
    assert json.loads((out / "model" / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    # a checkpoint per epoch, the newest two kept
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000006", "step-00000012"]

    res = runner.invoke(app, ["eval", str(out / "model"), "--data", str(val)])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout.strip().splitlines()[-1])
    assert abs(ev["accuracy"] - metrics["validation"]["accuracy"]) < 1e-9

    pred_path = tmp_path / "pred.jsonl"
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(val), "--output", str(pred_path)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in pred_path.read_text().splitlines()]
    src = [json.loads(x) for x in val.read_text().splitlines()]
    assert len(rows) == len(src)
    assert all(  # the input row kept whole (gold label included), the prediction in its own fields
        r["text"] == s["text"] and r["label"] == s["label"] and r["pred_label"] in ("negative", "positive")
        for r, s in zip(rows, src, strict=True)
    )
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-4 for r in rows)

    res = runner.invoke(app, ["predict", str(out / "model"), "--input", "-"], input="good great movie\n\nbad awful\n")
    assert res.exit_code == 0, res.output
    got = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert [g["text"] for g in got] == ["good great movie", "bad awful"]


def test_continue_with_new_labels(tiny_bert: Path, tmp_path: Path) -> None:
    """Incremental fine-tuning: a tuned model learns a new label; the old head rows are kept."""
    first = write_jsonl(tmp_path / "a.jsonl", sentiment_rows(24))
    res = _train(
        "task=classification",
        f"model={tiny_bert}",
        f"data.train={first}",
        f"output_dir={tmp_path / 'r1'}",
        "train.max_steps=2",
        "train.save_steps=0",
    )
    assert res.exit_code == 0, res.output
    second = write_jsonl(tmp_path / "b.jsonl", sentiment_rows(30, labels=("negative", "positive", "neutral")))
    res = _train(
        "task=classification",
        f"model={tmp_path / 'r1' / 'model'}",
        f"data.train={second}",
        f"output_dir={tmp_path / 'r2'}",
        "train.max_steps=2",
        "train.save_steps=0",
        "train.lr=1e-9",
    )
    assert res.exit_code == 0, res.output
    id2label = json.loads((tmp_path / "r2" / "model" / "config.json").read_text())["id2label"]
    assert id2label == {"0": "negative", "1": "positive", "2": "neutral"}
    from safetensors.torch import load_file

    old = load_file(str(tmp_path / "r1" / "model" / "model.safetensors"))["classifier.weight"]
    new = load_file(str(tmp_path / "r2" / "model" / "model.safetensors"))["classifier.weight"]
    assert new.shape[0] == 3 and (new[:2] - old).abs().max() < 1e-5  # lr 1e-9: old rows kept


def test_multi_label_and_pairs(tiny_bert: Path, tmp_path: Path) -> None:
    rows = [
        {"q": r["text"], "a": "the movie", "tags": [r["label"]] + (["music"] if i % 3 == 0 else [])}
        for i, r in enumerate(sentiment_rows(30))
    ]
    data = write_jsonl(tmp_path / "ml.jsonl", rows)
    out = tmp_path / "ml"
    res = _train(
        "task.name=classification",
        "task.multi_label=true",
        f"model={tiny_bert}",
        f"data.train={data}",
        "data.text_field=q",
        "data.text_pair_field=a",
        "data.label_field=tags",
        f"output_dir={out}",
        "train.max_steps=3",
        "train.save_steps=0",
    )
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())["validation"]
    assert {"f1_micro", "f1_macro", "subset_accuracy", "per_class"} <= set(m)
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(data)])
    first = json.loads(res.stdout.splitlines()[0])
    assert isinstance(first["pred_label"], list) and set(first["scores"]) == {"music", "negative", "positive"}


def test_models_lists_aliases() -> None:
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0
    for alias in ("minilm", "smollm2-135m", "gemma3-270m"):
        assert alias in res.stdout


def test_not_a_model_dir(tmp_path: Path) -> None:
    res = runner.invoke(app, ["eval", str(tmp_path), "--data", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "not a tunelab model directory" in res.stderr


def test_predict_input_forms(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    """stdin takes plain lines and JSONL lines; a .txt file is one text per line; a predicted field never
    overwrites an input column (a column named `scores` becomes `pred_scores`)."""
    train, val = sentiment_files
    out = tmp_path / "run"
    assert _train("task=classification", f"model={tiny_bert}", f"data.train={train}", f"data.validation={val}",
                  f"output_dir={out}", "train.max_steps=2", "train.save_steps=0").exit_code == 0
    stdin = 'good great film\n{"text": "awful plot", "scores": "mine", "label": "negative"}\n\n'
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", "-"], input=stdin)
    assert res.exit_code == 0, res.output
    plain, row = [json.loads(x) for x in res.stdout.splitlines()]
    assert plain["text"] == "good great film" and "pred_label" in plain and "scores" in plain
    assert row["scores"] == "mine" and row["label"] == "negative" and set(row["pred_scores"]) == {"negative",
                                                                                                   "positive"}
    txt = tmp_path / "in.txt"
    txt.write_text("good great film\n\nawful boring plot\n", encoding="utf-8")
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(txt)])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["text"] for x in res.stdout.splitlines()] == ["good great film", "awful boring plot"]
    txt.write_bytes(b"\xef\xbb\xbfgood film\nbad \xff bytes\n")  # a BOM is dropped; bad bytes are one line
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(txt)])
    assert res.exit_code == 2 and res.output.strip().startswith(f"error: {txt}:2") and "\n" not in res.output.strip()
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", "-"], input='{"text": \n')
    assert res.exit_code == 2 and res.output.strip().startswith("error: <stdin>:1: invalid JSON")


def test_progress_lines_in_a_log(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr not a terminal (CI, nohup): plain progress lines as the run goes, and a line per evaluation."""
    monkeypatch.delenv("TUNELAB_NO_PROGRESS", raising=False)
    monkeypatch.setenv("TUNELAB_PROGRESS_EVERY", "0")
    train, val = sentiment_files
    out = tmp_path / "run"
    res = _train("task=classification", f"model={tiny_bert}", f"data.train={train}", f"data.validation={val}",
                 f"output_dir={out}", "train.max_steps=4", "train.eval_steps=2", "train.log_steps=1",
                 "train.batch_size=8", "train.save_steps=0")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any(x.startswith("train: 2/4 steps (50 %), loss ") for x in lines), res.output
    assert any(x.startswith("eval at step 2: accuracy ") for x in lines), res.output
    assert any(x.startswith("score: 16/16 rows (100 %)") for x in lines), res.output  # the final evaluation
    assert any(x.startswith("report: 7/7 sections") for x in lines), res.output
    res = runner.invoke(app, ["data", "check", str(train), "--model", str(tiny_bert)])  # a step at a time
    assert [x.split(",")[0] for x in res.stderr.splitlines() if x.startswith("data check: ")] == [
        f"data check: {k}/5 steps ({20 * k} %)" for k in range(6)], res.stderr
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(val), "--output",
                              str(tmp_path / "p.jsonl")])
    assert res.exit_code == 0 and "score: 16/16 rows (100 %)" in res.stderr, res.stderr
    # a table's name for JSON Lines: refused in one line before any work (was written as JSONL under it)
    res = runner.invoke(app, ["predict", str(out / "model"), "--input", str(val), "--output",
                              str(tmp_path / "labelled.csv")])
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: --output: {tmp_path / 'labelled.csv'}: predict writes JSON Lines (each input row with its "
        "prediction); name it labelled.jsonl") and not (tmp_path / "labelled.csv").exists()


def test_version_and_short_help() -> None:
    from tunelab import __version__

    assert runner.invoke(app, ["--version"]).output.strip() == f"tunelab {__version__}"
    assert "Usage: " in runner.invoke(app, ["-h"]).output and "--resume" in runner.invoke(app, ["train", "-h"]).output


def test_train_without_evaluation_prints_no_empty_table(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    train, _ = sentiment_files
    res = _train("task=classification", f"model={tiny_bert}", f"data.train={train}", "data.validation_split=0",
                 f"output_dir={tmp_path / 'run'}", "train.max_steps=2", "train.batch_size=8", "train.save_steps=0",
                 "train.report=false")
    assert res.exit_code == 0, res.output
    assert "metric" not in res.output and "trained 2 steps in " in res.output, res.output


def test_a_commands_process_exits_without_its_last_garbage_collections() -> None:
    """The console command freezes the garbage collector as its process exits: the collections Python runs while it
    takes torch's and transformers' modules apart cost 1-2.5 s at the end of every command (and of every process of
    a `--nproc` launch, which torchrun waits for)."""
    import subprocess
    import sys

    from tunelab import __version__

    code = ("import atexit, gc\n"
            "atexit.register(lambda: print('frozen:', gc.get_freeze_count() > 0))\n"  # (runs after the app's: LIFO)
            "from tunelab.cli import app\napp(['--version'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.splitlines() == [f"tunelab {__version__}", "frozen: True"], res
