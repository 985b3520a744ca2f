"""Two CPU processes (gloo) train one model with DDP through `torchrun`; only the main process
writes the run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import sentiment_rows, write_jsonl


def test_two_process_ddp(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(64))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNELAB_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tunelab.cli", "train", "--set", "task=classification", "--set", f"model={tiny_bert}",
           "--set", f"data.train={train}", "--set", f"output_dir={out}", "--set", "train.epochs=1",
           "--set", "train.batch_size=8", "--set", "train.log_steps=1"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["hardware"]["processes"] == 2
    # 58 training rows (6 held out) = 8 batches of 8, split over 2 processes = 4 steps per epoch
    assert metrics["train"]["steps"] == 4
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == [1, 2, 3, 4]  # written once, by the main process
    assert (out / "model" / "model.safetensors").is_file()
