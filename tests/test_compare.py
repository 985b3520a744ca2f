"""`tunelab compare`: metric table, McNemar on two tiny trained runs, HTML with charts, same-examples
check; the paired bootstrap on constructed records."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml
from scipy.stats import binomtest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.studies.compare import mcnemar, paired_bootstrap

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny classification runs scored on the same validation file (different lr and seed)."""
    from tunelab.config.run import build_config
    from tunelab.pipeline import run

    root = tmp_path_factory.mktemp("compare")
    train = write_jsonl(root / "train.jsonl", sentiment_rows(48, 0))
    val = write_jsonl(root / "validation.jsonl", sentiment_rows(24, 1))
    dirs = []
    for name, lr, seed in (("run-a", 5e-3, 1), ("run-b", 1e-4, 2)):
        cfg = build_config({
            "task": "classification", "model": str(tiny_bert), "output_dir": str(root / name),
            "data": {"train": str(train), "validation": str(val)},
            "train": {"epochs": 1, "batch_size": 8, "lr": lr, "seed": seed, "log_steps": 2, "eval_steps": 2,
                      "save_steps": 0, "precision": "fp32"},
        })
        run(cfg)
        dirs.append(root / name)
    return dirs[0], dirs[1]


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "predictions" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_compare_two_runs(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    html = tmp_path / "report" / "cmp.html"
    res = runner.invoke(app, ["compare", str(a), str(b), "--output", str(html), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    # the table on stderr names both runs and the metrics
    assert "run-a" in res.stderr and "run-b" in res.stderr and "accuracy" in res.stderr
    assert result["examples"] == 24 and result["task"] == "classification"
    assert [r["name"] for r in result["runs"]] == ["run-a", "run-b"]
    for r, d in zip(result["runs"], two_runs, strict=True):
        assert r["metrics"]["accuracy"] == pytest.approx(json.loads((d / "metrics.json").read_text())
                                                         ["validation"]["accuracy"])
    # McNemar, recomputed from the records
    (c,) = result["comparisons"]
    ra, rb = _records(a), _records(b)
    only_a = sum(x["correct"] and not y["correct"] for x, y in zip(ra, rb, strict=True))
    only_b = sum(y["correct"] and not x["correct"] for x, y in zip(ra, rb, strict=True))
    assert (c["first_only_correct"], c["other_only_correct"]) == (only_a, only_b)
    expected = 1.0 if only_a + only_b == 0 else binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert 0.0 <= c["p_value"] <= 1.0 and c["p_value"] == pytest.approx(expected)
    assert c["test"] == "mcnemar_exact"
    # the HTML: self-contained, both runs, two charts (inline SVG) with a line per run
    page = html.read_text(encoding="utf-8")
    assert "run-a" in page and "run-b" in page and "McNemar" in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    charts = [ElementTree.fromstring(svg) for svg in re.findall(r'<svg class="chart".*?</svg>', page, re.S)]
    assert len(charts) == 2
    for chart in charts:
        assert {p.get("data-name") for p in chart.iter("polyline")} == {"run-a", "run-b"}
    text = (tmp_path / "report" / "cmp.txt").read_text(encoding="utf-8")
    assert "run-a" in text and "run-b" in text and "p-value" in text
    assert result["output"] == {"html": str(html), "text": str(tmp_path / "report" / "cmp.txt")}


def test_compare_refuses_different_examples(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    fewer = tmp_path / "fewer"
    shutil.copytree(b, fewer, ignore=shutil.ignore_patterns("model", "adapter", "checkpoints"))
    recs = (fewer / "predictions" / "validation.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (fewer / "predictions" / "validation.jsonl").write_text("".join(recs[:-1]), encoding="utf-8")
    res = runner.invoke(app, ["compare", str(a), str(fewer), "--output", str(tmp_path / "x.html")])
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"error: {fewer}: 23 validation examples, {a} has 24; "
                                  "runs must be scored on the same examples")
    other = tmp_path / "other"
    shutil.copytree(b, other, ignore=shutil.ignore_patterns("model", "adapter", "checkpoints"))
    rows = [json.loads(line) for line in recs]
    rows[3]["text"] = "something else"
    write_jsonl(other / "predictions" / "validation.jsonl", rows)
    res = runner.invoke(app, ["compare", str(a), str(other), "--output", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"{other}: validation example 3 (text or gold) differs" in res.stderr
    assert not (tmp_path / "x.html").exists()


def test_compare_one_line_errors(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    res = runner.invoke(app, ["compare", str(a)])
    assert res.exit_code == 2 and "at least two run directories" in res.stderr
    res = runner.invoke(app, ["compare", str(a), str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {tmp_path}: not a finished run directory " \
                                                          "(no metrics.json)"
    res = runner.invoke(app, ["compare", str(a), str(b), "--split", "test"])
    assert res.exit_code == 2 and f"{a}: no test split in metrics.json (splits: validation)" in res.stderr
    res = runner.invoke(app, ["compare", str(a), str(b), "--output", str(tmp_path / "x.txt")])
    assert res.exit_code == 2 and "expected an .html path" in res.stderr
    res = runner.invoke(app, ["compare", str(a), str(b), f"{a}/../{a.name}/", "--output", str(tmp_path / "d.html")])
    # (one run twice: tested against itself, p = 1 said nothing)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: compare: {a} and {a}/../{a.name} are one run; " \
                                                          "compare different runs"
    import shutil

    for damage, said in ((("config.yaml", "task: [\n"), "config.yaml: not a readable config"),
                         (("predictions/validation.jsonl", '{"text": "a"}\n'), "validation.jsonl:1: not an evaluation "
                                                                              "record"),
                         (("predictions/validation.jsonl", "[1, 2]\n"), "validation.jsonl:1: not an evaluation")):
        copy = tmp_path / f"damaged-{len(said)}-{damage[1][:1]}"
        shutil.copytree(a, copy)
        (copy / damage[0]).write_text(damage[1], encoding="utf-8")
        res = runner.invoke(app, ["compare", str(a), str(copy)])
        assert res.exit_code == 2 and said in res.stderr and "Traceback" not in res.output, res.output


def test_mcnemar_exact_values() -> None:
    # 10 discordant pairs, all won by the second run: p = 2 · 0.5^10
    first = [True] * 5 + [False] * 10
    other = [True] * 5 + [True] * 10
    r = mcnemar(first, other)
    assert (r["first_only_correct"], r["other_only_correct"]) == (0, 10)
    assert r["p_value"] == pytest.approx(2 * 0.5**10) and r["significant"]
    same = mcnemar([True, False, True], [True, False, True])
    assert same["p_value"] == 1.0 and not same["significant"]
    balanced = mcnemar([True, False] * 4, [False, True] * 4)  # 4 vs 4 discordant
    assert balanced["p_value"] == pytest.approx(1.0)


def _fake_run(path: Path, scores: list[float], texts: list[str], task: str = "qa") -> Path:
    (path / "predictions").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"task": {"name": task}}), encoding="utf-8")
    mean = sum(scores) / len(scores)
    (path / "metrics.json").write_text(json.dumps({"validation": {"f1": mean, "exact_match": mean, "n": len(scores)},
                                                   "train": {"steps": 3}}), encoding="utf-8")
    write_jsonl(path / "predictions" / "validation.jsonl", [
        {"index": i, "text": t, "gold": ["x"], "prediction": "x", "correct": s == 1.0, "score": s}
        for i, (t, s) in enumerate(zip(texts, scores, strict=True))])
    return path


def test_bootstrap_on_constructed_records(tmp_path: Path) -> None:
    import random

    rng = random.Random(0)
    texts = [f"question {i}" for i in range(200)]
    base = [rng.random() for _ in texts]
    better = [min(1.0, s + 0.2) for s in base]
    noisy = [min(1.0, max(0.0, s + rng.uniform(-0.05, 0.05))) for s in base]
    a = _fake_run(tmp_path / "a", base, texts)
    b = _fake_run(tmp_path / "b", better, texts)
    c = _fake_run(tmp_path / "c", noisy, texts)
    res = runner.invoke(app, ["compare", str(a), str(b), str(c), "--output", str(tmp_path / "r.html"), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["task"] == "qa" and result["metric"] == "f1"
    up, flat = result["comparisons"]
    true_up = sum(y - x for x, y in zip(base, better, strict=True)) / len(base)
    assert up["test"] == "paired_bootstrap" and up["resamples"] == 2000
    assert up["difference"] == pytest.approx(true_up) and up["statistic"] == "mean score"
    assert up["ci95"][0] < true_up < up["ci95"][1] and up["ci95"][0] > 0 and up["significant"]
    assert flat["ci95"][0] < 0 < flat["ci95"][1] and not flat["significant"]
    # seeded: the same interval again, another one with another seed
    again = paired_bootstrap(base, better, 2000, seed=0)
    assert again["ci95"] == up["ci95"]
    assert paired_bootstrap(base, better, 2000, seed=1)["ci95"] != up["ci95"]
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Paired bootstrap" in page and "no training curves" in page


def test_ner_bootstrap_is_of_the_corpus_entity_f1(tmp_path: Path) -> None:
    """A mean of per-sentence F1 called B significantly worse (an entity-free sentence counts 1.0, a ten-entity one
    as much as it) though its entity F1 is 0.87 against 0: the bootstrap is of the F1 the metric table shows."""
    many, none = ["B-PER"] * 10, ["O"] * 10
    block = [(many, none, many), (none, none, ["B-LOC"] + ["O"] * 9)] + [(none, none, ["B-LOC"] + ["O"] * 9)] * 2
    rows = block * 20  # (gold, A's prediction, B's prediction)
    for name, col in (("a", 1), ("b", 2)):
        path = tmp_path / name
        (path / "predictions").mkdir(parents=True)
        (path / "config.yaml").write_text(yaml.safe_dump({"task": {"name": "ner"}}), encoding="utf-8")
        (path / "metrics.json").write_text(json.dumps({"validation": {"f1": 0.0, "n": len(rows)}}), encoding="utf-8")
        write_jsonl(path / "predictions" / "validation.jsonl", [
            {"index": i, "text": f"sentence {i}", "gold": r[0], "prediction": r[col], "correct": r[0] == r[col],
             "score": 0.0} for i, r in enumerate(rows)])
    res = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output",
                              str(tmp_path / "r.html"), "--json"])
    assert res.exit_code == 0, res.output
    (c,) = json.loads(res.stdout)["comparisons"]
    assert c["statistic"] == "entity F1" and c["difference"] == pytest.approx(20 / 23)
    assert c["ci95"][0] > 0 and c["significant"]
    from tunelab.tasks.sft_report import paired_parts  # sft: the loss over all reply tokens, as its metrics

    name, parts, loss = paired_parts([{"loss": 1.0, "tokens": 1}, {"loss": 3.0, "tokens": 3}])
    assert name == "loss" and float(loss(parts.sum(0))) == 2.5


def test_mcnemar_through_cli_on_constructed_records(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(40)]
    first = [1.0] * 20 + [0.0] * 20
    other = [1.0] * 18 + [0.0] * 2 + [1.0] * 12 + [0.0] * 8  # discordant: 2 only first, 12 only other
    a = _fake_run(tmp_path / "a", first, texts, "classification")
    b = _fake_run(tmp_path / "b", other, texts, "classification")
    res = runner.invoke(app, ["compare", str(a), str(b), "--output", str(tmp_path / "r.html"), "--json"])
    assert res.exit_code == 0, res.output
    (c,) = json.loads(res.stdout)["comparisons"]
    assert (c["first_only_correct"], c["other_only_correct"]) == (2, 12)
    assert c["p_value"] == pytest.approx(binomtest(2, 14, 0.5).pvalue) and c["p_value"] < 0.05 and c["significant"]
    assert c["accuracy_difference"] == pytest.approx(0.25)
