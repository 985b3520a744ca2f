"""The Python API on what a notebook passes it: one row, a DataFrame, a field the model does not read, arguments of
the wrong type or value; its messages name its own arguments (not the CLI's flags); it is as quiet as the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import tunelab
from conftest import WORDS, sentiment_rows, write_jsonl
from tunelab.cli import app
from tunelab.errors import ArgumentError, ConfigError, DataError, TunelabError

runner = CliRunner()
NOT_READ = r"text_pair: this model does not read a second text \(it reads text; "


@pytest.fixture(scope="module")
def run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tunelab.Run:
    """One tiny single-text classification run (2 steps) for the module."""
    tmp = tmp_path_factory.mktemp("api-inputs")
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(16, 0))
    val = write_jsonl(tmp / "validation.jsonl", sentiment_rows(8, 1))
    (tmp / "run.yaml").write_text(yaml.safe_dump({
        "task": "classification", "model": str(tiny_bert), "output_dir": str(tmp / "run"),
        "data": {"train": str(train), "validation": str(val)},
        "train": {"max_steps": 2, "batch_size": 8, "save_steps": 0}}))
    return tunelab.train(tmp / "run.yaml")


@pytest.fixture(scope="module")
def model(run: tunelab.Run) -> tunelab.Model:
    return run.load()


def test_one_mapping_is_one_row_and_a_dataframe_its_records(model: tunelab.Model) -> None:
    """A dict was iterated as its keys (predicted on the text 'text'); a DataFrame as its column names."""
    pd = pytest.importorskip("pandas")
    one = model.predict({"text": "good great film", "id": 7})
    assert one == model.predict([{"text": "good great film", "id": 7}])  # a list of one row, as for one str
    assert one[0]["text"] == "good great film" and one[0]["id"] == 7 and "pred_label" in one[0]
    rows = sentiment_rows(6, 2)
    frame = pd.DataFrame(rows)
    assert model.predict(frame) == model.predict(rows)
    assert [r["text"] for r in model.predict(frame)] == frame["text"].tolist()
    assert model.evaluate(frame) == model.evaluate(rows) and model.evaluate(frame)["n"] == 6
    assert model.evaluate(rows[0])["n"] == 1  # was `<input>:1: label: missing field`
    assert model.evaluate(frame, limit=2)["n"] == 2


def test_text_pair_to_a_single_text_model_is_refused(model: tunelab.Model, run: tunelab.Run,
                                                     tmp_path: Path) -> None:
    """`text_pair` was echoed back beside a score of the first text alone; other fields (an id) still are."""
    with pytest.raises(DataError, match=f"^<input>:2: {NOT_READ}"):
        model.predict([{"text": "good film"}, {"text": "good film", "text_pair": "awful plot"}])
    with pytest.raises(DataError, match=f"^<input>:1: {NOT_READ}"):
        model.evaluate([{"text": "good film", "text_pair": "awful", "label": "positive"}])
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"text": "good film", "text_pair": "awful", "label": "positive"}])
    for args in (["predict", str(run.dir), "--input", str(data)], ["eval", str(run.dir), "--data", str(data)],
                 ["compress", str(run.dir), "--prune", "heads:0.5", "--data", str(data)]):  # export's rows too
        res = runner.invoke(app, args)  # the command line reads rows the same way
        assert res.exit_code == 2 and res.stderr.startswith(f"error: {data}:1: text_pair: this model does not read")
    ids = write_jsonl(tmp_path / "ids.jsonl", [{"text": "good film", "id": "a-1"}])
    res = runner.invoke(app, ["predict", str(run.dir), "--input", str(ids)])
    assert res.exit_code == 0 and '"id": "a-1"' in res.stdout  # a field that is no input is kept, as before
    # an empty text_pair column (a CSV's, or null) carries no second text: read as before (review, 2026-12-06)
    out = model.predict([{"text": "good film", "text_pair": ""}, {"text": "good film", "text_pair": None}])
    assert len(out) == 2 and out[0]["scores"] == out[1]["scores"]


def test_a_pair_model_reads_text_pair(tiny_bert: Path, tmp_path: Path) -> None:
    rows = [{**r, "text_pair": " ".join(WORDS[14:17])} for r in sentiment_rows(8, 0)]
    data = {"train": str(write_jsonl(tmp_path / "t.jsonl", rows)), "text_pair_field": "text_pair"}
    pair = tunelab.train({"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "run"),
                          "data": data, "train": {"max_steps": 1, "save_steps": 0}}).load()
    out = pair.predict({"text": "good film", "text_pair": "a plot"})
    assert out[0]["text_pair"] == "a plot" and "scores" in out[0]
    with pytest.raises(DataError, match=r"^<input>:1: text_pair: missing field \(the row has: text\)$"):
        pair.predict("good film")


@pytest.mark.parametrize("value", [0, -1, "8", 2.5, True, None])
def test_batch_size_and_limit_are_checked(model: tunelab.Model, run: tunelab.Run, value: object) -> None:
    """0 was a ValueError from range(), -1 an AttributeError, '8' a TypeError; limit=0 a numpy error and -1 dropped
    the last row silently."""
    with pytest.raises(ArgumentError, match=rf"^batch_size: expected a whole number of at least 1, got {value!r}$"):
        model.predict(["good film"], batch_size=value)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"^batch_size: "):
        model.evaluate(run.config.data.validation, batch_size=value)  # type: ignore[arg-type]
    if value is not None:
        with pytest.raises(ArgumentError, match=rf"^limit: expected a whole number of at least 1, got {value!r}$"):
            model.evaluate(run.config.data.validation, limit=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("inputs", "said"), [
    (None, r"^inputs: expected a text \(str\), a row \(a mapping of fields\), .*; got NoneType$"),
    (5, r"^inputs: expected .*; got int$"),
    (b"hello", r"^inputs: expected .*; got bytes; decode bytes to a str first$"),
    ([1, 2], r"^<input>:1: expected a text \(str\) or a row \(a mapping of fields\), got int$"),
    (["good", None], r"^<input>:2: expected a text \(str\) or a row \(a mapping of fields\), got NoneType$"),
    ([["good", "film"]], r"^<input>:1: .*got list \(a list of words is one row: \{\"tokens\": \[\.\.\.\]\}, for a NER "
                         r"model; a pair of texts: \{\"text\": \.\.\., \"text_pair\""),
])
def test_wrong_inputs_are_one_line(model: tunelab.Model, inputs: object, said: str) -> None:
    """Each was a raw TypeError (or, for bytes, a prediction on the text "b'hello'")."""
    with pytest.raises(TunelabError, match=said):
        model.predict(inputs)  # type: ignore[arg-type]


def test_evaluate_arguments_of_the_wrong_type_and_its_limit(model: tunelab.Model, run: tunelab.Run) -> None:
    """evaluate(None) named `inputs`; generation options of the wrong type were raw TypeErrors (or, `generate="no"`,
    taken as true); `limit` read and checked every row before cutting (a bad third row failed limit=2)."""
    with pytest.raises(ArgumentError, match=r"^data: expected a file \(a str or Path\), a row .*; got NoneType$"):
        model.evaluate(None)  # type: ignore[arg-type]
    for kwargs, said in [({"generate": "no"}, r"^generate: expected True or False, got 'no'$"),
                         ({"max_new_tokens": "3"}, r"^max_new_tokens: expected a whole number of at least 1"),
                         ({"num_beams": 2.5}, r"^num_beams: expected a whole number of at least 1, got 2.5$"),
                         ({"temperature": "hot"}, r"^temperature: expected a number, got 'hot'$"),
                         ({"predictions": 5}, r"^predictions: expected a file path \(a str or Path\), got 5$")]:
        with pytest.raises(ArgumentError, match=said):
            model.evaluate(run.config.data.validation, **kwargs)  # type: ignore[arg-type]
    rows = [{"text": "good great", "label": "positive"}, {"text": "bad awful", "label": "negative"}, {"text": "x"}]
    assert model.evaluate(rows, limit=2)["n"] == 2  # the third row has no label: never read
    with pytest.raises(DataError, match=r"^<input>:3: label"):
        model.evaluate(rows)
    with pytest.raises(ArgumentError, match=r"^path: empty"):
        tunelab.load("")
    assert {"load", "train", "make_config", "Model"} <= set(dir(tunelab))  # the lazy names, for completion


def test_a_checkpoint_or_an_unfinished_run_is_named_as_such(run: tunelab.Run, tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints" / "step-00000002").mkdir(parents=True)
    (unfinished / "config.yaml").write_text("task: classification\n")
    with pytest.raises(TunelabError, match=r"not a tunelab model directory \(no tunelab.json\); a run whose model is "
                                           r"written when its training ends .*; resume it: tunelab train "):
        tunelab.load(unfinished)
    with pytest.raises(TunelabError, match=r"; a training checkpoint whose model is written when its training ends"):
        tunelab.load(unfinished / "checkpoints" / "step-00000002")
    (unfinished / "model").mkdir()  # finished since (its checkpoints kept): its model is there, not to be trained again
    (unfinished / "model" / "tunelab.json").write_text("{}")
    with pytest.raises(TunelabError, match=rf"; a training checkpoint; the run's model is {unfinished / 'model'}$"):
        tunelab.load(unfinished / "checkpoints" / "step-00000002")


def test_load_and_train_arguments(run: tunelab.Run, tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match=r"^path: expected a run directory or its model/ \(a str or Path\), got "):
        tunelab.load(5)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"^resume: expected \"auto\" \(or True\), a checkpoint path or None"):
        tunelab.train(run.config, resume=5)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"^overwrite: expected True or False, got 'yes'$"):
        tunelab.train(run.config, overwrite="yes")  # type: ignore[arg-type]
    # resume=True is the CLI's bare --resume (auto): the run's newest checkpoint; here there is none
    fresh = tmp_path / "fresh"
    with pytest.raises(TunelabError, match=rf"^resume: no complete checkpoint in {fresh / 'checkpoints'} "):
        tunelab.train(run.config, resume=True, output_dir=str(fresh))


def test_messages_name_the_api_arguments(run: tunelab.Run, tmp_path: Path) -> None:
    """They said `--overwrite`, `--resume`, `--set` (the CLI's flags), `config: config: unknown key`, `config file
    not found` for a directory, `not a tunelab model directory` for a path that does not exist."""
    with pytest.raises(TunelabError, match=r"holds a run of another config; pass overwrite=True to replace it"):
        tunelab.train(run.config, **{"train.lr": 1e-3})
    with pytest.raises(ConfigError, match=r"^config: train\.lr\.x: train\.lr is not a section$"):
        tunelab.make_config(run.config, **{"train.lr.x": 1})
    with pytest.raises(ConfigError, match=r"^config: train\.max_steps: Input should be a valid integer"):
        tunelab.make_config(run.config, **{"train.max_steps": "two"})
    for key in ("", "train.", ".lr"):
        with pytest.raises(ConfigError, match=rf"^config: {key!r}: expected a dotted key such as train\.lr$"):
            tunelab.make_config(run.config, **{key: 1})
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: is a directory, not a config file"):
        tunelab.make_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: classification\nmodel: minilm\ntrain:\n  lerning_rate: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{bad}:4: train\.lerning_rate: unknown key; "):  # the file's line
        tunelab.make_config(bad)
    with pytest.raises(TunelabError, match=rf"^{tmp_path / 'no' / 'such'}: no such directory"):
        tunelab.load(tmp_path / "no" / "such")
    with pytest.raises(TunelabError, match=rf"^{bad}: is a file, not a tunelab model directory"):
        tunelab.load(bad)


def test_the_cli_keeps_its_flags(run: tunelab.Run, tiny_bert: Path, tmp_path: Path) -> None:
    """The same mistakes on the command line name the flags, and a bad --set value names --set."""
    sets = ["task=classification", f"model={tiny_bert}", f"data.train={run.config.data.train}",
            f"output_dir={run.dir}", "train.lr=0.001"]
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 2 and "; pass --overwrite to replace it" in res.stderr, res.output
    res = runner.invoke(app, ["train", *[a for s in sets[:3] for a in ("--set", s)], "--set", "train.max_steps=two"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --set train.max_steps: Input should be a valid "
                                                        "integer"), res.output
    res = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)], "--set", "train.lr.x=1"])
    assert res.stderr == "error: --set train.lr.x: train.lr is not a section\n", res.output
    res = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--data", str(run.config.data.validation)])
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {tmp_path / 'nope'}: no such directory"), res.output


def test_errors_module_and_docstrings() -> None:
    """`tunelab.errors` after a bare `import tunelab` (the README's `tunelab.errors.TunelabError`), still without
    torch; every public name and method of the API says what it does."""
    code = ("import sys, tunelab; print(tunelab.errors.TunelabError.__name__, 'torch' in sys.modules, "
            "'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["TunelabError", "False", "False"]
    assert issubclass(tunelab.errors.ArgumentError, tunelab.errors.TunelabError)
    for owner, names in ((tunelab.Run, ("load", "model_dir")),
                         (tunelab.Model, ("__init__", "predict", "evaluate", "parse_inputs", "predict_examples"))):
        for name in names:
            member = getattr(owner, name)
            assert (member.fget if isinstance(member, property) else member).__doc__, f"{owner.__name__}.{name}"
    assert "ONE TEXT" in tunelab.Model.predict.__doc__ and "FILE" in tunelab.Model.evaluate.__doc__


@pytest.mark.parametrize(("row", "said"), [
    ({"text": "good film", "note": "a\ud800"}, r"note: invalid Unicode: unpaired surrogate '\\ud800' at character 2"),
    ({"text": "good film", "meta": [1, {"by": "\udfff"}]}, r"meta\[1\]\.by: invalid Unicode: unpaired surrogate"),
    ({"text": "good\x00film", "note": "a"}, r"text: a NUL character at character 5; remove it$"),
], ids=["surrogate", "nested", "nul-read"])
def test_a_field_utf8_cannot_carry_is_one_line_on_every_path(model: tunelab.Model, run: tunelab.Run,
                                                             tmp_path: Path, row: dict, said: str) -> None:
    """A lone surrogate in a field the model does not read (an id, a note: echoed back) passed the API and made
    `tunelab predict` a UnicodeEncodeError traceback, exit 1, writing the answer; a NUL there was answered, where
    `tunelab serve` refuses both (a 422 naming the row): now one line naming the row and the field on each path."""
    with pytest.raises(DataError, match=rf"^<input>:2: {said}"):
        model.predict([{"text": "bad plot"}, row])
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "bad plot"}\n' + json.dumps(row) + "\n", encoding="utf-8")  # \ud800: JSON's escape
    out = tmp_path / "out.jsonl"
    for args in (["predict", str(run.dir), "--input", str(data)],
                 ["predict", str(run.dir), "--input", str(data), "--output", str(out)],
                 ["predict", str(run.dir), "--input", "-"]):  # (stdin: the file's lines, JSON objects)
        res = runner.invoke(app, args, input=data.read_bytes() if args[-1] == "-" else None)
        where = "<stdin>" if args[-1] == "-" else str(data)
        assert res.exit_code == 2 and re.match(rf"^error: {re.escape(where)}:2: {said}", res.stderr), res.output
        assert len(res.stderr.splitlines()) == 1 and res.stdout == "" and not out.exists()


def test_a_nul_in_a_field_the_model_does_not_read_is_echoed_on_every_path(model: tunelab.Model, run: tunelab.Run,
                                                                          tmp_path: Path) -> None:
    """`{"text": "good movie", "note": "a\\u0000b"}` was refused (`note: a NUL character ...: a UTF-16 file without
    its byte-order mark?`), where it had been echoed back: JSON carries a NUL, and the model does not read the field.
    It is echoed untouched again, by the API, predict (a file, stdin, --output) and serve alike."""
    row = {"text": "good movie", "note": "a\x00b", "meta": {"k\x00": ["\x00"]}}
    (answer,) = model.predict([row])
    assert answer["note"] == "a\x00b" and answer["meta"] == row["meta"] and "scores" in answer
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")  # \u0000: JSON's escape
    out = tmp_path / "out.jsonl"
    for args in (["predict", str(run.dir), "--input", str(data)], ["predict", str(run.dir), "--input", "-"],
                 ["predict", str(run.dir), "--input", str(data), "--output", str(out)]):
        res = runner.invoke(app, args, input=data.read_bytes() if args[-1] == "-" else None)
        assert res.exit_code == 0, res.output
        echoed = json.loads((out.read_text(encoding="utf-8") if "--output" in args else res.stdout).splitlines()[0])
        assert echoed["note"] == "a\x00b" and echoed["meta"] == row["meta"], echoed


def test_a_numpy_integer_is_a_count(model: tunelab.Model) -> None:
    import numpy as np

    assert len(model.predict(["good film", "bad"], batch_size=np.int64(1))) == 2


def test_overlapping_quiet_calls_put_the_callers_settings_back() -> None:
    """Two API calls overlapping in threads (a user's server): the second saved the first's quiet state and put
    it back for good (review, 2026-12-06)."""
    from transformers.utils import logging as hf_logging

    from tunelab.progress import quiet_transformers as _quiet_transformers

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        first, second = _quiet_transformers(), _quiet_transformers()
        first.__enter__()
        second.__enter__()
        assert hf_logging.get_verbosity() == hf_logging.ERROR
        first.__exit__(None, None, None)
        assert hf_logging.get_verbosity() == hf_logging.ERROR  # the second call is still running
        second.__exit__(None, None, None)
        assert hf_logging.get_verbosity() == hf_logging.WARNING
    finally:
        hf_logging.set_verbosity(before)


def test_the_api_is_as_quiet_as_the_cli(tiny_bert: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """transformers' weight-loading bars and its load report (the new head's MISSING weights) reached the terminal
    from tunelab.train / tunelab.load; the caller's own transformers settings are kept."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    try:
        train = write_jsonl(tmp_path / "t.jsonl", sentiment_rows(8, 0))
        capfd.readouterr()
        run = tunelab.train({"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "run"),
                             "data": {"train": str(train)}, "train": {"max_steps": 1, "save_steps": 0}})
        run.load().predict("good film")
        err = capfd.readouterr().err
        for noise in ("LOAD REPORT", "MISSING", "Loading weights", "\x1b["):
            assert noise not in err, err
        assert hf_logging.get_verbosity() == hf_logging.WARNING and hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before[0])
        (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()
