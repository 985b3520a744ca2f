"""The `--output` folder of `tunelab export` (--format, --merge) and `tunelab compress`, one implementation for all
three: the result is built in a temp folder beside it and swapped in whole, and an existing folder is replaced only
when it holds nothing but what one of these commands wrote there.

What a command wrote is listed in OUTPUT/tunelab-files.json (MANIFEST: every file, relative to the folder), written
as the result is committed. Folders written before the manifest existed are recognised by their tunelab.json (an
`export`, `compressed` or `merged_from` record) and the names those commands write (LEGACY). Anything else — a
user's notes.txt, a subfolder, a bare report.json — is foreign: the command refuses, naming the folder and the
first foreign file, and nothing is touched."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunelab import __version__
from tunelab.errors import TunelabError
from tunelab.io import atomic_dir, cannot_create, commit_dir, write_json_atomic

MANIFEST = "tunelab-files.json"
IGNORED = frozenset({".DS_Store"})  # what a file browser drops into any folder it shows: nobody's work
RECORDS = ("export", "compressed", "merged_from")  # tunelab.json keys of an export, a compressed or a merged model
# names an export / compress / merge wrote before MANIFEST: the model files and what save_pretrained writes
LEGACY = re.compile(r"tunelab\.json|report\.json|config\.json|generation_config\.json|model\.(onnx|gguf|pt)"
                    r"|model\.onnx\.data|model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json"
                    r"|pytorch_model(-\d+-of-\d+)?\.bin(\.index\.json)?|tokenizer(_config)?\.json|tokenizer\.model"
                    r"|special_tokens_map\.json|added_tokens\.json|vocab\.(txt|json)|merges\.txt|spiece\.model"
                    r"|sentencepiece\.bpe\.model|chat_template\.(jinja|json)")


def _entries(folder: Path) -> list[str]:
    """Every file, folder and link under `folder`, relative, sorted (links not followed)."""
    def unreadable(e: OSError) -> None:
        raise TunelabError(f"--output: cannot read {e.filename}: {e.strerror or e}; choose an empty or new folder")

    out = []
    for root, dirs, files in os.walk(folder, onerror=unreadable):
        rel = Path(root).relative_to(folder)
        out += [(rel / name).as_posix() for name in dirs + files if name not in IGNORED]
    return sorted(out)


def _written(folder: Path) -> set[str] | None:
    """The files a tunelab command wrote into `folder` (its manifest, or a legacy export's known names), with the
    folders that hold them; None when nothing says tunelab wrote any of it."""
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        if isinstance(files, list) and all(isinstance(f, str) for f in files):
            written = {MANIFEST, *files}
            return written | {p.as_posix() for f in files for p in Path(f).parents if p != Path(".")}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        meta = json.loads((folder / "tunelab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not any(key in meta for key in RECORDS):
        return None
    return {p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink() and LEGACY.fullmatch(p.name)}


def check_output(output: Path, protect: tuple[Path, ...] = (), source: str = "the model it exports") -> None:
    """Refuse (one line) an `--output` that is a file, one of `protect` (the model being exported, its run's
    adapter: `source` names them) or a folder above one, or a folder holding anything a tunelab export / compress /
    merge did not write."""
    resolved = output.resolve()
    for path in protect:
        if resolved == path.resolve() or resolved in path.resolve().parents:
            raise TunelabError(f"--output: {output} would replace {source}; choose another --output")
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        what = "a link" if output.is_symlink() else "a file, not a folder"
        raise TunelabError(f"--output: {output} is {what}; choose an empty or new folder")
    if not output.is_dir():
        return
    entries = _entries(output)
    written = _written(output)
    foreign = sorted((e for e in entries if written is None or e not in written),
                     key=lambda e: (LEGACY.fullmatch(e) is not None, e))  # a user's own file named first
    if foreign:
        raise TunelabError(f"--output: {output} holds files tunelab did not write ({foreign[0]}); choose an empty "
                           "or new folder")


@contextmanager
def staged(output: Path) -> Iterator[Path]:
    """A temp folder beside `output` to build the result in; `commit(tmp, output)` puts it in place. On the way
    out the temp folder is removed, and so are the parent folders made for it (RUN/exports/) when nothing was
    committed into them."""
    made = [p for p in (output.parent, *output.parent.parents) if not p.exists()]
    try:
        tmp = atomic_dir(output)
    except OSError as e:
        raise TunelabError(f"--output: cannot write {output}: {cannot_create(e)}") from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in made:  # deepest first; only the empty ones this made
            try:
                parent.rmdir()
            except OSError:
                break


def commit(tmp: Path, output: Path) -> None:
    """List what TMP holds in its manifest, check `output` again (files may have appeared there while the result
    was built) and swap TMP in for it."""
    files = [e for e in _entries(tmp) if (tmp / e).is_file() or (tmp / e).is_symlink()]
    write_json_atomic(tmp / MANIFEST, {"written_by": f"tunelab {__version__}", "files": files})
    check_output(output)
    commit_dir(tmp, output)
