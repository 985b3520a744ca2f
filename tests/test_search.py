"""`tunelab tune` (Optuna search: table, SQLite study, best.yaml, pruning, resume) and `tunelab cv` (k folds)."""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import load_config
from tunelab.errors import ConfigError
from tunelab.studies.tune import metric_value

optuna = pytest.importorskip("optuna")
runner = CliRunner()

SPACE = {
    "train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "train.batch_size": {"type": "categorical", "choices": [8, 16]},
    "train.warmup": {"type": "float", "low": 0.0, "high": 0.1},
    "train.grad_accum": {"type": "int", "low": 1, "high": 2},
}


def _config(tmp_path: Path, tiny_bert: Path, sentiment_files: tuple[Path, Path], search: dict | None,
            **train: object) -> Path:
    tr, val = sentiment_files
    cfg = {
        "task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "out"),
        "data": {"train": str(tr), "validation": str(val)},
        "train": {"epochs": 1, "batch_size": 8, "lr": 5e-3, "log_steps": 2, "report": False, **train},
    }  # (report: false, as the docs advise for a study's many small runs: no test here reads a trial's report.html)
    if search is not None:
        cfg["search"] = search
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="tunelab", storage=f"sqlite:///{out / 'tune' / 'study.db'}")


def test_tune_four_trials(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    path = _config(tmp_path, tiny_bert, sentiment_files, {"metric": "roc_auc", "direction": "maximize",
                                                          "space": SPACE})
    res = runner.invoke(app, ["tune", str(path), "--trials", "4"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    # the table: a header with the metric and every searched key, one row per trial
    for word in ("roc_auc", "train.lr", "train.batch_size", "train.warmup", "train.grad_accum", "best: trial"):
        assert word in res.output, word
    assert res.output.count("COMPLETE") == 4
    # the SQLite study: 4 finished trials, each its own run directory without checkpoints
    study = _study(out)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    assert {"train.lr", "train.batch_size", "train.warmup", "train.grad_accum"} == set(study.trials[0].params)
    for t in study.trials:
        run = out / "tune" / f"trial-{t.number:03d}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["validation"]["roc_auc"])
        assert not (run / "checkpoints").exists()
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["train"]["lr"] == pytest.approx(t.params["train.lr"]) and "search" not in saved
        assert saved["train"]["batch_size"] == t.params["train.batch_size"]
    results = json.loads((out / "tune" / "results.json").read_text())
    assert [r["trial"] for r in results["trials"]] == [0, 1, 2, 3]
    assert (out / "tune" / "results.csv").read_text().count("\n") == 5
    # best.yaml: a plain train config with the best trial's values and a fresh output_dir
    best = study.best_trial
    assert best.value == max(t.value for t in study.trials)
    assert results["best"]["trial"] == best.number
    cfg = load_config(out / "tune" / "best.yaml")
    assert cfg.search is None
    assert cfg.train.lr == pytest.approx(best.params["train.lr"])
    assert cfg.train.batch_size == best.params["train.batch_size"]
    assert cfg.train.warmup == pytest.approx(best.params["train.warmup"])
    assert cfg.train.grad_accum == best.params["train.grad_accum"]
    assert cfg.train.save_steps is None and cfg.train.epochs == 1  # the base config's, not the trials' save_steps=0
    assert Path(cfg.output_dir) == out / f"best-trial-{best.number:03d}" and not Path(cfg.output_dir).exists()
    assert "search" not in yaml.safe_load((out / "tune" / "best.yaml").read_text())


def test_a_study_of_the_headline_metric_minimises_a_loss() -> None:
    """search.metric left out: the task's headline metric says the direction (sft / pretrain: their loss, minimised;
    classification, NER, QA: a score, maximised)."""
    from tunelab.config.run import run_config_class
    from tunelab.config.search import SearchConfig
    from tunelab.registry import TASKS

    run_config_class()  # registers the tasks
    search = SearchConfig.model_validate({"space": {"train.lr": {"type": "float", "low": 1e-5, "high": 1e-3}}})
    assert {name: search.study_direction(TASKS.get(name).headline) for name in ("sft", "pretrain", "classification",
            "ner", "qa")} == {"sft": "minimize", "pretrain": "minimize", "classification": "maximize",
                              "ner": "maximize", "qa": "maximize"}


def test_tune_resumes_the_study(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    path = _config(tmp_path, tiny_bert, sentiment_files, {"metric": "roc_auc", "space": SPACE})
    out = tmp_path / "out"
    res = runner.invoke(app, ["tune", str(path), "--trials", "1"])
    assert res.exit_code == 0, res.output
    first = _study(out).trials[0].params
    stamp = (out / "tune" / "trial-000" / "metrics.json").stat().st_mtime_ns
    _study(out).ask()  # trial 1: left RUNNING, as by a process killed mid-trial

    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])  # --trials is the total: one more
    assert res.exit_code == 0, res.output
    assert "trial 1 was interrupted" in res.output
    assert "has 1 finished trials; running 1 more" in res.output
    study = _study(out)
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE")]
    assert study.trials[0].params == first  # the old trial is kept as it was
    assert study.trials[2].params != first  # a new point, not a repeat of the first draw
    assert (out / "tune" / "trial-000" / "metrics.json").stat().st_mtime_ns == stamp
    assert (out / "tune" / "trial-002" / "metrics.json").is_file()
    assert json.loads((out / "tune" / "results.json").read_text())["best"]["trial"] in (0, 2)

    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])  # complete: nothing to run
    assert res.exit_code == 0, res.output
    assert "running 0 more" in res.output and len(_study(out).trials) == 3
    assert not (out / "tune" / "trial-003").exists()
    # search.metric left out: the study goes on with its own (was: the headline, accuracy, ranked against roc_auc)
    path = _config(tmp_path, tiny_bert, sentiment_files, {"space": SPACE})
    # a study begun by an older tunelab (its rows read by text rules 2): the new trial reads them so too (it read them
    # by today's rules: another dedup, other rows, ranked against the first trials without a word)
    summary = out / "tune" / "trial-000" / "data_summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "text_rules": 2}))
    res = runner.invoke(app, ["tune", str(path), "--trials", "3"])
    assert res.exit_code == 0 and "trial 3: roc_auc=" in res.output, res.output
    assert _study(out).trials[3].user_attrs["metric"] == "roc_auc"
    assert json.loads((out / "tune" / "trial-003" / "data_summary.json").read_text())["text_rules"] == 2


def test_a_continued_sft_study_of_a_score_goes_on_without_search_metric(tiny_llama: Path, tmp_path: Path) -> None:
    """sft's headline is its loss (minimised): a study of exact_match (maximised) continued without search.metric
    was refused as of the other direction."""
    from conftest import WORDS, say_rows, write_jsonl

    rows = write_jsonl(tmp_path / "chat.jsonl", say_rows(WORDS[:8]))
    cfg = {"task": {"name": "sft", "generation": {"eval_generate": True, "max_new_tokens": 2}},
           "model": str(tiny_llama), "output_dir": str(tmp_path / "out"),
           "data": {"train": str(rows), "validation": str(rows)},
           "train": {"max_steps": 1, "batch_size": 8, "save_steps": 0, "report": False},
           "search": {"metric": "exact_match", "space": {"train.lr": SPACE["train.lr"]}}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert runner.invoke(app, ["tune", str(path), "--trials", "1"]).exit_code == 0
    del cfg["search"]["metric"]
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])
    assert res.exit_code == 0 and "trial 1: exact_match=" in res.output, res.output


def test_tune_diverging_trial_fails(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    """A NaN loss fails its trial (recorded, not counted) instead of ending the search with a traceback."""
    path = _config(tmp_path, tiny_bert, sentiment_files, {"space": {"train.lr": {"type": "categorical",
                                                                                 "choices": [1.0e30]}}})
    res = runner.invoke(app, ["tune", str(path), "--trials", "1"])
    assert res.exit_code == 2, res.output
    assert "tune: trial 0 failed: train: loss is nan" in res.output
    assert res.output.strip().splitlines()[-1].startswith("error: tune: no trial of study 'tunelab' completed")
    results = json.loads((tmp_path / "out" / "tune" / "results.json").read_text())
    assert results["best"] is None and [r["state"] for r in results["trials"]] == ["FAIL"]
    assert "Traceback" not in res.output


def test_tune_prunes_a_bad_trial(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    """A good trial completes; a trial that does not learn (lr 1e-8) falls below its median at an evaluation
    and is pruned there: optuna.TrialPruned raised in on_eval ends the run cleanly and the search goes on."""
    search = {"metric": "roc_auc", "space": {"train.lr": {"type": "categorical", "choices": [5.0e-3, 1.0e-8]}},
              "pruner": {"startup_trials": 1}}
    path = _config(tmp_path, tiny_bert, sentiment_files, search, epochs=2, eval_steps=2)
    out = tmp_path / "out"
    (out / "tune").mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{out / 'tune' / 'study.db'}", study_name="tunelab",
                                direction="maximize")
    study.enqueue_trial({"train.lr": 5.0e-3})  # the order matters for pruning: fix it
    study.enqueue_trial({"train.lr": 1.0e-8})
    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])
    assert res.exit_code == 0, res.output  # the search ends normally after a pruned trial: table, best.yaml
    good, bad = _study(out).trials
    assert good.state.name == "COMPLETE"
    assert bad.state.name == "PRUNED", res.output
    step = bad.user_attrs["pruned_at_step"]
    assert 2 <= step < 12 and "PRUNED" in res.output and "pruned at step" in res.output
    assert set(bad.intermediate_values) == set(range(2, step + 1, 2))
    assert max(bad.intermediate_values.values()) < good.intermediate_values[step]
    run = out / "tune" / "trial-001"
    evals = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if "eval/roc_auc" in x]
    assert evals[-1] == step  # training ended at the pruning evaluation
    assert not (run / "model").exists() and not (run / "metrics.json").exists()
    assert (out / "tune" / "trial-000" / "model").is_dir()
    assert load_config(out / "tune" / "best.yaml").train.lr == 5.0e-3


def test_two_studies_in_one_output_dir_keep_their_own_trials(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    """A study named by --study has its own folder (trials, results, best.yaml, best-trial dir): running another
    study in the same output_dir replaces none of its files (both shared OUTPUT_DIR/tune/trial-NNN before)."""
    out = tmp_path / "out"
    done = {"space": {"train.lr": {"type": "categorical", "choices": [5.0e-3]}}}
    path = _config(tmp_path, tiny_bert, sentiment_files, done)
    res = runner.invoke(app, ["tune", str(path), "--trials", "1", "--study", "first/try"])
    assert res.exit_code == 0, res.output
    first = next((out / "tune").glob("first_try-*"))  # a name with a "/" as a folder name of its own
    stamp = (first / "trial-000" / "metrics.json").stat().st_mtime_ns
    results = (first / "results.json").read_text()
    res = runner.invoke(app, ["tune", str(path), "--trials", "1"])
    assert res.exit_code == 0, res.output
    assert (out / "tune" / "trial-000" / "metrics.json").is_file()
    assert (first / "trial-000" / "metrics.json").stat().st_mtime_ns == stamp
    assert not (first / "trial-000" / ".replaced").exists() and (first / "results.json").read_text() == results
    assert load_config(first / "best.yaml").output_dir == str(out / f"best-{first.name}-trial-000")
    assert load_config(out / "tune" / "best.yaml").output_dir == str(out / "best-trial-000")


def test_a_pruned_trial_leaves_no_replaced_run_behind(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    """A study whose storage was deleted and is run again finds its old trial directories: the finished run a trial
    replaces is moved to .replaced, and deleted when the trial finishes, completed or pruned; a failed trial keeps
    it."""
    out = tmp_path / "out"
    done = {"space": {"train.lr": {"type": "categorical", "choices": [5.0e-3]}}}
    res = runner.invoke(app, ["tune", str(_config(tmp_path, tiny_bert, sentiment_files, done)), "--trials", "2"])
    assert res.exit_code == 0, res.output
    trials = [out / "tune" / f"trial-{n:03d}" for n in (0, 1)]
    assert all((run / "metrics.json").is_file() for run in trials)

    (out / "tune" / "study.db").unlink()
    search = {"metric": "roc_auc", "space": {"train.lr": {"type": "categorical", "choices": [5.0e-3, 1.0e-8]}},
              "pruner": {"startup_trials": 1}}
    path = _config(tmp_path, tiny_bert, sentiment_files, search, epochs=2, eval_steps=2)
    study = optuna.create_study(storage=f"sqlite:///{out / 'tune' / 'study.db'}", study_name="tunelab",
                                direction="maximize")
    study.enqueue_trial({"train.lr": 5.0e-3})
    study.enqueue_trial({"train.lr": 1.0e-8})
    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])
    assert res.exit_code == 0, res.output
    assert [t.state.name for t in _study(out).trials] == ["COMPLETE", "PRUNED"], res.output
    assert (trials[0] / "metrics.json").is_file() and not (trials[0] / ".replaced").exists()
    assert not (trials[1] / "metrics.json").exists() and not (trials[1] / ".replaced").exists()

    completed = (trials[0] / "metrics.json").read_text()
    (out / "tune" / "study.db").unlink()
    nan = {"space": {"train.lr": {"type": "categorical", "choices": [1.0e30]}}}
    res = runner.invoke(app, ["tune", str(_config(tmp_path, tiny_bert, sentiment_files, nan)), "--trials", "1"])
    assert res.exit_code == 2 and "tune: trial 0 failed" in res.output, res.output
    assert (trials[0] / ".replaced" / "metrics.json").read_text() == completed  # kept: the new trial failed


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.lerning_rate": {"type": "float", "low": 0.1, "high": 0.2}},
         "config: search.space.train.lerning_rate: unknown key; did you mean learning_rate? tunelab's name for it is "
         "train.lr"),
        ({"method.r": {"type": "int", "low": 4, "high": 16}},
         "config: search.space.method.r: unknown key; r is a key of method dora, lora, qlora"),
        ({"train.batch_size": {"type": "categorical", "choices": [8, 0]}},
         "config: search.space.train.batch_size: Input should be greater than or equal to 1 (got 0)"),
        ({"train.lr.x": {"type": "float", "low": 0.1, "high": 0.2}},
         "config: search.space.train.lr.x: train.lr is not a section"),
        ({"train.lr": {"type": "float", "low": 0.0, "high": 0.2, "log": True}},
         "config: search.space.train.lr: log: true needs low > 0"),
        ({"output_dir": {"type": "categorical", "choices": ["a"]}},
         "config: search.space: output_dir: cannot be searched (set by tunelab tune)"),
    ],
)
def test_tune_bad_space_is_one_line(space: dict, message: str, tiny_bert: Path,
                                    sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    path = _config(tmp_path, tiny_bert, sentiment_files, {"space": space})
    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])
    assert res.exit_code == 2, res.output
    key = next(iter(space))  # the schema's errors and the later checks' (they said `config: ...`) name file and line
    message = message.replace("config:", f"{path}:{_line_of(path, 'space' if key == 'output_dir' else key)}:")
    assert res.output.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "out" / "tune").exists()  # checked before any study or trial


def _line_of(path: Path, key: str) -> int:
    return next(n for n, row in enumerate(path.read_text().splitlines(), 1) if row.strip().startswith(f"{key}:"))


def test_each_tasks_metric_names_are_the_numbers_its_metrics_give(tiny_bert: Path) -> None:
    """tune refuses a search.metric outside `Task.metric_names` before any trial: they must be what `metrics` gives."""
    import numpy as np

    from tunelab.config.run import build_config
    from tunelab.metrics import scalars
    from tunelab.metrics.classification import multi_label, single_label
    from tunelab.metrics.ner import entity_metrics
    from tunelab.metrics.qa import qa_metrics
    from tunelab.registry import TASKS

    def names(task: dict) -> set[str]:
        cfg = build_config({"task": task, "model": str(tiny_bert), "data": {"train": "t.jsonl"}})
        return set(TASKS.get(task["name"])(cfg.task, cfg.data).metric_names())

    probs = np.asarray([[0.8, 0.2], [0.3, 0.7]])
    assert set(scalars(single_label(np.asarray([0, 1]), probs, ["a", "b"]))) == names({"name": "classification"})
    given = multi_label(np.asarray([[1, 0], [0, 1]]), probs, ["a", "b"], 0.5)
    assert set(scalars(given)) == names({"name": "classification", "multi_label": True})
    assert set(scalars(entity_metrics([["B-PER", "O"]], [["B-PER", "O"]]))) == names({"name": "ner"})
    assert set(scalars(qa_metrics(["x", ""], [["x"], []]))) == names({"name": "qa"})


def test_tune_needs_search_section_and_optuna(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path, tiny_bert, sentiment_files, None)
    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])
    assert res.exit_code == 2 and res.output.startswith(f"error: {path}: search: required for tunelab tune")
    # a metric the task never gives (an HF Trainer user's eval_loss) is refused before a trial trains, not after it
    path = _config(tmp_path, tiny_bert, sentiment_files, {"metric": "eval_loss", "space": SPACE})
    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [  # (its line: it said `config: ...`)
        f"error: {path}:{_line_of(path, 'metric')}: search.metric: 'eval_loss' is not among the validation metrics "
        "of task classification "
        "(accuracy, precision_macro, recall_macro, f1_macro, precision_micro, recall_micro, f1_micro, "
        "precision_weighted, recall_weighted, f1_weighted, roc_auc)"], res.output
    assert not (tmp_path / "out").exists()
    # train's own selection metric too: refused before the data is read (it was found at the first evaluation); by
    # tune before any trial (each trial refused it, after study.db and a failed trial 0 were made)
    path = _config(tmp_path, tiny_bert, sentiment_files, {"space": SPACE})
    for key in ("train.best_metric", "train.early_stopping.metric"):
        for command in (["train", str(path)], ["tune", str(path), "--trials", "2"]):
            res = runner.invoke(app, [*command, "--set", f"{key}=acuracy"])
            assert res.exit_code == 2 and res.output.strip().splitlines() == [
                f"error: --set {key}: 'acuracy' is not among the validation metrics of task classification "
                "(accuracy, precision_macro, recall_macro, f1_macro, precision_micro, recall_micro, f1_micro, "
                "precision_weighted, recall_weighted, f1_weighted, roc_auc)"], (command, res.output)
            assert not (tmp_path / "out").exists()
    # the count of validation rows is a number `metrics` gives, not one to select a model by (nor listed as one)
    res = runner.invoke(app, ["train", str(path), "--set", "train.best_metric=n"])
    assert res.exit_code == 2 and res.output.startswith("error: --set train.best_metric: 'n' is not among"), res.output
    with pytest.raises(ConfigError, match=r"^config: search.metric: 'roc_auc' has no value on this validation split "):
        metric_value({"accuracy": 0.5, "roc_auc": None, "n": 4}, "roc_auc")  # (a split without one of the classes)
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])
    assert res.exit_code == 2
    assert res.output.strip() == "error: tune: optuna is not installed; pip install tunelab[tune]"
    # a base best_metric the trials' space samples is theirs to set: not refused before them (past it: no optuna)
    sampled = {"space": {**SPACE, "train.best_metric": {"type": "categorical", "choices": ["accuracy", "f1_macro"]}}}
    path = _config(tmp_path, tiny_bert, sentiment_files, sampled, best_metric="acuracy")
    res = runner.invoke(app, ["tune", str(path), "--trials", "2"])
    assert res.exit_code == 2 and "optuna is not installed" in res.output, res.output


def test_cv_three_folds(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    path = _config(tmp_path, tiny_bert, sentiment_files, None, save_steps=0)
    res = runner.invoke(app, ["cv", str(path), "--folds", "3"])
    assert res.exit_code == 0, res.output
    assert "data.validation" in res.output and "is ignored" in res.output
    root = tmp_path / "out" / "cv"
    result = json.loads((root / "cv.json").read_text())
    assert result["folds"] == 3 and result["stratified"] and result["rows"] == 48
    assert result["selected_on_validation"] is False and "optimistic" not in res.output
    acc = result["metrics"]["validation"]["accuracy"]
    assert len(acc["values"]) == 3
    assert acc["mean"] == pytest.approx(statistics.mean(acc["values"]))
    assert acc["std"] == pytest.approx(statistics.stdev(acc["values"]))  # sample std
    assert {"f1_macro", "roc_auc"} <= set(result["metrics"]["validation"])
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["fold-1", "fold-2", "fold-3"]

    source = sentiment_files[0].read_text().splitlines()
    held: Counter[str] = Counter()
    for k in (1, 2, 3):
        fold = root / f"fold-{k}"
        train, val = ((fold / f"{s}.jsonl").read_text().splitlines() for s in ("train", "validation"))
        assert Counter(train) + Counter(val) == Counter(source)  # each fold: every row once, fields as they were
        assert Counter(json.loads(x)["label"] for x in val) == {"negative": 8, "positive": 8}  # stratified
        held += Counter(val)
        cfg = yaml.safe_load((fold / "config.yaml").read_text())
        assert cfg["data"]["train"] == str(fold / "train.jsonl")
        assert cfg["data"]["validation"] == str(fold / "validation.jsonl")
        assert (fold / "metrics.json").is_file() and (fold / "model").is_dir()
    assert held == Counter(source)  # the held-out parts are disjoint and cover every row


def test_cv_folds_without_classes_are_plain_kfold() -> None:
    from tunelab.config.run import run_config_class
    from tunelab.config.sections import DataConfig
    from tunelab.registry import TASKS
    from tunelab.studies.cv import fold_indices

    run_config_class()  # registers the tasks
    multi = TASKS.get("classification")(TASKS.get("classification").Config(multi_label=True), DataConfig())
    rows = [{"text": f"t{i}", "label": ["a", "b"][: 1 + i % 2]} for i in range(10)]
    folds, how = fold_indices(rows, multi, 5, seed=0)
    assert how == "random" and len(folds) == 5
    assert sorted(i for _, held in folds for i in held) == list(range(10))
    # a label of one row trains in its fold (held out, that fold's model did not know it: the cv failed)
    rare = [*rows, {"text": "t10", "label": ["a", "rare"]}]
    folds, _ = fold_indices(rare, multi, 5, seed=0)
    assert all(10 in train and 10 not in held for train, held in folds)
    tags = [{"text": f"t{i}", "label": ["common", f"tag{i}"]} for i in range(10)]  # every row holds its own label
    from tunelab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^cv: --folds 5: a fold would validate on no row"):
        fold_indices(tags, multi, 5, seed=0)
    # a class of one row trains in every fold (held out, that fold's model did not know it: the cv failed)
    single = TASKS.get("classification")(TASKS.get("classification").Config(), DataConfig())
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(12)] + [{"text": "t12", "label": "c"}]
    folds, how = fold_indices(rows, single, 3, seed=0)
    assert how == "stratified" and all(12 in train and 12 not in held for train, held in folds)
    assert sorted(i for _, held in folds for i in held) == list(range(12))
    # more folds than the largest class has rows: said as such, not as a warning then scikit-learn's n_splits error
    with pytest.raises(ConfigError, match=r"^cv: --folds 7 is more than the rows of the largest class \(a: 6\); "
                                          r"stratified folds need at most 6$"):
        fold_indices(rows, single, 7, seed=0)


def test_a_study_taken_by_another_tune_or_another_storage_is_refused(tiny_bert: Path,
                                                                      sentiment_files: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    """One process per study (a second `tune` of it would fail the first one's running trial); a study folder
    whose trials are another storage's study is not overwritten by this one's."""
    import os

    from tunelab.training.layout import STUDY_LOCK
    from tunelab.training.run_dir import RunDirLock

    path = _config(tmp_path, tiny_bert, sentiment_files, {"space": SPACE})
    home = tmp_path / "out" / "tune"
    home.mkdir(parents=True)
    with RunDirLock(home, STUDY_LOCK):
        res = runner.invoke(app, ["tune", str(path), "--trials", "1"])
    assert res.exit_code == 2 and f"is in use by process {os.getpid()}" in res.output, res.output
    other = tmp_path / "other.db"  # a database that is there: another study's (one no longer there moved here)
    other.write_bytes(b"")
    (home / "results.json").write_text(json.dumps({"storage": f"sqlite:///{other}"}), encoding="utf-8")
    res = runner.invoke(app, ["tune", str(path), "--trials", "1"])
    assert res.exit_code == 2 and f"holds the trials of study 'tunelab' in sqlite:///{other}" in res.output
    assert sorted(p.name for p in home.iterdir()) == [".tunelab-study.lock", "results.json"]
    from tunelab.ui.runs import list_runs

    assert list_runs(tmp_path / "out") == []  # a study's lock makes no run of its folder in the web UI


def test_a_continued_study_with_other_settings_is_refused(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    """A study goes on with the settings it started with (but the keys it searches): another is refused in one line
    naming each changed field, and best.yaml is the best trial's own config.yaml, not the command's settings."""
    out = tmp_path / "out"
    path = _config(tmp_path, tiny_bert, sentiment_files, {"space": {"train.lr": {"type": "categorical",
                                                                                  "choices": [5.0e-3]}}}, max_steps=1)
    res = runner.invoke(app, ["tune", str(path), "--trials", "1"])
    assert res.exit_code == 0, res.output
    ran = yaml.safe_load((out / "tune" / "trial-000" / "config.yaml").read_text())
    best = (out / "tune" / "best.yaml").read_text()
    length = f"data.max_length (16; the study's: {ran['data']['max_length']})"
    both = f"{length}, train.batch_size (4; the study's: 8)"
    for sets, said in ((["data.max_length=16"], length), (["data.max_length=16", "train.batch_size=4"], both)):
        for trials in ("1", "2"):  # nothing to run (best.yaml was rewritten with these settings), one more trial
            res = runner.invoke(app, ["tune", str(path), "--trials", trials, *(x for s in sets for x in ("--set", s))])
            assert res.exit_code == 2, res.output
            assert res.stderr.strip() == (
                f"error: config: {said}: study 'tunelab' in sqlite:///{out / 'tune' / 'study.db'} ran its trials with "
                f"other settings ({out / 'tune' / 'trial-000' / 'config.yaml'}); continue it with those, or start "
                "another --study or output_dir")
    assert len(_study(out).trials) == 1 and (out / "tune" / "best.yaml").read_text() == best
    # a key the search now varies may change: best.yaml still says what trial 0 trained with
    res = runner.invoke(app, ["tune", str(path), "--trials", "1", "--set", "train.warmup=0.09", "--set",
                              "search.space.train.warmup={type: float, low: 0.0, high: 0.1}"])
    assert res.exit_code == 0 and "running 0 more" in res.output, res.output
    cfg = load_config(out / "tune" / "best.yaml")
    assert cfg.train.warmup == ran["train"]["warmup"] != 0.09 and cfg.data.max_length == ran["data"]["max_length"]
    assert cfg.train.save_steps is None and cfg.output_dir == str(out / "best-trial-000")


@pytest.mark.parametrize("name", ["trial-005", "Trial-012", "trial-1000", "study.db", "study.db-journal", "best.yaml"])
def test_a_study_named_as_the_default_studys_trial_or_file_is_refused(name: str, tiny_bert: Path,
                                                                      sentiment_files: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    """`--study trial-005` had its folder OUTPUT_DIR/tune/trial-005, where the default study's trial 5 trains."""
    path = _config(tmp_path, tiny_bert, sentiment_files, {"space": SPACE}, max_steps=1)
    res = runner.invoke(app, ["tune", str(path), "--trials", "1", "--study", name])
    assert res.exit_code == 2, res.output
    what = "trial" if name.lower().startswith("trial") else "file"
    assert res.stderr.strip() == (f"error: tune: --study {name}: {tmp_path / 'out' / 'tune' / name} is where the "
                                  f"default study keeps its {what} of that name; choose another study name")
    assert not (tmp_path / "out").exists()  # refused before anything is made


def _fold_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and (p.suffix == ".jsonl" and p.parent.name.startswith("fold-") or p.name == "cv.json")}


def test_a_cv_of_another_config_is_refused_unless_overwrite(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    """A finished cv folder and another --folds or config: refused in one line before anything is written (it
    rewrote fold-1's rows, cv.json still saying 2 folds); --overwrite replaces it."""
    path = _config(tmp_path, tiny_bert, sentiment_files, None, save_steps=0, max_steps=1)
    root = tmp_path / "out" / "cv"
    res = runner.invoke(app, ["cv", str(path), "--folds", "2"])
    assert res.exit_code == 0, res.output
    before = _fold_files(root)
    for args, said in ((["--folds", "3"], "fold-1: train.jsonl holds other rows and 1 more"),
                       (["--folds", "2", "--set", "train.lr=1e-3"], "fold-1: config.yaml: train.lr 0.005 (now 0.001) "
                        "and 1 more")):
        res = runner.invoke(app, ["cv", str(path), *args])
        assert res.exit_code == 2, res.output
        assert res.stderr.strip().splitlines()[-1] == (
            f"error: output_dir: {root} holds a cv of another config or other rows ({said}); pass --overwrite to "
            "replace it, or choose another output_dir")
        assert _fold_files(root) == before and not (root / "fold-3").exists()
    res = runner.invoke(app, ["cv", str(path), "--folds", "2", "--set", "train.lr=1e-3", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads((root / "cv.json").read_text())["folds"] == 2 and "finished, kept" not in res.output
    assert yaml.safe_load((root / "fold-2" / "config.yaml").read_text())["train"]["lr"] == 1e-3


@pytest.mark.parametrize("study", ["cv", "curve"])
def test_a_second_study_into_a_folder_in_use_changes_nothing(study: str, tiny_bert: Path, tmp_path: Path,
                                                             sentiment_files: tuple[Path, Path]) -> None:
    """A cv / curve running (its folder's study lock, its fold's / point's run lock held): a second one into it is
    refused before it writes (it wrote that fold's / point's rows, then failed on its lock)."""
    import os

    from tunelab.training.layout import STUDY_LOCK
    from tunelab.training.run_dir import RunDirLock

    path = _config(tmp_path, tiny_bert, sentiment_files, None, save_steps=0, max_steps=1)
    root, rows = tmp_path / "out" / study, '{"text": "the first study\'s rows", "label": "positive"}\n'
    sub = root / ("fold-1" if study == "cv" else "frac-1")
    sub.mkdir(parents=True)
    (sub / "train.jsonl").write_text(rows, encoding="utf-8")
    with RunDirLock(root, STUDY_LOCK), RunDirLock(sub):
        res = runner.invoke(app, [study, str(path), *(["--folds", "2"] if study == "cv" else ["--fractions", "1"])])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == (f"error: output_dir: {root} is in use by process {os.getpid()} (a run is writing "
                                  "it); wait for it to end or choose another output_dir")
    assert (sub / "train.jsonl").read_text() == rows and sorted(p.name for p in root.iterdir()) == [
        ".tunelab-study.lock", sub.name]


def test_a_cv_run_again_keeps_the_folds_that_finished(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    """An interrupted cv run again trains only the folds that had not finished (it trained fold 1 again) — also with
    a setting changed that does not change what a fold computes (train.log_steps was refused as another config);
    a fold whose test file changed in place since is trained again (it was kept, its old test score in cv.json)."""
    path = _config(tmp_path, tiny_bert, sentiment_files, None, save_steps=0, max_steps=1)
    root, test = tmp_path / "out" / "cv", write_jsonl(tmp_path / "test.jsonl", sentiment_rows(6, 5))
    res = runner.invoke(app, ["cv", str(path), "--folds", "2", "--set", f"data.test={test}"])
    assert res.exit_code == 0, res.output
    first = json.loads((root / "cv.json").read_text())["per_fold"]
    stamp = (root / "fold-1" / "metrics.json").stat().st_mtime_ns
    (root / "fold-2" / "metrics.json").unlink()  # fold 2 as an interrupted run leaves it
    res = runner.invoke(app, ["cv", str(path), "--folds", "2", "--set", f"data.test={test}", "--set",
                              "train.log_steps=3"])
    assert res.exit_code == 0, res.output
    assert f"cv: fold 1: finished, kept ({root / 'fold-1'})" in res.stderr and "cv: fold 2/2:" in res.stderr
    assert "cv: fold 1/2" not in res.stderr and (root / "fold-1" / "metrics.json").stat().st_mtime_ns == stamp
    again = json.loads((root / "cv.json").read_text())["per_fold"]
    assert again[0] == first[0] and (root / "fold-2" / "metrics.json").is_file()
    write_jsonl(test, sentiment_rows(8, 6))  # the test file changed where it is
    res = runner.invoke(app, ["cv", str(path), "--folds", "2", "--set", f"data.test={test}"])
    assert res.exit_code == 0 and "finished, kept" not in res.stderr and "cv: fold 1/2" in res.stderr, res.output
    assert json.loads((root / "cv.json").read_text())["per_fold"][0]["test"]["n"] == 8


def test_a_study_searching_the_method_goes_on(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A study whose space holds method.name could not be continued, even by the same command: the method's fields
    (r, alpha) and the lr its trials' methods imply counted as changed settings; a relative synonyms file likewise
    (the trial's config.yaml has it from its own folder)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "syn.tsv").write_text("good\tfine\n", encoding="utf-8")
    path = _config(tmp_path, tiny_bert, sentiment_files, {"space": {"method.name": {
        "type": "categorical", "choices": ["lora"]}}}, max_steps=1, save_steps=0)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["augment"] = {"synonyms": "syn.tsv", "ops": ["synonym"], "copies": 1}
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    for trials in ("1", "2"):
        res = runner.invoke(app, ["tune", str(path), "--trials", trials])
        assert res.exit_code == 0, res.output
    assert [t.params for t in _study(tmp_path / "out").trials] == [{"method.name": "lora"}] * 2


@pytest.mark.parametrize("command", ["tune", "cv"])
def test_ctrl_c_in_a_study_says_what_is_kept(command: str, tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a study's second run: one line with what is kept and the command that continues (was: exit
    130, nothing said)."""
    import shlex

    import tunelab.studies.cv
    import tunelab.studies.tune

    module = {"tune": tunelab.studies.tune, "cv": tunelab.studies.cv}[command]
    real, calls = module.run, []

    def interrupted_second(*args: object, **kwargs: object) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "run", interrupted_second)
    done = {"space": {"train.lr": {"type": "categorical", "choices": [5.0e-3]}}}
    path = _config(tmp_path, tiny_bert, sentiment_files, done if command == "tune" else None, save_steps=0,
                   max_steps=1)
    out = tmp_path / "out"
    args = [command, str(path), *(["--trials", "2"] if command == "tune" else ["--folds", "2"])]
    res = runner.invoke(app, args)
    assert res.exit_code == 130, res.output
    kept = (f"its finished trials (1) are kept in sqlite:///{out / 'tune' / 'study.db'}" if command == "tune"
            else f"its finished folds (fold-1) are kept in {out / 'cv'}")
    again = shlex.join(["tunelab", *args, "--set", f"output_dir={out}"])
    assert res.stderr.strip().splitlines()[-1] == f"{command}: interrupted; {kept}; the same command continues it: " \
                                                  f"{again}"
    if command == "cv":  # the command it names keeps fold 1
        monkeypatch.setattr(module, "run", real)
        res = runner.invoke(app, shlex.split(again)[1:])
        assert res.exit_code == 0 and "cv: fold 1: finished, kept" in res.stderr, res.output
    else:
        assert [t.state.name for t in _study(out).trials] == ["COMPLETE", "FAIL"]


def test_a_base_config_its_trials_mend_is_tuned(tiny_bert: Path, tmp_path: Path) -> None:
    """The check of search.metric built the task from the base config before any trial: a base config each trial's
    sampled value mends (qa's default doc_stride 128 past data.max_length 48, searched over 8) was refused."""
    from conftest import write_jsonl
    from test_qa import _qa_rows

    train, val = write_jsonl(tmp_path / "qa.jsonl", _qa_rows(16, 0)), write_jsonl(tmp_path / "v.jsonl", _qa_rows(6, 1))
    cfg = {"task": {"name": "qa", "max_question_length": 8}, "model": str(tiny_bert), "output_dir": str(tmp_path / "o"),
           "data": {"train": str(train), "validation": str(val), "max_length": 48},
           "train": {"max_steps": 1, "batch_size": 8, "save_steps": 0, "report": False},
           "search": {"metric": "f1", "space": {"task.doc_stride": {"type": "categorical", "choices": [8]}}}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = runner.invoke(app, ["tune", str(path), "--trials", "1"])
    assert res.exit_code == 0 and "trial 0: f1=" in res.output, res.output
