"""An output that cannot be written — a place that takes no files (/proc), a read-only folder — is one line naming
the option and the path and where nothing can be created, exit code 2, before any work: for --output, --report and
output_dir alike (was: `/proc/x: No such file or directory`, naming neither the option nor what was to be written,
and baseline only after all its work)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from tunelab.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def work(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classifier folder (`model`: an untrained head), rows and a config training from tiny_bert."""
    root = tmp_path_factory.mktemp("unwritable")
    shutil.copytree(tiny_bert, root / "model")
    (root / "model" / "tunelab.json").write_text(json.dumps({"task": {"name": "classification"}, "data": {},
                                                             "labels": ["LABEL_0", "LABEL_1"]}), encoding="utf-8")
    rows = write_jsonl(root / "rows.jsonl", sentiment_rows(12))
    (root / "run.yaml").write_text(f"task: classification\nmodel: {tiny_bert}\ndata:\n  train: {rows}\n",
                                   encoding="utf-8")
    return root


def _one_line(args: list[object], said: str) -> None:
    res = runner.invoke(app, [str(a) for a in args])
    out = res.output.strip()
    assert res.exit_code == 2, (args, out)
    assert "Traceback" not in out and len(out.splitlines()) == 1, (args, out)
    assert out.startswith(f"error: {said}"), (args, out)


def _cases(work: Path, place: Path) -> list[tuple[list[object], str]]:
    """Each command's way to name where it writes, at `place` (a folder nothing can be created in, or under one)."""
    rows, config = work / "rows.jsonl", work / "run.yaml"
    return [
        (["predict", work / "model", "--input", rows, "--output", place / "out.jsonl"],
         f"--output: {place / 'out.jsonl'} cannot be written: nothing can be created in "),
        (["eval", work / "model", "--data", rows, "--report", place / "r.html"],
         f"--report: {place / 'r.html'} cannot be written: nothing can be created in "),
        (["data", "augment", rows, "--set", "data.augment.ops=[delete,swap]", "--output", place / "a.jsonl"],
         f"--output: {place / 'a.jsonl'} cannot be written: nothing can be created in "),
        (["train", config, "--set", f"output_dir={place}"], f"output_dir: cannot write {place}: nothing can be "
                                                            "created in "),
        (["baseline", config, "--set", f"output_dir={place}"], f"output_dir: cannot write {place}: nothing can be "
                                                               "created in "),
        (["cv", config, "--set", f"output_dir={place}"], f"output_dir: cannot write {place / 'cv'}: nothing can be "
                                                         "created in "),
        (["curve", config, "--set", f"output_dir={place}"], f"output_dir: cannot write {place / 'curve'}: nothing "
                                                            "can be created in "),
    ]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_place_that_takes_no_files(work: Path) -> None:
    for args, said in _cases(work, Path("/proc/tunelab-out")):
        _one_line(args, said + "/proc: No such file or directory")


def test_a_read_only_folder(work: Path, tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if os.access(read_only, os.W_OK):  # root, with CAP_DAC_OVERRIDE, writes anywhere
            pytest.skip("this user can write into a read-only folder")
        for args, said in _cases(work, read_only):
            _one_line(args, said + f"{read_only}: Permission denied")
        for args, said in _cases(work, read_only / "sub"):  # a folder that would be made in it
            _one_line(args, said + f"{read_only}: Permission denied")
        assert not list(read_only.iterdir())
    finally:
        read_only.chmod(0o755)


def test_what_a_refused_file_operation_is_said_of(tmp_path: Path) -> None:
    """A refused rename onto a file (a sticky folder's file of another user) named the temp file written beside it
    (`.cmp.html.123.tmp cannot be opened`): it names the file that could not be replaced. A file that is there but not
    writable is named itself; a folder that takes no new file is named as such."""
    import errno

    from tunelab.io import cannot_create

    (tmp_path / "lock").write_text("")
    said = [cannot_create(OSError(errno.EPERM, "Operation not permitted", str(tmp_path / ".a.tmp"), None,
                                  str(tmp_path / "a.html"))),
            cannot_create(OSError(errno.EACCES, "Permission denied", str(tmp_path / "lock"))),
            cannot_create(OSError(errno.EACCES, "Permission denied", str(tmp_path / "new")))]
    assert said == [f"{tmp_path / 'a.html'} cannot be replaced: Operation not permitted",
                    f"{tmp_path / 'lock'} cannot be opened for writing: Permission denied",
                    f"nothing can be created in {tmp_path}: Permission denied"]


def test_a_name_near_the_255_byte_limit_is_written(work: Path, tmp_path: Path) -> None:
    """A legal name of 252–254 bytes (84 Chinese characters) was refused: the temp file written beside it, or the
    temp folder of an export, took the name and more (`.NAME.1234.tmp: File name too long`, a name never given)."""
    from tunelab.io import atomic_dir, commit_dir, remove_stale_temps

    out = tmp_path / ("预" * 82 + ".jsonl")  # 252 bytes
    res = runner.invoke(app, ["predict", str(work / "model"), "--input", str(work / "rows.jsonl"), "--output", out])
    assert res.exit_code == 0 and len(out.read_text(encoding="utf-8").splitlines()) == 12, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp file left
    final = tmp_path / ("出" * 84)
    tmp = atomic_dir(final)
    (tmp / "a.txt").write_text("a", encoding="utf-8")
    commit_dir(tmp, final)
    assert (final / "a.txt").read_text(encoding="utf-8") == "a"
    stale = Path(str(atomic_dir(final)).replace(f"-{os.getpid()}@", "-999999999@"))  # a dead process's temp folder
    next(tmp_path.glob(".tmp-*")).rename(stale)
    assert remove_stale_temps(final) == [stale] and not stale.exists()


def test_a_long_name_is_replaced_and_an_older_temp_of_it_removed(tmp_path: Path) -> None:
    """`export --output <84×出> --overwrite` the second time: `File name too long` (the old folder was moved aside as
    `.old-NAME-<pid>`); and a dead process's temp folder named the older way (`.tmp-NAME-…` of a 225-byte NAME, the
    whole name) was no longer removed."""
    from tunelab.io import atomic_dir, commit_dir, host_id, pid_alive, remove_stale_temps

    final = tmp_path / ("出" * 84)
    for text in ("a", "b"):
        tmp = atomic_dir(final)
        (tmp / "a.txt").write_text(text, encoding="utf-8")
        commit_dir(tmp, final)
    assert (final / "a.txt").read_text(encoding="utf-8") == "b" and [p.name for p in tmp_path.iterdir()] == [final.name]
    assert not pid_alive(999999)
    older = tmp_path / ("出" * 75)  # 225 bytes: whole in an older tunelab's temp name, cut in today's
    stale = tmp_path / f".tmp-{older.name}-999999@{host_id()}-abcd_123"
    stale.mkdir()
    assert remove_stale_temps(older) == [stale] and not stale.exists()
