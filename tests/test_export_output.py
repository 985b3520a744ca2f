"""The `--output` of `tunelab export` (--format, --merge) and `tunelab compress`: a folder is replaced only when it
holds nothing but what these commands wrote (their tunelab-files.json manifest, or an older export's tunelab.json and
file names); a user's folder, or an export with the user's notes in it, is refused in one line (exit 2) and left
byte for byte as it was; --overwrite replaces such a folder (or a link: the link) after naming on stderr what it
replaces, but never a file, an input or the run's own files; a refused export leaves no RUN/exports behind; a new run
in the directory takes the old run's exports away, so `tunelab serve` never answers with the model it replaced."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import train_sentiment
from tunelab.cli import app
from tunelab.errors import TunelabError
from tunelab.export.output import MANIFEST, check_output

pytest.importorskip("onnxruntime")
pytest.importorskip("torchao")
# the --output tests export as `--format torch --quantize int8` (torchao: well under a second for the tiny model,
# where torch.onnx's exporter traces for ~7 s); the onnx exporter's own paths keep `--format onnx`
FMT, EXPORTED = ("--format", "torch", "--quantize", "int8"), "torch-int8"
ASK = "; choose an empty or new folder, or pass --overwrite to replace it with them"


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _refused(res: object, folder: Path, first: str) -> None:
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert line == f"error: --output: {folder} holds files tunelab did not write ({first}){ASK}", line


@pytest.fixture(scope="module")
def run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = train_sentiment(tiny_bert, tmp_path_factory.mktemp("output") / "run")
    res = _cli("export", str(out), *FMT)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def lora_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA run (its tests take a copy: `_copied`)."""
    return train_sentiment(tiny_bert, tmp_path_factory.mktemp("lora") / "lora",
                           sets=("method=lora", "method.r=4", "train.epochs=1"))


def _copied(run: Path, folder: Path) -> Path:
    """A copy of `run` (train_sentiment's: its data beside it) in `folder`, with its data: its config names the
    copies, and the copy as its output_dir — as if it had been trained there. Its exports are not copied."""
    out = folder / run.name
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("exports", ".tunelab.lock"))
    for name in ("train.jsonl", "val.jsonl"):
        shutil.copy2(run.parent / name, folder / name)
    (out / "config.yaml").write_text((run / "config.yaml").read_text().replace(str(run.parent), str(folder)))
    return out


def test_a_user_folder_is_left_as_it_was(run: Path, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "report.json").write_text('{"mine": true}\n')
    (proj / "thesis.tex").write_text("\\section{Results}\n")
    (proj / "src" / "main.py").write_text("print('hi')\n")
    before = _snapshot(proj)
    _refused(_cli("export", str(run), *FMT, "--output", str(proj)), proj, "src")
    _refused(_cli("compress", str(run), "--prune", "heads:0.5", "--recover-epochs", "0", "--output", str(proj)),
             proj, "src")
    assert _snapshot(proj) == before and sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_an_export_with_the_users_files_in_it_is_kept(run: Path) -> None:
    out = run / "exports" / EXPORTED
    (out / "notes.txt").write_text("the int8 one is faster\n")
    (out / "sub").mkdir()
    (out / "sub" / "a.bin").write_bytes(b"\x00\x01")
    before = _snapshot(out)
    _refused(_cli("export", str(run), *FMT), out, "notes.txt")
    _refused(_cli("compress", str(run), "--prune", "heads:0.5", "--recover-epochs", "0", "--output", str(out)),
             out, "notes.txt")
    assert _snapshot(out) == before
    (out / "notes.txt").unlink()
    _refused(_cli("export", str(run), *FMT), out, "sub")
    shutil.rmtree(out / "sub")
    # what an export wrote, and nothing else: replaced
    res = _cli("export", str(run), *FMT)
    assert res.exit_code == 0, res.output
    written = json.loads((out / MANIFEST).read_text())["files"]
    assert {"model.pt", "tunelab.json", "report.json", "config.json"} <= set(written)
    # an export written before the manifest: recognised by its tunelab.json and file names
    (out / MANIFEST).unlink()
    res = _cli("export", str(run), *FMT, "--output", str(out))
    assert res.exit_code == 0, res.output
    assert (out / MANIFEST).is_file() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    (out / MANIFEST).unlink()
    (out / "notes.txt").write_text("mine\n")
    _refused(_cli("export", str(run), *FMT), out, "notes.txt")
    assert (out / "notes.txt").read_text() == "mine\n"


def test_a_rerun_merge_keeps_what_the_user_added(lora_run: Path, tmp_path: Path) -> None:
    lora = _copied(lora_run, tmp_path)
    res = _cli("export", str(lora), "--merge")
    assert res.exit_code == 0, res.output
    merged = lora / "merged"
    (merged / "sub").mkdir()
    shutil.copy2(merged / "model.safetensors", merged / "sub" / "model.safetensors")
    (merged / "notes.txt").write_text("mine\n")
    before = _snapshot(merged)
    _refused(_cli("export", str(lora), "--merge"), merged, "notes.txt")
    assert _snapshot(merged) == before
    res = _cli("export", str(lora), "--merge", "--overwrite")  # replaced when asked, what goes said first
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines()[0] == f"export: --overwrite: {merged} will be replaced whole, with what tunelab " \
                                         "did not write in it: notes.txt, sub/ (1 file); 2 files in all", res.stderr
    assert not (merged / "notes.txt").exists() and not (merged / "sub").exists()
    res = _cli("export", str(lora), "--merge")  # an earlier merge: replaced without asking
    assert res.exit_code == 0, res.output


def test_overwrite_replaces_a_folder_or_a_link_and_says_what_first(run: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "notes.txt").write_text("mine\n")
    (proj / "sub" / "a.bin").write_bytes(b"\x00")
    res = _cli("export", str(run), *FMT, "--output", str(proj), "--overwrite")
    assert res.exit_code == 0, res.output
    said = res.stderr.splitlines()
    assert said[0] == f"export: --overwrite: {proj} will be replaced whole, with what tunelab did not write in it: " \
                      "notes.txt, sub/ (1 file); 2 files in all", said
    assert said[-1] == f"export: wrote {proj}"
    assert "model.pt" in json.loads((proj / MANIFEST).read_text())["files"] and not (proj / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # no temp or old folder left beside it
    # a link: refused without --overwrite; with it the link (not the folder it points to) is replaced
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    res = _cli("compress", str(run), "--prune", "heads:0.5", "--recover-epochs", "0", "--output", str(link))
    assert res.exit_code == 2 and res.stderr.strip() == f"error: --output: {link} is a link (to {target}); name the " \
        "folder itself, or pass --overwrite to replace the link (not what it points to) with a new folder", res.output
    res = _cli("compress", str(run), "--prune", "heads:0.5", "--recover-epochs", "0", "--output", str(link),
               "--overwrite", "--force")
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines()[0] == f"compress: --overwrite: {link} is the link to {target}; the link will be " \
                                         "replaced by the new folder (what it points to is left as it is)"
    assert not link.is_symlink() and (link / MANIFEST).is_file() and os.listdir(target) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "link", "proj"]
    # never, even with --overwrite: a file, the run's own files, its exports folder, the data, the current directory
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy2(run.parent / "val.jsonl", data / "val.jsonl")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = {**_snapshot(tmp_path), **_snapshot(run)}
    other = "; choose another --output"
    for output, line in [
        (data / "val.jsonl", f"{data / 'val.jsonl'} would replace the --data file{other}"),
        (data, f"{data} would replace the --data file{other}"),
        (proj / "model.pt", f"{proj / 'model.pt'} is a file, not a folder; choose an empty or new folder"),
        (run / "checkpoints", f"{run / 'checkpoints'} is inside the run directory {run}{other}"),
        (run / "exports", f"{run / 'exports'} would replace the run's exports folder{other}"),
        (tmp_path, f"{tmp_path} would replace the current directory{other}"),
    ]:
        rows = data / "val.jsonl" if output != tmp_path else run.parent / "val.jsonl"
        res = _cli("export", str(run), *FMT, "--output", str(output), "--overwrite", "--data", str(rows))
        assert res.exit_code == 2, (output, res.output)
        assert res.stderr.strip() == f"error: --output: {line}", res.stderr
    assert {**_snapshot(tmp_path), **_snapshot(run)} == before


def test_another_runs_folder_is_never_replaced(run: Path, lora_run: Path, tmp_path: Path) -> None:
    """An --output that is another run's folder (a copy of a run, its lock gone), inside one (its model/, its
    exports) or holding one: refused in one line naming the run's folder, --overwrite or not, nothing of it touched.
    --overwrite replaced the other run whole (its config, metrics, adapter, model), and without it the refusal said
    that a run's saved model held `files tunelab did not write`."""
    lora = _copied(lora_run, tmp_path)
    other = tmp_path / "runs" / "copy"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns(".tunelab.lock"))
    before = _snapshot(tmp_path / "runs")
    never = "a run's files are never replaced, --overwrite or not; choose another --output"
    for output, line in [
        (other, f"{other} is a run's folder; {never}"),
        (other / "model", f"{other / 'model'} is inside the run's folder {other}; {never}"),
        (other / "exports" / "onnx-fp32", f"{other / 'exports' / 'onnx-fp32'} is inside the run's folder {other}; "
                                          f"{never}"),
        (other / "merged", f"{other / 'merged'} is inside the run's folder {other}; {never}"),
        (tmp_path / "runs", f"{tmp_path / 'runs'} holds the run's folder {other}; {never}"),
    ]:
        for flags in ([], ["--overwrite"]):
            for args in ([str(run), *FMT], [str(lora), "--merge"]):
                res = _cli("export", *args, "--output", str(output), *flags)
                assert res.exit_code == 2 and res.stderr.strip() == f"error: --output: {line}", (args, res.output)
    assert _snapshot(tmp_path / "runs") == before
    # the run exported keeps its own: its merged/ and an export in its exports/ are written as before
    res = _cli("export", str(lora), "--merge", "--output", str(lora / "merged"))
    assert res.exit_code == 0 and (lora / "merged" / MANIFEST).is_file(), res.output


def test_a_model_copied_out_of_its_run_is_tunelabs(run: Path, tmp_path: Path) -> None:
    """A run's model/ copied out of its run (`cp -r RUN/model m`: no config.yaml beside it) is tunelab's model, as an
    earlier export is, though a deployed copy: refused by name, replaced with --overwrite, said on stderr (it was
    "holds files tunelab did not write (README.md)", its model card); a file the user added is named and refused."""
    copy = tmp_path / "m"
    shutil.copytree(run / "model", copy)
    (copy / "notes.txt").write_text("deployed on monday\n")
    before = _snapshot(copy)
    _refused(_cli("export", str(run), *FMT, "--output", str(copy)), copy, "notes.txt")
    assert _snapshot(copy) == before
    (copy / "notes.txt").unlink()
    before = _snapshot(copy)  # a deployed copy is replaced only when asked (--overwrite)
    res = _cli("export", str(run), *FMT, "--output", str(copy))
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: --output: {copy} holds a tunelab model (a run's model/, copied out of its run); choose an empty or "
        "new folder, or pass --overwrite to replace it"), res.output
    assert _snapshot(copy) == before
    res = _cli("export", str(run), *FMT, "--output", str(copy), "--overwrite")
    assert res.exit_code == 0, res.output
    assert f"export: --overwrite: {copy} holds a tunelab model (a run's model/, copied out of its run); it will be " \
           "replaced whole" in res.stderr
    assert (copy / MANIFEST).is_file() and (copy / "model.pt").is_file() and not (copy / "README.md").exists()


def test_a_model_folder_of_no_run_is_exported_beside_it(run: Path, tmp_path: Path) -> None:
    """Two deployed copies of a model in one folder (`deploy/a`, `deploy/b`: no run around them), exported without
    --output, went both to `deploy/exports/torch-int8`: b's export replaced a's without a word. Each goes beside its
    model now, by its name, and stderr says where."""
    from tunelab.text import TEXT_RULES

    deploy = tmp_path / "deploy"
    for name in ("a", "b"):
        shutil.copytree(run / "model", deploy / name)
        if name == "a":  # saved before tunelab.json recorded its text rules, no run around it: the export records 4
            meta = json.loads((deploy / name / "tunelab.json").read_text())
            del meta["text_rules"]
            (deploy / name / "tunelab.json").write_text(json.dumps(meta))
        res = _cli("export", str(deploy / name), *FMT, "--data", str(run.parent / "val.jsonl"))
        assert res.exit_code == 0, res.output
        assert res.stderr.strip().splitlines()[-1] == f"export: wrote {deploy / (name + '-' + EXPORTED)}"
    for name in ("a", "b"):
        meta = json.loads((deploy / f"{name}-{EXPORTED}" / "tunelab.json").read_text())
        assert meta["export"]["from"] == str((deploy / name).resolve())
        assert meta["text_rules"] == (4 if name == "a" else TEXT_RULES)  # what its inputs are read by
    assert not (deploy / "exports").exists()


def test_what_a_run_model_holds(tmp_path: Path) -> None:
    """What training writes into RUN/model (its model card, a prefix / prompt adapter/ folder) is tunelab's; what it
    never writes there (report.json, a file in adapter/ that peft does not write) is not."""
    folder = tmp_path / "m"
    (folder / "adapter").mkdir(parents=True)
    meta = {"tunelab_version": "0.1.0", "task": {"name": "sft"}, "method": {"name": "prompt"}, "base_model": "x"}
    (folder / "tunelab.json").write_text(json.dumps(meta))
    for name in ("README.md", "config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
                 "chat_template.jinja", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "adapter/README.md"):
        (folder / name).write_text("{}")
    check_output(folder, overwrite=True)
    for name in ("adapter/notes.txt", "report.json"):
        (folder / name).write_text("mine")
        with pytest.raises(TunelabError, match=rf"holds files tunelab did not write \({name}\)"):
            check_output(folder)
        assert check_output(folder, overwrite=True) == [name.split("/")[0] + "/" * ("/" in name)]
        (folder / name).unlink()


def test_what_changed_while_the_result_was_built_is_not_replaced(tmp_path: Path) -> None:
    from tunelab.export.output import commit, staged

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("said\n")
    replaced = check_output(out, overwrite=True)
    assert replaced == ["notes.txt"]
    with staged(out) as tmp:
        (tmp / "model.onnx").write_bytes(b"graph")
        (out / "late.txt").write_text("not said\n")
        with pytest.raises(TunelabError, match=r"changed while the result was built: it now holds late\.txt too"):
            commit(tmp, out, replaced)
    assert sorted(os.listdir(out)) == ["late.txt", "notes.txt"]
    (out / "late.txt").unlink()
    with staged(out) as tmp:
        (tmp / "model.onnx").write_bytes(b"graph")
        commit(tmp, out, replaced)
    assert sorted(os.listdir(out)) == ["model.onnx", MANIFEST] and sorted(os.listdir(tmp_path)) == ["out"]
    # a file that appears inside a folder --overwrite named (said: `sub/ (1 file)`) was not said either
    from tunelab.export.output import claim

    (out / "sub").mkdir()
    (out / "sub" / "a.txt").write_text("said\n")
    replaced = claim("export", out, [], overwrite=True)
    with staged(out) as tmp:
        (tmp / "model.onnx").write_bytes(b"graph")
        (out / "sub" / "late.txt").write_text("not said\n")
        with pytest.raises(TunelabError, match=r"it now holds sub/late\.txt too"):
            commit(tmp, out, replaced)
    assert (out / "sub" / "late.txt").is_file()


def test_a_refused_export_leaves_no_exports_folder(run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import tunelab.export.artifact as artifact

    fresh = tmp_path / "run"
    shutil.copytree(run, fresh, ignore=shutil.ignore_patterns("exports"))
    real = artifact.quantize_int8

    def broken(task, model):  # noqa: ANN001, ANN202
        with torch.no_grad():
            model.classifier.bias.add_(torch.tensor([100.0, -100.0]))  # every row: the first label
        return real(task, model)

    monkeypatch.setattr(artifact, "quantize_int8", broken)
    res = _cli("export", str(fresh), *FMT)
    assert res.exit_code == 1 and "refused, nothing written" in res.stderr, res.output
    assert not (fresh / "exports").exists()
    res = _cli("export", str(fresh), *FMT, "--output", str(tmp_path / "a" / "b" / "c"))
    assert res.exit_code == 1 and not (tmp_path / "a").exists()


def test_what_check_output_replaces(tmp_path: Path) -> None:
    def why(folder: Path) -> str | None:
        try:
            check_output(folder)
        except TunelabError as e:
            return str(e).split(" ", 2)[2]
        return None

    folder = tmp_path / "out"
    assert why(folder) is None  # new
    folder.mkdir()
    (folder / ".DS_Store").write_bytes(b"")
    assert why(folder) is None  # empty, but for what a file browser drops
    (folder / "report.json").write_text("{}")
    assert why(folder) == f"holds files tunelab did not write (report.json){ASK}"
    (folder / "tunelab.json").write_text('{"task": {"name": "classification"}}')  # a model, not an export
    assert why(folder) == f"holds files tunelab did not write (report.json){ASK}"
    (folder / "tunelab.json").write_text('{"export": {"format": "onnx"}}')
    (folder / "model.onnx").write_bytes(b"")
    assert why(folder) is None  # an export written before the manifest
    (folder / "data").mkdir()
    assert why(folder) == f"holds files tunelab did not write (data){ASK}"
    (folder / "data").rmdir()
    (folder / MANIFEST).write_text(json.dumps({"files": ["tunelab.json", "model.onnx"]}))
    assert why(folder) == f"holds files tunelab did not write (report.json){ASK}"
    (folder / "file").write_text("x")
    assert why(folder / "file") == "is a file, not a folder; choose an empty or new folder"
    (tmp_path / "link").symlink_to(folder)
    assert why(tmp_path / "link") == f"is a link (to {folder}); name the folder itself, or pass --overwrite to " \
                                     "replace the link (not what it points to) with a new folder"


def test_a_new_run_takes_the_old_runs_exports_away(run: Path, tmp_path: Path) -> None:
    """Train (the module's run, copied with its data: its config names them here), export, train again with the
    labels flipped: serve (and predict) answer with the new model."""
    from tunelab import load
    from tunelab.serve.models import fastest_artifact

    out = _copied(run, tmp_path)
    assert _cli("export", str(out), "--format", "onnx").exit_code == 0
    export = out / "exports" / "onnx-fp32"
    assert fastest_artifact(out) == export
    assert load(export).predict(["good great film"])[0]["pred_label"] == "positive"
    # an export older than RUN/model (left by a tunelab that kept exports across runs) is not served
    model_time = (out / "model" / "tunelab.json").stat().st_mtime
    os.utime(export / "report.json", (model_time - 60, model_time - 60))
    assert fastest_artifact(out) == out
    flip = {"positive": "negative", "negative": "positive"}
    for name in ("train.jsonl", "val.jsonl"):  # the same texts, the opposite labels, the same config
        rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        (tmp_path / name).write_text("".join(json.dumps({**r, "label": flip[r["label"]]}) + "\n" for r in rows))
    res = _cli("train", str(out / "config.yaml"), "--overwrite")
    assert res.exit_code == 0, res.output
    assert not (out / "exports").exists() and not (out / ".replaced").exists()
    assert fastest_artifact(out) == out
    assert load(fastest_artifact(out)).predict(["good great film"])[0]["pred_label"] == "negative"


def test_a_second_path_to_the_run_is_the_run(run: Path, tmp_path: Path) -> None:
    """The run's own folders named by another path to them — a bind mount here; on a case-insensitive file system
    (macOS, Windows) `RUN/Model` for `RUN/model` — are refused as the run's, --overwrite or not (compared by the file
    system's identity, not the spelling)."""
    import subprocess

    alias = tmp_path / "alias"
    alias.mkdir()
    if subprocess.run(["mount", "--bind", str(run), str(alias)], capture_output=True).returncode != 0:
        pytest.skip("no bind mount here (needs root)")
    try:
        res = _cli("export", str(run), *FMT, "--output", str(alias / "model"), "--overwrite")
        assert res.exit_code == 2 and "would replace the model it exports" in res.stderr, res.output
        res = _cli("export", str(run), *FMT, "--output", str(alias), "--overwrite")
        assert res.exit_code == 2 and "would replace" in res.stderr, res.output
        assert (run / "model" / "config.json").is_file()
    finally:
        subprocess.run(["umount", str(alias)], check=True)


def test_a_terminated_export_leaves_no_temp_folder(run: Path, tmp_path: Path) -> None:
    """SIGTERM while the export is built: the command ends (exit 143) through its clean-up, the temp folder gone (it
    stayed, `.tmp-out-XXXX`, forever); a temp folder that a killed process left is removed by the next export, one
    of a live process kept."""
    import subprocess
    import sys

    from conftest import sentiment_rows, terminated_at, write_jsonl

    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    from tunelab.io import host_id

    here = host_id()
    stale, live = tmp_path / f".tmp-out-{dead}@{here}-abcd1234", tmp_path / f".tmp-out-{os.getpid()}@{here}-abcd1234"
    elsewhere = tmp_path / f".tmp-out-{dead}@{'0' * 8 if here != '0' * 8 else '1' * 8}-abcd1234"  # another machine's
    elsewhere.mkdir()
    for folder in (stale, live):
        folder.mkdir()
        (folder / "model.onnx").write_text("half")
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(400, 3))  # scored one at a time: seconds in the folder
    seen: list[bool] = []

    def building() -> bool:  # its own temp folder made; the stale one of a dead process removed by then
        if [p for p in tmp_path.glob(".tmp-out-*") if p not in (stale, live, elsewhere)]:
            seen.append(not stale.exists() and live.is_dir() and elsewhere.is_dir())
        return bool(seen)

    terminated_at(["export", str(run), "--format", "onnx", "--output", str(out), "--data", str(rows),
                   "--batch-size", "1"], building)
    assert seen == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name, "rows.jsonl"])


def test_a_sigterm_during_the_swap_ends_the_process_after_it() -> None:
    """The swap's two renames are not cut apart: a SIGTERM between them waits for the second (a signal mask on the
    main thread did not hold it — Python's handler ran anyway, between the renames, and the output was gone)."""
    import os
    import signal
    import time

    from tunelab.export.output import _held, terminated

    steps = []
    with pytest.raises(SystemExit) as info, terminated(), _held():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler has run by now (it waited)
        steps.append("second rename")
    assert steps == ["second rename"] and info.value.code == 143
    with pytest.raises(SystemExit), terminated():  # outside a swap: at once
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        steps.append("never")
    assert steps == ["second rename"]


def test_the_runs_base_model_is_never_an_output(run: Path, tiny_bert: Path, tmp_path: Path) -> None:
    """The folder a run was tuned from (an earlier export, a copied model) is what its adapter, a merge and a resume
    read: `export --merge --output BASE` replaced it (then the merge of the run failed, "base changed?"), even with
    --overwrite. It is an input, as the run's data files are."""
    from tunelab.export.output import run_reads

    with pytest.raises(TunelabError, match=r"would replace the run's base model \(its config's model\)"):
        check_output(tiny_bert, run_reads(run), overwrite=True)
    with pytest.raises(TunelabError, match=r"is inside the run's base model"):
        check_output(tiny_bert / "exported", run_reads(run), overwrite=True)
    from tunelab.models import ALIASES

    alias = ALIASES["minilm"]
    if alias.installed():  # an alias's model folder is the base too (it was read as a path named "minilm": none)
        (tmp_path / "alias-run").mkdir()
        (tmp_path / "alias-run" / "config.yaml").write_text("task: classification\nmodel: minilm\n")
        with pytest.raises(TunelabError, match=r"would replace the run's base model"):
            check_output(alias.package_dir() / alias.subdir, run_reads(tmp_path / "alias-run"), overwrite=True)
