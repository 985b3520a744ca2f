"""Encoder architectures users bring besides BERT / RoBERTa / DistilBERT, as tiny random models from their configs
(saved as their pretraining checkpoints are: a masked-LM or discriminator head, no task head): the head a task puts
on them trains whole under LoRA and is saved with the adapter, a head grows for new labels, and freezing says what
it does with shared layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import WORDS, _tokenizer, sentiment_rows, write_jsonl
from tunelab.cli import app

runner = CliRunner()
SMALL = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
         "max_position_embeddings": 64}


def tiny_encoder(arch: str, path: Path) -> Path:
    """A tiny random `arch` checkpoint at `path`, saved as its pretraining model (DeBERTa-v3's masked LM has no
    pooler; ModernBERT's has its `head`; ALBERT's layers share one set of weights)."""
    import transformers as tf

    torch.manual_seed(0)
    tok = _tokenizer(WORDS, bert=True)
    common = {**SMALL, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id}
    if arch == "deberta-v2":  # as DeBERTa-v3: relative attention, no token-type embeddings
        model = tf.DebertaV2ForMaskedLM(tf.DebertaV2Config(
            **common, relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"],
            position_biased_input=False, type_vocab_size=0, norm_rel_ebd="layer_norm", share_att_key=True))
    elif arch == "modernbert":
        model = tf.ModernBertForMaskedLM(tf.ModernBertConfig(
            **common, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id, local_attention=8))
        tok.model_input_names = ["input_ids", "attention_mask"]
    else:
        model = tf.AlbertForPreTraining(tf.AlbertConfig(**common, embedding_size=8))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _qa_rows() -> list[dict]:
    rows = []
    for i in range(8):
        words = [WORDS[(i + j) % 20] for j in range(6)]
        rows.append({"context": " ".join(words), "question": words[2],
                     "answers": {"text": [words[2]], "answer_start": [len(" ".join(words[:2])) + 1]}})
    return rows


@pytest.mark.parametrize(("arch", "task", "head"), [("deberta-v2", "classification", ["classifier", "pooler"]),
                                                   ("modernbert", "qa", ["classifier", "head"])])
def test_lora_trains_the_whole_task_head(arch: str, task: str, head: list[str], tmp_path: Path) -> None:
    """DeBERTa's classification head is `pooler` + `classifier` (the pooler is not in a pretrained checkpoint: new),
    ModernBERT's QA span head is `classifier` (not `qa_outputs`) after its `head`: all of it trains whole and is
    saved with the adapter. LoRA adapted them instead, over their random weights, which the adapter does not hold:
    `export --merge` (and a shared-base server) rebuilt other random weights (max |Δlogit| 0.013 and 2.7)."""
    from safetensors.torch import load_file

    model = tiny_encoder(arch, tmp_path / arch)
    rows = sentiment_rows(16) if task == "classification" else _qa_rows()
    run = tmp_path / "run"
    sets = [f"task={task}", f"model={model}", f"data.train={write_jsonl(tmp_path / 't.jsonl', rows)}",
            "data.validation_split=0", f"output_dir={run}", "method=lora", "method.r=2", "train.max_steps=2",
            "train.batch_size=8", "train.save_steps=0", "train.report=false"]
    res = runner.invoke(app, ["train", *(x for s in sets for x in ("--set", s))])
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert sorted(saved["modules_to_save"]) == head
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert not [k for k in weights if ".lora_" in k and any(f".{h}." in k for h in head)]
    res = runner.invoke(app, ["export", str(run), "--merge"])
    assert res.exit_code == 0, res.output


def test_a_head_after_a_dense_layer_grows_for_new_labels(tmp_path: Path) -> None:
    """A tuned DistilBERT classifier (pre_classifier + classifier) continued on data with a new label: the classifier
    grows by its row, the old rows and the pre_classifier kept (grow_head grew every head module: a torch
    RuntimeError on pre_classifier's 16 rows)."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from tunelab.config.run import build_config
    from tunelab.data.readers import Record, Table
    from tunelab.registry import TASKS

    tok = _tokenizer(WORDS, bert=True)
    tuned = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=len(tok), dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=64,
        pad_token_id=tok.pad_token_id, id2label={0: "negative", 1: "positive"}))
    tuned.save_pretrained(tmp_path / "tuned")
    tok.save_pretrained(tmp_path / "tuned")
    cfg = build_config({"task": "classification", "model": str(tmp_path / "tuned"), "output_dir": str(tmp_path)})
    task = TASKS.get("classification")(cfg.task, cfg.data)
    rows = sentiment_rows(9, labels=("negative", "positive", "neutral"))
    examples = task.parse(Table("t.jsonl", [Record("t.jsonl", i + 1, r) for i, r in enumerate(rows)]))
    model, _ = task.build_model(str(tmp_path / "tuned"), examples)
    assert task.labels == ["negative", "positive", "neutral"]
    assert torch.equal(model.pre_classifier.weight, tuned.pre_classifier.weight)
    assert model.classifier.out_features == 3
    assert torch.equal(model.classifier.weight[:2], tuned.classifier.weight)


def test_freezing_shared_layers_says_so_where_k_is_set(tmp_path: Path) -> None:
    """ALBERT runs one layer's weights num_hidden_layers times: freeze's default k=2 is refused naming the config's
    line and saying the layers share their weights (was `method.k: 2 is more than the model's 1 layers`, no file, no
    line, though the config says 2 layers); k=1 trains the shared layer, the embeddings stay frozen."""
    model = tiny_encoder("albert", tmp_path / "albert")
    train = write_jsonl(tmp_path / "t.jsonl", sentiment_rows(8))
    config = tmp_path / "run.yaml"
    config.write_text(f"task: classification\nmodel: {model}\ndata: {{train: {train}, validation_split: 0}}\n"
                      f"output_dir: {tmp_path / 'run'}\nmethod:\n  name: freeze\n"
                      "train: {max_steps: 1, batch_size: 8, save_steps: 0, report: false}\n", encoding="utf-8")
    res = runner.invoke(app, ["train", str(config)])
    assert res.exit_code == 2 and res.output.strip() == (
        f"error: {config}:5: method.k: 2 is more than the model's 1 layer of weights: its 2 layers share them "
        "(AlbertForSequenceClassification), so k=1 trains them all and k=0 the head only"), res.output
    assert not (tmp_path / "run").exists()
    res = runner.invoke(app, ["train", str(config), "--set", "method.k=1"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))["train"]["parameters"]
    assert 0 < summary["trainable"] < summary["total"]


def test_a_lora_run_of_the_old_head_set_resumes_as_it_trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DeBERTa LoRA run checkpointed while the task head was only `classifier` (its `pooler` LoRA-adapted, as
    tunelab trained it before the head became what the head class adds around its backbone) resumes with that head
    set, read from the checkpoint: it was refused, `--resume: ... does not match this model and method (not in the
    model: [...pooler.dense.lora_A...]; not in the checkpoint: [...pooler.modules_to_save...])`."""
    from safetensors.torch import load_file

    import tunelab.tasks.classification as classification

    model = tiny_encoder("deberta-v2", tmp_path / "deberta-v2")
    run = tmp_path / "run"
    rows = write_jsonl(tmp_path / "t.jsonl", sentiment_rows(16))
    sets = ["task=classification", f"model={model}", f"data.train={rows}", "data.validation_split=0",
            f"output_dir={run}", "method=lora", "method.r=2", "train.max_steps=2", "train.batch_size=8",
            "train.save_steps=1", "train.report=false"]
    with monkeypatch.context() as old:  # the head set of tunelab before (d8625ba): the head class's own names
        old.setattr(classification, "head_modules", lambda m: [n for n, _ in m.named_children() if n == "classifier"])
        res = runner.invoke(app, ["train", *(x for s in sets for x in ("--set", s))])
    assert res.exit_code == 0, res.output
    step = run / "checkpoints" / "step-00000001"
    assert any(".pooler.dense.lora_A." in k for k in load_file(step / "trainable.safetensors"))
    resumed = tmp_path / "resumed"
    res = runner.invoke(app, ["train", str(run / "config.yaml"), "--resume", str(step), "--set",
                              f"output_dir={resumed}"])
    assert res.exit_code == 0, res.output
    saved = json.loads((resumed / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert saved["modules_to_save"] == ["classifier"]
