"""LoRA runs of one base model served as adapters over one shared copy of it (as vLLM / TGI serve multi-LoRA): the
base is loaded once, each run's `RUN/adapter` joins it under the run's name (peft `load_adapter`), and the request's
`model` picks the adapter. Runs share a base when their base model, task and head shape agree and their vocabulary is
the base's; a lone LoRA run is served from its merged `RUN/model` (no adapter overhead), and so is a run whose
training grew the vocabulary (sft's chat-template tokens: its adapter holds whole embedding matrices, which would
replace the shared base's). The adapters of a shared base are checked as `tunelab export --merge` checks one
(export/merge.py `check_adapter`): one damaged or missing part, the base model gone, or a base that cannot be loaded
as the runs' config says, is one line at start-up."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tunelab.api import Model
from tunelab.models.precision import keep_trained_precision
from tunelab.models.student import STUDENT_LAYERS

ADAPTER = "adapter"


def _lora_run(path: Path) -> tuple[Path, str] | None:
    """(the run directory, its sharing key) when PATH (a run or its model/) holds a LoRA adapter beside its model:
    runs share a base when their base model, task and head shape agree. An adapter_config.json that cannot be read
    counts as LoRA, so that loading the group says what is wrong with it (a RUN/model that cannot be read is not
    shared: loading it alone says why)."""
    run = path.parent if path.name == "model" else path
    if not (run / ADAPTER / "adapter_config.json").is_file():
        return None
    try:
        meta = json.loads((run / "model" / "tunelab.json").read_text(encoding="utf-8"))
        config = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        adapter = json.loads((run / ADAPTER / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        adapter = None  # damaged: check_adapter says so
    base = meta.get("base_model")
    if (isinstance(adapter, dict) and adapter.get("peft_type") != "LORA") or not base:
        return None  # prefix / prompt tuning: RUN/model holds what is served
    if str(base).startswith(STUDENT_LAYERS):  # a student cut from its teacher: no base to share; RUN/model is merged
        return None
    return run, json.dumps([meta["base_model"], meta["task"].get("name"), config.get("architectures"),
                            len(config.get("id2label") or {}), config.get("vocab_size")])


def adapter_groups(paths: list[Path]) -> list[dict[int, Path]]:
    """The paths that can share a base, in groups of two or more: {index in `paths`: run directory}."""
    groups: dict[str, dict[int, Path]] = {}
    for i, path in enumerate(paths):
        found = _lora_run(path) if path.exists() else None
        if found is not None:
            groups.setdefault(found[1], {})[i] = found[0]
    return [g for g in groups.values() if len(g) > 1]


class AdapterView:
    """One adapter of a shared PeftModel, called like a model: each forward, and each whole `generate`, runs with
    its adapter switched on under the group's lock (the chat batcher generates in a worker thread)."""

    def __init__(self, peft: Any, name: str, lock: threading.RLock) -> None:
        self.__dict__.update(peft=peft, name=name, lock=lock)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.peft.set_adapter(self.name)
            return self.peft(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.peft.set_adapter(self.name)
            return self.peft.generate(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:  # config, device, parameters(), eval() ... of the shared model
        return getattr(self.peft, attr)


def load_group(runs: list[Path]) -> list[Model | None]:
    """One base model, every run's adapter on it (`runs`: run directories, as `adapter_groups` gives them); a Model
    per run whose module is its AdapterView, or None for a run that cannot share the base: its vocabulary is not the
    base's (`RUN/model` serves it, as it would alone; all None when fewer than two of several are left). Each
    adapter is checked first (`check_adapter`), and a base or weights file that cannot be read is one line
    (TunelabError) naming it. The adapters are named `adapter0`, `adapter1`, ... inside peft (a run folder's name
    may hold a `.`, which peft refuses in a module name)."""
    from tunelab.export.merge import check_adapter

    checked = [check_adapter(r / ADAPTER, r / "model", needs="tunelab serve") for r in runs]
    share = [i for i, (run, adapter) in enumerate(zip(runs, checked, strict=True))
             if _vocab(run / "model") == getattr(adapter.base_config, "vocab_size", None)]
    if len(share) < min(2, len(runs)):  # (one run given: its adapter over the base, as the tests check it)
        return [None] * len(runs)
    models = _load_shared([runs[i] for i in share], [checked[i] for i in share])
    out: list[Model | None] = [None] * len(runs)
    for i, model in zip(share, models, strict=True):
        out[i] = model
    return out


def _vocab(model_dir: Path) -> Any:
    return json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("vocab_size")


def _load_shared(runs: list[Path], adapters: list[Any]) -> list[Model]:
    """`load_group`'s models of the runs that share the base (their adapters checked)."""
    import transformers
    from peft import PeftModel

    from tunelab.export.merge import base_error, reading_weights
    from tunelab.export.save import check_chat_template, load_task, load_tokenizer
    from tunelab.models.decoder_heads import load_head
    from tunelab.models.segments import reseed_as_trained

    names = [f"adapter{i}" for i in range(len(runs))]
    tasks = [load_task(r / "model") for r in runs]
    tokenizers = [load_tokenizer(r / "model") for r in runs]  # a file missing: one line, before the base loads
    for run, task, tokenizer in zip(runs, tasks, tokenizers, strict=True):
        check_chat_template(task, tokenizer, run / "model")
    config = transformers.AutoConfig.from_pretrained(str(runs[0] / "model"))  # the head's shape, as trained
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialised head": the adapters carry the trained heads
    try:
        base = load_head(tasks[0].auto_model_class, adapters[0].base, config=config)
    except (OSError, ValueError, RuntimeError) as e:  # its config is there (checked), its weights are not, cut, or
        # of another shape than the runs' config says (torch's "size mismatch")
        raise base_error(adapters[0].base, adapters[0].path, e) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    reseed_as_trained(base, config)  # the token-type rows training seeded (the adapters do not hold them)
    with reading_weights(adapters[0].weights):
        peft = PeftModel.from_pretrained(base, str(runs[0] / ADAPTER), adapter_name=names[0])
    for adapter, name in zip(adapters[1:], names[1:], strict=True):
        with reading_weights(adapter.weights):
            peft.load_adapter(str(adapter.path), adapter_name=name)
    peft.eval()
    lock = threading.RLock()
    views = [AdapterView(peft, name, lock) for name in names]
    for run, view in zip(runs, views, strict=True):  # as load_model marks a model alone: its folder, its precision
        view.__dict__["tunelab_dir"] = run / "model"
        keep_trained_precision(view, _meta(run))
    return [Model(run / "model", task, view, tokenizer)  # type: ignore[arg-type]
            for run, task, view, tokenizer in zip(runs, tasks, views, tokenizers, strict=True)]


def _meta(run: Path) -> dict[str, Any]:
    """RUN/model/tunelab.json ({} where it cannot be read)."""
    try:
        meta = json.loads((run / "model" / "tunelab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}
