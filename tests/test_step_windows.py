"""What one optimizer step is made of, and what the log says of it: an epoch's batches in windows of grad_accum
(the last one shorter, as HF Trainer's), the learning rate the step ran with, the loss of the steps an early stop
leaves after the last log line."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from transformers import get_scheduler

from conftest import sentiment_rows
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.registry import METHODS, TASKS
from tunelab.training import checkpoint as ckpt
from tunelab.training import engine


def _setup(tiny_bert: Path, rows: int, **train: object):
    cfg = build_config({"task": "classification", "model": str(tiny_bert), "method": "full",
                        "train": {"batch_size": 2, "lr": 1e-3, "save_steps": 0, **train}})
    engine.seed_everything(0)
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(Table("m.jsonl", [Record("m.jsonl", i + 1, r) for i, r in enumerate(sentiment_rows(rows))]))
    model, tok = task.build_model(str(tiny_bert), examples)
    model = METHODS.get("full")(cfg.method).apply(model, task.head_modules(model))
    return cfg, model, task.encode(examples, tok), partial(task.collate, pad_id=tok.pad_token_id)


@pytest.mark.parametrize("epochs", [1, 3])
def test_each_row_once_per_epoch_when_grad_accum_does_not_divide_the_batches(epochs: int, tiny_bert: Path) -> None:
    """10 rows in batches of 2 with grad_accum 2: 3 steps an epoch, the last of one batch. The leftover batch
    rolled into the next step: one epoch trained 6 batches (two rows twice), three epochs 36 rows."""
    cfg, model, feats, collate = _setup(tiny_bert, 10, grad_accum=2, epochs=epochs)
    seen: list[int] = []

    def counting(part: list[dict]) -> dict:
        seen.extend(next(i for i, f in enumerate(feats) if f is row) for row in part)
        return collate(part)

    result = engine.train(model, feats, counting, cfg.train, 1e-3)
    assert (result.steps, result.epochs) == (3 * epochs, float(epochs))
    assert sorted(seen) == sorted(list(range(10)) * epochs)


def test_the_logged_lr_is_the_one_the_step_ran_with(tiny_bert: Path, tmp_path: Path) -> None:
    """As HF Trainer logs it (read before the scheduler steps): the first warmup step runs at 0."""
    cfg, model, feats, collate = _setup(tiny_bert, 8, max_steps=4, warmup=2, log_steps=1)
    engine.train(model, feats, collate, cfg.train, 1e-3, tmp_path)
    logged = [json.loads(x)["lr"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]

    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    hf, expected = get_scheduler("linear", sgd, 2, 4), []
    for _ in range(4):
        expected.append(hf.get_last_lr()[0])
        sgd.step()
        hf.step()
    assert logged == pytest.approx(expected) and logged[0] == 0.0


def test_an_early_stop_between_log_lines_logs_their_loss(tiny_bert: Path, tmp_path: Path) -> None:
    """Stopped at step 3 with log_steps 10: train.loss was 0.0 and no line had the steps' loss."""
    cfg, model, feats, collate = _setup(tiny_bert, 16, max_steps=20, eval_steps=1, log_steps=10, save_steps=3,
                                        early_stopping={"metric": "accuracy", "patience": 2})
    scores = iter([0.5, 0.5, 0.5])
    result = engine.train(model, feats, collate, cfg.train, 1e-3, tmp_path,
                          evaluate=lambda m: {"accuracy": next(scores), "n": 8})
    assert (result.steps, result.stopped_early) == (3, True)
    losses = [row for row in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "loss" in row]
    assert [row["step"] for row in losses] == [3]
    assert result.train_loss == pytest.approx(losses[0]["loss"], abs=1e-6) and result.train_loss > 0.1
    # logged before the stop's checkpoint: a resume of it has nothing pending (it logged those steps twice)
    loop = ckpt.read_trainer_state(tmp_path / "checkpoints" / "step-00000003")["loop"]
    assert (loop["log_n"], loop["all_n"], loop["lr"]) == (0, 3, losses[0]["lr"])
