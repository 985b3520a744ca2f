"""`tunelab export RUN --merge`: LoRA and DoRA adapters (SFT on Llama with added ChatML tokens, and a
classification head on BERT) merged into plain transformers weights that match the adapter model; a
corrupted RUN/model or a zero tolerance fails with one line and nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import WORDS, modes, say_rows, sentiment_rows, umask_modes, write_jsonl
from tunelab.cli import app
from tunelab.export.merge import load_adapter_model, locate, logits_of, max_diff, sample_inputs
from tunelab.export.save import load_tokenizer


def _train(tmp: Path, sets: list[str]) -> Path:
    out = tmp / "run"
    base = [f"output_dir={out}", "train.max_steps=3", "train.lr=1e-2", "train.batch_size=4", "train.save_steps=0",
            "train.precision=fp32"]
    res = CliRunner().invoke(app, ["train", *[a for s in base + sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module", params=["lora", "dora"])
def sft_adapter_run(request: pytest.FixtureRequest, tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp(f"merge-{request.param}")
    train = write_jsonl(tmp / "train.jsonl", say_rows(WORDS[:8]))
    return _train(tmp, ["task=sft", f"model={tiny_llama}", f"data.train={train}", "data.validation_split=0.25",
                        f"method={request.param}", "method.r=4"])


def test_merge_matches_the_adapter(sft_adapter_run: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = CliRunner().invoke(app, ["export", str(sft_adapter_run), "--merge"])
    assert res.exit_code == 0, res.output
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("export: merged ") and line.endswith(f"wrote {sft_adapter_run / 'merged'}")
    merged_dir = sft_adapter_run / "merged"
    meta = json.loads((merged_dir / "tunelab.json").read_text())
    assert meta["task"]["name"] == "sft" and meta["merged_from"]["adapter"].endswith("adapter")
    # a plain transformers model: no peft modules, the grown vocabulary, the same outputs as base + adapter
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))
    assert not any("lora" in n for n, _ in merged.named_parameters())
    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    assert "<|im_end|>" in tok.get_vocab() and merged.get_input_embeddings().num_embeddings == len(tok)
    adapter, model_dir = locate(sft_adapter_run)
    peft_model, _, _ = load_adapter_model(adapter, model_dir)
    inputs = sample_inputs(tok)
    assert max_diff(logits_of(peft_model, inputs), logits_of(merged, inputs)) < 1e-4
    # the adapter really changes the outputs (the check would be empty otherwise)
    with peft_model.disable_adapter():
        assert max_diff(logits_of(peft_model, inputs), logits_of(merged, inputs)) > 1e-3
    # the model directory or the adapter directory name the same run; --output chooses where
    res = CliRunner().invoke(app, ["export", str(model_dir), "--merge", "--output", str(sft_adapter_run / "m2")])
    assert res.exit_code == 0, res.output
    assert (sft_adapter_run / "m2" / "model.safetensors").is_file()
    res = CliRunner().invoke(app, ["export", str(model_dir), "--merge", "--output", str(sft_adapter_run / "m2")])
    assert res.exit_code == 0, res.output  # an earlier merge is replaced
    notes = sft_adapter_run / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("mine", encoding="utf-8")
    for output, why in [(sft_adapter_run, "would replace the run it merges"), (model_dir, "would replace the run"),
                        (notes, "holds files tunelab did not write (a.txt)"), (notes / "a.txt", "is a file")]:
        res = CliRunner().invoke(app, ["export", str(sft_adapter_run), "--merge", "--output", str(output)])
        assert res.exit_code == 2 and why in res.output, res.output
    assert (notes / "a.txt").read_text(encoding="utf-8") == "mine" and (sft_adapter_run / "metrics.json").is_file()


def test_corrupted_model_or_zero_tolerance_fails(sft_adapter_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(sft_adapter_run, run, ignore=shutil.ignore_patterns("merged", "m2"))
    res = CliRunner().invoke(app, ["export", str(run), "--merge", "--tolerance", "0"])
    if res.exit_code == 0:  # merging can be exact in fp32; then the largest difference printed is 0
        assert "max |Δlogit| on 6 samples: 0 vs the adapter model" in res.stderr
    else:
        assert res.exit_code == 1 and "> tolerance 0" in res.stderr and not (run / "merged").exists()
    weights = run / "model" / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k in state if "q_proj" in k)
    state[name] = state[name] + 0.5
    weights.chmod(0o644)
    save_file(state, str(weights), metadata={"format": "pt"})
    shutil.rmtree(run / "merged", ignore_errors=True)
    res = CliRunner().invoke(app, ["export", str(run), "--merge"])
    assert res.exit_code == 1
    (line,) = res.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"error: export --merge: {run / 'model'} differs from base + adapter by ")
    assert line.endswith("> tolerance 0.0001 (base " + str(json.loads((run / "adapter" / "adapter_config.json")
                                                                         .read_text())["base_model_name_or_path"])
                         + " changed?); nothing written")
    assert not (run / "merged").exists()


def test_classification_head_is_merged(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    train, val = sentiment_files
    run = _train(tmp_path, ["task=classification", f"model={tiny_bert}", f"data.train={train}",
                            f"data.validation={val}", "method=lora", "method.r=4"])
    res = CliRunner().invoke(app, ["export", str(run), "--merge", "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert modes(tmp_path / "out") == modes(run / "model") == umask_modes()  # model.safetensors was 0600
    merged = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out"))
    saved = AutoModelForSequenceClassification.from_pretrained(str(run / "model"))
    assert merged.config.id2label == saved.config.id2label and len(saved.config.id2label) == 2
    x = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    merged.eval()
    saved.eval()
    with torch.no_grad():
        assert torch.allclose(merged(**x).logits, saved(**x).logits, atol=1e-5)


def test_a_masked_lm_merges_into_its_own_class(tiny_bert: Path, tmp_path: Path) -> None:
    """pretrain with objective mlm (an instance setting of the task): merged as BertForMaskedLM, as RUN/model is, not
    as the causal LM class pretrain names by default (a BertLMHeadModel; an encoder without one failed)."""
    import json

    from conftest import sentiment_rows

    train = write_jsonl(tmp_path / "train.jsonl", [{"text": r["text"]} for r in sentiment_rows(12)])
    run = _train(tmp_path, ["task=pretrain", "task.objective=mlm", f"model={tiny_bert}", f"data.train={train}",
                            "data.max_length=64", "method=lora", "method.r=4"])
    res = CliRunner().invoke(app, ["export", str(run), "--merge", "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]


def test_merge_never_writes_over_the_runs_data(tiny_bert: Path, tmp_path: Path) -> None:
    """The data files the run's config names, as plain export and compress refuse them: never the --output, nor a
    folder holding one or inside one, even with --overwrite; one line, exit 2, nothing touched."""
    data = tmp_path / "data"  # a folder of its own: an --output there is refused for the data, not for the run
    data.mkdir()
    train = write_jsonl(data / "train.jsonl", sentiment_rows(48, 0))
    val = write_jsonl(data / "validation.jsonl", sentiment_rows(16, 1))
    run = _train(tmp_path, ["task=classification", f"model={tiny_bert}", f"data.train={train}",
                            f"data.validation={val}", "method=lora", "method.r=4"])
    before = {p: p.read_bytes() for p in (train, val)}
    for output, why in [(train, f"{train} would replace the run's data.train file"),
                        (data, f"{data} would replace the run's data.train file"),
                        (val / "sub", f"{val / 'sub'} is inside the run's data.validation file {val}")]:
        res = CliRunner().invoke(app, ["export", str(run), "--merge", "--output", str(output), "--overwrite"])
        assert res.exit_code == 2, res.output
        assert res.stderr.strip() == f"error: --output: {why}; choose another --output", res.stderr
    assert {p: p.read_bytes() for p in data.iterdir()} == before and not (run / "merged").exists()


def test_export_errors(tiny_chat_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(tiny_chat_run)])
    assert res.exit_code == 2 and "export: say what to export: --merge" in res.output
    res = runner.invoke(app, ["export", str(tiny_chat_run), "--merge"])  # method full: no adapter
    assert res.exit_code == 2 and "no adapter" in res.output and "method full / freeze" in res.output
    res = runner.invoke(app, ["export", str(tmp_path / "nope"), "--merge"])
    assert res.exit_code == 2 and "no such directory" in res.output
    weights = tiny_chat_run / "model" / "model.safetensors"  # a file: not "no such directory"
    res = runner.invoke(app, ["export", str(weights), "--merge"])
    assert res.exit_code == 2 and res.stderr.strip() == (f"error: {weights}: a file, not a directory; pass the run "
                                                         "directory (or its adapter/)"), res.output
    # an option the kind of export does not read is refused (given at its default value too), not ignored
    for args, line in [
        (["--merge", "--max-drop", "0.5"], "export --merge: --max-drop does not apply (a merge is checked by its "
         "logits against the adapter model's, within --tolerance: no rows, no parity gate, no quantisation); leave "
         "it out"),
        (["--merge", "--quantize", "int8", "--data", "x.jsonl", "--min-agreement", "90", "--force", "--batch-size",
          "64"], "export --merge: --quantize, --data, --min-agreement, --force, --batch-size do not apply"),
        (["--format", "gguf", "--tolerance", "1e-3"], "export --format: --tolerance does not apply (it is --merge's); "
         "leave it out"),
        (["--format", "gguf", "--min-agreement", "1"], "--min-agreement 1: a percentage; write 100 for 100 %"),
    ]:
        res = runner.invoke(app, ["export", str(tiny_chat_run), *args])
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
        assert res.stderr.startswith(f"error: {line}"), res.stderr
    assert not (tiny_chat_run / "merged").exists() and not (tiny_chat_run / "exports").exists()


def test_a_head_grown_for_new_labels_merges(tiny_bert: Path, tmp_path: Path) -> None:
    """LoRA continued from a tuned 2-label classifier on data with a third label (the head grown 2 → 3): the base's
    head is of another size, and the adapter's (modules_to_save) is what merges; the merged model scores as the
    unmerged adapter model does."""
    from transformers import AutoModelForSequenceClassification

    first = _train(tmp_path / "a", ["task=classification", f"model={tiny_bert}",
                                    f"data.train={write_jsonl(tmp_path / 'two.jsonl', sentiment_rows(16))}"])
    three = write_jsonl(tmp_path / "three.jsonl", sentiment_rows(24, labels=("negative", "positive", "neutral")))
    run = _train(tmp_path / "b", ["task=classification", f"model={first / 'model'}", f"data.train={three}",
                                  "method=lora", "method.r=4"])
    res = CliRunner().invoke(app, ["export", str(run), "--merge", "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    merged = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out"))
    assert list(merged.config.id2label.values()) == ["negative", "positive", "neutral"]
    unmerged, _, base = load_adapter_model(*locate(run))
    assert base == str(first / "model")
    inputs = sample_inputs(load_tokenizer(run / "model"), pair=True)
    assert max_diff(logits_of(unmerged, inputs), logits_of(merged, inputs)) < 1e-6
    assert logits_of(merged, inputs)[0].shape[-1] == 3
    weights = run / "adapter" / "adapter_model.safetensors"  # an adapter without the head: said, not merged random
    save_file({k: v for k, v in load_file(str(weights)).items() if "classifier" not in k}, str(weights))
    res = CliRunner().invoke(app, ["export", str(run), "--merge", "--output", str(tmp_path / "out2")])
    assert res.exit_code == 2 and "classifier.bias has another shape in the base model" in res.output, res.output
    assert not (tmp_path / "out2").exists()


def test_a_relative_base_merges_from_another_folder(tiny_bert: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`model: base` (a folder relative to where training ran, as adapter_config.json records it): `export --merge`
    from another folder reads that base, not `base` there (none: it failed)."""
    shutil.copytree(tiny_bert, tmp_path / "project" / "base")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    run = _train(tmp_path / "project", ["task=classification", "model=base", "method=lora", "method.r=4",
                                        f"data.train={write_jsonl(tmp_path / 't.jsonl', sentiment_rows(16))}"])
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "base"
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = CliRunner().invoke(app, ["export", str(run), "--merge", "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert f"into {tmp_path / 'project' / 'base'}" in res.output
