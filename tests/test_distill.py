"""`tunelab distill TEACHER --student layers:...`: a one-layer student cut from a two-layer classification teacher
learns from the soft targets (with alpha = 1 it never sees a gold label), is a run like any other, and is reported
beside the teacher; the soft-target losses of NER and QA vanish only when student and teacher agree; bad input is
one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import THINKS, WORDS, say_rows, sentiment_rows, train_sentiment, write_jsonl
from tunelab.cli import app


@pytest.fixture(scope="module")
def teacher(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = train_sentiment(tiny_bert, tmp_path_factory.mktemp("distill") / "teacher")
    assert json.loads((out / "metrics.json").read_text())["validation"]["accuracy"] > 0.9
    return out


def test_a_student_cut_from_the_teacher(teacher: Path, tiny_bert: Path) -> None:
    out = teacher.with_name("student")
    res = CliRunner().invoke(app, ["distill", str(teacher), "--student", "layers:1", "--output", str(out),
                                   "--set", "train.epochs=2"])
    assert res.exit_code == 0, res.output
    assert res.stderr.strip().splitlines()[-1] == f"distill: student run {out} (model: {out / 'model'})"
    assert json.loads((out / "model" / "config.json").read_text())["num_hidden_layers"] == 1
    config = (out / "config.yaml").read_text()
    assert "model: layers:1" in config and "alpha: 0.5" in config and "temperature: 2.0" in config
    assert str(teacher) in config and "name: full" in config
    report = json.loads((out / "distill.json").read_text())
    t, s = report["rows"]
    assert (t["name"], s["name"]) == ("teacher", "student") and s["parameters"] < t["parameters"]
    assert s["agreement"] > 0.8 and s["batch32"]["rows_per_s"] > 0
    assert json.loads((out / "metrics.json").read_text())["validation"]["accuracy"] == s["metric"]
    card = (out / "model" / "README.md").read_text()  # the teacher's base, not the temp folder `layers:1`
    assert f"base_model: {tiny_bert}\n" in card and "layers:1" not in card.split("\n---\n")[0]
    assert f"Distilled from the teacher `{teacher}` (the student starts from its layers 1; temperature 2.0" in card


def test_a_cut_lora_student_merges(teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LoRA student cut from its teacher: its adapter's base (`layers:1`, a temp folder of its training) is cut
    from the teacher again, so `export --merge` writes the plain model — also from another folder than the one the
    student trained in, which its relative distill.teacher is relative to."""
    out = teacher.with_name("lora-student")
    monkeypatch.chdir(teacher.parent)
    args = ["distill", teacher.name, "--student", "layers:1", "--output", str(out), "--set", "method=lora", "--set",
            "method.r=4", "--set", "train.max_steps=3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    # the same command again replaces the student, as `train` a finished run of its config (it was refused: its
    # distill.json was "files that no tunelab run wrote")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "distill.json").read_text())["student"] == "layers:1"
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["export", str(out), "--merge", "--output", str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    assert f"into layers:1 of {teacher / 'model'}; max |Δlogit|" in res.stderr
    merged = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert merged["num_hidden_layers"] == 1
    from tunelab.serve.adapters import adapter_groups  # served: from its own merged RUN/model, no base shared

    assert adapter_groups([out, out]) == []


def test_a_student_learns_from_soft_targets_alone(teacher: Path, tiny_bert: Path) -> None:
    """alpha = 1: the gold labels weigh nothing; a student from the untrained base (same tokenizer) that ends up
    right learned it from the teacher's soft targets."""
    out = teacher.with_name("soft-only")
    res = CliRunner().invoke(app, ["distill", str(teacher), "--student", str(tiny_bert), "--alpha", "1", "--output",
                                   str(out), "--set", "train.epochs=6", "--set", "train.lr=5e-3", "--set",
                                   "train.baseline_eval=true"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    student = json.loads((out / "distill.json").read_text())["rows"][1]
    assert metrics["baseline"]["accuracy"] <= 0.6 < 0.85 < student["metric"], (metrics["baseline"], student)
    assert student["agreement"] > 0.85


def test_soft_target_losses_vanish_only_at_agreement(tiny_bert: Path) -> None:
    from types import SimpleNamespace

    from tunelab.config.sections import DataConfig
    from tunelab.tasks.ner import Ner, NerConfig
    from tunelab.tasks.qa import Qa, QaConfig

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=gen)
    labels = torch.tensor([[-100, 0, 1, -100, -100], [-100, 2, -100, -100, -100]])
    ner = Ner(NerConfig(name="ner"), DataConfig())
    same = ner.soft_target_loss(SimpleNamespace(logits=logits), SimpleNamespace(logits=logits.clone()),
                                {"labels": labels}, 2.0)
    other = logits.clone()
    other[0, 3, 0] += 5  # a position without a tag: ignored
    assert float(same) == pytest.approx(0, abs=1e-6)
    assert float(ner.soft_target_loss(SimpleNamespace(logits=logits), SimpleNamespace(logits=other),
                                      {"labels": labels}, 2.0)) == pytest.approx(0, abs=1e-6)
    other[0, 1, 0] += 5  # a tagged position: counted
    assert float(ner.soft_target_loss(SimpleNamespace(logits=logits), SimpleNamespace(logits=other),
                                      {"labels": labels}, 2.0)) > 0.01
    qa = Qa(QaConfig(name="qa"), DataConfig())
    start, end = torch.randn(2, 6, generator=gen), torch.randn(2, 6, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    s_out = SimpleNamespace(start_logits=start.requires_grad_(), end_logits=end)
    t_out = SimpleNamespace(start_logits=start.detach().clone(), end_logits=end.clone())
    t_out.start_logits[0, 5] += 9  # padding: ignored
    agreed = qa.soft_target_loss(s_out, t_out, {"attention_mask": mask}, 2.0).detach()
    assert float(agreed) == pytest.approx(0, abs=1e-5)
    t_out.end_logits[1, 5] += 3
    loss = qa.soft_target_loss(s_out, t_out, {"attention_mask": mask}, 2.0)
    assert float(loss) > 0.01
    loss.backward()
    assert s_out.start_logits.grad is not None


def test_bad_input_is_one_line(teacher: Path, tiny_llama: Path, tmp_path: Path) -> None:
    cases = [
        ([str(teacher), "--student", "layers:5"], "the teacher has 2 layers (0-1)"),
        ([str(teacher), "--student", "layers:a,b"], "expected layers:<i>,<j>,..."),
        ([str(tmp_path), "--student", "layers:0"], "not a finished run directory"),
        ([str(teacher), "--student", str(tiny_llama)], "have different vocabularies"),
    ]
    for args, words in cases:
        res = CliRunner().invoke(app, ["distill", *args, "--output", str(tmp_path / "s")])
        assert res.exit_code == 2, (args, res.output)
        assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1, (args, res.stderr)
        assert not (tmp_path / "s").exists()
    res = CliRunner().invoke(app, ["train", "--set", "task=classification", "--set", "model=layers:0", "--set",
                                   f"data.train={teacher.parent / 'train.jsonl'}"])
    assert res.exit_code == 2 and "needs a distill section" in res.stderr


def test_sft_token_level_distillation(tiny_chat_run: Path, tmp_path: Path) -> None:
    """A one-layer student of the tiny chat model on the teacher's reply-token distributions (JSD); the soft loss of
    a model against itself is 0 and against a changed copy is not."""
    import copy
    from functools import partial

    from tunelab.export.save import load_model

    out = tmp_path / "student"
    res = CliRunner().invoke(app, ["distill", str(tiny_chat_run), "--student", "layers:1", "--alpha", "0.8",
                                   "--output", str(out), "--set", "distill.loss=jsd", "--set", "train.epochs=2",
                                   "--set", "distill.temperature=3",
                                   "--set", "task.generation.eval_generate=false", "--set",
                                   "train.baseline_eval=false"])
    assert res.exit_code == 0, res.output
    assert "loss: jsd" in (out / "config.yaml").read_text()
    report = json.loads((out / "distill.json").read_text())  # what the student trained with, --set included
    assert (report["temperature"], report["alpha"], report["loss"]) == (3.0, 0.8, "jsd"), report
    teacher_row, student_row = report["rows"]
    assert teacher_row["metric_name"] == "loss" and student_row["positions"] > 0
    assert 0 <= student_row["agreement"] <= 1 and student_row["parameters"] < teacher_row["parameters"]

    task, model, tok = load_model(tiny_chat_run / "model")
    rows = [{"messages": [{"role": "user", "content": "say good"}, {"role": "assistant", "content": "good"}]}]
    from tunelab.data.readers import rows_table

    batch = partial(task.collate, pad_id=tok.pad_token_id)(task.encode(task.parse(rows_table(rows)), tok))
    same = task.distill_step(model, model, batch, None, 2.0, 1.0, "kl")
    assert float(same.detach()) == pytest.approx(0, abs=1e-6)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.get_output_embeddings().weight.mul_(3)
    assert float(task.distill_step(model, other, batch, None, 2.0, 1.0, "jsd").detach()) > 1e-4


def test_a_task_without_soft_targets_is_refused() -> None:
    from tunelab.config.sections import DataConfig
    from tunelab.errors import ConfigError
    from tunelab.registry import TASKS

    pretrain = TASKS.get("pretrain")
    with pytest.raises(ConfigError, match="task pretrain cannot be distilled yet"):
        pretrain(pretrain.Config(name="pretrain"), DataConfig()).check_distillable()


@pytest.mark.parametrize("kind", ["classification", "ner", "qa"])
def test_unlabelled_rows_count_in_the_soft_part_only(tiny_bert: Path, kind: str) -> None:
    """A batch mixing gold rows and `data.unlabeled` rows: the hard loss is the model's own loss on the gold rows
    alone, the soft loss reads every row, and a batch of unlabelled rows alone is alpha · soft."""
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    from tunelab.config.sections import DataConfig
    from tunelab.tasks.base import UNLABELED
    from tunelab.tasks.classification import Classification, ClassificationConfig
    from tunelab.tasks.ner import Ner, NerConfig
    from tunelab.tasks.qa import Qa, QaConfig

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 20, (4, 7), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "classification":
        task, auto, kw = Classification(ClassificationConfig(name=kind), DataConfig()), \
            AutoModelForSequenceClassification, {"num_labels": 2}
        batch["labels"] = torch.tensor([0, 1, 1, 0])
    elif kind == "ner":
        task, auto, kw = Ner(NerConfig(name=kind), DataConfig()), AutoModelForTokenClassification, {"num_labels": 3}
        batch["labels"] = torch.randint(0, 3, (4, 7), generator=gen).masked_fill(ids % 3 == 0, -100)
    else:
        task, auto, kw = Qa(QaConfig(name=kind), DataConfig()), AutoModelForQuestionAnswering, {}
        batch["start_positions"], batch["end_positions"] = torch.tensor([1, 2, 3, 4]), torch.tensor([2, 2, 5, 6])
    torch.manual_seed(1)
    kw["initializer_range"] = 0.5  # random heads of some weight: rows differ, student and teacher disagree
    student = auto.from_pretrained(str(tiny_bert), **kw).eval()
    teacher = auto.from_pretrained(str(tiny_bert), **kw).eval()
    rows = torch.tensor([False, True, False, True])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        hard = task.distill_step(student, teacher, {**batch, UNLABELED: rows}, None, 2.0, 0.0)
        gold_only = student(**{k: v[~rows] for k, v in batch.items()}).loss
        whole = student(**batch).loss
        soft = task.distill_step(student, teacher, {**batch, UNLABELED: rows}, None, 2.0, 1.0)
        expected = task.soft_target_loss(student(**inputs), teacher(**inputs), batch, 2.0)
        alone = task.distill_step(student, teacher, {**batch, UNLABELED: torch.ones(4, dtype=torch.bool)}, None,
                                  2.0, 0.5)
    assert float(hard) == pytest.approx(float(gold_only), rel=1e-5) and abs(float(whole) - float(hard)) > 1e-4
    assert float(soft) == pytest.approx(float(expected), rel=1e-5) and float(soft) > 1e-4
    assert float(alone) == pytest.approx(0.5 * float(expected), rel=1e-5)
    if kind == "classification":  # a custom hard loss (class weights) skips the unlabelled rows too
        from tunelab.tasks.losses import LossSpec, focal_loss, make_loss_fn

        weighted = make_loss_fn(LossSpec(False, [1.0, 3.0]))
        with torch.no_grad():
            hard = task.distill_step(student, teacher, {**batch, UNLABELED: rows}, weighted, 2.0, 0.0)
            logits = student(**{k: v[~rows] for k, v in inputs.items()}).logits
        assert float(hard) == pytest.approx(float(focal_loss(logits, batch["labels"][~rows],
                                                              weight=torch.tensor([1.0, 3.0]))), rel=1e-5)


def test_a_student_learns_from_unlabelled_rows(teacher: Path, tiny_bert: Path) -> None:
    """Four gold rows and the teacher's soft targets on 64 unlabelled texts: the student from the untrained base
    ends up right; the same run without the unlabelled rows does not."""
    data = teacher.parent
    few = write_jsonl(data / "few.jsonl", sentiment_rows(4, 7))
    texts = write_jsonl(data / "texts.jsonl", [{"text": r["text"]} for r in sentiment_rows(64, 8)])
    accuracy = {}
    for name, extra in (("with", ["--unlabeled", str(texts)]), ("without", [])):
        out = data / f"unlabelled-{name}"
        res = CliRunner().invoke(app, ["distill", str(teacher), "--student", str(tiny_bert), "--output", str(out),
                                       *extra, "--set", f"data.train={few}", "--set", "train.epochs=6",
                                       "--set", "train.lr=5e-3"])
        assert res.exit_code == 0, res.output
        accuracy[name] = json.loads((out / "metrics.json").read_text())["validation"]["accuracy"]
    summary = json.loads((data / "unlabelled-with" / "data_summary.json").read_text())
    assert summary["applied"]["unlabeled"] == {"file": str(texts), "rows": 64, "features": 64}, summary["applied"]
    assert accuracy["with"] > 0.85 and accuracy["without"] < 0.75, accuracy
    texts.rename(data / "texts.gone")  # the finished run's report reads its splits again, not data.unlabeled
    res = CliRunner().invoke(app, ["report", str(data / "unlabelled-with")])
    assert res.exit_code == 0, res.output


def test_unlabelled_rows_bad_input_is_one_line(teacher: Path, tiny_chat_run: Path, tmp_path: Path) -> None:
    data = teacher.parent
    good = write_jsonl(tmp_path / "texts.jsonl", [{"text": "good film"}])
    soft = write_jsonl(tmp_path / "soft.jsonl", [{"text": r["text"], "label": {r["label"]: 0.9, "negative"
                                                  if r["label"] == "positive" else "positive": 0.1}}
                                                 for r in sentiment_rows(16, 3)])
    broken = write_jsonl(tmp_path / "broken.jsonl", [{"text": "good film"}, {"words": "no text"}])
    long_prompt = write_jsonl(tmp_path / "long.jsonl", [{"prompt": " ".join(WORDS * 3)}])
    cases = [
        (["train", "--set", "task=classification", "--set", f"model={teacher / 'model'}", "--set",
          f"data.train={data / 'train.jsonl'}", "--set", f"data.unlabeled={good}"],
         "--set data.unlabeled: unlabelled rows train only the soft-target part of distillation; add a distill"),
        (["distill", str(teacher), "--student", "layers:0", "--unlabeled", str(good), "--alpha", "0"],
         "distill.alpha is 0"),
        (["distill", str(teacher), "--student", "layers:0", "--unlabeled", str(broken)], f"{broken}:2: text"),
        (["distill", str(teacher), "--student", "layers:0", "--unlabeled", str(tmp_path / "none.jsonl")],
         "none.jsonl"),
        (["distill", str(tiny_chat_run), "--student", "layers:0", "--unlabeled", str(broken)],
         f"{broken}:2: no messages, conversations, instruction or prompt field"),  # line 1: a `text` prompt
        (["distill", str(tiny_chat_run), "--student", "layers:0", "--unlabeled", str(long_prompt), "--set",
          "data.max_length=16"], f"{long_prompt}:1: prompt: the prompt is 108 tokens"),
        (["distill", str(teacher), "--student", "layers:0", "--unlabeled", str(good), "--set", f"data.train={soft}"],
         "training labels given as distributions cannot be mixed with unlabelled rows yet"),
    ]
    for args, words in cases:
        res = CliRunner().invoke(app, [*args, "--set", f"output_dir={tmp_path / 's'}"] if args[0] == "train"
                                 else [*args, "--output", str(tmp_path / "s")])
        assert res.exit_code == 2, (args, res.output)
        errors = [line for line in res.stderr.strip().splitlines() if not line.startswith("warning:")]
        assert words in res.stderr and len(errors) == 1, (args, res.stderr)
        assert not (tmp_path / "s").exists()


def test_ner_and_qa_students_take_unlabelled_rows(tiny_bert: Path, tmp_path: Path) -> None:
    """The whole path for the token and span tasks: NER rows with `tokens` only (placeholder "O" tags mark the
    words' first pieces), QA rows with `question` and `context` only (windows of a long context), each distilled
    into a one-layer student that trains and is scored."""
    from test_ner import _ner_rows
    from test_qa import _qa_rows

    base = ["train.batch_size=8", "train.save_steps=0", "train.precision=fp32", "train.lr=5e-3"]
    ner_train = write_jsonl(tmp_path / "ner.jsonl", _ner_rows(24))
    qa_train, qa_val = write_jsonl(tmp_path / "qa.jsonl", _qa_rows(24, 0)), write_jsonl(tmp_path / "qa-v.jsonl",
                                                                                        _qa_rows(8, 1))
    runs = {"ner": (["task=ner", f"data.train={ner_train}", "data.validation_split=0.25"],
                    [{"tokens": r["tokens"]} for r in _ner_rows(10)]),
            "qa": (["task={name: qa, doc_stride: 8, max_question_length: 4}", f"data.train={qa_train}",
                    f"data.validation={qa_val}", "data.max_length=32"],
                   [{"question": r["question"], "context": r["context"]} for r in _qa_rows(10, 2)])}
    for name, (sets, unlabelled) in runs.items():
        teacher = tmp_path / f"{name}-teacher"
        args = [f"model={tiny_bert}", f"output_dir={teacher}", "train.epochs=2", *base, *sets]
        res = CliRunner().invoke(app, ["train", *[a for s in args for a in ("--set", s)]])
        assert res.exit_code == 0, res.output
        texts = write_jsonl(tmp_path / f"{name}-texts.jsonl", unlabelled)
        out = tmp_path / f"{name}-student"
        res = CliRunner().invoke(app, ["distill", str(teacher), "--student", "layers:0", "--unlabeled", str(texts),
                                       "--output", str(out), "--set", "train.epochs=1"])
        assert res.exit_code == 0, (name, res.output)
        applied = json.loads((out / "data_summary.json").read_text())["applied"]["unlabeled"]
        assert applied["rows"] == 10 and applied["features"] >= 10, (name, applied)
        assert json.loads((out / "distill.json").read_text())["rows"][1]["name"] == "student"


def test_an_sft_student_learns_from_the_teachers_replies(tiny_chat_run: Path, tmp_path: Path) -> None:
    """Sequence-level distillation: the teacher answers 10 prompts nobody answered (`say W`), the student (one layer
    of the teacher, one gold row, alpha 1) learns its distributions along those replies; its validation loss beats
    the same run without the prompts by far."""
    few = write_jsonl(tmp_path / "few.jsonl", say_rows(["good"]))
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": r["messages"][:1]} for r in say_rows(WORDS[:10])])
    loss, stderr = {}, {}
    # packed: the ten prompts fill one row, so one gold and one packed row make one step per epoch (two unpacked)
    runs = (("with", ["--unlabeled", str(prompts)]), ("without", []),
            ("packed", ["--unlabeled", str(prompts), "--set", "task.packing=true", "--set", "train.epochs=40"]))
    for name, extra in runs:
        out = tmp_path / name
        res = CliRunner().invoke(app, ["distill", str(tiny_chat_run), "--student", "layers:1", "--alpha", "1",
                                       "--output", str(out), "--set", f"data.train={few}",
                                       "--set", "train.epochs=20", "--set", "task.generation.max_new_tokens=6",
                                       "--set", "task.generation.eval_generate=false",
                                       "--set", "train.baseline_eval=false", *extra])
        assert res.exit_code == 0, res.output
        loss[name], stderr[name] = json.loads((out / "metrics.json").read_text())["validation"]["loss"], res.stderr
    assert "distill: the teacher replied to 10 unlabelled prompts" in stderr["with"], stderr["with"]
    summary = json.loads((tmp_path / "with" / "data_summary.json").read_text())
    assert summary["applied"]["unlabeled"]["rows"] == 10, summary["applied"]
    assert max(loss["with"], loss["packed"]) < 0.25 * loss["without"], loss  # measured: 0.25 against 2.08


def test_the_teachers_replies_cut_at_max_length_are_said_as_their_own_split(tiny_chat_run: Path,
                                                                             tmp_path: Path) -> None:
    """The rows made of the teacher's replies to data.unlabeled, cut at data.max_length, are said as
    `sft (unlabeled): ...`: they read as a second line on the training split (`sft: ...`)."""
    few = write_jsonl(tmp_path / "few.jsonl", say_rows(["good", "bad"]))
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": r["messages"][:1]} for r in say_rows(WORDS[:4])])
    res = CliRunner().invoke(app, ["distill", str(tiny_chat_run), "--student", "layers:1", "--output",
                                   str(tmp_path / "out"), "--unlabeled", str(prompts), "--set", f"data.train={few}",
                                   "--set", "train.max_steps=1", "--set", "task.generation.max_new_tokens=30",
                                   "--set", "task.generation.eval_generate=false", "--set", "train.baseline_eval=false",
                                   "--set", "data.max_length=9"])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.stderr.splitlines() if " examples cut at data.max_length=9 " in x]
    unlabeled = [x for x in lines if x.startswith("sft (unlabeled): ")]
    assert len(unlabeled) == 1 and not [x for x in lines if x.startswith("sft: ") and "of 4 examples" in x], lines


def test_sft_teacher_replies_count_in_the_soft_part_only(tiny_chat_run: Path) -> None:
    """The hard cross-entropy of an sft distillation pass reads its gold rows alone: the loss of a model against
    itself (soft part 0) is (1 - alpha) times the cross-entropy of the unflagged rows."""
    import copy

    from tunelab.data.readers import rows_table
    from tunelab.export.save import load_model
    from tunelab.tasks.base import UNLABELED
    from tunelab.tasks.causal_loss import causal_lm_loss

    task, model, tok = load_model(tiny_chat_run / "model")
    rows = say_rows(["good", "nice"])
    batch = task.collate(task.encode(task.parse(rows_table(rows)), tok), tok.pad_token_id)
    with torch.no_grad():
        first = causal_lm_loss(model, {k: v[:1] for k, v in batch.items()})
        mixed = task.distill_step(model, model, {**batch, UNLABELED: torch.tensor([False, True])}, None, 2.0, 0.5)
        alone = task.distill_step(model, model, {**batch, UNLABELED: torch.tensor([True, True])}, None, 2.0, 0.5)
    assert float(first) > 0.01
    assert float(mixed) == pytest.approx(0.5 * float(first), rel=1e-4)
    assert float(alone) == pytest.approx(0, abs=1e-6)
    other = copy.deepcopy(model)  # a teacher that differs: the soft part reads every row, flagged or not
    with torch.no_grad():
        other.get_output_embeddings().weight.mul_(3)
        soft = [float(task.distill_step(model, other, {**batch, UNLABELED: torch.tensor(flags)}, None, 2.0, 1.0))
                for flags in ([False, False], [False, True], [True, True])]
    assert soft[0] > 1e-3 and soft[0] == pytest.approx(soft[1], rel=1e-5) == pytest.approx(soft[2], rel=1e-5)


def test_an_unfinished_teacher_reply_does_not_teach_to_stop(tiny_chat_run: Path) -> None:
    """A teacher reply cut at max_new_tokens (`open_end`) is trained without its end-of-turn token; a finished one
    with it."""
    from tunelab.data.readers import rows_table
    from tunelab.export.save import load_model
    from tunelab.tasks.chat_template import end_of_turn_ids

    task, _, tok = load_model(tiny_chat_run / "model")
    [ex] = task.parse(rows_table(say_rows(["good great"])))
    finished, cut = task.encode([ex, {**ex, "open_end": True}], tok)
    trained = [[t for t in f["labels"] if t != -100] for f in (finished, cut)]
    stop = set(end_of_turn_ids(tok))
    assert trained[0][:-1] == trained[1] and trained[0][-1] in stop and not stop & set(trained[1]), trained


def test_a_thinking_teachers_reply_is_split_as_predict_splits_it(qwen3_think_run: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """A teacher that thinks (the tiny Qwen3 writes `<think> hmm </think> good`): its think block had been kept in the
    reply the student learns (and a reply cut inside it rendered as an empty block, then `<think> hmm` as the reply).
    Where the chat template writes reasoning_content (Qwen3's), the reasoning is that field, trained in the template's
    block as a training row's; where it writes none, the block is left out and the reply alone trained; a reply cut
    while it reasoned trains neither the block's end nor the end of the turn."""
    from tunelab.data.readers import rows_table
    from tunelab.export.save import load_model
    from tunelab.tasks.reasoning import REASONING

    task, teacher, tok = load_model(qwen3_think_run / "model")
    prompts = task.parse(rows_table([{"messages": say_rows(["nice"])[0]["messages"][:1]}]), labelled=False)

    def taught(generation: dict, template: str | None = None) -> tuple[dict, str]:
        if template is not None:
            tok.chat_template = template
        task.cfg = task.cfg.model_copy(update={"generation": task.cfg.generation.model_copy(update=generation)})
        [ex] = task.unlabeled_examples(prompts, teacher, tok)
        [feat] = task.encode([ex], tok)
        return ex["messages"][-1], tok.decode([t for t in feat["labels"] if t != -100])

    turn, trained = taught({"max_new_tokens": 8})
    assert turn == {"role": "assistant", "content": "good", REASONING: "hmm"}
    assert trained.replace(" ", "").replace("\n", "") == "<think>hmm</think>good<|im_end|>", trained
    said = capsys.readouterr().err
    assert "1 began with a think block: its reasoning trained as the turn's reasoning_content" in said, said
    turn, trained = taught({"max_new_tokens": 2})  # cut inside the block
    assert turn == {"role": "assistant", "content": "", REASONING: "hmm"}
    assert trained.replace(" ", "").replace("\n", "") == "<think>hmm", trained
    no_reasoning = tok.chat_template.replace("message.reasoning_content is string", "false").replace(
        "'</think>' in content", "false")  # (a template that thinks, yet writes no reasoning_content)
    turn, trained = taught({"max_new_tokens": 8}, no_reasoning)
    assert turn == {"role": "assistant", "content": "good"}
    assert trained.replace(" ", "").replace("\n", "") == "<think></think>good<|im_end|>", trained
    assert "left out (the chat template writes no reasoning_content), the reply alone" in capsys.readouterr().err


def test_a_copy_saved_inside_a_process_group_loads_back(tmp_path: Path) -> None:
    """transformers 5 saves a model on rank 0 only once torch.distributed is up, so a student cut from its teacher
    on the other ranks of `--nproc 2` had no weights (found running it); `save_model_here` writes them on any rank.
    Inside a (one-process) gloo group its own path must give a model that loads back with the same logits, tied
    output layer included."""
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import free_port
    from tunelab.models.local_save import save_model_here

    model = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        save_model_here(model, tmp_path)
    finally:
        dist.destroy_process_group()
    back = LlamaForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
    assert torch.equal(back(ids).logits, model(ids).logits)


def test_the_student_never_replaces_what_it_learns_from(teacher: Path, tiny_bert: Path) -> None:
    """The teacher's run as --output (or a folder inside it, or the student's own model) is refused in one line before
    anything loads, even with --overwrite: the run would move the teacher's model aside and score the student
    against itself. `tunelab train` refuses the same of distill.teacher, model and the data files."""
    def snapshot() -> dict[str, float]:
        return {str(p): p.stat().st_mtime for p in sorted(teacher.rglob("*"))}

    before = snapshot()
    cases = [
        (["--student", "layers:1", "--output", str(teacher)],
         f"--output: {teacher} is the teacher run; choose another --output"),
        (["--student", str(tiny_bert), "--output", str(tiny_bert)],
         f"--output: {tiny_bert} is the --student model; choose another --output"),
        (["--student", "layers:1", "--output", str(teacher / "student")],
         f"--output: {teacher / 'student'} is inside the teacher run, {teacher}; choose another --output"),
        (["--student", "layers:1", "--output", str(teacher / "exports")],
         f"--output: {teacher / 'exports'} is inside the teacher run, {teacher}; choose another --output"),
    ]
    for extra, line in cases:
        for overwrite in ([], ["--overwrite"]):
            res = CliRunner().invoke(app, ["distill", str(teacher), *extra, *overwrite])
            assert res.exit_code == 2, res.output
            assert res.stderr.strip() == f"error: {line}", res.stderr
    assert snapshot() == before
    base = ["train", str(teacher / "config.yaml"), "--overwrite"]
    for sets, line in [
        ([f"model={teacher / 'model'}"],
         f"output_dir: {teacher} holds the model it starts from (model), {teacher / 'model'}, which a run there "
         "would replace; choose another output_dir"),
        ([f"distill.teacher={teacher}", "model=layers:0"],
         f"output_dir: {teacher} is the distillation teacher (distill.teacher); choose another output_dir"),
        ([f"data.train={teacher / 'predictions' / 'rows.jsonl'}"],
         f"output_dir: {teacher} holds the data.train file, {teacher / 'predictions' / 'rows.jsonl'}, which a run "
         "there would replace; choose another output_dir"),
    ]:
        res = CliRunner().invoke(app, [*base, *(a for s in sets for a in ("--set", s))])
        assert res.exit_code == 2, res.output
        assert res.stderr.strip() == f"error: {line}", res.stderr
    assert snapshot() == before


def test_a_reply_cut_inside_an_unwritten_think_block_is_not_trained(qwen3_think_run: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """A teacher reply cut inside its think block (`<think> hmm` at max_new_tokens=2), under a chat template that writes
    no reasoning_content: the reply left is empty, and it had trained `<think></think><|im_end|>` (the student taught
    to stop at once). It is not trained; where no reply is left at all, distill had trained the gold rows alone, exit
    0, its line saying the same replies were both "the reply alone trained" and not trained: it is one line, naming
    task.generation.max_new_tokens to raise. Each empty reply is said by what happened to it (a reply cut before any
    text, with no think block, had been called "cut inside it"), and the trained count leaves them out."""
    from tunelab.data.readers import rows_table
    from tunelab.errors import DataError
    from tunelab.export.save import load_model

    task, teacher, tok = load_model(qwen3_think_run / "model")
    tok.chat_template = tok.chat_template.replace("message.reasoning_content is string", "false").replace(
        "'</think>' in content", "false")  # (a template that thinks, yet writes no reasoning_content)
    prompts = task.parse(rows_table([{"messages": r["messages"][:1]} for r in say_rows(["nice", "good"])]),
                         labelled=False)
    for new, said in [(2, "2 cut inside their think block, which the chat template leaves out"),
                      (3, "2 cut right after their think block, before any reply")]:
        task.cfg = task.cfg.model_copy(update={"generation": task.cfg.generation.model_copy(
            update={"max_new_tokens": new})})
        with pytest.raises(DataError) as err:
            task.unlabeled_examples(prompts, teacher, tok)
        assert str(err.value).endswith(
            f"none of the teacher's 2 replies has anything to train: all were cut at task.generation.max_new_tokens="
            f"{new} ({said}); raise task.generation.max_new_tokens so that the teacher gets past its think block to "
            "its reply"), err.value
    assert "began with a think block" not in capsys.readouterr().err
    from tunelab.tasks.sft_distill import teacher_note, teacher_turn
    ids = [tok.convert_tokens_to_ids(t) for t in THINKS]  # `<think> hmm </think> good <|im_end|>`
    kinds = [teacher_turn(tok, reply, open_end, False)[1]
             for reply, open_end in [(ids, False), (ids[:2], True), (ids[:3], True), ([], True), (ids[-1:], True),
                                     (ids[:1], True), ([ids[0], ids[2]], True)]]  # `<think>`; `<think></think>`
    assert kinds == ["thought", "think_open", "think_after", "blank", "blank", "think_open", "think_after"], kinds
    # (those two were "cut before any text": the empty block has no reasoning, and the kind was read from that)
    tok.chat_template = tok.chat_template.replace("'<|im_start|>assistant\\n' }}{%- if enable_thinking",
                                                  "'<|im_start|>assistant\\n<think>\\n' }}{%- if enable_thinking")
    kinds = [teacher_turn(tok, reply, True, False)[1] for reply in ([], ids[2:3])]  # the prompt opened the block
    assert kinds == ["think_open", "think_after"], kinds
    counts = {"cut": 4, "thought": 1, "think_open": 1, "think_after": 1, "blank": 2}
    assert teacher_note(counts, 2, False) == (
        "; 4 ended unfinished, at task.generation.max_new_tokens=2 or the teacher's positions (their end is not "
        "trained); 1 began with a think block: left out (the chat template writes no reasoning_content), the reply "
        "alone trained; 2 cut before any text; 1 cut inside their think block, which the chat template leaves out; 1 "
        "cut right after their think block, before any reply: nothing to train, left out")
