"""LLaMA-Factory's dataset registry, `dataset_dir/dataset_info.json`, read for `tunelab config import`
(config/peers.py): `dataset` → `data.train`, `eval_dataset` → `data.validation`, each entry's `file_name` (a file
beside dataset_info.json) or `hf_hub_url` (`hf:org/name`, refused offline unless datasets' cache has it), and its
`formatting` / `columns` / `tags` as LLaMA-Factory reads them (`DatasetAttr`: an entry's `columns` replaces the
defaults whole) given to the task's `peer_dataset` hook, which answers with its settings or refuses a key
(`PeerRefusal`). Anything refused is one line naming dataset_info.json, the key's line and the key.

Several datasets (`dataset: identity,alpaca_en_demo`, `eval_dataset` alike) are joined, in LLaMA-Factory's order
(its `mix_strategy: concat`): each is resolved and refused as one is, and the target (`data.train`) names the file
the caller writes their rows into (`Joined`: data/peer_join.py reads, converts with the task's `peer_row` hook and
writes them); the task reads that file with its `peer_joined` settings. A `.txt` file, which LLaMA-Factory reads a row a
line (tunelab: a row a paragraph), is written so too, alone. `interleave_*` is refused (tunelab cannot
take fewer rows, or rows twice, as it samples them)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.located import key_lines
from tunelab.config.run import read_config_file
from tunelab.errors import ConfigError

INFO = "dataset_info.json"
# LLaMA-Factory's DatasetAttr defaults (data/parser.py); an entry's `columns` / `tags` replaces them whole (a key it
# leaves out is None: not read)
COLUMNS: dict[str, str | None] = {
    "prompt": "instruction", "query": "input", "response": "output", "history": None, "messages": "conversations",
    "system": None, "tools": None, "images": None, "videos": None, "audios": None, "chosen": None, "rejected": None,
    "kto_tag": None}
TAGS: dict[str, str | None] = {
    "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
    "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
HUBS = ("ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")  # sources tunelab does not read


@dataclass(frozen=True)
class Source:
    """One registered dataset of several: its name, its file or `hf:` dataset, the task settings its rows read by."""

    name: str
    spec: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Joined:
    """The file (`path`) to write the rows of several datasets into, one after another, for a config key (`target`,
    data.train) and the peer key that named them (`key`, dataset)."""

    target: str
    key: str
    path: Path
    sources: list[Source]


class PeerRefusal(Exception):  # noqa: N818 - not tunelab's error: a registry entry a task cannot read as written
    """A dataset_info.json entry that a task cannot read as written: `key` (`columns.query`), and why."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"{key}: {why}")
        self.key, self.why = key, why


def lines(spec: str) -> bool:
    """Whether LLaMA-Factory reads the file a row a line (a .txt: datasets' text builder), which tunelab reads a row a
    paragraph: its rows are written into a file of their own as several datasets' are (data/peer_join.py)."""
    return spec.lower().endswith(".txt") and not spec.startswith("hf:")


def offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _cached(hub: str) -> bool:
    """Whether datasets' cache holds a download of `hub` (its folder `org___name`)."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    cache = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets"))
    return cache.is_dir() and any(cache.glob(hub.replace("/", "___") + "*"))


def _names(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return [str(n).strip() for n in items if str(n).strip()]


def effective(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's formatting, ranking, columns and tags as LLaMA-Factory reads them (its defaults filled in)."""
    cols, tags = entry.get("columns"), entry.get("tags")
    return {"formatting": entry.get("formatting", "alpaca"), "ranking": bool(entry.get("ranking", False)),
            "columns": {k: cols.get(k) for k in COLUMNS} if isinstance(cols, dict) else dict(COLUMNS),
            "tags": {k: tags.get(k) for k in TAGS} if isinstance(tags, dict) else dict(TAGS)}


def _dataset_dir(p: Any) -> Path:
    """dataset_dir (default data) from the current directory, as LLaMA-Factory reads it; else beside the file."""
    given = str(p.later.get("dataset_dir", "data"))
    if given == "ONLINE" or given.startswith("REMOTE:"):
        raise p.refuse("dataset_dir", f"{given}: not carried: tunelab reads a local dataset_info.json")
    path = Path(given).expanduser()
    if not path.is_absolute() and not path.exists() and (p.path.parent / path).exists():
        return p.path.parent / path
    return path


def _readable_folder(path: Path) -> bool:
    """Whether tunelab reads the folder as data (data/tabular.py `folder_files`: a datasets save_to_disk folder, or
    .parquet / .arrow files)."""
    return (path / "state.json").is_file() or any(path.glob("*.parquet")) or any(path.glob("*.arrow"))


def _source(entry: dict[str, Any], base: Path, refuse: Callable[[str, str], ConfigError]) -> str:
    """The file (`file_name` beside dataset_info.json) or hub dataset (`hf:org/name[:split]`) of an entry."""
    if "file_name" in entry:
        file = Path(os.path.abspath(base / str(entry["file_name"])))  # (absolute: the config is run from anywhere)
        if not file.exists():
            raise refuse("file_name", f"{file} not found")
        if file.is_dir() and not _readable_folder(file):
            raise refuse("file_name", f"{file}: a folder of data files, which LLaMA-Factory reads together: tunelab "
                         "reads a folder of .parquet / .arrow files or a datasets save_to_disk folder; join the files "
                         "into one (JSONL) and register it")
        return str(file)
    if "hf_hub_url" in entry:
        hub, split = str(entry["hf_hub_url"]), str(entry.get("split", "train"))
        for key in ("subset", "folder"):
            if entry.get(key):
                raise refuse(key, f"not carried: tunelab reads a hub dataset's default configuration, whole; save "
                             f"the {key} as a file and register it as file_name")
        if offline() and not _cached(hub):
            raise refuse("hf_hub_url", f"{hub}: offline (HF_HUB_OFFLINE), and datasets' cache has no copy: load it "
                         "once online, or save it as a file and register it as file_name")
        return f"hf:{hub}" + (f":{split}" if split != "train" else "")
    other = next((k for k in HUBS if k in entry), None)
    raise refuse(other or "file_name", "not read by tunelab: register the data as file_name (a local file) or "
                 "hf_hub_url" if other else "missing: the data file (file_name) or hub dataset (hf_hub_url)")


def _dataset(p: Any, key: str, name: str, task: type[Any]) -> tuple[str, dict[str, Any]]:
    """(data file, task settings) of one registered dataset."""
    base = _dataset_dir(p)
    info_path = base / INFO
    if not info_path.is_file():
        raise p.refuse(key, f"{name}: {info_path} not found (dataset_dir: {p.later.get('dataset_dir', 'data')})")
    info = read_config_file(info_path)  # (invalid JSON: its line)
    if name not in info:
        wide = next((c for c in "，、" if c in name), None)  # (a Chinese input method's comma between names)
        if wide:
            raise p.refuse(key, f"{name!r}: a full-width {wide!r} (a Chinese input method's) between dataset names; "
                           f"separate them with ',': {','.join(n.strip() for n in re.split('[，、]', name))}")
        raise p.refuse(key, f"{name!r} is not registered in {info_path} (it has: {', '.join(list(info)[:10])}"
                       + (f", ... {len(info)} in all)" if len(info) > 10 else ")"))
    lines = key_lines(info_path)
    entry = info[name]

    def refuse(sub: str, why: str) -> ConfigError:
        line = lines.get(f"{name}.{sub}") or lines.get(f"{name}.{sub.partition('.')[0]}") or lines.get(name)
        return ConfigError(f"{info_path}:{line}: {name}.{sub}: {why}")

    if not isinstance(entry, dict):
        raise ConfigError(f"{info_path}:{lines.get(name)}: {name}: expected an object (file_name, formatting, ...)")
    spec = _source(entry, base, refuse)
    if entry.get("num_samples") is not None:
        p.skip(f"{name}.num_samples", "tunelab trains on every row of the file: cut the file to train on fewer")
    if task.peer_dataset is None:
        raise p.refuse(key, f"{name}: task {p.tree['task']['name']} reads no LLaMA-Factory dataset entry")
    try:
        return spec, task.peer_dataset(effective(entry))
    except PeerRefusal as e:
        raise refuse(e.key, e.why) from None


def _mix(p: Any, several: bool) -> None:
    """mix_strategy: concat (LLaMA-Factory's default) is how several datasets are joined; interleave_* is refused
    where there are several (it takes rows of each in turn, fewer or repeated), said where there is one."""
    mix = p.later.get("mix_strategy", "concat")
    if mix == "concat":
        return
    if several:
        raise p.refuse("mix_strategy", f"{mix}: not carried: tunelab joins the datasets one after another, every row "
                       "once (concat, LLaMA-Factory's default), and shuffles them as it trains; drop the key, or join "
                       "the rows yourself and register the file")
    p.skip("mix_strategy", f"{mix}: one dataset, nothing to mix")


def _no_hold_out(p: Any) -> None:
    """LLaMA-Factory's and HF's Trainer's default where no validation data is named: every row trains (tunelab's
    own holds out a tenth) — said where the rows came from --train / train_file rather than `dataset`."""
    data = p.tree.get("data", {})
    if "dataset" in p.later and "eval_dataset" not in p.later and "validation_split" not in data:
        p.set("data.validation_split", 0.0, "val_size")
    elif "train" in data and "validation" not in data and "validation_split" not in data:  # (--train, train_file)
        p.set("data.validation_split", 0.0, "val_size")
        p.notes.append("not set: a validation file (every row trains, as HF's Trainer and LLaMA-Factory train them; "
                       "written: data.validation_split 0.0)")


def read_datasets(p: Any, task: type[Any], join_to: dict[str, Path]) -> list[Joined]:
    """`dataset` → data.train and `eval_dataset` → data.validation, their entries' settings → the task's (the same
    for both); LLaMA-Factory's default of no hold-out where neither val_size nor eval_dataset is given. Several
    datasets of a key are joined into the file `join_to[target]` (the `Joined` returned, for the caller to write);
    a single one beside them that needs other settings than the joined file's is converted into its own file too."""
    found: dict[str, tuple[str, list[Source]]] = {}
    for key, target in (("dataset", "data.train"), ("eval_dataset", "data.validation")):
        names = _names(p.later.get(key))
        if names:
            found[target] = (key, [Source(n, *_dataset(p, key, n, task)) for n in names])
    _mix(p, any(len(sources) > 1 for _, sources in found.values()))
    joined = {t for t, (_, sources) in found.items() if len(sources) > 1 or lines(sources[0].spec)}
    if joined and task.peer_row is None:
        key = found[next(iter(joined))][0]
        why = "several datasets" if len(found[next(iter(joined))][1]) > 1 else "a .txt file (a row a line)"
        raise p.refuse(key, f"{why}: task {p.tree['task']['name']} joins no LLaMA-Factory datasets")
    if joined:  # (the other key's dataset, read by other settings than the joined file's: converted too)
        joined |= {t for t, (_, sources) in found.items() if set(sources[0].settings) - {"task.format"}}
    settings: dict[str, Any] | None = None
    out: list[Joined] = []
    for target, (key, sources) in found.items():
        if target in joined:
            out.append(Joined(target, key, join_to[target], sources))
            spec, got = str(join_to[target]), dict(task.peer_joined)
        else:
            spec, got = sources[0].spec, sources[0].settings
        p.set(target, spec, key)
        if settings is not None and got != settings:
            if set(got) | set(settings) != {"task.format"}:  # (formats alone: each row's is detected)
                said = [", ".join(f"{k}: {v}" for k, v in s.items()) for s in (got, settings)]
                raise p.refuse(key, f"{sources[0].name}: read with {said[0]}, the dataset with {said[1]}: tunelab "
                               "reads data.train and data.validation alike")
            got = {}  # (task.format auto)
        settings = got
    for dotted, value in (settings or {}).items():
        p.set(dotted, value, "dataset")
    _no_hold_out(p)
    if "train" not in p.tree.get("data", {}):
        p.notes.append("not set: data.train (the file names no dataset): pass --train FILE, or add it before tunelab "
                       "train")
    return out
