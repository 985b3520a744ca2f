"""Which model directory `tunelab serve PATH` answers with, and under which name."""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.api import load
from tunelab.errors import TunelabError
from tunelab.serve.app import Served

FASTEST = ("onnx-int8", "onnx-fp32")  # exports preferred over RUN/model when they passed their parity gate


def fastest_artifact(path: Path) -> Path:
    """A run's ONNX export that passed its gate (int8 first), else the path itself."""
    for name in FASTEST:
        report = path / "exports" / name / "report.json"
        if report.is_file():
            try:
                refused = json.loads(report.read_text(encoding="utf-8")).get("refused")
            except (OSError, ValueError):
                continue
            if refused is None:
                return report.parent
    return path


def served_models(paths: list[Path], prefer_exports: bool = True) -> list[Served]:
    """Load each path (a run directory, its model/, an export); names are the run directories' names."""
    out: list[Served] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise TunelabError(f"{path}: no such directory")
        chosen = fastest_artifact(path) if prefer_exports else path
        model = load(chosen)
        name = path.name if path.name != "model" else path.parent.name
        while any(s.name == name for s in out):
            name += "-2"
        out.append(Served(name, model))
    return out
