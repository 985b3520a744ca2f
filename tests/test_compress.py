"""`tunelab compress RUN --prune heads:F|magnitude:F`: heads scored by gradient importance and cut out of the matrices
(a dead head goes without changing a logit), a brief recovery fine-tune, the result reloaded (tunelab.json records the
cut), scored beside the original and gated; magnitude pruning zeroes weights (smaller compressed, same size); bad
input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import modes, train_sentiment, umask_modes
from tunelab.cli import app
from tunelab.export.prune import apply_pruned_heads, attentions, choose_heads, head_counts, head_importance


@pytest.fixture(scope="module")
def run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # reduce_on_plateau: the recovery fine-tune (no evaluations) was refused for it
    return train_sentiment(tiny_bert, tmp_path_factory.mktemp("compress") / "run",
                           sets=("train.scheduler=reduce_on_plateau",))


def _compress(*args: str) -> object:
    return CliRunner().invoke(app, ["compress", *args])


def test_head_pruning_cuts_reloads_and_exports(run: Path) -> None:
    res = _compress(str(run), "--prune", "heads:0.5", "--force")
    assert res.exit_code == 0, res.output
    out = run / "exports" / "heads-0.5"
    assert res.stderr.strip().splitlines()[-1].startswith(f"compress: wrote {out}")
    assert modes(out) == modes(run / "model") == umask_modes()  # model.safetensors was 0600 (safetensors' own)
    report = json.loads((out / "report.json").read_text())
    original, pruned = report["rows"]
    assert report["compress"]["heads_before"] == 8 and report["compress"]["heads_after"] == 4
    assert pruned["parameters"] < original["parameters"] and pruned["size_bytes"] < original["size_bytes"]
    meta = json.loads((out / "tunelab.json").read_text())
    assert sum(len(h) for h in meta["pruned_heads"].values()) == 4
    import tunelab

    model = tunelab.load(out)
    assert head_counts(model.module) == [4 - len(meta["pruned_heads"].get(str(i), [])) for i in range(2)]
    assert model.evaluate(report["data"])["accuracy"] == pytest.approx(pruned["metric"])
    # the pruned model exports like any other; its export lands beside it
    res = CliRunner().invoke(app, ["export", str(out), "--format", "onnx", "--force"])
    assert res.exit_code == 0, res.output
    assert (run / "exports" / "heads-0.5-onnx-fp32" / "model.onnx").is_file()


def test_a_dead_head_goes_without_changing_a_logit(run: Path) -> None:
    from tunelab.export.save import load_model

    task, model, tok = load_model(run / "model")
    sa = attentions(model)[0].self
    d = sa.attention_head_size
    with torch.no_grad():  # head 2 of layer 0 attends but contributes nothing
        sa.value.weight[2 * d : 3 * d] = 0
        sa.value.bias[2 * d : 3 * d] = 0
    batch = tok(["good great film", "awful plot was boring and bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
        after = apply_pruned_heads(model, {0: [2]})(**batch).logits
    assert head_counts(model)[0] == 3 and torch.allclose(before, after, atol=1e-6)
    scores = head_importance(model, [{**batch, "labels": torch.tensor([1, 0])}])
    assert scores.shape == (2, 4) and torch.allclose(scores.norm(dim=1), torch.ones(2))


def test_choose_heads_keeps_one_per_layer() -> None:
    importance = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.9, 0.8, 0.7, 0.6]])
    assert choose_heads(importance, [4, 4], 0.25) == {0: [0, 1]}
    assert choose_heads(importance, [4, 4], 0.9) == {0: [0, 1, 2], 1: [1, 2, 3]}  # one head stays in each layer


def test_magnitude_pruning_and_the_gate(run: Path) -> None:
    res = _compress(str(run), "--prune", "magnitude:0.5", "--recover-epochs", "0.5", "--force")
    assert res.exit_code == 0, res.output
    report = json.loads((run / "exports" / "magnitude-0.5" / "report.json").read_text())
    original, pruned = report["rows"]
    assert report["compress"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert pruned["zlib_bytes"] < original["zlib_bytes"] and pruned["parameters"] == original["parameters"]
    # the recovery is seeded (the run's train.seed): the same command writes the same weights, so the gate decides
    # the same way each time (unseeded dropout had passed it or refused it by chance)
    res = _compress(str(run), "--prune", "magnitude:0.5", "--recover-epochs", "0.5", "--force", "--output",
                    str(run.parent / "again"))
    assert res.exit_code == 0, res.output
    weights = "model.safetensors"
    assert (run.parent / "again" / weights).read_bytes() == (run / "exports" / "magnitude-0.5" / weights).read_bytes()
    # the gate: nearly every weight gone and no recovery is refused, nothing written
    out = run / "exports" / "gone"
    res = _compress(str(run), "--prune", "magnitude:0.99", "--recover-epochs", "0", "--output", str(out),
                    "--max-drop", "0", "--min-agreement", "100")
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: compress: refused, nothing written: ") and not out.exists()


def test_the_gate_refuses_broken_head_pruning(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Heads cut and then the classifier negated (every decision flips), no recovery: refused by the default gate,
    exit 1, nothing written."""
    import tunelab.export.compress as compress

    real = compress.apply_pruned_heads

    def broken(module, heads):  # noqa: ANN001, ANN202
        module = real(module, heads)
        with torch.no_grad():
            module.classifier.weight.neg_()
            module.classifier.bias.neg_()
        return module

    monkeypatch.setattr(compress, "apply_pruned_heads", broken)
    out = run / "exports" / "broken-heads"
    res = _compress(str(run), "--prune", "heads:0.25", "--recover-epochs", "0", "--output", str(out))
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: compress: refused, nothing written: label agreement") and not out.exists()


def test_bad_input_is_one_line(run: Path, tiny_chat_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sft = "compress does not take a model of task sft; it prunes models of task classification, ner, qa"
    cases = [
        ([str(run), "--prune", "rows:0.3"], "expected heads:<fraction> or magnitude:<fraction>"),
        ([str(run), "--prune", "heads:1.5"], "expected heads:<fraction> or magnitude:<fraction>"),
        # a chat model has no prediction per row to gate on: a broken one would pass at "100 % agreement"
        ([str(tiny_chat_run), "--prune", "heads:0.3"], sft),
        ([str(tiny_chat_run), "--prune", "magnitude:0.99", "--recover-epochs", "0"], sft),
        ([str(tmp_path), "--prune", "heads:0.3"], "not a run or model directory"),
        # 0.05 × 8 heads rounds to none: not a plain copy named heads-0.05
        ([str(run), "--prune", "heads:0.05"], "would cut no head (0.05 × the model's 8 heads rounds to 0); "
         "heads:0.0625 or more cuts one"),
        # a fraction, as other tools take it: read as 0.98 %, the gate was as good as off
        ([str(run), "--prune", "heads:0.5", "--min-agreement", "0.98"],
         "error: --min-agreement 0.98: a percentage; write 98 for 98 % (0 turns the check off)"),
    ]
    for args, words in cases:
        res = _compress(*args, "--output", str(out))
        assert res.exit_code == 2, (args, res.output)
        assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1, (args, res.stderr)
        assert not out.exists() and not (tiny_chat_run / "exports").exists(), args


def test_an_output_nothing_can_be_made_in_is_refused_before_the_recovery(run: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a file or a link to a missing folder, or in /proc: one line before the pruning and its recovery
    fine-tune (it came after them, and under a file as `File exists`)."""
    import tunelab.export.compress as compress

    monkeypatch.setattr(compress.engine, "train", lambda *a, **k: pytest.fail("the recovery ran"))
    (tmp_path / "afile").write_text("")
    places = [(tmp_path / "afile" / "out", f"{tmp_path / 'afile'} is a file, not a directory")]
    places += [(Path("/proc/tunelab-out"), "nothing can be created in /proc: ")] if Path("/proc/self").is_dir() else []
    (tmp_path / "dl").symlink_to(tmp_path / "missing")  # a link to nothing: it ran the recovery, then "File exists"
    places += [(tmp_path / "dl" / "out", f"{tmp_path / 'dl'} is a link to a missing folder ({tmp_path / 'missing'})")]
    for out, said in places:
        res = _compress(str(run), "--prune", "magnitude:0.5", "--output", str(out))
        assert res.exit_code == 2 and res.stderr.startswith(f"error: --output: {out} cannot be written: {said}")
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.fixture(scope="module")
def pruned(run: Path) -> tuple[Path, str]:
    """(a head-pruned model outside RUN/exports, the stderr of compress writing it): 0.3 of the 8 heads asked."""
    out = run.parent / "elsewhere" / "pruned"
    res = _compress(str(run), "--prune", "heads:0.3", "--recover-epochs", "0", "--force", "--output", str(out))
    assert res.exit_code == 0, res.output
    return out, res.stderr


def test_fewer_heads_than_asked_are_said_and_recorded(pruned: tuple[Path, str]) -> None:
    out, stderr = pruned
    assert "compress: heads:0.3 cuts 2 of the model's 8 heads (0.25: a whole number of heads)" in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["compress"]["heads_fraction"] == report["rows"][1]["heads_fraction"] == 0.25


def test_a_compressed_model_is_compressed_and_exported_beside_it(run: Path, pruned: tuple[Path, str]) -> None:
    """Not into RUN/exports: the folder the run's own compress (or export) uses, and what `serve RUN` reads."""
    res = _compress(str(pruned[0]), "--prune", "magnitude:0.3", "--recover-epochs", "0", "--force")
    assert res.exit_code == 0, res.output
    out = pruned[0].with_name("pruned-magnitude-0.3")
    assert res.stderr.strip().splitlines()[-1].startswith(f"compress: wrote {out}")
    assert not (run / "exports" / "magnitude-0.3").exists()
    assert json.loads((out / "tunelab.json").read_text())["pruned_heads"]  # still cut as its source


def test_a_head_pruned_model_in_torch_int8(run: Path, pruned: tuple[Path, str]) -> None:
    """The int8 model is built with the source's cut before its weights are read; a cut that does not match them is
    one line naming model.pt."""
    import tunelab
    from tunelab.errors import TunelabError

    res = CliRunner().invoke(app, ["export", str(pruned[0]), "--format", "torch", "--quantize", "int8", "--force"])
    assert res.exit_code == 0, res.output
    out = pruned[0].with_name("pruned-torch-int8")
    assert (out / "model.pt").is_file() and not (run / "exports" / "torch-int8").exists()
    assert json.loads((out / "report.json").read_text())["rows"][1]["agreement"] > 0.9
    meta = json.loads((out / "tunelab.json").read_text())
    (out / "tunelab.json").write_text(json.dumps({**meta, "pruned_heads": {}}))  # the cut forgotten
    with pytest.raises(TunelabError, match=r"model.pt: the weights do not have the shapes config.json and "):
        tunelab.load(out)


def test_a_head_pruned_model_pruned_again(pruned: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """tunelab.json records both cuts in the full model's numbering; the cap of one head a layer is said."""
    import tunelab

    res = _compress(str(pruned[0]), "--prune", "heads:0.95", "--recover-epochs", "0", "--force")
    assert res.exit_code == 0, res.output
    assert "compress: heads:0.95 cuts 4 of the model's 6 heads (0.6667: one head stays in every layer)" in res.stderr
    out = pruned[0].with_name("pruned-heads-0.95")
    assert res.stderr.strip().splitlines()[-1].startswith(f"compress: wrote {out}")
    first = json.loads((pruned[0] / "tunelab.json").read_text())["pruned_heads"]
    both = json.loads((out / "tunelab.json").read_text())["pruned_heads"]
    assert {k: len(v) for k, v in both.items()} == {"0": 3, "1": 3}
    assert all(set(heads) <= set(both[layer]) for layer, heads in first.items())
    report = json.loads((out / "report.json").read_text())
    model = tunelab.load(out)
    assert head_counts(model.module) == [1, 1]
    assert model.evaluate(report["data"])["accuracy"] == pytest.approx(report["rows"][1]["metric"])
    from tunelab.export.artifact import default_output, locate_model

    run = locate_model(pruned[0])[1]  # compressed twice, it still knows its run (its validation data, its config)
    assert run is not None and locate_model(out)[1] == run
    monkeypatch.chdir(out)  # the model given as `.`: beside it, by its own name
    assert default_output(Path("."), run, "onnx-fp32") == out.parent / f"{out.name}-onnx-fp32"


def test_pruned_heads_map_back_to_the_full_model() -> None:
    from tunelab.export.prune import merge_heads, original_heads

    again = original_heads({"0": [1], "1": [0, 2]}, {0: [0, 2], 1: [1]}, 4)  # indices of the heads left
    assert again == {"0": [0, 3], "1": [3]}
    assert merge_heads({"0": [1], "1": [0, 2]}, again) == {"0": [0, 1, 3], "1": [0, 2, 3]}


def test_errors_name_compress(tiny_bert: Path, tmp_path: Path) -> None:
    """A run without validation rows: the line is compress's, not export's."""
    run = train_sentiment(tiny_bert, tmp_path / "run", validation=False, sets=("data.validation_split=0",
                                                                                "train.epochs=1"))
    res = _compress(str(run), "--prune", "heads:0.5", "--recover-epochs", "0")
    assert res.exit_code == 2 and res.stderr.strip() == (f"error: compress: the run {run} has no validation split; "
                                                         "pass --data FILE (labelled rows)"), res.output


def test_a_terminated_recovery_leaves_no_temp_folder(run: Path, tmp_path: Path) -> None:
    """SIGTERM (a job stopped) during the recovery fine-tune left its `/tmp/tunelab-recover-*` folder for good: the
    command ends (exit 143) through its clean-up, which removes it; nothing is written."""
    from conftest import terminated_at

    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    terminated_at(["compress", str(run), "--prune", "magnitude:0.5", "--recover-epochs", "200", "--output", str(out)],
                  lambda: bool(list(tmp.glob("tunelab-recover-*"))), TMPDIR=str(tmp))
    assert not list(tmp.glob("tunelab-recover-*")) and not out.exists()
