"""`tunelab config import`: a LLaMA-Factory training YAML and its dataset_info.json registry as a tunelab config that
`tunelab train` runs; every key carried as tunelab's or said as not carried, bad input one line (exit 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import WORDS, sentiment_rows, write_jsonl
from tunelab.cli import app

REGISTRY = {
    # alpaca rows in other columns than instruction / output: read through a prompt template
    "qa": {"file_name": "qa.json", "columns": {"prompt": "question", "response": "answer", "system": "system"}},
    # sharegpt entry of OpenAI-style turns (LLaMA-Factory's own example of custom tags)
    "chat": {"file_name": "chat.jsonl", "formatting": "sharegpt", "num_samples": 4,
             "columns": {"messages": "messages", "system": "system"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                      "system_tag": "system"}},
    "usr": {"file_name": "chat.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "usr", "assistant_tag": "assistant"}},
    "hub": {"hf_hub_url": "someone/nowhere"},
    "gone": {"file_name": "gone.json"},
    "alp": {"file_name": "alp.json"},  # (alpaca, LLaMA-Factory's default columns)
    "dir": {"file_name": "parts"},  # (a folder of JSON files: LLaMA-Factory reads them together)
    "hubdir": {"hf_hub_url": "someone/nowhere", "folder": "en"},
}


def _lf_yaml(folder: Path, model: Path, **more: object) -> Path:
    keys = {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
            "lora_rank": 4, "lora_target": "all", "dataset": "qa", "dataset_dir": str(folder / "data"),
            "template": "qwen", "cutoff_len": 64, "max_samples": 100, "val_size": 0.25,
            "output_dir": str(folder / "run"), "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "learning_rate": 1.0e-3, "num_train_epochs": 1.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
            "logging_steps": 1, "save_steps": 500, "plot_loss": True, "overwrite_output_dir": True,
            "report_to": "none", "ddp_timeout": 180000000, "resume_from_checkpoint": None, "some_new_key": 1, **more}
    path = folder / "qwen_lora_sft.yaml"
    path.write_text(yaml.safe_dump(keys, sort_keys=False), encoding="utf-8")
    return path


def _refused_at_its_line(lf: Path, model: Path, key: str, value: object, why: str, **more: object) -> None:
    """A LLaMA-Factory file with `key: value` imported: exit 2 and one line at that key's line, nothing written."""
    src = _lf_yaml(lf, model, **{key: value}, **more)
    line = src.read_text(encoding="utf-8").splitlines().index(f"{key}: {yaml.safe_dump(value).split(chr(10))[0]}") + 1
    res = _import(str(src), "-o", str(lf / "refused.yaml"))
    assert (res.exit_code, res.stderr) == (2, f"error: {src}:{line}: {key}: {why}\n"), key
    assert not (lf / "refused.yaml").exists()


@pytest.fixture()
def lf(tmp_path: Path) -> Path:
    """A LLaMA-Factory data folder: dataset_info.json, alpaca rows (JSON array) and sharegpt rows (JSONL)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps(REGISTRY, indent=2), encoding="utf-8")
    rows = [{"question": f"say {w}", "answer": w, "system": "be brief"} for w in WORDS[:8]]
    (data / "qa.json").write_text(json.dumps(rows), encoding="utf-8")
    (data / "parts").mkdir()
    (data / "parts" / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    write_jsonl(data / "chat.jsonl", [{"system": "be brief", "messages": [
        {"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": w}]} for w in WORDS[:8]])
    return tmp_path


def _import(*args: str) -> object:
    return CliRunner().invoke(app, ["config", "import", *args])


@pytest.mark.parametrize(("dataset", "task"), [
    ("qa", {"name": "sft", "prompt_template": "{question}", "response_field": "answer"}),
    ("chat", {"name": "sft", "format": "messages"}),
])
def test_import_then_train(lf: Path, tiny_llama: Path, dataset: str, task: dict) -> None:
    src = _lf_yaml(lf, tiny_llama, dataset=dataset)
    out = lf / "run.yaml"
    res = _import(str(src), "--output", str(out))
    assert res.exit_code == 0, res.output
    written = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert written == {
        "task": task, "model": str(tiny_llama),
        "method": {"name": "lora", "r": 4, "target_modules": "all-linear", "alpha": 8, "dropout": 0.0},
        "output_dir": str(lf / "run"),
        # (LLaMA-Factory cuts the prompt and the reply in proportion: head+tail, which cuts the prompt's middle; before:
        # not written, and a row whose long prompt pushed the reply past max_length was refused)
        "data": {"max_length": 64, "validation_split": 0.25, "truncation": "head+tail",
                 "train": str(lf / "data" / REGISTRY[dataset]["file_name"])},
        "train": {"batch_size": 2, "grad_accum": 1, "lr": 1.0e-3, "epochs": 1.0, "scheduler": "cosine",
                  "warmup": 0.1, "log_steps": 1, "save_steps": 500, "gradient_checkpointing": True},
    }
    said = res.stderr.splitlines()
    assert said[:-1] == [
        "not carried: do_train (tunelab train trains)",
        "not carried: template (tunelab renders with the model's own chat template; task.template chatml or gemma "
        "for a model without one)",
        "not carried: max_samples (tunelab trains on every row of data.train: cut the file to train on fewer)",
        "not carried: plot_loss (RUN/report.html draws the loss curve)",
        "not carried: overwrite_output_dir (the --overwrite option of tunelab train)",
        "not carried: ddp_timeout (no tunelab setting)",
        "not carried: some_new_key (a key tunelab does not read: the run trains without it)",
        # (LLaMA-Factory checkpoints unless told not to; before: not carried, "no tunelab setting")
        "not set: disable_gradient_checkpointing (LLaMA-Factory's default, false: it checkpoints; written: "
        "train.gradient_checkpointing true)",
        *(["not carried: chat.num_samples (tunelab trains on every row of the file: cut the file to train on "
           "fewer)"] if dataset == "chat" else []),
    ]
    assert said[-1] == (f"config import: wrote {out}; check its data with: tunelab data check --config {out}; "
                        f"run it with: tunelab train {out}")
    res = CliRunner().invoke(app, ["train", str(out), "--set", "train.max_steps=2", "--set", "train.precision=fp32",
                                   "--set", "train.report=false"])
    assert res.exit_code == 0, res.output
    assert (lf / "run" / "model").is_dir()


@pytest.mark.parametrize(("change", "error"), [
    ({"dataset": "nosuch"}, "{src}:7: dataset: 'nosuch' is not registered in {info} (it has: qa, chat, usr, hub, "
     "gone, alp, dir, hubdir)"),
    # a Chinese input method's comma between the names (before: 'qa，chat' is not registered, it has: qa, chat, ...)
    ({"dataset": "qa，chat"}, "{src}:7: dataset: 'qa，chat': a full-width '，' (a Chinese input method's) between "
     "dataset names; separate them with ',': qa,chat"),
    ({"dataset": "qa,chat", "mix_strategy": "interleave_under"}, "{src}:28: mix_strategy: interleave_under: not "
     "carried: tunelab joins the datasets one after another, every row once (concat, LLaMA-Factory's default), and "
     "shuffles them as it trains; drop the key, or join the rows yourself and register the file"),
    ({"dataset": "chat,hub"}, "{info}:40: hub.hf_hub_url: someone/nowhere: offline (HF_HUB_OFFLINE), and datasets' "
     "cache has no copy: load it once online, or save it as a file and register it as file_name"),
    ({"dataset": "hub"}, "{info}:40: hub.hf_hub_url: someone/nowhere: offline (HF_HUB_OFFLINE), and datasets' cache "
     "has no copy: load it once online, or save it as a file and register it as file_name"),
    ({"dataset": "gone"}, "{info}:43: gone.file_name: {data}/gone.json not found"),
    ({"dataset": "usr"}, "{info}:35: usr.tags.user_tag: 'usr': tunelab reads a user turn named user or human; rename "
     "the role in the file"),
    ({"lr_scheduler_type": "cosine_with_min_lr"}, "{src}:18: lr_scheduler_type: Input should be 'linear', 'cosine', "
     "'constant', 'constant_with_warmup', 'polynomial' or 'reduce_on_plateau' (got 'cosine_with_min_lr') "
     "(tunelab's train.scheduler)"),
    ({"stage": "dpo"}, "{src}:2: stage: dpo: not carried: tunelab imports stage pt, sft"),
    ({"val_size": 100}, "{src}:12: val_size: 100 rows: tunelab holds out a fraction of data.train "
     "(data.validation_split, below 1); write the fraction, or register the rows as eval_dataset"),
    # LLaMA-Factory's -1: the FIRST layer trains (before: dropped, tunelab's top 2 trained)
    ({"finetuning_type": "freeze", "freeze_trainable_layers": -1}, "{src}:28: freeze_trainable_layers: -1: "
     "LLaMA-Factory trains the first 1 layers (a count below 0); tunelab's freeze trains the top method.k layers (and "
     "the head) only; write a count above 0"),
    ({"quantization_bit": 8}, "{src}:28: quantization_bit: 8: tunelab's qlora quantizes to 4 bits (NF4) only; write "
     "4, or drop it for LoRA on the unquantized model"),
    ({"finetuning_type": "full", "quantization_bit": 4}, "{src}:28: quantization_bit: 4 with finetuning_type full: "
     "tunelab quantizes the base model of LoRA only (method qlora); drop quantization_bit, or use finetuning_type "
     "lora"),
    ({"use_dora": True, "quantization_bit": 4}, "{src}:28: use_dora: with quantization_bit: tunelab's dora does not "
     "quantize the base model, and its qlora is LoRA; drop one"),
    # (before: imported, and tunelab train failed: a folder without data)
    ({"dataset": "dir"}, "{info}:49: dir.file_name: {data}/parts: a folder of data files, which LLaMA-Factory reads "
     "together: tunelab reads a folder of .parquet / .arrow files or a datasets save_to_disk folder; join the files "
     "into one (JSONL) and register it"),
    ({"dataset": "hubdir"}, "{info}:53: hubdir.folder: not carried: tunelab reads a hub dataset's default "
     "configuration, whole; save the folder as a file and register it as file_name"),  # (before: silently ignored)
])
def test_bad_input_is_one_line(lf: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, change: dict,
                               error: str) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(lf / "cache"))  # (nothing cached)
    src = _lf_yaml(lf, tiny_llama, **change)
    out = lf / "run.yaml"
    res = _import(str(src), "-o", str(out))
    info, data = lf / "data" / "dataset_info.json", lf / "data"
    assert (res.exit_code, res.stderr) == (2, "error: " + error.format(src=src, info=info, data=data) + "\n")
    assert not out.exists()


def test_not_yaml_and_no_overwrite(lf: Path, tiny_llama: Path) -> None:
    bad = lf / "bad.yaml"
    bad.write_text("model_name_or_path: x\ndataset: [qa\n", encoding="utf-8")
    res = _import(str(bad))
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {bad}:3: invalid YAML: "), res.output
    src = _lf_yaml(lf, tiny_llama)
    out = lf / "run.yaml"
    out.write_text("mine\n", encoding="utf-8")
    res = _import(str(src), "-o", str(out))
    assert (res.exit_code, res.stderr) == (2, f"error: --output: {out} exists; pass --overwrite to replace it, or "
                                              "name another\n")
    assert out.read_text(encoding="utf-8") == "mine\n"
    assert _import(str(src), "-o", str(out), "--overwrite").exit_code == 0
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["task"]["response_field"] == "answer"


def test_eval_dataset_and_hf_trainer_json(lf: Path, tiny_llama: Path) -> None:
    """eval_dataset → data.validation (rows of another format: each row's format detected); an HF TrainingArguments
    JSON is read by the same table, LLaMA-Factory's defaults said as taken."""
    (lf / "data" / "alp.json").write_text(json.dumps([{"instruction": "say a", "output": "a"}]), encoding="utf-8")
    src = _lf_yaml(lf, tiny_llama, dataset="chat", eval_dataset="alp", finetuning_type="full")
    res = _import(str(src), "-o", str(lf / "a.yaml"))
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((lf / "a.yaml").read_text(encoding="utf-8"))
    assert (written["task"], written["method"]) == ({"name": "sft"}, {"name": "full"})  # (task.format auto)
    assert written["data"]["validation"] == str(lf / "data" / "alp.json")
    assert "not carried: lora_rank (a LoRA setting; method full)" in res.stderr.splitlines()
    src = _lf_yaml(lf, tiny_llama, dataset="qa", eval_dataset="chat")  # a prompt template reads no chat rows
    res = _import(str(src), "-o", str(lf / "b.yaml"))
    assert (res.exit_code, res.stderr) == (2, f"error: {src}:28: eval_dataset: chat: read with task.format: messages, "
                                              "the dataset with task.prompt_template: {question}, "
                                              "task.response_field: answer: tunelab reads data.train and "
                                              "data.validation alike\n")
    hf = lf / "args.json"
    hf.write_text(json.dumps({"model_name_or_path": str(tiny_llama), "train_file": "t.jsonl", "learning_rate": 2e-5,
                              "fp16": True, "optim": "adamw_torch", "seed": 7, "gradient_checkpointing": True}))
    res = _import(str(hf), "--task", "sft")
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((lf / "args.tunelab.yaml").read_text(encoding="utf-8"))
    assert (written["task"], written["method"]) == ({"name": "sft"}, {"name": "full"})  # (HF's Trainer: every weight)
    # (HF's Trainer has no cutoff_len: tunelab's max_length; the file's train_file named by its absolute path, read
    # from the folder import ran in; no validation named: every row trains, as HF's Trainer trains them)
    assert written["data"] == {"train": os.path.abspath("t.jsonl"), "validation_split": 0.0}
    assert "not set: a validation file (every row trains" in res.stderr
    assert written["train"] == {"lr": 2e-5, "precision": "fp16", "optimizer": "adamw", "seed": 7,
                                "gradient_checkpointing": True, "batch_size": 8}  # (before: not carried)
    assert res.stderr.splitlines()[0] == "not set: method (HF's Trainer trains every weight, written: method full)"


def test_several_datasets_joined_then_train(lf: Path, tiny_llama: Path) -> None:
    """`dataset: chat,qa` (LLaMA-Factory's own examples name several): their rows in one JSONL file beside the config,
    in order, each as a `messages` row read as its dataset's entry says (sharegpt turns as written, with their system
    column; alpaca rows of custom columns, and history, as the turns tunelab reads), every row counted; then trained.
    Before, import refused several datasets."""
    (lf / "data" / "alp.json").write_text(json.dumps([{"instruction": "say a", "input": "now", "output": "a",
                                                       "history": [["hi", "hello"]]}]), encoding="utf-8")
    src = _lf_yaml(lf, tiny_llama, dataset="chat,qa", eval_dataset="alp, qa", val_size=None)
    out = lf / "run.yaml"
    res = _import(str(src), "-o", str(out))
    assert res.exit_code == 0, res.output
    train, val = lf / "run.train.jsonl", lf / "run.validation.jsonl"
    written = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert written["task"] == {"name": "sft"}  # (before: format messages, so eval refused the alpaca file below)
    assert written["data"] == {"max_length": 64, "train": str(train), "validation": str(val), "truncation": "head+tail"}
    chat = [json.loads(line) for line in (lf / "data" / "chat.jsonl").read_text(encoding="utf-8").splitlines()]
    qa = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"say {w}"},
                        {"role": "assistant", "content": w}]} for w in WORDS[:8]]
    assert [json.loads(line) for line in train.read_text(encoding="utf-8").splitlines()] == chat + qa
    alp = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "say a\n\nnow"}, {"role": "assistant", "content": "a"}]}
    assert [json.loads(line) for line in val.read_text(encoding="utf-8").splitlines()] == [alp, *qa]
    assert res.stderr.splitlines()[-3:] == [f"config import: wrote {train}: 16 rows (chat 8, qa 8)",
                                            f"config import: wrote {val}: 9 rows (alp 1, qa 8)",
                                            f"config import: wrote {out}; check its data with: tunelab data check "
                                            f"--config {out}; run it with: tunelab train {out}"]
    checked = CliRunner().invoke(app, ["data", "check", "--config", str(out), "--json"])  # as the line says
    assert checked.exit_code == 0, checked.output
    assert list(json.loads(checked.stdout)["files"]) == [str(train), str(val)]
    res = CliRunner().invoke(app, ["train", str(out), "--set", "train.max_steps=2", "--set", "train.precision=fp32",
                                   "--set", "train.report=false"])
    assert res.exit_code == 0, res.output
    assert (lf / "run" / "model").is_dir()
    # a file written as one of the joined datasets is (alpaca): before, `messages: missing field`
    res = CliRunner().invoke(app, ["eval", str(lf / "run" / "model"), "--data", str(lf / "data" / "alp.json"),
                                   "--no-generate"])
    assert res.exit_code == 0, res.output


def test_a_bad_row_of_several_writes_nothing(lf: Path, tiny_llama: Path) -> None:
    """A bad row of one of several datasets: one line naming its own file, row and field; nothing written (no config,
    no joined file, no temp file); an existing joined file is kept unless --overwrite."""
    rows = [{"question": "say a", "answer": "a"}, {"question": "say b"}]
    (lf / "data" / "qa.json").write_text(json.dumps(rows), encoding="utf-8")
    src = _lf_yaml(lf, tiny_llama, dataset="chat,qa")
    out = lf / "run.yaml"
    before = sorted(lf.iterdir())
    res = _import(str(src), "-o", str(out))
    assert (res.exit_code, res.stderr) == (2, f"error: {lf / 'data' / 'qa.json'}:1 (row 2): answer: missing field "
                                              "(the row has: question)\n")
    assert sorted(lf.iterdir()) == before
    (lf / "data" / "qa.json").write_text(json.dumps(rows[:1]), encoding="utf-8")
    (lf / "run.train.jsonl").write_text("mine\n", encoding="utf-8")
    res = _import(str(src), "-o", str(out))
    assert (res.exit_code, res.stderr) == (2, f"error: --output: {lf / 'run.train.jsonl'} exists; pass --overwrite to "
                                              "replace it\n")
    assert (lf / "run.train.jsonl").read_text(encoding="utf-8") == "mine\n" and not out.exists()
    res = _import(str(src), "-o", str(out), "--overwrite")
    assert res.exit_code == 0, res.output
    assert len((lf / "run.train.jsonl").read_text(encoding="utf-8").splitlines()) == 9


def _written(lf: Path, src: Path, name: str) -> tuple[dict, list[str]]:
    res = _import(str(src), "-o", str(lf / name))
    assert res.exit_code == 0, res.output
    return yaml.safe_load((lf / name).read_text(encoding="utf-8")), res.stderr.splitlines()


def test_warmup_ratio_of_every_step(lf: Path, tiny_llama: Path) -> None:
    """warmup_ratio 1.0 (every step warms up) had been written as train.warmup 1.0, which tunelab reads as ONE warmup
    step: it is max_steps where the file gives it, else refused in one line naming the key's line (a ratio above 1
    too, as HF refuses it); nothing is written then."""
    written, said = _written(lf, _lf_yaml(lf, tiny_llama, warmup_ratio=1.0, max_steps=40), "a.yaml")
    assert written["train"]["warmup"] == 40 and written["train"]["max_steps"] == 40
    assert ("note: warmup_ratio 1.0 (every step warms up) written as train.warmup 40, max_steps (tunelab reads a "
            "warmup of 1 and above as a step count)") in said
    for ratio, why in [(1.0, "every step warms up, and tunelab's train.warmup reads 1 and above as a step count "
                              "(1.0: one step); the file gives no max_steps to count them by: set max_steps, or "
                              "write warmup_ratio below 1"),
                       (1.5, "a fraction of the training steps, 0 to 1 (HF's Trainer refuses it too)")]:
        src = _lf_yaml(lf, tiny_llama, warmup_ratio=ratio)
        line = src.read_text(encoding="utf-8").splitlines().index(f"warmup_ratio: {ratio}") + 1
        res = _import(str(src), "-o", str(lf / "b.yaml"))
        assert res.exit_code == 2 and res.stderr == f"error: {src}:{line}: warmup_ratio: {ratio}: {why}\n", res.output
        assert not (lf / "b.yaml").exists()
    assert _written(lf, _lf_yaml(lf, tiny_llama, warmup_ratio=0.5), "c.yaml")[0]["train"]["warmup"] == 0.5


def test_warmup_ratio_of_every_step_with_a_float_max_steps(lf: Path, tiny_llama: Path) -> None:
    """max_steps 10.0 (a whole number written as a float) counts 10 steps, beside warmup_ratio 1.0 too (before: "the
    file gives no max_steps"); 10.5 is refused at its line as not a whole number."""
    written, said = _written(lf, _lf_yaml(lf, tiny_llama, warmup_ratio=1.0, max_steps=10.0), "a.yaml")
    assert written["train"]["warmup"] == 10 and written["train"]["max_steps"] == 10
    src = _lf_yaml(lf, tiny_llama, warmup_ratio=1.0, max_steps=10.5)
    line = src.read_text(encoding="utf-8").splitlines().index("max_steps: 10.5") + 1
    res = _import(str(src), "-o", str(lf / "b.yaml"))
    assert (res.exit_code, res.stderr) == (2, f"error: {src}:{line}: max_steps: 10.5 is not a whole number (a count of "
                                              "optimizer steps)\n"), res.output
    assert not (lf / "b.yaml").exists()


def test_method_keys_as_llama_factory_reads_them(lf: Path, tiny_llama: Path) -> None:
    """freeze_trainable_layers → method.k (before: said as a LoRA setting and dropped, k=2 trained); beside LoRA it is
    said as not carried (before: refused as an unknown key); quantization_bit 4 → qlora on a machine without a GPU
    (before: refused, naming no line)."""
    src = _lf_yaml(lf, tiny_llama, finetuning_type="freeze", freeze_trainable_layers=1, freeze_trainable_modules="all")
    written, said = _written(lf, src, "a.yaml")
    assert written["method"] == {"name": "freeze", "k": 1}
    assert "not carried: lora_rank (a LoRA setting; method freeze)" in said
    assert ("not carried: freeze_trainable_modules (tunelab's freeze trains every module of the top method.k "
            "layers)") in said
    written, said = _written(lf, _lf_yaml(lf, tiny_llama, freeze_trainable_layers=1), "b.yaml")
    assert written["method"]["name"] == "lora" and "k" not in written["method"]
    assert "not carried: freeze_trainable_layers (a freeze setting; method lora)" in said
    written, said = _written(lf, _lf_yaml(lf, tiny_llama, quantization_bit=4, quantization_method="bnb"), "c.yaml")
    assert written["method"]["name"] == "qlora"
    assert "note: method qlora trains on a CUDA GPU with bitsandbytes only (pip install 'tunelab[qlora]')" in said
    assert "not carried: quantization_method (tunelab's qlora quantizes with bitsandbytes, 4-bit NF4)" in said


def test_train_keys_as_hf_reads_them(lf: Path, tiny_llama: Path) -> None:
    """HF's rules: warmup_steps above 0 wins over warmup_ratio (before: the last written won, warmup 0); an empty
    fsdp / deepspeed is not set (before: fsdp turned on); packing kept beside the task (before: dropped); per device
    batch said where the config is for several GPUs; LLaMA-Factory's defaults written where tunelab's differ."""
    src = _lf_yaml(lf, tiny_llama, warmup_steps=0, fsdp=[], deepspeed="", packing=True, max_steps=-1)
    written, said = _written(lf, src, "a.yaml")
    assert written["train"]["warmup"] == 0.1 and "distributed" not in written["train"]
    assert "max_steps" not in written["train"]
    assert written["task"] == {"name": "sft", "prompt_template": "{question}", "response_field": "answer",
                               "packing": True}
    src = _lf_yaml(lf, tiny_llama, warmup_steps=5, fsdp="full_shard auto_wrap")
    written, said = _written(lf, src, "b.yaml")
    assert written["train"]["warmup"] == 5 and written["train"]["distributed"] == {"strategy": "fsdp"}
    assert ("note: per_device_train_batch_size 2 is per GPU; tunelab's train.batch_size is over all processes: "
            "multiply it by the number of GPUs") in said
    keys = yaml.safe_load(src.read_text(encoding="utf-8"))
    for key in ("cutoff_len", "learning_rate", "per_device_train_batch_size", "num_train_epochs"):
        del keys[key]
    src.write_text(yaml.safe_dump(keys), encoding="utf-8")
    written, said = _written(lf, src, "c.yaml")
    assert (written["data"]["max_length"], written["train"]["lr"], written["train"]["batch_size"]) == (2048, 5e-5, 8)
    assert "epochs" not in written["train"]  # (HF's 3, tunelab's too)
    assert "not set: cutoff_len (LLaMA-Factory's default, 2048, written: data.max_length 2048)" in said
    # an HF Trainer argument with no tunelab setting is said as one (was: "not a LLaMA-Factory or HF Trainer key
    # tunelab knows", false of torch_compile, which changes training)
    src = _lf_yaml(lf, tiny_llama, torch_compile=True)
    written, said = _written(lf, src, "d.yaml")
    assert "not carried: torch_compile (an HF Trainer argument tunelab has no setting for: the run trains without " \
        "it)" in said


def test_gradient_checkpointing_as_each_tool_reads_it(lf: Path, tiny_llama: Path) -> None:
    """LLaMA-Factory checkpoints unless `disable_gradient_checkpointing: true` (written as the opposite; absent: its
    default, said), and HF's `gradient_checkpointing: true` turns it on under it all the same; an HF Trainer file
    carries `gradient_checkpointing` as it is. Before: `not carried: gradient_checkpointing (no tunelab setting)`,
    and a LLaMA-Factory run trained without it. A value that is not true / false: one line at its key."""
    note = ("not set: disable_gradient_checkpointing (LLaMA-Factory's default, false: it checkpoints{}; written: "
            "train.gradient_checkpointing true)")
    for more, on, said_too in (
            ({}, True, note.format("")),
            ({"disable_gradient_checkpointing": False}, True, None),
            ({"disable_gradient_checkpointing": True}, False, None),
            ({"gradient_checkpointing": False}, True, note.format(" whatever gradient_checkpointing: false says")),
            ({"disable_gradient_checkpointing": True, "gradient_checkpointing": True}, True,
             "not carried: disable_gradient_checkpointing (gradient_checkpointing: true turns checkpointing on in "
             "HF's Trainer under LLaMA-Factory)")):
        written, said = _written(lf, _lf_yaml(lf, tiny_llama, **more), f"a{len(said_too or '')}{on}.yaml")
        assert written["train"]["gradient_checkpointing"] is on, more
        assert [x for x in said[:-1] if "gradient_checkpointing" in x] == ([said_too] if said_too else []), more
    for value in (True, False):  # (an HF Trainer file: no LLaMA-Factory key)
        src = lf / "args.yaml"
        src.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_llama), "gradient_checkpointing": value}),
                       encoding="utf-8")
        res = _import(str(src), "--task", "sft", "-o", str(lf / f"b{value}.yaml"))
        assert res.exit_code == 0, res.output
        written = yaml.safe_load((lf / f"b{value}.yaml").read_text(encoding="utf-8"))
        assert written["train"]["gradient_checkpointing"] is value
        assert not [x for x in res.stderr.splitlines()[:-1] if "gradient_checkpointing" in x]
    src = _lf_yaml(lf, tiny_llama, disable_gradient_checkpointing="yes")
    res = _import(str(src), "-o", str(lf / "c.yaml"))
    assert (res.exit_code, res.stderr) == (2, f"error: {src}:28: disable_gradient_checkpointing: 'yes': true or "
                                              "false\n")
    assert not (lf / "c.yaml").exists()


def test_adamw_betas_and_epsilon_are_carried(lf: Path, tiny_llama: Path) -> None:
    """adam_beta1 / adam_beta2 / adam_epsilon → train.adam_* (before: `not carried: adam_beta2 (an HF Trainer argument
    tunelab has no setting for...)`: a recipe's beta2 0.95 trained at 0.999); beside optim sgd / adafactor, which HF's
    Trainer builds without them too, said as not carried; a beta of 1 or more one line at the file's key, nothing
    written."""
    written, said = _written(lf, _lf_yaml(lf, tiny_llama, adam_beta2=0.95, adam_epsilon=1e-6), "a.yaml")
    assert (written["train"]["adam_beta2"], written["train"]["adam_epsilon"]) == (0.95, 1e-6)
    assert "adam_beta1" not in written["train"] and not [line for line in said if "adam_" in line]
    written, said = _written(lf, _lf_yaml(lf, tiny_llama, optim="sgd", adam_beta1=0.8), "b.yaml")
    assert written["train"]["optimizer"] == "sgd" and "adam_beta1" not in written["train"]
    assert "not carried: adam_beta1 (AdamW's: optim sgd is tunelab's train.optimizer sgd, which does not read it, " \
        "nor does HF's Trainer)" in said
    _refused_at_its_line(lf, tiny_llama, "adam_beta2", 1.0,
                         "Input should be less than 1 (got 1.0) (tunelab's train.adam_beta2)")


def test_every_optim_of_hf_is_carried_or_refused(lf: Path, tiny_llama: Path) -> None:
    """Each `optim` transformers' OptimizerNames accepts is carried with its meaning, carried as AdamW with a line
    saying the state it keeps another way is not kept, or refused in one line. Before: an `adamw` prefix made
    adamw_8bit / adamw_bnb_8bit / adamw_torch_4bit adamw without a word, while paged_adamw_8bit / paged_adamw_32bit
    were refused as no tunelab optimizer."""
    from transformers.training_args import OptimizerNames

    from tunelab.config.peer_optim import SAME, STATE, other

    unread = [o.value for o in OptimizerNames if o.value not in SAME and o.value not in STATE and not other(o.value)]
    assert not unread  # (a name a newer transformers adds: give it a table)
    for optim, optimizer in (("adamw_torch_fused", "adamw"), ("adafactor", "adafactor"), ("adamw_8bit", "adamw"),
                             ("adamw_bnb_8bit", "adamw"), ("paged_adamw_8bit", "adamw"),
                             ("paged_adamw_32bit", "adamw"), ("paged_adamw", "adamw")):
        written, said = _written(lf, _lf_yaml(lf, tiny_llama, optim=optim), f"{optim}.yaml")
        assert written["train"]["optimizer"] == optimizer, optim
        notes = [line for line in said if line.startswith(f"note: optim {optim} ")]
        assert len(notes) == (optim in STATE), (optim, said)
        assert not notes or f"written as train.optimizer adamw (AdamW's update): its {STATE[optim]} are not kept" \
            in notes[0]
    for optim, said in (("lion_8bit", "Lion, not one of"), ("galore_adamw", "GaLore (gradients projected to a low "
                        "rank), not one of"), ("adamw", "not an optimizer of HF's Trainer (transformers' "
                        "OptimizerNames), nor one of")):
        src = _lf_yaml(lf, tiny_llama, optim=optim)
        line = src.read_text(encoding="utf-8").splitlines().index(f"optim: {optim}") + 1
        res = _import(str(src), "-o", str(lf / "b.yaml"))
        assert (res.exit_code, res.stderr) == (
            2, f"error: {src}:{line}: optim: {optim}: not carried: {said} tunelab's (train.optimizer adamw, adafactor "
            "or sgd; HF's adamw_torch*, adamw_8bit, adamw_bnb_8bit and paged_adamw_* are written as adamw); write one "
            "of them, or drop optim (AdamW)\n"), optim
        assert not (lf / "b.yaml").exists()


def test_llama_factorys_optimizer_switches_are_refused_when_on(lf: Path, tiny_llama: Path) -> None:
    """`use_galore: true` (LLaMA-Factory then trains with GaLore whatever `optim` says; use_apollo, use_badam,
    use_muon, use_adam_mini alike) imported as AdamW with only "a key tunelab does not read"; now refused as `optim:
    galore_adamw` is; false (LLaMA-Factory's default) imports."""
    for key, what in (("use_galore", "GaLore (gradients projected to a low rank)"), ("use_muon", "Muon"),
                      ("use_adam_mini", "Adam-mini")):
        _refused_at_its_line(lf, tiny_llama, key, True, f"true: not carried: LLaMA-Factory then trains with {what} "
                             "in place of AdamW, not one of tunelab's optimizers (train.optimizer adamw, adafactor or "
                             "sgd); drop it (AdamW)", optim="adamw_torch")
    written, said = _written(lf, _lf_yaml(lf, tiny_llama, use_galore=False, use_badam=False), "off.yaml")
    assert written["train"].get("optimizer", "adamw") == "adamw" and not [x for x in said if "use_" in x], said


def test_neftune_noise_alpha_is_carried(lf: Path, tiny_llama: Path) -> None:
    """LLaMA-Factory's and HF's `neftune_noise_alpha` → train.neftune_alpha (before: `not carried: neftune_noise_alpha
    (no tunelab setting ...)`, the run trained without the noise); a value below 0 is one line at the file's key."""
    written, said = _written(lf, _lf_yaml(lf, tiny_llama, neftune_noise_alpha=5), "a.yaml")
    assert written["train"]["neftune_alpha"] == 5 and not [x for x in said if x.startswith("not carried: neftune")]
    hf = lf / "args.json"
    hf.write_text(json.dumps({"model_name_or_path": str(tiny_llama), "neftune_noise_alpha": 10.0}), encoding="utf-8")
    res = _import(str(hf), "-o", str(lf / "b.yaml"), "--task", "sft", "--train", str(lf / "data" / "chat.jsonl"))
    assert res.exit_code == 0 and "not carried: neftune" not in res.stderr, res.output
    assert yaml.safe_load((lf / "b.yaml").read_text(encoding="utf-8"))["train"]["neftune_alpha"] == 10.0
    _refused_at_its_line(lf, tiny_llama, "neftune_noise_alpha", -1,
                         "Input should be greater than or equal to 0 (got -1) (tunelab's train.neftune_alpha)")


def test_a_real_training_arguments_dump(lf: Path, tiny_llama: Path) -> None:
    """What the installed transformers writes (`TrainingArguments(...).to_json_string()`), whatever keys it holds:
    imported, every key carried or said (before: `max_steps: -1`, HF's "not set", was refused)."""
    from transformers import TrainingArguments

    from tunelab.config.sections import TrainConfig
    from tunelab.config.suggest import PEER_NAMES

    keys = json.loads(TrainingArguments(output_dir=str(lf / "run")).to_json_string())
    keys |= {"model_name_or_path": str(tiny_llama), "dataset": "alp", "dataset_dir": str(lf / "data")}
    (lf / "data" / "alp.json").write_text(json.dumps([{"instruction": "say a", "output": "a"}]), encoding="utf-8")
    src = lf / "args.json"
    src.write_text(json.dumps(keys), encoding="utf-8")
    written, said = _written(lf, src, "a.yaml")
    assert written["data"]["train"] == str(lf / "data" / "alp.json")
    assert "max_steps" not in written["train"] and "distributed" not in written["train"]
    assert written["train"]["lr"] == keys["learning_rate"]
    for key, value in keys.items():
        unset = value is None or (key == "max_steps" and value <= 0) or (
            key in ("warmup_steps", "fsdp", "deepspeed", "report_to") and not value)  # (HF's "not set")
        if unset:
            continue
        carried = key in PEER_NAMES or key in TrainConfig.model_fields or key in ("dataset_dir", "output_dir")
        assert carried or any(line.startswith(f"not carried: {key} (") for line in said), key


def test_data_paths_are_absolute(lf: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dataset_dir relative to where import ran: data.train written absolute (before: relative, so tunelab train run
    from another folder did not find it)."""
    monkeypatch.chdir(lf)
    written, _ = _written(lf, _lf_yaml(lf, tiny_llama, dataset_dir="data"), "a.yaml")
    assert written["data"]["train"] == str(lf / "data" / "qa.json")


def test_joined_files_are_named_by_absolute_paths(lf: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o run.yaml`, relative: the joined file's path in the config was `run.train.jsonl`, read from wherever `tunelab
    train` then runs (its other data paths are absolute); it is absolute too."""
    src = _lf_yaml(lf, tiny_llama, dataset="chat,qa")
    monkeypatch.chdir(lf)
    res = _import(str(src), "-o", "rel.yaml")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((lf / "rel.yaml").read_text(encoding="utf-8"))["data"]["train"] == str(lf / "rel.train.jsonl")


PT_REGISTRY = {"c4": {"file_name": "c4.jsonl", "columns": {"prompt": "content"}},
               "wiki": {"file_name": "wiki.txt", "columns": {"prompt": "text"}},
               "qa": {"file_name": "c4.jsonl", "columns": {"prompt": "content", "query": "more"}}}


def test_stage_pt_import_then_train(tmp_path: Path, tiny_llama: Path) -> None:
    """LLaMA-Factory's `stage: pt` (before: refused, tunelab imported stage sft only): task pretrain, objective clm,
    the entry's text column (columns.prompt) as data.text_field, cutoff_len as data.max_length, packing said (tunelab's
    pretrain always packs); a .txt file a row a line as LLaMA-Factory reads it, several datasets joined as text rows;
    then trained."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps(PT_REGISTRY, indent=2), encoding="utf-8")
    write_jsonl(data / "c4.jsonl", [{"content": " ".join(WORDS[i:i + 6])} for i in range(8)])
    (data / "wiki.txt").write_text("alpha beta gamma\ndelta epsilon\n\nzeta eta\n", encoding="utf-8")
    keys = {"model_name_or_path": str(tiny_llama), "stage": "pt", "finetuning_type": "lora", "lora_target": "all",
            "dataset": "c4", "dataset_dir": str(data), "cutoff_len": 16, "output_dir": str(tmp_path / "run"),
            "per_device_train_batch_size": 2, "learning_rate": 1e-3, "packing": True}
    src = tmp_path / "pt.yaml"
    src.write_text(yaml.safe_dump(keys, sort_keys=False), encoding="utf-8")
    written, said = _written(tmp_path, src, "a.yaml")
    assert written["task"] == {"name": "pretrain", "objective": "clm"}
    assert written["data"] == {"max_length": 16, "train": str(data / "c4.jsonl"), "text_field": "content",
                               "validation_split": 0.0}
    assert said[0].startswith("not carried: packing (tunelab's pretrain always packs documents")
    src.write_text(yaml.safe_dump({**keys, "dataset": "wiki"}), encoding="utf-8")  # (a .txt: its lines, written)
    written, said = _written(tmp_path, src, "b.yaml")
    assert written["data"]["train"] == str(tmp_path / "b.train.jsonl")
    assert [json.loads(x) for x in (tmp_path / "b.train.jsonl").read_text(encoding="utf-8").splitlines()] == [
        {"text": "alpha beta gamma"}, {"text": "delta epsilon"}, {"text": "zeta eta"}]
    src.write_text(yaml.safe_dump({**keys, "dataset": "c4,wiki"}), encoding="utf-8")
    out = tmp_path / "c.yaml"
    written, said = _written(tmp_path, src, "c.yaml")
    assert (written["data"]["train"], written["data"]["text_field"]) == (str(tmp_path / "c.train.jsonl"), "text")
    assert f"config import: wrote {tmp_path / 'c.train.jsonl'}: 11 rows (c4 8, wiki 3)" in said
    res = CliRunner().invoke(app, ["train", str(out), "--set", "train.max_steps=2", "--set", "train.precision=fp32",
                                   "--set", "train.report=false"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "model").is_dir()
    src.write_text(yaml.safe_dump({**keys, "dataset": "qa"}), encoding="utf-8")  # (pt joins prompt and query)
    res = _import(str(src), "-o", str(tmp_path / "d.yaml"))
    assert res.exit_code == 2 and not (tmp_path / "d.yaml").exists()
    assert res.stderr == (f"error: {data / 'dataset_info.json'}:18: qa.columns.query: 'more' beside the text column "
                          "'content': tunelab's pretrain reads one text column (data.text_field); register the text "
                          "alone, columns: {prompt: content}, or join the columns into one in the file\n")


def test_training_arguments_take_task_and_files(tmp_path: Path, tiny_bert: Path) -> None:
    """An HF TrainingArguments file names no task (before: imported as LLaMA-Factory's default, sft with LoRA, and
    --task did not exist): without --task one line saying to pass it; with it, the task, --train as data.train (in
    place of train_file, said), run_ner's text_column_name / label_column_name as data.text_field / label_field, method
    full (HF's Trainer); a --task that contradicts a LLaMA-Factory stage is one line."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"sentence": s["text"], "y": s["label"]}
                                                   for s in sentiment_rows(16)])
    hf = tmp_path / "args.json"
    hf.write_text(json.dumps({"model_name_or_path": str(tiny_bert), "train_file": "elsewhere.csv",
                              "text_column_name": "sentence", "label_column_name": "y", "learning_rate": 1e-3,
                              "output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 4}), encoding="utf-8")
    res = _import(str(hf), "-o", str(tmp_path / "a.yaml"))
    assert (res.exit_code, res.stderr) == (2, f"error: {hf}: names no task (no LLaMA-Factory stage: HF "
                                              "TrainingArguments?): pass --task classification | ner | pretrain | qa "
                                              "| sft\n")
    assert not (tmp_path / "a.yaml").exists()
    res = _import(str(hf), "-o", str(tmp_path / "a.yaml"), "--task", "classification", "--train", str(train))
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((tmp_path / "a.yaml").read_text(encoding="utf-8"))
    assert (written["task"], written["method"]) == ({"name": "classification"}, {"name": "full"})
    assert written["data"] == {"train": str(train), "text_field": "sentence", "label_field": "y",
                               "validation_split": 0.0}
    assert f"not carried: train_file (--train {train} given)" in res.stderr.splitlines()
    res = CliRunner().invoke(app, ["train", str(tmp_path / "a.yaml"), "--set", "train.max_steps=2", "--set",
                                   "train.precision=fp32", "--set", "train.report=false"])
    assert res.exit_code == 0, res.output
    # run_ner.py's column keys are NER's word and tag lists (they were data.text_field / label_field, which train
    # refuses for ner); --task pretrain of run_mlm.py's arguments keeps objective auto (it wrote clm: a BERT refused)
    res = _import(str(hf), "-o", str(tmp_path / "n.yaml"), "--task", "ner", "--train", str(train))
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((tmp_path / "n.yaml").read_text(encoding="utf-8"))
    assert written["task"] == {"name": "ner", "tokens_field": "sentence", "tags_field": "y"}
    assert "text_field" not in written["data"] and "label_field" not in written["data"]
    mlm = tmp_path / "mlm.json"
    mlm.write_text(json.dumps({"model_name_or_path": str(tiny_bert), "mlm_probability": 0.2}), encoding="utf-8")
    res = _import(str(mlm), "-o", str(tmp_path / "m.yaml"), "--task", "pretrain", "--train", str(train))
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((tmp_path / "m.yaml").read_text(encoding="utf-8"))["task"] == {"name": "pretrain",
                                                                                       "mlm_probability": 0.2}
    lf = tmp_path / "lf.yaml"
    lf.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_bert), "stage": "pt"}), encoding="utf-8")
    res = _import(str(lf), "--task", "sft")
    assert (res.exit_code, res.stderr) == (2, f"error: {lf}:2: stage: pt is tunelab's task pretrain, and --task "
                                              "names sft: drop --task (the file's stage decides), or change stage\n")


TRAINS = "tunelab config import reads training configs (llamafactory-cli train FILE, or HF TrainingArguments)"


def test_training_arguments_with_do_predict_import(tmp_path: Path, tiny_bert: Path) -> None:
    """`do_predict: true` in an HF TrainingArguments dump is a flag for HF's example scripts: the file imports (was
    refused as a LLaMA-Factory prediction config); in a LLaMA-Factory file without `stage` it is still refused."""
    from transformers import TrainingArguments

    train = write_jsonl(tmp_path / "t.jsonl", sentiment_rows(8))
    keys = json.loads(TrainingArguments(output_dir=str(tmp_path / "run"), do_predict=True).to_json_string())
    hf = tmp_path / "args.json"
    hf.write_text(json.dumps({**keys, "model_name_or_path": str(tiny_bert)}), encoding="utf-8")
    res = _import(str(hf), "-o", str(tmp_path / "a.yaml"), "--task", "classification", "--train", str(train))
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((tmp_path / "a.yaml").read_text(encoding="utf-8"))["task"] == {"name": "classification"}
    lf = tmp_path / "predict.yaml"
    lf.write_text(f"model_name_or_path: {tiny_bert}\ntemplate: qwen3\ndo_predict: true\n", encoding="utf-8")
    res = _import(str(lf), "-o", str(tmp_path / "b.yaml"))
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {lf}:3: do_predict: true without do_train: a "
                                                        "prediction config (LLaMA-Factory predicts"), res.stderr
    assert not (tmp_path / "b.yaml").exists()


@pytest.mark.parametrize(("text", "error"), [
    # examples/accelerate/*.yaml (before: "names no task (HF TrainingArguments?): pass --task ...")
    ("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_processes: 2\n", "{src}:2: distributed_type: "
     "FSDP: an accelerate config (accelerate launch --config_file FILE), not a training config: tunelab "
     "train --nproc N starts the processes itself, with train.distributed: {{strategy: ddp | fsdp | deepspeed}} in "
     "the run config; import the training YAML it launches"),
    # examples/inference/*.yaml (before: imported as an sft run with no data, exit 0)
    ("model_name_or_path: org/name\ntemplate: qwen3\ninfer_backend: huggingface\n", "{src}:3: infer_backend: "
     "huggingface: a chat config (llamafactory-cli chat / api / webchat), not a training config; " + TRAINS
     + "; tunelab chat RUN, tunelab serve RUN talk to a tuned model"),
    # examples/merge_lora/*.yaml (before: imported as an sft run with no data, exit 0)
    ("model_name_or_path: org/name\nadapter_name_or_path: saves/lora\ntemplate: qwen3\nexport_dir: merged\n",
     "{src}:4: export_dir: an export config (llamafactory-cli export: merges an adapter or quantizes the model), not "
     "a training config; " + TRAINS + "; tunelab export RUN --merge merges a tunelab run's adapter"),
    # examples/extras/nlg_eval/*_predict.yaml (before: imported as an sft run whose eval_dataset was its only data)
    ("model_name_or_path: org/name\nstage: sft\ndo_predict: true\neval_dataset: qa\n", "{src}:3: do_predict: true "
     "without do_train: a prediction config (LLaMA-Factory predicts eval_dataset and trains nothing), not a training "
     "config; " + TRAINS + "; tunelab predict RUN FILE generates a tuned model's replies, tunelab eval RUN FILE "
     "scores them"),
    # examples/v1/**.yaml (before: "model_name_or_path: missing", a key the file never names)
    ("model: org/name\nmodel_class: llm\npeft_config: {name: lora, r: 16}\ntrain_dataset: data/v1_sft_demo.yaml\n",
     "{src}:1: model: with train_dataset, peft_config, model_class: a LLaMA-Factory v1 config (USE_V1=1), which import "
     "does not read: it reads LLaMA-Factory's training YAMLs as llamafactory-cli train reads them without USE_V1 "
     "(model_name_or_path, stage, dataset of dataset_info.json, finetuning_type, ...)"),
    # examples/extras/multi_tokens/tokens_cfg.yaml (before: "names no task ... pass --task")
    ('"<|a|>": first\n"<|b|>": second\n', "{src}: none of its keys is a training setting (it has: <|a|>, <|b|>): not "
     "a training config; " + TRAINS + ": model_name_or_path, stage, dataset, learning_rate, ..."),
])
def test_a_file_that_trains_nothing_is_one_line(lf: Path, text: str, error: str) -> None:
    """LLaMA-Factory's examples/ holds accelerate, chat, export, prediction, v1 and token files beside its training
    YAMLs: each is one line naming the key that tells what it is and the tunelab command that does its work; nothing
    written."""
    src = lf / "other.yaml"
    src.write_text(text, encoding="utf-8")
    out = lf / "run.yaml"
    res = _import(str(src), "-o", str(out))
    assert (res.exit_code, res.stderr) == (2, "error: " + error.format(src=src) + "\n")
    assert not out.exists() and not (lf / "run.validation.jsonl").exists()
