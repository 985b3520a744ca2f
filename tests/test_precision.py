"""bf16 / fp16 asked for on a CPU that does not multiply them in hardware: said in one line."""

from __future__ import annotations

from pathlib import Path

import torch
from tests.conftest import sentiment_rows, write_jsonl
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.models.precision import cpu_runs_natively, slow_precision_note

CPU = torch.device("cpu")


def test_the_note_names_the_precision_the_hardware_and_both_speeds() -> None:
    note = slow_precision_note("bf16", CPU, native=False)
    assert note is not None and note.startswith("warning: train.precision bf16 on a CPU without AVX-512-BF16 or AMX")
    assert "slower than fp32" in note and "precision: auto" in note
    assert "AMX-FP16" in (slow_precision_note("fp16", CPU, native=False) or "")
    assert slow_precision_note("bf16", CPU, native=True) is None
    assert slow_precision_note("fp32", CPU, native=False) is None
    assert slow_precision_note("bf16", torch.device("cuda"), native=False) is None  # a GPU: its own story


def test_a_bf16_run_says_so_exactly_where_this_cpu_lacks_bf16(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16))
    sets = ["task=classification", f"model={tiny_bert}", f"data.train={train}", f"output_dir={tmp_path / 'run'}",
            "train.epochs=1", "train.batch_size=8", "train.save_steps=0", "data.validation_split=0.25",
            "train.precision=bf16"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    warned = "warning: train.precision bf16 on a CPU without" in res.output
    assert warned == (not cpu_runs_natively("bf16")), res.output
