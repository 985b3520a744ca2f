"""LoRA's `method.target_modules`: names that cannot work (the task head, a container module, an embedding whose added
tokens train) are one line naming the setting, before the run starts (were peft tracebacks); one name or
`query,value` as a string is the list of those names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import WORDS, say_rows, sentiment_rows, write_jsonl
from tunelab.cli import app

runner = CliRunner()


def _train(tmp_path: Path, model: Path, task: str, targets: str) -> object:
    rows = sentiment_rows(8) if task == "classification" else say_rows(WORDS[:8])
    sets = [f"task={task}", f"model={model}", f"data.train={write_jsonl(tmp_path / 't.jsonl', rows)}",
            "data.validation_split=0", "method=lora", "method.r=2", f"method.target_modules={targets}",
            f"output_dir={tmp_path / 'run'}", "train.max_steps=1", "train.batch_size=4", "train.save_steps=0",
            "train.report=false"]
    return runner.invoke(app, ["train", *[x for s in sets for x in ("--set", s)]])


@pytest.mark.parametrize(("targets", "said"), [
    ("[classifier]", "--set method.target_modules: classifier name only the task head (classifier), which trains "
                     "whole and is saved with the adapter; name the layers LoRA adapts (its linear layers: dense, "
                     "key, query, value; or all-linear)"),
    ("[encoder]", "--set method.target_modules: bert.encoder is a BertEncoder, not a layer LoRA adapts (Linear, "
                  "Embedding, Conv)"),
    ("[nothing]", "--set method.target_modules: no module of the model is named nothing"),
    (",", "--set method.target_modules: names no module"),  # was taken, then called a regular expression
    ("[]", "--set method.target_modules: names no module"),
    ("[query, '']", "--set method.target_modules: names no module"),  # '' named the whole model
    # a Chinese input method's comma: valid YAML for one name, refused with the model loaded, the '，' unsaid
    ("[query，value]", "--set method.target_modules: 'query，value' is one name: names are separated by an ASCII "
                      "comma, not '，' or '、' (a Chinese input method's; write [query, value], or query,value in "
                      "--set)"),
    ("query，value", "--set method.target_modules: 'query，value' is one name"),  # (the hint said once)
])
def test_targets_that_cannot_work_are_one_line(targets: str, said: str, tiny_bert: Path, tmp_path: Path) -> None:
    res = _train(tmp_path, tiny_bert, "classification", targets)
    line = res.output.strip()
    assert res.exit_code == 2 and "\n" not in line and line.startswith(f"error: {said}"), res.output
    assert line.count("input method") <= 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("targets", ["[lm_head]", "[embed_tokens]", "[q_proj, lm_head]"])
def test_sft_targets_where_added_tokens_train(targets: str, tiny_llama: Path, tmp_path: Path) -> None:
    """SFT adds ChatML tokens, whose rows of embed_tokens and lm_head train as peft's trainable tokens: LoRA on either
    is refused (peft's TypeError about trainable_token_indices)."""
    res = _train(tmp_path, tiny_llama, "sft", targets)
    name = "model.embed_tokens" if "embed" in targets else "lm_head"
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"--set method.target_modules: {name} trains the rows of the tokens the task added" in res.output


@pytest.mark.parametrize(("targets", "names"), [("query", ["query"]), ("query,value", ["query", "value"])])
def test_a_string_of_names_is_their_list(targets: str, names: list[str], tiny_bert: Path, tmp_path: Path) -> None:
    res = _train(tmp_path, tiny_bert, "classification", targets)
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert sorted(saved["target_modules"]) == names


def test_a_regular_expression_as_peft_takes_it(tiny_bert: Path, tmp_path: Path) -> None:
    """A string with a regular expression's characters is peft's full match over module names (was "no module of the
    model is named .*\\.(query|value)"): it reaches peft as it is, and adapts those layers only."""
    from safetensors.torch import load_file

    res = _train(tmp_path, tiny_bert, "classification", r".*\.(query|value)")
    assert res.exit_code == 0, res.output
    adapter = tmp_path / "run" / "adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    assert saved["target_modules"] == r".*\.(query|value)"
    weights = load_file(adapter / "adapter_model.safetensors")
    adapted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights if ".lora_" in k}
    assert adapted == {"query", "value"}


@pytest.mark.parametrize(("targets", "said"), [
    (r".*\.(nosuch|qq)", r"c.yaml:6: method.target_modules: the regular expression .*\.(nosuch|qq) matches no module's "
                         "full name in full (e.g. bert.encoder.layer.0.attention.self.query; its linear layers: "),
    (r".*\.(query", r"c.yaml:6: method.target_modules: .*\.(query is not a regular expression (missing ), "),
])
def test_a_regular_expression_that_cannot_work(targets: str, said: str, tiny_bert: Path, tmp_path: Path) -> None:
    cfg, data = tmp_path / "c.yaml", write_jsonl(tmp_path / "t.jsonl", sentiment_rows(8))
    cfg.write_text(f"task: classification\nmodel: {tiny_bert}\ndata: {{train: {data}, validation_split: 0}}\n"
                   f"method:\n  name: lora\n  target_modules: '{targets}'\noutput_dir: {tmp_path / 'run'}\n"
                   "train: {max_steps: 1, report: false}\n", encoding="utf-8")
    res = runner.invoke(app, ["train", str(cfg)])
    line = res.output.strip()
    assert res.exit_code == 2 and "\n" not in line and said in line, res.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("targets", "said"), [
    # a misspelt name beside a good one was dropped silently by peft (the adapter held `query` only)
    ("[query, valeu]", "note: method.target_modules: no module of the model is named valeu; LoRA adapts query"),
    # a regular expression inside a list is a name to peft: it matched nothing, silently
    (r"[query, '.*\.value']", r"note: method.target_modules: no module of the model is named .*\.value (in a list it "
                               "is a name to peft, not a regular expression: write the regular expression as the "
                               "whole value); LoRA adapts query"),
])
def test_a_list_entry_that_names_nothing_is_said(targets: str, said: str, tiny_bert: Path, tmp_path: Path) -> None:
    """Said, not refused: a run an older tunelab trained with such a list resumes and reports."""
    res = _train(tmp_path, tiny_bert, "classification", targets)
    assert res.exit_code == 0 and said in res.stderr.splitlines(), res.output
