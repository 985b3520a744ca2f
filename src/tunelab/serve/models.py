"""Which models `tunelab serve PATH|ALIAS ...` answers with, and under which names: a run's fastest artifact (an ONNX
export that passed its gate), an embedded chat model by alias, and LoRA runs of one base served as adapters over one
shared copy of it (serve/adapters.py)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

from tunelab.api import Model, load
from tunelab.errors import TunelabError
from tunelab.models.aliases import ALIASES
from tunelab.serve.adapters import adapter_groups, load_group
from tunelab.serve.app import Served

FASTEST = ("onnx-int8", "onnx-fp32")  # exports preferred over RUN/model when they passed their parity gate


def fastest_artifact(path: Path) -> Path:
    """A run's ONNX export that passed its gate (int8 first) and is not older than the run's model, else the path
    itself. A new run in the directory moves the old run's exports aside (training/layout.py RUN_FILES); an export
    written before RUN/model (left by a tunelab that kept them) is of another model."""
    model = path / "model" / "tunelab.json"
    for name in FASTEST:
        report = path / "exports" / name / "report.json"
        try:
            if model.is_file() and report.stat().st_mtime < model.stat().st_mtime:
                continue
            data = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("refused") is None:
            return report.parent
    return path


def alias_model(name: str) -> Model:
    """An embedded causal LM, untuned, as a chat model (its own chat template)."""
    from tunelab.config.sections import DataConfig
    from tunelab.models.aliases import resolve_model
    from tunelab.models.decoder_heads import load_head
    from tunelab.registry import TASKS

    alias = ALIASES[name]
    if alias.kind != "causal-lm":
        raise TunelabError(f"{name}: an encoder has no task head until it is tuned; serve a run trained from it "
                           f"(tunelab train ... --set model={name})")
    task_cls = next(cls for _, cls in TASKS.items() if cls.generates_replies)
    task = task_cls(task_cls.Config(), DataConfig())
    path = resolve_model(name)
    module = load_head(task.auto_model_class, path)
    return Model(Path(path), task, task.optimize(module.eval()), task.load_tokenizer(path))


def served_names(paths: list[Path]) -> list[str]:
    """The name each path is served under: its run directory's name (the alias for an alias; `.` and `..` by their
    folders' names). Each name as given is its first path's; a name given again is numbered, NAME-2, NAME-3, ...,
    skipping every name another path has (`cls`, `a/cls`, `cls-2`: cls, cls-3, cls-2)."""
    given: list[str] = []
    for path in map(Path, paths):
        if not path.exists() and str(path) not in ALIASES:
            raise TunelabError(f"{path}: no such directory (nor an embedded model: {', '.join(ALIASES)})")
        named = Path(os.path.abspath(path))
        given.append(str(path) if not path.exists() else named.name if named.name != "model" else named.parent.name)
    firsts = {name: i for i, name in reversed(list(enumerate(given)))}  # the names as given first, ...
    taken = set(given)
    names = []
    for i, name in enumerate(given):  # ... then the same name again, numbered
        if firsts[name] != i:
            name = next(f"{name}-{n}" for n in itertools.count(2) if f"{name}-{n}" not in taken)
            taken.add(name)
        names.append(name)
    return names


def served_models(paths: list[Path], prefer_exports: bool = True) -> list[Served]:
    """Load each path (a run directory, its model/, an export, or an embedded model's alias); names are the run
    directories' names (the alias for an alias). LoRA runs that share a base are loaded over one copy of it."""
    names = served_names(paths)
    shared: dict[int, Model] = {}
    for group in adapter_groups([Path(p) for p in paths]):
        loaded = zip(group, load_group(list(group.values())), strict=True)
        shared.update((i, model) for i, model in loaded if model is not None)  # None: served alone, below
    out: list[Served] = []
    for i, path in enumerate(paths):
        path = Path(path)
        if i in shared:
            model = shared[i]
        elif not path.exists():
            model = alias_model(str(path))
        else:
            model = load(fastest_artifact(path) if prefer_exports else path)
        out.append(Served(names[i], model))
    return out
