"""A resume trains as its config.yaml says: a checkpoint of another run is checked against that run's settings as
strictly as a run's own; a longer schedule runs its resumed steps at the lr it gives them; a checkpoint past the
run's last step is refused, and so is a finished run's last one where the resume trains no step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app

runner = CliRunner()


def _args(tiny_bert: Path, tmp_path: Path, out: str, *extra: str) -> list[str]:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16, 0))
    sets = ["task=classification", f"model={tiny_bert}", f"data.train={train}", "data.validation_split=0",
            f"output_dir={tmp_path / out}", "train.batch_size=8", "train.lr=0.01", "train.save_steps=4",
            "train.log_steps=1", "train.report=false", *extra]
    return ["train", *[x for s in sets for x in ("--set", s)]]


def _refused(args: list[str], match: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and "Traceback" not in line and match in line, line


def _lrs(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return {r["step"]: r["lr"] for r in rows if "lr" in r}


@pytest.fixture()
def eight_steps(tiny_bert: Path, tmp_path: Path) -> Path:
    """A finished 8-step run (2 batches an epoch) with checkpoints at steps 4 and 8."""
    res = runner.invoke(app, _args(tiny_bert, tmp_path, "rs", "train.max_steps=8"))
    assert res.exit_code == 0, res.output
    return tmp_path / "rs"


def test_another_runs_checkpoint_is_checked_against_its_settings(eight_steps: Path, tiny_bert: Path,
                                                                 tmp_path: Path) -> None:
    """--resume of another run's checkpoint into a new output_dir: a changed lr (the optimizer state would restore the
    old one under a config.yaml saying the new) or LoRA alpha (rescaling the resumed weights) is refused in one line,
    as for the run's own checkpoint; what a resume may change (its length) is not."""
    step = eight_steps / "checkpoints" / "step-00000008"
    _refused([*_args(tiny_bert, tmp_path, "rsx", "train.max_steps=8", "train.lr=0.5"), "--resume", str(step)],
             f"--set train.lr: 0.5 where the run being resumed has 0.01 ({eight_steps / 'config.yaml'}); resume "
             "with its settings, or train without --resume")
    assert not (tmp_path / "rsx").exists()
    lora = _args(tiny_bert, tmp_path, "lora", "train.max_steps=4", "method=lora", "method.r=2")
    assert runner.invoke(app, lora).exit_code == 0
    _refused([*_args(tiny_bert, tmp_path, "lorax", "train.max_steps=8", "method=lora", "method.r=2",
                     "method.alpha=64"), "--resume", str(tmp_path / "lora" / "checkpoints" / "step-00000004")],
             "--set method.alpha: 64.0 where the run being resumed has 32.0")
    res = runner.invoke(app, [*_args(tiny_bert, tmp_path, "longer", "train.max_steps=9"), "--resume", str(step)])
    assert res.exit_code == 0, res.output


def test_a_longer_resume_runs_at_the_new_schedules_lr(eight_steps: Path, tiny_bert: Path, tmp_path: Path) -> None:
    """A finished 8-step run (linear decay: its next lr 0.0) resumed to 12 steps runs steps 9-12 at the lr of a
    straight 12-step run, not the first of them at the old schedule's 0.0."""
    res = runner.invoke(app, [*_args(tiny_bert, tmp_path, "rs12", "train.max_steps=12"), "--resume",
                              str(eight_steps / "checkpoints" / "step-00000008")])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, _args(tiny_bert, tmp_path, "straight", "train.max_steps=12")).exit_code == 0
    resumed, straight = _lrs(tmp_path / "rs12"), _lrs(tmp_path / "straight")
    assert sorted(resumed) == [9, 10, 11, 12]
    assert [resumed[s] for s in resumed] == pytest.approx([straight[s] for s in resumed], abs=1e-12)
    assert resumed[9] == pytest.approx(0.01 * 4 / 12)
    res = runner.invoke(app, [*_args(tiny_bert, tmp_path, "rs", "train.max_steps=16"), "--resume"])  # its own too
    assert res.exit_code == 0, res.output
    assert _lrs(eight_steps)[9] == pytest.approx(0.01 * 8 / 16)


def test_a_checkpoint_past_the_last_step_is_refused(eight_steps: Path, tiny_bert: Path, tmp_path: Path) -> None:
    step = eight_steps / "checkpoints" / "step-00000004"
    _refused([*_args(tiny_bert, tmp_path, "rs3", "train.max_steps=3"), "--resume", str(step)],
             f"--set train.max_steps: the checkpoint {step} is at step 4, past train.max_steps 3; resume with at "
             "least 4 steps, or train without --resume")
    _refused([*_args(tiny_bert, tmp_path, "rs3", "train.epochs=1"), "--resume", str(step)],  # 2 steps an epoch
             "--set train.epochs: the checkpoint")
    assert not (tmp_path / "rs3").exists()
    # the finished run resumed as it ran: nothing to train, so nothing rewritten (its model newer than its exports)
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in eight_steps.rglob("*") if p.is_file()}
    _refused([*_args(tiny_bert, tmp_path, "rs", "train.max_steps=8"), "--resume"],
             f"--resume: the run in {eight_steps} finished at step 8 (train.max_steps 8); there is nothing to resume "
             "(to train longer, resume with a larger train.max_steps, or start a new run from its model: --set "
             "model=RUN/model)")
    _refused([*_args(tiny_bert, tmp_path, "rs", "train.epochs=4"), "--resume"],  # (the same 8 steps)
             "finished at step 8 (the 8 steps of train.epochs 4)")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in eight_steps.rglob("*") if p.is_file()} == files
    (eight_steps / "metrics.json").unlink()  # its own checkpoint: as an interrupted run leaves it
    before = (eight_steps / "config.yaml").read_text(encoding="utf-8")
    _refused([*_args(tiny_bert, tmp_path, "rs", "train.max_steps=6"), "--resume"], "past train.max_steps 6")
    assert (eight_steps / "config.yaml").read_text(encoding="utf-8") == before


def test_a_default_named_head_is_no_tuned_one_and_a_copied_data_file_is_the_same(tiny_bert: Path,
                                                                                 tmp_path: Path) -> None:
    """A base model saved with a token-classification head of transformers' default names (LABEL_0, LABEL_1) was
    taken for a tuned NER model: its two dead tags kept, O no longer first. A resume from another run's checkpoint
    with its data file copied elsewhere (same bytes) was refused as another file."""
    from transformers import BertForTokenClassification

    from tunelab.pipeline import _same_file
    from tunelab.tasks.label_head import tuned_labels

    BertForTokenClassification.from_pretrained(tiny_bert).save_pretrained(tmp_path / "tokcls")
    assert tuned_labels(str(tmp_path / "tokcls"), "ForTokenClassification") == []
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    a.write_text('{"text": "x"}\n')
    b.write_text('{"text": "x"}\n')
    c.write_text('{"text": "y"}\n')
    assert _same_file(str(a), str(b)) and not _same_file(str(a), str(c))
