"""Per-example records and the HTML report: one tiny run per task (classification, NER, QA, SFT) through
pipeline.run, the report's sections and images, `tunelab eval --report`, and the report opened in headless
Chromium (no console errors, every image decoded). Plus integrated gradients and CJK labels in plots."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import NEG, POS, WORDS, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.io import read_jsonl as read_records

CHROMIUM = next((p for p in (os.environ.get("TUNELAB_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None)
FILL = [w for w in WORDS[14:] if w not in ("the", "a")]
CHART = re.compile(r'<svg class="chart".*?</svg>', re.S)


# -- tiny data per task ----------------------------------------------------------------------------
def _ner_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 7)):
            w = rng.choice(WORDS)
            tokens.append(w)
            tags.append("B-POS" if w in POS else "B-NEG" if w in NEG else "O")
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def _qa_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(FILL) for _ in range(rng.randint(6, 20))]
        k = rng.randrange(len(words))
        words[k] = rng.choice(POS)
        ctx = " ".join(words)
        start = len(" ".join(words[:k])) + (1 if k else 0)
        q = rng.choice(["what is good", "which word is good", "who is nice", "good"])
        rows.append({"id": f"q{i}", "context": ctx, "question": q,
                     "answers": {"text": [words[k]], "answer_start": [start]}})
    return rows


def _sft_rows(words: list[str]) -> list[dict]:
    return [{"instruction": f"say {w}", "output": w} for w in words]


TASKS = {  # task: (task config, model fixture, rows(train), rows(validation), data overrides)
    "classification": ("classification", "tiny_bert", lambda: sentiment_rows(48, 0), lambda: sentiment_rows(24, 1), {}),
    "ner": ("ner", "tiny_bert", lambda: _ner_rows(40, 0), lambda: _ner_rows(12, 1), {}),
    "qa": ({"name": "qa", "doc_stride": 8, "max_question_length": 4, "n_best": 5}, "tiny_bert",
           lambda: _qa_rows(32, 0), lambda: _qa_rows(12, 1), {"max_length": 32}),
    "sft": ({"name": "sft", "generation": {"eval_generate": True, "max_new_tokens": 4}}, "tiny_llama",
            lambda: _sft_rows(WORDS[:10] * 2), lambda: _sft_rows(WORDS[:6]), {}),
}


def _train(name: str, model: Path, tmp_path: Path) -> Path:
    from tunelab import pipeline

    task, _, train_rows, val_rows, data = TASKS[name]
    train = write_jsonl(tmp_path / "train.jsonl", train_rows())
    val = write_jsonl(tmp_path / "validation.jsonl", val_rows())
    out = tmp_path / "run"
    cfg = build_config({"task": task, "model": str(model), "output_dir": str(out),
                        "data": {"train": str(train), "validation": str(val), **data},
                        "train": {"epochs": 2, "batch_size": 8, "lr": 5e-3, "save_steps": 0, "precision": "fp32"}})
    pipeline.run(cfg)
    return out


# -- the browser check ---------------------------------------------------------------------------
CHECK = """<script>
window.addEventListener('error', e => {
  const pre = document.createElement('pre');
  pre.className = 'js-' + 'error';
  pre.textContent = e.message;
  document.body.appendChild(pre);
});
window.addEventListener('load', () => {
  // every chart drew marks of some size; every image (none expected) loaded
  const charts = [...document.querySelectorAll('svg.chart')];
  const blank = c => { const b = c.getBBox(); return !(b.width > 50 && b.height > 50)
                       || !c.querySelector('polyline, rect, circle, polygon'); };
  const bad = charts.filter(blank).length + [...document.images].filter(i => !i.complete || !i.naturalWidth).length;
  const external = performance.getEntriesByType('resource').filter(r => !r.name.startsWith('data:')).length;
  const out = document.createElement('pre');
  out.id = 'tunelab-check';
  out.textContent = 'charts=' + charts.length + ' broken=' + bad + ' external=' + external;
  document.body.appendChild(out);
});
</script>"""


def browser_check(report: Path, tmp_path: Path) -> dict[str, int]:
    """Open a copy of the report (plus a checker script) in headless Chromium; returns image counts and
    fails on console errors, script errors or anything fetched from outside the file."""
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (apt-get install chromium); CI must run the browser check")
        pytest.skip("chromium is not installed")
    page = tmp_path / "checked.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    assert 'class="js-error"' not in res.stdout, res.stdout[-2000:]
    m = re.search(r"charts=(\d+) broken=(\d+) external=(\d+)", res.stdout)
    assert m, res.stdout[-2000:]
    charts, broken, external = map(int, m.groups())
    assert broken == 0 and external == 0, m.group()
    return {"charts": charts}


def _charts(html: str) -> list[ElementTree.Element]:
    """The report's inline SVG charts, each parsed as XML (well-formed, escaped)."""
    return [ElementTree.fromstring(svg) for svg in CHART.findall(html)]


# -- per task --------------------------------------------------------------------------------------
EXPECT = {
    "classification": ["confusion matrix", "ROC curves", "precision-recall curves", "reliability diagram",
                       "Label distribution", "Token lengths"],
    "ner": ["Per entity type", "Error kinds", '<mark class="', "Entity type distribution"],
    "qa": ["By gold answer length", "By question word"],
    "sft": ["Samples (the first", "per-example loss", "Generated replies (the first 6 of 6)", "rouge_l"],
}
RECORD_KEYS = {"index", "text", "gold", "prediction", "correct", "score"}


@pytest.mark.parametrize("name", list(TASKS))
def test_report_per_task(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(TASKS[name][1])
    out = _train(name, model, tmp_path)
    recs = read_records(out / "predictions" / "validation.jsonl")
    assert len(recs) == len(TASKS[name][3]())
    for i, r in enumerate(recs):
        assert set(r) >= RECORD_KEYS and r["index"] == i and isinstance(r["correct"], bool)
        assert 0.0 <= r["score"] <= 1.0 and len(r["text"]) <= 1000
    if name == "classification":
        assert recs[0]["labels"] == ["negative", "positive"] and len(recs[0]["probs"]) == 2
        assert all(r["score"] == float(r["correct"]) for r in recs)
    if name == "ner":
        assert all((r["score"] == 1.0) == r["correct"] for r in recs)
    html = (out / "report.html").read_text(encoding="utf-8")
    for key in ("summary", "data", "training", "results", "errors"):
        assert f'<section id="{key}">' in html, key
    assert "could not be built" not in html
    logged = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "loss" in r and "final" not in r]  # the training log rows, not the closing summary
    row = html.split("final training loss (last logged step)", 1)[1].split("</tr>", 1)[0]
    assert float(re.sub(r"<[^>]+>", "", row).strip()) == pytest.approx(logged[-1], abs=5e-3)  # as shown, rounded
    data = html.split('<section id="data">', 1)[1].split("</section>", 1)[0]
    assert '{"' not in data and "{&quot;" not in data and "&#x27;: " not in data  # tables, not raw JSON
    for text in EXPECT[name]:
        assert text in html, text
    if name == "classification":
        mistakes = ["Most confident mistakes", 'class="tok"', "Most confused label pairs"]
        assert all(t in html for t in mistakes) if not all(r["correct"] for r in recs) else "No mistakes" in html
    charts = _charts(html)
    marks = ("polyline", "rect", "circle", "polygon")
    assert len(charts) >= 4 and all(c.find("title") is not None and any(c.find(m) is not None for m in marks)
                                    for c in charts)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # self-contained
    assert "<script" not in html
    assert browser_check(out / "report.html", tmp_path)["charts"] == len(charts)
    if name == "classification":
        _eval_report_cli(out, tmp_path)


def _eval_report_cli(out: Path, tmp_path: Path) -> None:
    """`tunelab eval --report` on the run's model: the same metrics, records next to the report."""
    report = tmp_path / "eval" / "report.html"
    val = tmp_path / "validation.jsonl"
    res = CliRunner().invoke(app, ["eval", str(out / "model"), "--data", str(val), "--report", str(report)])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout.splitlines()[-1])
    assert metrics["accuracy"] == json.loads((out / "metrics.json").read_text())["validation"]["accuracy"]
    recs = read_records(tmp_path / "eval" / "report.predictions.jsonl")
    assert len(recs) == 24 and recs[0]["labels"] == ["negative", "positive"]
    run_recs = read_records(out / "predictions" / "validation.jsonl")
    assert [(r["prediction"], r["probs"]) for r in recs] == [(r["prediction"], r["probs"]) for r in run_recs]
    html = report.read_text(encoding="utf-8")
    assert "confusion matrix" in html and "Training curves" in html and "could not be built" not in html
    assert "training split is not available" in html or "leakage is not available" in html
    # baselines run after training: `tunelab report RUN` rebuilds the run's report with them
    assert "Baselines" not in (out / "report.html").read_text(encoding="utf-8")
    res = CliRunner().invoke(app, ["baseline", str(out / "config.yaml")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "tfidf_logreg" in html and "fine-tuned (this run)" in html and "Most confused label pairs" in html
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "is not a run directory (no config.yaml" in res.output
    # a run stopped before its end (a checkpoint, no model/), a run whose model/ was removed: said which
    half = tmp_path / "half"
    (half / "checkpoints" / "step-00000004").mkdir(parents=True)
    (half / "config.yaml").write_bytes((out / "config.yaml").read_bytes())
    res = CliRunner().invoke(app, ["report", str(half)])
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: report: {half} has no model/: it has not finished (its newest checkpoint: step 4); finish it with "
        "tunelab train --resume (its config), which writes the report at its end")
    (half / "metrics.json").write_text("{}")  # a finished run (its checkpoints kept, as by default) whose model/ went
    res = CliRunner().invoke(app, ["report", str(half)])
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: report: {half} has no model/: it finished, and model/ was removed since; tunelab train --resume (its "
        "config) from its newest checkpoint (step 4) writes it again, and the report at its end")
    (half / "metrics.json").unlink()
    shutil.rmtree(half / "checkpoints")
    res = CliRunner().invoke(app, ["report", str(half)])
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: report: {half} has no model/: it did not finish, or model/ was removed; the report scores the run's "
        "model")


# -- pieces ----------------------------------------------------------------------------------------
def test_integrated_gradients_are_informative(tiny_bert: Path) -> None:
    from tunelab.config.sections import DataConfig
    from tunelab.models.attribution import explain, render_tokens
    from tunelab.tasks.classification import Classification, ClassificationConfig

    task = Classification(ClassificationConfig(), DataConfig(max_length=32))
    examples = [{"text": "good great movie but awful plot", "label": "positive", "source": "t", "line": 1, "row": {}},
                {"text": "bad", "label": "negative", "source": "t", "line": 2, "row": {}}]
    model, tok = task.build_model(str(tiny_bert), examples)
    found = explain(task, model, tok, examples, [1, 0], steps=32)
    assert len(found) == 2 and len(explain(task, model, tok, examples, [1, 0], steps=4, budget_s=0)) == 1
    a = found[0]
    assert a.tokens[0] == "[CLS]" and a.tokens[-1] == "[SEP]" and len(a.tokens) == len(a.scores) == 8
    assert np.all(np.isfinite(a.scores)) and np.ptp(a.scores[1:-1]) > 0
    assert a.scores[0] == 0 and a.scores[-1] == 0  # special tokens keep their embedding: no attribution
    # completeness: the attributions add up to F(x) - F(baseline), up to the Riemann-sum error
    assert a.delta < 0.05 * max(float(np.abs(a.scores).sum()), 1e-3), (a.delta, a.scores)
    html = render_tokens(a)  # words, not pieces, and no [CLS] / [SEP]
    assert html.count('class="tok"') == 6 and "rgba(" in html and "[CLS]" not in html
    assert [w for w, _ in a.words()] == a.tokens[1:-1]  # tiny_bert's vocabulary holds whole words
    from tunelab.models.attribution import Attribution

    pieces = Attribution(["[CLS]", "un", "##believ", "##able", "film", "[SEP]"], np.array([0, 1.0, 2.0, 3.0, 4.0, 0]),
                         0, 0.0, [True, False, False, False, False, True])
    assert pieces.words() == [("unbelievable", 6.0), ("film", 4.0)]
    sp = Attribution(["<s>", "▁un", "believ", "able", "▁film"], np.ones(5), 0, 0.0, [True, False, False, False, False])
    assert [w for w, _ in sp.words()] == ["unbelievable", "film"]


def test_cjk_labels_and_escaping(tmp_path: Path) -> None:
    from tunelab import plots
    from tunelab.report import build_report

    # the labels are text in the SVG: the reader's browser draws them with its own CJK font
    matrix = ElementTree.fromstring(plots.confusion(np.array([[3, 1], [2, 4]]), ["正面", "<负面>"]))
    assert {"正面", "<负面>"} <= {t.text for t in matrix.iter("text")}
    shares = ElementTree.fromstring(plots.bars({"份额": {"体育": 0.4, "财经": 0.6}}, "类别"))
    assert {"类别", "体育", "财经"} <= {t.text for t in shares.iter("text")}
    labels = ["正面", "负面"]
    recs = [{"index": i, "text": f"<script>alert({i})</script> 这部电影很好", "gold": labels[i % 2],
             "prediction": labels[(i // 2) % 2], "correct": labels[i % 2] == labels[(i // 2) % 2],
             "score": float(labels[i % 2] == labels[(i // 2) % 2]), "probs": [0.7, 0.3] if i % 3 else [0.2, 0.8]}
            for i in range(8)]
    recs[0]["labels"] = labels
    report = build_report(tmp_path / "r.html", None, title="<b>报告</b>", task_name="classification",
                          records={"validation": recs}, metrics={"validation": {"accuracy": 0.5}})
    html = report.read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; 这部电影很好" in html
    assert "&lt;b&gt;报告&lt;/b&gt;" in html and "正面" in html and "could not be built" not in html
    assert "confusion matrix" in html and "Most confident mistakes" in html


def test_baselines_beside_a_run_only_on_its_rows(tmp_path: Path) -> None:
    """baselines.json from another hold-out (another seed or validation_split, or `eval --report` of another file)
    stood beside "fine-tuned (this run)" as if scored on the same rows: now a note says it is not shown."""
    from tunelab.data.report import training_fingerprint
    from tunelab.report.context import Context
    from tunelab.report.sections import baselines_section

    rows = [{"text": f"text {i}", "label": "x" if i % 2 else "y"} for i in range(6)]
    ctx = Context("r", out_dir=tmp_path, splits={"validation": rows}, metrics={"validation": {"accuracy": 0.9}})

    def shown(meta: dict) -> str:
        baselines = {"validation": {"tfidf_nb": {"accuracy": 0.7}}, "meta": {"task": "classification", **meta}}
        (tmp_path / "baselines.json").write_text(json.dumps(baselines), encoding="utf-8")
        return baselines_section(ctx) or ""

    same = shown({"rows": {"validation": 6}, "rows_sha256": {"validation": training_fingerprint(rows)}})
    assert "tfidf_nb" in same and "fine-tuned (this run)" in same
    other = shown({"rows": {"validation": 6}, "rows_sha256": {"validation": training_fingerprint(rows[:5])}})
    assert "tfidf_nb" not in other and "scored other validation rows than these (6 rows there, 6 here" in other
    older = shown({"rows": {"validation": 12}})  # a baselines.json without the hashes: by the count
    assert "tfidf_nb" not in older and "12 rows there, 6 here" in older
    assert "fine-tuned (this run)" in shown({"rows": {"validation": 6}})
    ctx.splits["validation"] = [{**r, "generated": "a reply"} for r in rows]  # sft scored with eval_generate
    assert "tfidf_nb" in shown({"rows": {"validation": 6}, "rows_sha256": {"validation": training_fingerprint(rows)}})


def test_report_failure_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tunelab.report import write_run_report

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    assert write_run_report(blocker) is None
    err = capsys.readouterr().err
    assert err.startswith("report: ") and "not written" in err and err.count("\n") == 1
