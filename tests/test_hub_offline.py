"""A hub model on a machine that cannot reach the hub: read from the Hugging Face cache at once, not after minutes of
huggingface_hub's retries (1 + 2 + 4 + 8 + 8 s for each of a dozen files: a tiny cached BERT took 3 min 18 s to start
training, with 40 "Retrying" lines); one not in the cache fails at once, in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import make_tiny_bert


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: a connection to it is refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cached_hub_model_loads_at_once_when_the_hub_cannot_be_reached(tmp_path: Path) -> None:
    repo = tmp_path / "hf" / "hub" / "models--someorg--tiny-bert"
    make_tiny_bert(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "good film", "label": "pos"}\n{"text": "bad film", "label": "neg"}\n')
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{port}", TUNELAB_NO_PROGRESS="1",
               OMP_NUM_THREADS="1")
    script = ("from tunelab.cli import app\nimport sys\n"  # both commands in one process: one start-up
              "for model in ('someorg/tiny-bert', 'someorg/not-cached'):\n"
              "    try:\n"
              f"        app(['data', 'check', {str(rows)!r}, '--model', model, '--json'])\n"
              "    except SystemExit as e:\n"
              "        print('exit', e.code, flush=True)\n")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    out, err = res.stdout.split("exit "), res.stderr.strip().splitlines()
    assert json.loads(out[0])["files"] and out[1].strip() == "0" and out[2].strip() == "2", res.stderr
    assert err[0] == ("note: 127.0.0.1 cannot be reached: someorg/tiny-bert is read from the Hugging Face cache only "
                      "(as with HF_HUB_OFFLINE=1)"), res.stderr
    assert "Retrying" not in res.stderr and "Traceback" not in res.stderr
    assert err[-1].startswith("error: --model: cannot load someorg/not-cached: "), res.stderr
