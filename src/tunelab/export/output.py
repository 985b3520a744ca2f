"""The `--output` folder of `tunelab export` (--format, --merge) and `tunelab compress`, one implementation for all
three: the result is built in a temp folder beside it and swapped in whole, and an existing folder is replaced only
when it holds nothing but what one of these commands wrote there.

What a command wrote is listed in OUTPUT/tunelab-files.json (MANIFEST: every file, relative to the folder), written
as the result is committed. Folders written before the manifest existed are recognised by their tunelab.json (an
`export`, `compressed` or `merged_from` record) and the names those commands write (LEGACY); a run's model/ copied
out of its run (`cp -r RUN/model m`) by training's tunelab.json and what training writes there (LEGACY, the model
card README.md, a prefix / prompt adapter/ folder). Anything else — a
user's notes.txt, a subfolder, a bare report.json — is foreign: the command refuses, naming the folder and the
first foreign file, and nothing is touched; with --overwrite it names every foreign entry (or the link) on stderr
before any work and replaces the folder whole (a link: the link itself, never what it points to). Never, even then:
a file, an input (the model, its run and the run's own files, the data) or a folder holding one, the current or the
home directory, nor any run directory (`is_run_dir`: another run's folder, anything inside it, or a folder holding
one; of the run exported, only its own exports — merged/, exports/NAME — are replaced)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunelab import __version__
from tunelab.config.run import read_config_file
from tunelab.data.load import run_data_section, run_model
from tunelab.data.report import read_summary
from tunelab.errors import TunelabError, flag, overwrite_option
from tunelab.io import (
    Read,
    atomic_dir,
    below,
    cannot_create,
    check_creatable,
    commit_dir,
    open_permissions,
    remove_stale_temps,
    write_json_atomic,
)
from tunelab.methods.base import PROMPT_ADAPTER
from tunelab.models.aliases import ALIASES, alias_folder
from tunelab.progress import say
from tunelab.training.layout import EXPORTED, LOCK, REPLACED, RUN_FILES, STUDY_FILES, is_run_dir

MANIFEST = "tunelab-files.json"
IGNORED = frozenset({".DS_Store"})  # what a file browser drops into any folder it shows: nobody's work
RUN_ROLE = "the run directory"  # run_reads' Read of the run exported: where --output may go inside a run
RECORDS = ("export", "compressed", "merged_from")  # tunelab.json keys of an export, a compressed or a merged model
# what save_pretrained writes for a model and its tokenizer, and tunelab.json
MODEL_FILES = (r"tunelab\.json|config\.json|generation_config\.json|model(-\d+-of-\d+)?\.safetensors"
               r"|model\.safetensors\.index\.json|pytorch_model(-\d+-of-\d+)?\.bin(\.index\.json)?"
               r"|tokenizer(_config)?\.json|tokenizer\.model|special_tokens_map\.json|added_tokens\.json"
               r"|vocab\.(txt|json)|merges\.txt|spiece\.model|sentencepiece\.bpe\.model|chat_template\.(jinja|json)")
# names an export / compress / merge wrote before MANIFEST: the model files and the exports' own
LEGACY = re.compile(rf"{MODEL_FILES}|report\.json|model\.(onnx|gguf|pt)|model\.onnx\.data")
# a run's model/: what training's tunelab.json holds, the files it writes (the model card too), peft's in adapter/
TRAINED = ("tunelab_version", "task", "method", "base_model")
TRAINED_FILES = re.compile(rf"{MODEL_FILES}|README\.md")
ADAPTER_FILES = re.compile(r"adapter_config\.json|adapter_model\.(safetensors|bin)|README\.md")


def _entries(folder: Path) -> list[str]:
    """Every file, folder and link under `folder`, relative, sorted (links not followed)."""
    def unreadable(e: OSError) -> None:
        raise TunelabError(f"{flag('output')}: cannot read {e.filename}: {e.strerror or e}; choose an empty or new "
                           "folder")

    out = []
    for root, dirs, files in os.walk(folder, onerror=unreadable):
        rel = Path(root).relative_to(folder)
        out += [(rel / name).as_posix() for name in dirs + files if name not in IGNORED]
    return sorted(out)


def _written(folder: Path) -> set[str] | None:
    """The files a tunelab command wrote into `folder` (its manifest, a legacy export's known names, or what training
    writes into a run's model/ copied out of its run), with the folders that hold them; None when nothing says
    tunelab wrote any of it."""
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        if isinstance(files, list) and all(isinstance(f, str) for f in files):
            written = {MANIFEST, *files}
            return written | {p.as_posix() for f in files for p in Path(f).parents if p != Path(".")}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    meta = _meta(folder)
    if any(key in meta for key in RECORDS):
        return _files(folder, LEGACY)
    if all(key in meta for key in TRAINED):  # a run's model/, copied out of its run: its model card, its adapter/
        written = _files(folder, TRAINED_FILES)
        adapter = folder / PROMPT_ADAPTER
        held = _files(adapter, ADAPTER_FILES) if adapter.is_dir() and not adapter.is_symlink() else set()
        return written | {PROMPT_ADAPTER, *(f"{PROMPT_ADAPTER}/{name}" for name in held)} if held else written
    return None


def _meta(folder: Path) -> dict[str, Any]:
    """`folder`'s tunelab.json; {} when it has none that reads as an object."""
    try:
        meta = json.loads((folder / "tunelab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _trained_model(folder: Path) -> bool:
    """Whether `folder` is a run's model/ (training's tunelab.json, no export's manifest or record)."""
    if folder.is_symlink() or not folder.is_dir() or (folder / MANIFEST).exists():
        return False
    meta = _meta(folder)
    return all(key in meta for key in TRAINED) and not any(key in meta for key in RECORDS)


def _files(folder: Path, names: re.Pattern[str]) -> set[str]:
    """The files at the top of `folder` (not links) that `names` matches."""
    return {p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink() and names.fullmatch(p.name)}


def run_reads(run: Path | None) -> list[Read]:
    """The inputs of an export / compress / merge of the run `run` that no --output may replace, even with
    --overwrite: the run directory and its own files (what training and the studies wrote; its exports/ folder
    itself, though not an export in it), the data files its config names (`run_data_files`), its base model's folder
    (`run_base_model`), the current directory and the home directory."""
    home = Path(os.path.expanduser("~"))
    reads = [Read("the current directory", Path.cwd(), frozenset()), Read("your home directory", home, frozenset())]
    if run is not None:
        base = run_base_model(run)
        reads += [Read(RUN_ROLE, run, (RUN_FILES | STUDY_FILES | {LOCK, REPLACED}) - EXPORTED),
                  Read("the run's exports folder", run / "exports", frozenset()),
                  *(Read(f"the run's data.{key} file", path) for key, path in run_data_files(run)),
                  *([Read("the run's base model (its config's model)", base)] if base is not None else [])]
    return reads


def run_base_model(run: Path) -> Path | None:
    """The folder of the model the run was tuned from (its config.yaml's `model`, as training read it: `run_model`),
    where that is a folder here (an earlier export, a copied model): its LoRA adapter, a merge and a resume read it."""
    try:
        model = read_config_file(run / "config.yaml").get("model") if (run / "config.yaml").is_file() else None
    except TunelabError:
        return None
    if not isinstance(model, str) or not model:
        return None
    if model in ALIASES:  # an alias's model: its package's folder, or its materialised copy (never made here)
        return alias_folder(model) if ALIASES[model].installed() and alias_folder(model).is_dir() else None
    path = Path(run_model(read_summary(run), model)).expanduser()
    return path if path.is_dir() else None


def run_data_files(run: Path) -> list[tuple[str, Path]]:
    """(key, path) of each data file the run's config.yaml names, as training read them (its data section alone: a
    model path that does not resolve from here is no reason to leave them unguarded); none when that section does
    not load (said where the config is read)."""
    if not (run / "config.yaml").is_file():
        return []
    try:
        data = run_data_section(run, read_config_file(run / "config.yaml"))
    except TunelabError:
        return []
    return [(key, Path(value)) for key, value in data.files()] if data is not None else []


def check_output(output: Path, inputs: Sequence[Read] = (), overwrite: bool = False) -> list[str]:
    """Refuse (one line) an `--output` that is a file; one of `inputs` (the model being exported, its run's adapter,
    the --data file, `run_reads`), a folder above one, or a folder inside an input directory (under one of the
    input's `names`, where it lists them); or — unless `overwrite` — a link, or a folder holding anything a tunelab
    export / compress / merge did not write. Returns what `overwrite` replaces: the link, or the folder's entries
    tunelab did not write (at the top: a folder's own entries are replaced with it); [] when nothing of anyone
    else's is."""
    return _checked(output, inputs, overwrite)[0]


def _checked(output: Path, inputs: Sequence[Read] = (), overwrite: bool = False,
             runs: bool = True) -> tuple[list[str], list[str]]:
    """`check_output`'s answer, and every entry under `output` that tunelab did not write (`_foreign`, walked once).
    `runs`: also refuse a run directory at, above or below `output` (`_around_runs`; `commit`'s second look needs
    not: a run that appeared meanwhile is new entries there)."""
    for role, path, names in inputs:  # by the file system's identity (io.below), not the spelling
        if below(path, output) is not None:
            raise TunelabError(f"{flag('output')}: {output} would replace {role}; choose another {flag('output')}")
        inner = below(output, path)
        if inner and (names is None or inner[0] in names):
            raise TunelabError(f"{flag('output')}: {output} is inside {role} {path}; choose another "
                               f"{flag('output')}")
    if runs:
        _around_runs(output, [path for role, path, _ in inputs if role == RUN_ROLE])
    if output.exists() and not output.is_dir() and not output.is_symlink():
        raise TunelabError(f"{flag('output')}: {output} is a file, not a folder; choose an empty or new folder")
    if output.is_symlink():
        if not overwrite:
            raise TunelabError(f"{flag('output')}: {output} is a link (to {os.readlink(output)}); name the folder "
                               f"itself, or pass {overwrite_option()} to replace the link (not what it points to) "
                               "with a new folder")
        return [f"the link to {os.readlink(output)}"], []
    if not output.is_dir():
        return [], []
    foreign = _foreign(output)
    if foreign and not overwrite:
        raise TunelabError(f"{flag('output')}: {output} holds files tunelab did not write ({foreign[0]}); choose an "
                           f"empty or new folder, or pass {overwrite_option()} to replace it with them")
    if not foreign and not overwrite and _trained_model(output):  # a deployed copy is work of its own: never unasked
        raise TunelabError(f"{flag('output')}: {output} holds a tunelab model (a run's model/, copied out of its "
                           f"run); choose an empty or new folder, or pass {overwrite_option()} to replace it")
    top = {e.split("/")[0] for e in foreign}
    return sorted(f"{e}/" if (output / e).is_dir() and not (output / e).is_symlink() else e for e in top), foreign


def _around_runs(output: Path, own: Sequence[Path]) -> None:
    """Refuse (one line) an `output` that is a run directory, is inside one, or holds one: another run's config,
    metrics, adapter and model are that run's, whatever --overwrite says. Inside the run exported (`own`) it may go
    where `run_reads` lets it (its merged/, exports/NAME)."""
    here = output.expanduser()
    link = here.is_symlink()  # a link is replaced itself, never what it points to
    full = here.absolute().parent.resolve() / here.name if link else here.resolve()
    for folder in (full.parents if link else (full, *full.parents)):
        if not is_run_dir(folder):
            continue
        if folder == full:
            raise TunelabError(f"{flag('output')}: {output} is a run's folder; {_run_never()}")
        if any(below(folder, run) == () for run in own):
            break  # inside the run exported (a cv fold, a trial: the runs around it are its study's, not in the way)
        raise TunelabError(f"{flag('output')}: {output} is inside the run's folder {folder}; {_run_never()}")
    if link or not output.is_dir():
        return
    held = sorted(e[: -len("/config.yaml")] for e in _entries(output) if e.endswith("/config.yaml")
                  and is_run_dir(output / e[: -len("/config.yaml")]))
    if held:
        raise TunelabError(f"{flag('output')}: {output} holds the run's folder {output / held[0]}; {_run_never()}")


def _run_never() -> str:
    return f"a run's files are never replaced, {overwrite_option()} or not; choose another {flag('output')}"


def _foreign(folder: Path) -> list[str]:
    """Every entry under `folder` (deep) that a tunelab export / compress / merge did not write, a user's own file
    first; [] for what is not a folder."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    written = _written(folder)
    return sorted((e for e in _entries(folder) if written is None or e not in written),
                  key=lambda e: (LEGACY.fullmatch(e) is not None, e))


def replacing(verb: str, output: Path, replaced: Sequence[str], limit: int = 20) -> str:
    """The line that says, before any work, what --overwrite will replace of someone else's at `output`."""
    if replaced and replaced[0].startswith("the link to "):
        return (f"{verb}: {overwrite_option()}: {output} is {replaced[0]}; the link will be replaced by the new "
                "folder (what it points to is left as it is)")
    def files(entry: str) -> int:
        return sum(len(names) for _, _, names in os.walk(output / entry)) if entry.endswith("/") else 1

    counts = {e: files(e) for e in replaced}
    named = ", ".join(f"{e} ({counts[e]} file{'s' * (counts[e] != 1)})" if e.endswith("/") else e
                      for e in replaced[:limit])
    if len(replaced) > limit:
        named += f" and {len(replaced) - limit} more"
    total = sum(counts.values())
    return (f"{verb}: {overwrite_option()}: {output} will be replaced whole, with what tunelab did not write in it: "
            f"{named}; {total} file{'s' * (total != 1)} in all")


def claim(verb: str, output: Path, inputs: Sequence[Read], overwrite: bool) -> list[str] | None:
    """`check_output` and a place something can be created in (`check_creatable`), and before any work the line on
    stderr that says what --overwrite replaces there (`replacing`); returns what `commit` takes as `replaced` (None
    without --overwrite): those entries, and every entry under them (what appears later, a file inside one of the
    folders too, was not said)."""
    replaced, under = _checked(output, inputs, overwrite)
    check_creatable(flag("output"), output)  # under a file, read-only, /proc: said now, not after the work (a recovery)
    if replaced:
        say(replacing(verb, output, replaced))
    elif _trained_model(output):
        say(f"{verb}: {overwrite_option()}: {output} holds a tunelab model (a run's model/, copied out of its run); "
            "it will be replaced whole")
    return [*replaced, *under] if overwrite else None


@contextmanager
def staged(output: Path) -> Iterator[Path]:
    """A temp folder beside `output` to build the result in; `commit(tmp, output)` puts it in place. On the way
    out the temp folder is removed, and so are the parent folders made for it (RUN/exports/) when nothing was
    committed into them; SIGTERM (a job stopped, `kill`) ends the command through that way out too (`terminated`).
    A temp folder of `output` that a killed process left (SIGKILL: no way out) is removed first."""
    made = [p for p in (output.parent, *output.parent.parents) if not p.exists()]
    remove_stale_temps(output)
    try:
        tmp = atomic_dir(output)
    except OSError as e:
        raise TunelabError(f"{flag('output')}: cannot write {output}: {cannot_create(e)}") from None
    try:
        with terminated():
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in made:  # deepest first; only the empty ones this made
            try:
                parent.rmdir()
            except OSError:
                break


@contextmanager
def terminated() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) (the exit status a process killed by it has) while the block runs, so the
    `finally` blocks around it (the temp folder's removal) run; Python's default is to die at once. In the main
    thread only (where a signal handler can be set); the previous handler is put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        if _HOLD["on"]:  # between the swap's two renames: after them (`_held`)
            _HOLD["pending"] = signum
            return
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def commit(tmp: Path, output: Path, replaced: Sequence[str] | None = None) -> None:
    """List what TMP holds in its manifest, check `output` again (files may have appeared there while the result
    was built) and swap TMP in for it. `replaced`: what --overwrite was said to replace (None: no --overwrite);
    anything else of anyone else's found there now is refused, nothing replaced."""
    files = [e for e in _entries(tmp) if (tmp / e).is_file() or (tmp / e).is_symlink()]
    write_json_atomic(tmp / MANIFEST, {"written_by": f"tunelab {__version__}", "files": files})
    top, under = _checked(output, overwrite=replaced is not None, runs=False)
    said = set(replaced or ())
    new = [e for e in (*top, *under) if e not in said]
    if new:
        raise TunelabError(f"{flag('output')}: {output} changed while the result was built: it now holds {new[0]} "
                           "too; nothing written, run it again")
    open_permissions(tmp)  # safetensors writes 0600: the folder is put in place readable as a run's model/ is
    with _held():  # the swap is not cut between its two renames (`terminated` raises after it)
        commit_dir(tmp, output)


_HOLD: dict[str, Any] = {"on": False, "pending": None}  # `terminated`'s handler, told to wait by `_held`


@contextmanager
def _held() -> Iterator[None]:
    """A SIGTERM that comes while the block runs ends the process when the block is done (`terminated`'s handler
    records it meanwhile). Python runs its handlers in the main thread whichever thread the kernel hands the signal to,
    so a signal mask on this thread would not hold it: other threads (torch's, transformers') take it instead."""
    _HOLD.update(on=True, pending=None)
    try:
        yield
    finally:
        _HOLD["on"] = False
        signum, _HOLD["pending"] = _HOLD["pending"], None
        if signum is not None:
            raise SystemExit(128 + signum)
