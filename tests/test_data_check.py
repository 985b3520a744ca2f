"""`tunelab data check` runs the checks train runs and warns about what train would not say."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import say_rows, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.data.advice import conversation_order, look_alike_labels, near_label, unknown_tokens, unseen_labels

runner = CliRunner()


def _check(*args: str) -> dict:
    res = runner.invoke(app, ["data", "check", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_warnings(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(12) + [{"text": "ok", "label": "1"},
                                                                        {"text": "fine", "label": "1.0"}])
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(4))
    report = _check(str(train), str(val), "--model", str(tiny_bert))
    t, v = report["files"][str(train)]["warnings"], report["files"][str(val)]["warnings"]
    assert t == ["labels 1, 1.0 look like one class written differently (each is a class of its own)"]
    assert v == []


def test_a_label_the_model_will_not_have_is_refused_as_train_refuses_it(tiny_bert: Path, tmp_path: Path) -> None:
    """A validation label the training file lacks, a training label task.labels lacks, a validation entity type:
    train refuses the row as it encodes it (file:line: field), and data check now says that line (it warned, exit
    0), before any length is measured."""
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(12))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(4) + [{"text": "meh", "label": "neutral"}])
    res = runner.invoke(app, ["data", "check", str(train), str(val), "--model", str(tiny_bert)])
    assert res.exit_code == 2, res.output
    assert res.stderr == (f"error: {val}:5: label: label 'neutral' is not among the training labels "
                          "(negative, positive)\n")
    res = runner.invoke(app, ["data", "check", str(val), "--model", str(tiny_bert),
                              "--set", "task.labels=[negative, positive]"])
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {val}:5: label: label 'neutral' is not among"), \
        res.output
    _check(str(val), str(train), "--model", str(tiny_bert))  # a training label validation lacks: fine
    ner = [{"tokens": ["Ann", "ran"], "tags": ["B-PER", "O"]}]
    ner_train, ner_val = write_jsonl(tmp_path / "n.jsonl", ner), write_jsonl(
        tmp_path / "nv.jsonl", ner + [{"tokens": ["in", "Rome"], "tags": ["O", "B-LOC"]}])
    res = runner.invoke(app, ["data", "check", str(ner_train), str(ner_val), "--task", "ner", "--model",
                              str(tiny_bert)])
    assert res.exit_code == 2 and res.stderr == f"error: {ner_val}:2: tags: tag 'B-LOC' is not among the training " \
                                                "tags\n", res.output


def test_a_refused_training_label_is_named_at_the_row_train_encodes_first(tiny_bert: Path, tmp_path: Path) -> None:
    """data.validation_split holds line 4 (a 'c') out of the training file: train encodes the rows left for training
    first, so it refuses line 10 (a 'd'); data check named line 4, the first in file order."""
    rows = [{"text": f"{w} {n}", "label": "ab"[i % 2]} for i, (n, w) in enumerate(
        (n, w) for n in ("movie", "film") for w in ("good", "bad", "fine", "great", "awful", "nice", "poor", "sad",
                                                    "very", "boring"))]
    rows[3]["label"], rows[9]["label"], rows[15]["label"] = "c", "d", "c"
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    sets = ["task.labels=[a, b]", "data.validation_split=0.3", "train.seed=2"]
    line = f"error: {path}:10: label: label 'd' is not among the training labels (a, b)\n"
    run = ["task=classification", f"model={tiny_bert}", f"data.train={path}", f"output_dir={tmp_path / 'run'}", *sets]
    res = runner.invoke(app, ["train", *[a for s in run for a in ("--set", s)]])
    assert (res.exit_code, res.stderr) == (2, line), res.output
    res = runner.invoke(app, ["data", "check", str(path), "--model", str(tiny_bert),
                              *[a for s in sets for a in ("--set", s)]])
    assert (res.exit_code, res.stderr) == (2, line), res.output  # (before: line 4)
    res = runner.invoke(app, ["data", "check", str(path), "--model", str(tiny_bert),
                              *[a for s in sets[:2] for a in ("--set", s)], "--set", "data.validation_split=0"])
    assert res.stderr.startswith(f"error: {path}:4: label: label 'c'"), res.output  # nothing held out: file order


def test_labels_that_differ_in_spaces_or_width_are_named_as_one_class() -> None:
    said = look_alike_labels(["positive", "positive ", "正面", "正面\u3000", "ＰＯＳ", "POS", "neg"])
    assert said == ("labels positive, 'positive '; 正面, '正面\\u3000'; 'ＰＯＳ', POS look like one class written "
                    "differently (each is a class of its own)")


def test_a_validation_label_with_a_full_width_space_is_shown_as_it_is(tiny_bert: Path, tmp_path: Path) -> None:
    """`负面　` (a trailing U+3000, unseen: train refuses it) is not shown as if 负面 were refused, which training
    has: both train and data check name the training label it looks like and how it differs (full-width letters
    too, and an NER tag in another case)."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "好", "label": "正面"}, {"text": "差", "label": "负面"}])
    rows = [{"text": t, "label": label} for t, label in (("好吗", "正面"), ("差吗", "负面\u3000"), ("一般", "中性"))]
    val = write_jsonl(tmp_path / "val.jsonl", rows)
    said = (f"error: {val}:2: label: label '负面\\u3000' is not among the training labels (正面, 负面): training has "
            "负面 (this one ends in a full-width space U+3000)\n")
    res = runner.invoke(app, ["data", "check", str(train), str(val), "--model", str(tiny_bert)])
    assert res.exit_code == 2 and res.stderr == said, res.output
    sets = ["task=classification", f"model={tiny_bert}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={tmp_path / 'run'}", "train.max_steps=1", "train.save_steps=0", "train.report=false"]
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 2 and res.stderr.endswith(said), res.output
    assert not (tmp_path / "run" / "model").exists()
    assert unseen_labels(Counter({"中性": 1, "负面\u3000": 1}), Counter({"负面": 1}), "t.jsonl") == (
        "labels absent from t.jsonl: 中性, '负面\\u3000' (training has 负面)")  # (QA's answerable / unanswerable)
    assert near_label("ｐｏｓｉｔｉｖｅ", ["negative", "positive"]) == (
        ": training has positive (this one is written in full-width characters)")
    assert near_label("neutral", ["negative", "positive"]) == ""
    ner = [{"tokens": ["Ann", "ran"], "tags": ["B-PER", "O"]}]
    ner_train, ner_val = write_jsonl(tmp_path / "n.jsonl", ner), write_jsonl(
        tmp_path / "nv.jsonl", ner + [{"tokens": ["Bo", "ran"], "tags": ["B-per", "O"]}])
    res = runner.invoke(app, ["data", "check", str(ner_train), str(ner_val), "--task", "ner", "--model",
                              str(tiny_bert)])
    assert res.exit_code == 2 and res.stderr == (f"error: {ner_val}:2: tags: tag 'B-per' is not among the training "
                                                 "tags: training has B-PER (the two differ in case)\n"), res.output


def test_a_training_label_in_full_width_is_said_to_be_so(tiny_bert: Path, tmp_path: Path) -> None:
    """Where the training label is the full-width one, the refusal said `(the two differ in case)` (`positive`
    vs `ｐｏｓｉｔｉｖｅ`, `正面!` vs `正面！`) and `POSITIVE` vs `ｐｏｓｉｔｉｖｅ` never said width: both sides are
    NFKC-folded, the side with full-width characters is named (the character itself where a few are), case only
    where the folded forms differ in case alone, and every training label it looks like is named."""
    assert near_label("positive", ["negative", "ｐｏｓｉｔｉｖｅ"]) == (
        ": training has 'ｐｏｓｉｔｉｖｅ' (the training one is written in full-width characters)")
    assert near_label("正面!", ["正面！", "负面"]) == (
        ": training has '正面！' (the training one has U+FF01 (fullwidth exclamation mark) for '!')")
    assert near_label("正面！", ["正面!", "负面"]) == (
        ": training has 正面! (this one has U+FF01 (fullwidth exclamation mark) for '!')")
    assert near_label("POSITIVE", ["ｐｏｓｉｔｉｖｅ", "neg"]) == (
        ": training has 'ｐｏｓｉｔｉｖｅ' (the training one is written in full-width characters; the two differ in "
        "case)")
    assert near_label("true", ["0", "1", "1.0"]) == (
        ": training has 1 (the two spell one value differently), 1.0 (the two spell one value differently)")
    assert unseen_labels(Counter({"1": 1}), Counter({"01": 1, "1.0": 1}), "t.jsonl") == (
        "labels absent from t.jsonl: 1 (training has 01, 1.0)")
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "好", "label": "正面！"}, {"text": "差", "label": "负面"}])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "好吗", "label": "正面!"}])
    res = runner.invoke(app, ["data", "check", str(train), str(val), "--model", str(tiny_bert)])
    assert res.exit_code == 2 and res.stderr == (
        f"error: {val}:1: label: label '正面!' is not among the training labels (正面！, 负面): training has "
        "'正面！' (the training one has U+FF01 (fullwidth exclamation mark) for '!')\n"), res.output


def test_a_label_a_tuned_model_has_is_taken_as_train_takes_it(tiny_bert: Path, tmp_path: Path) -> None:
    """Continuing a tuned run (`model: RUN/model`) whose labels include one the new training file lacks
    (classification: neutral; NER: LOC): train keeps the model's labels and takes a validation row of it, and so does
    data check (warning that the training file lacks it), as its check_labels reads the tuned model's labels."""
    three = ["negative", "positive", "neutral"] * 2
    cls = [{"text": r["text"], "label": lab} for r, lab in zip(sentiment_rows(6), three, strict=True)]
    ner = [{"tokens": ["Ann", "ran"], "tags": ["B-PER", "O"]}, {"tokens": ["in", "Rome"], "tags": ["O", "B-LOC"]}]
    for task, first, new, val, absent in (
            ("classification", cls, [r for r in cls if r["label"] != "neutral"], cls, "neutral"),
            ("ner", ner * 2, ner[:1] * 2, ner, "LOC")):
        old = write_jsonl(tmp_path / f"{task}-old.jsonl", first)
        sets = [f"task={task}", f"model={tiny_bert}", f"data.train={old}", f"data.validation={old}",
                f"output_dir={tmp_path / task / 'old'}", "train.max_steps=1", "train.save_steps=0",
                "train.report=false"]
        res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
        assert res.exit_code == 0, res.output
        train, check = write_jsonl(tmp_path / f"{task}-t.jsonl", new), write_jsonl(tmp_path / f"{task}-v.jsonl", val)
        config = tmp_path / f"{task}.yaml"
        config.write_text(f"task: {task}\nmodel: {tmp_path / task / 'old' / 'model'}\n"
                          f"output_dir: {tmp_path / task / 'new'}\ndata: {{train: {train}, validation: {check}}}\n"
                          "train: {max_steps: 1, save_steps: 0, report: false}\n")
        res = runner.invoke(app, ["data", "check", "--config", str(config), "--json"])
        assert res.exit_code == 0, res.output
        assert f"labels absent from {train}: {absent}" in json.loads(res.stdout)["files"][str(check)]["warnings"]
        res = runner.invoke(app, ["train", str(config)])
        assert res.exit_code == 0, res.output


def test_a_one_class_training_file_is_refused_as_train_refuses_it(tiny_bert: Path, tmp_path: Path) -> None:
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "good film", "label": "pos"}] * 3)
    res = runner.invoke(app, ["data", "check", str(one), "--model", str(tiny_bert)])
    assert res.exit_code == 2 and res.output.strip().startswith(f"error: {one}: label: training data has a single")


def test_unknown_tokens_name_a_model_that_fits(tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))  # an English word-level vocabulary
    assert unknown_tokens(tok, ["good movie", "bad plot"], str, "tiny") is None
    said = unknown_tokens(tok, ["这部电影很好看", "酒店很干净"], str, "tiny")
    assert said is not None and "tiny turns 100 % of the tokens into [UNK]" in said and "gemma3-270m" in said
    assert "m3e-small" in said  # the Chinese encoder is named too


def test_training_warns_too(tiny_bert: Path, tmp_path: Path) -> None:
    """`tunelab train` says what `data check` says: an English vocabulary on Chinese text is mostly [UNK]."""
    rows = [{"text": t, "label": y} for t, y in (("房间干净服务好", "pos"), ("房间很脏服务差", "neg"))] * 4
    data = write_jsonl(tmp_path / "zh.jsonl", rows)
    sets = ["task=classification", f"model={tiny_bert}", f"data.train={data}", f"data.validation={data}",
            f"output_dir={tmp_path / 'run'}", "train.epochs=1", "train.save_steps=0", "train.report=false"]
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "100 % of the tokens into [UNK]" in res.output and "m3e-small" in res.output
    summary = json.loads((tmp_path / "run" / "data_summary.json").read_text())
    assert "[UNK]" in json.dumps(summary, ensure_ascii=False)
    assert look_alike_labels(["pos", "neg"]) is None and "true, yes" in look_alike_labels(["true", "yes", "no"])


def test_conversation_order(tiny_llama: Path, tmp_path: Path) -> None:
    rows = say_rows(["good", "bad"]) + [
        {"messages": [{"role": "system", "content": "be a pirate"}, {"role": "assistant", "content": "hi"},
                      {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                      {"role": "user", "content": "z"}]}]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    report = _check(str(path), "--task", "sft", "--model", str(tiny_llama))
    assert [w for w in report["files"][str(path)]["warnings"] if "conversations" in w] == [
        f"1 conversations start with the assistant after the system message: {path}:3",
        f"1 conversations end on a user turn (no reply to learn): {path}:4"]
    assert conversation_order([], "x") == []
    # one that starts with the assistant is the task's error (its template's header tokens trained as a reply)
    write_jsonl(path, [{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"},
                                     {"role": "assistant", "content": "y"}]}])
    res = runner.invoke(app, ["data", "check", str(path), "--task", "sft", "--model", str(tiny_llama)])
    assert res.exit_code == 2 and f"{path}:1: messages: turn 1: an assistant turn first" in res.output


def test_json_has_refused_only_where_a_row_is_refused_for_every_task(tiny_bert: Path, tiny_llama: Path,
                                                                       tmp_path: Path) -> None:
    """`refused` in `--json` is train's line for the first refused row, and no key at all where none is: an sft
    report said `"refused": ""` where a classification one had no key."""
    chat = write_jsonl(tmp_path / "chat.jsonl", say_rows(["good", "bad"]))
    cls = write_jsonl(tmp_path / "cls.jsonl", sentiment_rows(8))
    assert "refused" not in _check(str(chat), "--task", "sft", "--model", str(tiny_llama))
    assert "refused" not in _check(str(cls), "--model", str(tiny_bert))


def test_a_huge_line_is_counted_from_its_head(tiny_bert: Path, tmp_path: Path) -> None:
    """A multi-megabyte text costs what a 16 x max_length one does: its head is tokenised, its count scaled."""
    from conftest import WORDS

    huge = " ".join(WORDS * 60_000)  # ~2.3 MB, ~1.7 M tokens
    path = write_jsonl(tmp_path / "huge.jsonl", [{"text": huge, "label": "pos"}, {"text": "good", "label": "neg"}])
    r = _check(str(path), "--model", str(tiny_bert), "--set", "data.max_length=64")["files"][str(path)]
    words = len(huge.split())
    assert r["over_max_length"] == 1 and abs(r["token_length"]["max"] - (words + 2)) < 0.02 * words
    assert r["token_length_estimated"] == 1  # and said so: the printed max was shown as exact
    res = runner.invoke(app, ["data", "check", str(path), "--model", str(tiny_bert), "--set", "data.max_length=64"],
                        env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "(1 row(s) of over 1,024 characters: estimated from their head)" in res.stdout


def test_over_max_length_says_what_becomes_of_those_rows(tiny_bert: Path, tmp_path: Path) -> None:
    """"N (x% truncated)" for every task: QA contexts and sliding windows are read whole (several windows), not cut;
    and NER's `data.label_field` (silently not read: its tags are task.tags_field) is refused, naming that field."""
    rows = [{"text": " ".join(["good"] * 100), "label": "pos"}, {"text": "bad", "label": "neg"}]
    path = write_jsonl(tmp_path / "long.jsonl", rows)

    def said(*extra: str) -> str:
        res = runner.invoke(app, ["data", "check", str(path), "--model", str(tiny_bert), "--set",
                                  "data.max_length=32", *extra], env={"COLUMNS": "300"})
        assert res.exit_code == 0, res.output
        return next(line for line in res.stdout.splitlines() if "over max_length" in line)

    assert "1 (50.00%: truncated)" in said()
    assert "1 (50.00%: split into windows, nothing cut)" in said("--set", "data.truncation=sliding_window",
                                                                  "--set", "data.window_stride=8")
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"context": " ".join(["good"] * 100) + " end", "question": "what?",
                                              "answers": {"text": ["end"], "answer_start": [500]}}])
    res = runner.invoke(app, ["data", "check", str(qa), "--task", "qa", "--model", str(tiny_bert), "--set",
                              "data.max_length=64", "--set", "task.doc_stride=8", "--set",
                              "task.max_question_length=16"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "1 (100.00%: split into windows of the context, nothing cut)" in res.stdout, \
        res.output
    res = runner.invoke(app, ["data", "check", str(_ner_file(tmp_path)), "--task", "ner", "--model", str(tiny_bert),
                              "--set", "data.label_field=ner_tags"])
    assert res.exit_code == 2 and res.stderr == (
        "error: --set data.label_field: task ner does not read it (its labels are in task.tags_field, default "
        "'tags'); leave data.label_field out and set task.tags_field=ner_tags\n"), res.output
    res = runner.invoke(app, ["train", "--set", "task=ner", "--set", f"model={tiny_bert}", "--set",
                              f"data.train={_ner_file(tmp_path)}", "--set", "data.label_field=ner_tags", "--set",
                              f"output_dir={tmp_path / 'run'}"])
    assert res.exit_code == 2 and "leave data.label_field out" in res.stderr and not (tmp_path / "run").exists()
    from tunelab.config.run import build_config  # a run's config.yaml that has it (an older tunelab's) still reads

    assert build_config({"task": "ner", "model": str(tiny_bert), "data": {"label_field": "x"}}).data.label_field == "x"


def test_train_warns_of_look_alike_labels_as_data_check_does(tiny_bert: Path, tmp_path: Path) -> None:
    rows = sentiment_rows(8) + [{"text": "so good", "label": "positive "}]
    train, out = write_jsonl(tmp_path / "train.jsonl", rows), tmp_path / "run"
    sets = [f"model={tiny_bert}", "task=classification", f"data.train={train}", f"output_dir={out}",
            "train.max_steps=1", "train.save_steps=0", "train.report=false"]
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    said = "labels positive, 'positive ' look like one class written differently (each is a class of its own)"
    assert res.exit_code == 0 and f"warning: {said}" in res.output, res.output
    assert json.loads((out / "data_summary.json").read_text())["applied"]["label_warning"] == said


def test_labels_and_file_names_are_printed_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`[/red]` or `[b]x` in a label or a file name is text, not Rich markup (a traceback, or a label shown as `x`)."""
    write_jsonl(tmp_path / "[x].jsonl", [{"text": "hello world", "label": "[/red]"},
                                          {"text": "good day", "label": "[b]x"}, {"text": "bad day", "label": "[b]x "}])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")  # the table as wide as its text: nothing wrapped
    res = runner.invoke(app, ["data", "check", "[x].jsonl"])
    assert res.exit_code == 0, res.output
    assert "[/red]: 1 (33.3%), [b]x: 1 (33.3%), [b]x : 1 (33.3%)" in res.stdout and "[x].jsonl" in res.stdout
    assert "warning: " in res.stdout and "'[b]x '" in res.stdout  # the look-alike warning, its label as written


def _ner_file(tmp_path: Path) -> Path:
    rows = [{"tokens": ["a", "film", "story", "was", "bad"], "tags": ["B-PER", "B-LOC", "I-LOC", "O", "B-PER"]},
            {"tokens": ["the", "actor"], "tags": ["O", "B-PER"]}]
    return write_jsonl(tmp_path / "ner.jsonl", rows)


def test_a_refused_truncation_is_said_in_the_tasks_own_words() -> None:
    """What a task that cuts rows at their end says of data.truncation is its config's (`cuts_at_end`): the check
    outside tasks/ named classification for every such task."""
    from typing import ClassVar

    from tunelab.config.run import check_label_field
    from tunelab.config.sections import DataConfig, TaskConfig
    from tunelab.errors import ConfigError

    class Cuts(TaskConfig):
        cuts_at_end: ClassVar[str] = "cuts a row at its end ({truncation}: not read)"

    with pytest.raises(ConfigError) as e:
        check_label_field(Cuts(name="cuts"), DataConfig(truncation="tail"))
    assert str(e.value) == "config: data.truncation: task cuts cuts a row at its end (tail: not read); leave " \
                           "data.truncation out"


def test_ner_is_told_its_own_cut_not_classifications(tiny_bert: Path, tmp_path: Path) -> None:
    """NER cuts a row past data.max_length at its end (the words past it tagged O) whatever data.truncation said:
    `data check` told it `split into windows, nothing cut` for sliding_window, training took tail / head+tail
    silently, and the report said `truncation: sliding_window`. The setting is refused (data check and train, one
    line, exit 2); a run of an older tunelab that set it still loads, its report saying what NER did."""
    from tunelab.config.sections import DataConfig
    from tunelab.registry import TASKS

    ner = _ner_file(tmp_path)
    for mode in ("sliding_window", "tail"):
        res = runner.invoke(app, ["data", "check", str(ner), "--task", "ner", "--model", str(tiny_bert), "--set",
                                  "data.max_length=16", "--set", f"data.truncation={mode}", "--set",
                                  "data.window_stride=4"])
        assert res.exit_code == 2 and res.stderr == (
            "error: --set data.truncation: task ner cuts a row longer than data.max_length at its end: the words "
            f"past it are tagged O ({mode} is classification's); leave data.truncation out\n"), res.output
    res = runner.invoke(app, ["train", "--set", "task=ner", "--set", f"model={tiny_bert}", "--set",
                              f"data.train={ner}", "--set", f"output_dir={tmp_path / 'run'}", "--set",
                              "data.truncation=head+tail"])
    assert res.exit_code == 2 and "--set data.truncation: task ner cuts a row" in res.stderr, res.output
    assert not (tmp_path / "run").exists()
    ner_cls, cls = TASKS.get("ner"), TASKS.get("classification")
    old = DataConfig(truncation="sliding_window")  # an older run's saved settings
    assert ner_cls(ner_cls.Config(), old).length_note() == "rows are cut at the end, the words past max_length tagged O"
    assert cls(cls.Config(), old).length_note() == "truncation: sliding_window"


def test_ner_label_shares_are_of_entities(tiny_bert: Path, tmp_path: Path) -> None:
    """NER label shares were of rows: PER 3 of 2 rows showed 150.0 %, the shares summing past 100 %."""
    ner = _ner_file(tmp_path)
    res = runner.invoke(app, ["data", "check", str(ner), "--task", "ner", "--model", str(tiny_bert)],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "PER: 3 (75.0%), LOC: 1 (25.0%) — % of all entities (4)" in res.stdout, res.output
    r = _check(str(ner), "--task", "ner", "--model", str(tiny_bert))["files"][str(ner)]
    assert r["labels"] == {"PER": 3, "LOC": 1} and r["labels_of"] == {"unit": "entities", "total": 4}
    cls = write_jsonl(tmp_path / "c.jsonl", sentiment_rows(4))
    assert _check(str(cls), "--model", str(tiny_bert))["files"][str(cls)]["labels_of"] == {"unit": "rows", "total": 4}


def test_set_task_names_the_task_and_bad_sections_are_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    """`--set task=ner` (what it means for train) and `--set data=x` were TypeError tracebacks in data check and
    data augment."""
    ner = _ner_file(tmp_path)
    for how in ("task=ner", "task.name=ner"):
        assert _check(str(ner), "--set", how, "--model", str(tiny_bert))["files"][str(ner)]["labels"] == {
            "PER": 3, "LOC": 1}
    cls = write_jsonl(tmp_path / "c.jsonl", sentiment_rows(4))
    for args, said in (
            (["check", str(ner), "--set", "data=x"], "--set data: expected data.* keys (e.g. --set "
             "data.text_field=review), got 'x'"),
            (["check", str(ner), "--set", "task=[1]"], "--set task: expected a task name (--set task=NAME) or "
             "task.* keys, got [1]"),
            (["check", str(ner), "--task", "qa", "--set", "task=ner"], "--set task: ner: --task says qa; give the "
             "task once"),
            (["augment", str(cls), "--output", str(tmp_path / "o.jsonl"), "--set", "task=ner"],
             "config: task: ner: data augment reads classification rows"),
            (["augment", str(cls), "--output", str(tmp_path / "o.jsonl"), "--set", "data=x"],
             "config: data: expected data.* keys")):
        res = runner.invoke(app, ["data", *args, "--model", str(tiny_bert)] if args[0] == "check"
                            else ["data", *args])
        assert res.exit_code == 2, (res.output, res.exception)  # not 1: a TypeError's traceback
        assert said in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_run_config_is_checked_as_train_reads_it(tiny_bert: Path, tmp_path: Path) -> None:
    """`data check --config RUN.yaml`: its files, task, model and data settings (a renamed text field, its
    max_length), with --set still on top; neither files nor a config is one line."""
    rows = [{"review": r["text"], "label": r["label"]} for r in sentiment_rows(12)]
    train, val = write_jsonl(tmp_path / "t.jsonl", rows), write_jsonl(tmp_path / "v.jsonl", rows[:4])
    config = tmp_path / "run.yaml"
    config.write_text(f"task: classification\nmodel: {tiny_bert}\noutput_dir: {tmp_path / 'run'}\n"
                      f"data: {{train: {train}, validation: {val}, text_field: review, max_length: 8}}\n")
    report = _check("--config", str(config))
    assert list(report["files"]) == [str(train), str(val)]
    assert report["model"] == str(tiny_bert) and report["max_length"] == 8
    assert report["files"][str(train)]["over_max_length"] > 0
    again = _check("--config", str(config), "--set", "data.max_length=64", str(val))
    assert list(again["files"]) == [str(val)] and again["max_length"] == 64
    res = runner.invoke(app, ["data", "check"])
    assert res.exit_code == 2 and res.output.startswith("error: data check: give the files")


def test_a_run_configs_mistakes_are_named_at_its_lines_and_task_overrides_it(tiny_bert: Path, tmp_path: Path) -> None:
    """As train says them: a task setting the config's max_length cannot hold, a data file that is not there — each
    at the config's line; `--task` replaces the config's task (it was refused as given twice)."""
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "who?", "context": "Ann ran.",
                                              "answers": {"text": ["Ann"], "answer_start": [0]}}])
    config = tmp_path / "qa.yaml"
    config.write_text(f"task: qa\nmodel: {tiny_bert}\noutput_dir: {tmp_path / 'run'}\n"
                      f"data:\n  train: {qa}\n  max_length: 32\n")
    res = runner.invoke(app, ["data", "check", "--config", str(config)])
    assert res.exit_code == 2 and res.output.startswith(f"error: {config}:1: task.doc_stride"), res.output
    gone = tmp_path / "gone.yaml"
    gone.write_text(f"task: qa\nmodel: {tiny_bert}\noutput_dir: {tmp_path / 'run'}\ndata:\n  train: nothere.jsonl\n")
    res = runner.invoke(app, ["data", "check", "--config", str(gone)])
    assert res.exit_code == 2 and res.output.startswith(f"error: {gone}:5: data.train: nothere.jsonl"), res.output
    rows = write_jsonl(tmp_path / "c.jsonl", sentiment_rows(6))
    report = _check("--config", str(config), "--task", "classification", "--set", "data.max_length=64", str(rows))
    assert list(report["files"]) == [str(rows)]


def test_a_config_with_clean_and_dedup_is_checked_on_the_rows_train_keeps(tiny_bert: Path, tmp_path: Path) -> None:
    """data.clean / data.dedup drop the rows train drops (data check counted every row read, and passed a config
    whose training file dedup leaves with one class, which train refuses), by the same reasons."""
    rows = sentiment_rows(12)
    train = write_jsonl(tmp_path / "t.jsonl", rows + rows[:2] + [{"text": "ok", "label": "negative"}])
    val = write_jsonl(tmp_path / "v.jsonl", rows[2:3] + sentiment_rows(4, 1))
    config = tmp_path / "run.yaml"
    config.write_text(f"task: classification\nmodel: {tiny_bert}\noutput_dir: {tmp_path / 'run'}\n"
                      f"data: {{train: {train}, validation: {val}, dedup: true, clean: {{min_chars: 3}}}}\n")
    t = _check("--config", str(config))["files"][str(train)]
    assert (t["rows"], t["rows_used"]) == (15, 11)
    assert t["removed"] == {"too_short": 1, "duplicate": 2, "in_validation": 1}
    assert sum(t["labels"].values()) == 11
    one = write_jsonl(tmp_path / "one.jsonl", [r for r in rows if r["label"] == "positive"] + rows[:1])
    res = runner.invoke(app, ["data", "check", "--config", str(config), str(one), str(write_jsonl(
        tmp_path / "v1.jsonl", rows[:1] + rows[3:4]))])
    assert res.exit_code == 2, res.output
    assert res.stderr == f"error: {one}: label: training data has a single class ('positive'); classification needs " \
                         "at least two\n"


def test_a_bad_set_value_is_named_by_its_set_as_train_names_it(tiny_bert: Path, tmp_path: Path) -> None:
    """`data check FILE --set data.max_lenght=12` said `config: data.max_lenght: ...` where train says the --set."""
    cls = write_jsonl(tmp_path / "c.jsonl", sentiment_rows(4))
    for how, said in (
            ("data.max_lenght=12", "error: --set data.max_lenght: unknown key; did you mean data.max_length?"),
            ("data.max_length=abc", "error: --set data.max_length: Input should be a valid integer")):
        res = runner.invoke(app, ["data", "check", str(cls), "--model", str(tiny_bert), "--set", how])
        assert res.exit_code == 2, (res.output, res.exception)
        assert res.stderr.startswith(said) and len(res.stderr.strip().splitlines()) == 1, res.stderr
