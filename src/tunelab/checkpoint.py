"""Atomic checkpoints: everything is written into a temp directory that is renamed into place, so
a crash mid-save never leaves a half-written `step-N/` behind for a resume to pick up."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file


def atomic_dir(final: Path) -> Path:
    """A fresh temp dir next to `final`; call `commit_dir(tmp, final)` when it is complete."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary directory
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def save_checkpoint(
    root: Path, step: int, model: torch.nn.Module, optimizer: Any, scheduler: Any, keep: int
) -> Path:
    """Trainable weights (safetensors), optimizer, scheduler and RNG states of one step."""
    final = root / f"step-{step:08d}"
    tmp = atomic_dir(final)
    trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(tmp / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state()}}, tmp / "state.pt")
    (tmp / "step.json").write_text(json.dumps({"step": step}) + "\n")
    commit_dir(tmp, final)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final
