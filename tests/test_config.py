"""The config: YAML + `--set` overrides → one frozen, validated RunConfig; every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.config.run import config_to_yaml, load_config
from tunelab.errors import ConfigError
from tunelab.registry import TASKS

ROOT = Path(__file__).resolve().parents[1]
BASE = ["task=classification", "model=minilm"]  # an alias is checked by name only: nothing is loaded
runner = CliRunner()


def cfg_of(*sets: str, path: Path | None = None) -> Any:
    return load_config(path, [*BASE, *sets])


def config_error(*sets: str, path: Path | None = None, base: bool = True) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, [*(BASE if base else []), *sets])
    message = str(info.value)
    assert "\n" not in message
    return message


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def train_cli(*args: str, sets: list[str]) -> Any:
    argv = ["train", *args]
    for s in sets:
        argv += ["--set", s]
    return runner.invoke(app, argv)


def assert_cli_error(res: Any, *fragments: str) -> str:
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.output
    for fragment in fragments:
        assert fragment in res.stderr
    return res.stderr


# ------------------------------------------------------------------------------------ unknown keys
UNKNOWN = [  # (the --set values, the key as named, what is said after `unknown key`)
    (["train.lerning_rate=1e-4"], "train.lerning_rate",
     "; did you mean learning_rate? tunelab's name for it is train.lr"),
    (["data.txt_field=review"], "data.txt_field", "; did you mean data.text_field?"),
    (["method=lora", "method.rr=4"], "method.rr", ""),  # (too far from any key to guess)
    (["method=full", "method.r=4"], "method.r", "; r is a key of method dora, lora, qlora"),  # not of full
    (["foo=1"], "foo", ""),
    (["task.lora=1"], "task.lora", ""),  # a key spelled like a method name is still named in full
    # what HF Trainer / PEFT / LLaMA-Factory users write, at any depth: tunelab's key for it
    (["learning_rate=1e-4"], "learning_rate", "; tunelab's name for it is train.lr"),
    (["train.per_device_train_batch_size=8"], "train.per_device_train_batch_size",
     "; tunelab's name for it is train.batch_size"),
    (["method=lora", "method.lora_alpha=32"], "method.lora_alpha", "; tunelab's name for it is method.alpha"),
    (["cutoff_len=512"], "cutoff_len", "; tunelab's name for it is data.max_length"),
    (["train.bf16=true"], "train.bf16", "; tunelab's name for it is train.precision: bf16"),
    # a near spelling in its section; a key of another section; of one task only
    (["train.epoch=2"], "train.epoch", "; did you mean train.epochs?"),
    (["train.max_length=64"], "train.max_length", "; did you mean data.max_length?"),
    (["seed=3"], "seed", "; did you mean train.seed?"),
    (["task.packing=true"], "task.packing", "; packing is a key of task sft"),
    # a method's key under another method: not distill.alpha, the soft-target weight; data.label: not data.unlabeled
    (["method=full", "method.alpha=16"], "method.alpha", "; alpha is a key of method dora, lora, qlora"),
    (["data.label=y"], "data.label", "; tunelab's name for it is data.label_field"),
    (["max_samples=100"], "max_samples",
     "; not a tunelab setting: tunelab trains on every row of data.train: cut the file to train on fewer"),
]


@pytest.mark.parametrize(("sets", "dotted", "hint"), UNKNOWN, ids=[d for _, d, _ in UNKNOWN])
def test_unknown_key_names_full_path(sets: list[str], dotted: str, hint: str, tmp_path: Path) -> None:
    """The key named in full, where it came from; and what it likely is (a typo, another tool's name for a key)."""
    assert config_error(*sets) == f"--set {dotted}: unknown key{hint}"  # where the key came from, as the file:line

    # the same key from a YAML file, at its depth
    tree: dict[str, Any] = {"task": "classification", "model": "minilm"}
    for s in sets:
        key, value = s.split("=", 1)
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node[part] = {"name": node[part]} if isinstance(node.get(part), str) else node.get(part, {})
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    text = yaml.safe_dump(tree)
    path = write_yaml(tmp_path / "run.yaml", text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.strip().startswith(dotted.split(".")[-1] + ":"))
    assert config_error(path=path, base=False) == f"{path}:{line}: {dotted}: unknown key{hint}"  # the file, the line
    assert config_error(f"{dotted}=1", path=path, base=False) == f"--set {dotted}: unknown key{hint}"  # no line


def test_an_unhashable_yaml_key_is_one_line(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "run.yaml", "task: classification\n[a, b]: 1\n")
    assert "invalid YAML: found unhashable key" in config_error(path=path, base=False)


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "run.yaml", "task: classification\nmodel: minilm\ntrain:\n  lr: 1.0e-4\n"
                                             "  epochs: 2\ntrain:\n  batch_size: 8\n")
    assert config_error(path=path, base=False) == (f"{path}:6: invalid YAML: duplicate key 'train': only its last "
                                                   "value would be read; give each key once")


def test_cli_rejects_unknown_key_before_loading_anything(tmp_path: Path) -> None:
    not_a_model = tmp_path / "not-a-model"  # an empty directory: loading it would fail differently
    not_a_model.mkdir()
    out = tmp_path / "run"
    res = train_cli(
        sets=[
            "task=classification",
            f"model={not_a_model}",
            f"data.train={tmp_path / 'absent.jsonl'}",
            f"output_dir={out}",
            "train.lerning_rate=1e-4",
        ]
    )
    assert res.stderr == ("error: --set train.lerning_rate: unknown key; did you mean learning_rate? tunelab's name "
                          "for it is train.lr\n")
    assert_cli_error(res)
    assert not out.exists()  # nothing was written: the config failed first


# ------------------------------------------------------------------------------------ types & values
def test_wrong_type_names_the_key() -> None:
    message = config_error("train.batch_size=abc")
    assert message.startswith("--set train.batch_size: ") and "'abc'" in message
    assert config_error("method=lora", "method.r=abc").startswith("--set method.r: ")
    assert config_error("data.max_length=4").startswith("--set data.max_length: ")
    assert config_error("train.precision=fp8").startswith("--set train.precision: ")
    for bad in ("train.epochs=.inf", "train.lr=.nan", "train.warmup=-.inf"):  # YAML's infinities: not a number
        assert config_error(bad) == f"--set {bad.split('=')[0]}: Input should be a finite number " \
            f"(got {float(bad.split('=')[1].replace('.', '', 1))})", bad


def test_true_or_false_is_no_number() -> None:
    """pydantic's lax mode read `lr: true` as 1.0 and `epochs: false` as 0; a bool field still takes them."""
    assert config_error("train.lr=true") == "--set train.lr: expected a number, got true"
    assert config_error("method=lora", "method.r=false") == "--set method.r: expected a number, got false"
    assert config_error("train.eval_steps=true") == "--set train.eval_steps: expected a number, got true"
    assert cfg_of("train.report=false").train.report is False
    assert cfg_of("data.clean=true", "data.augment=false").data.clean is not None  # true: a section's defaults
    assert config_error("train.report=[1]") == "--set train.report: Input should be a valid boolean"  # (pydantic's
    assert config_error("data.dedup={a: 1}") == "--set data.dedup: Input should be a valid boolean"  # bool_type)


def test_python_values_of_a_mapping_and_of_an_override_alike() -> None:
    """make_config: a Path, a set or a numpy number is taken alike inside the mapping and as an override (a Path
    override was refused as not a string; a set in the mapping became the text "{'query'}")."""
    import numpy as np

    import tunelab

    base = {"task": "classification", "model": "minilm", "data": {"train": Path("a.jsonl")},
            "method": {"name": "lora", "target_modules": {"value", "query"}}}
    cfg = tunelab.make_config(base, **{"data.validation": Path("b.jsonl"), "train.epochs": np.int64(2),
                                       "method.target_modules": ("query",)})
    assert (cfg.data.train, cfg.data.validation, cfg.train.epochs) == ("a.jsonl", "b.jsonl", 2)
    assert cfg.method.target_modules == ["query"]
    assert tunelab.make_config(base).method.target_modules == ["query", "value"]
    assert tunelab.make_config(base, **{"train.lr": np.float32(1e-4)}).train.lr == 1e-4  # (.item(): 9.9999997e-05)


def test_cli_wrong_type(tmp_path: Path) -> None:
    res = train_cli(sets=[*BASE, "train.batch_size=abc", f"output_dir={tmp_path / 'run'}"])
    assert_cli_error(res, "error: --set train.batch_size: ", "'abc'")


def test_numbers_where_text_is_expected() -> None:
    """`--set` values are parsed as YAML: a number given for a text key means that text."""
    assert cfg_of("output_dir=2024").output_dir == "2024"
    assert cfg_of("data.text_field=123").data.text_field == "123"
    assert cfg_of("task.labels=[0, 1]").task.labels == ["0", "1"]  # how integer labels in the data read
    assert cfg_of("task.labels=[true, false]").task.labels == ["true", "false"]
    assert "duplicate label 'a'" in config_error("task.labels=[a, b, a]")
    # read as YAML 1.2 (JSON's values), not PyYAML's 1.1: text stays the text written
    for text in ("0612", "2024-12-06", "12:30", "1_000", "yes"):  # 1.1: 394, a date, 750, 1000, True
        assert cfg_of(f"output_dir={text}").output_dir == text
    assert cfg_of("train.lr=1e-5").train.lr == 1e-5 and cfg_of("train.seed=0x10").train.seed == 16
    assert "train.lr" in config_error("train.lr=yes") and "train.seed" in config_error("train.seed=off")


def test_a_set_value_keeps_what_yaml_would_drop() -> None:
    """A path with ` #` (a YAML comment), a leading `#` or `&` (an anchor) is the text given: `--set
    output_dir=runs/exp #2` trained into runs/exp, `#1` into the default runs/<task>-<time>, `&b c` into c; and
    without the spaces around it (`output_dir= #x` trained into ` #x`)."""
    from tunelab.ui.checks import form_value

    for text in ("runs/exp #2", "#1", "&b c", "&b", "数据/it's #1 %20 & x.jsonl"):
        assert cfg_of(f"output_dir={text}").output_dir == text
        assert form_value("output_dir", text) == text  # the web UI's more settings, alike
        assert cfg_of(f"output_dir= {text} ").output_dir == text  # the spaces around it dropped, as YAML drops them
    assert cfg_of("task.labels=[a, b]").task.labels == ["a", "b"] and cfg_of("train.lr=1e-4").train.lr == 1e-4
    assert "--set train.epochs: " in config_error("train.epochs=3 # three")  # refused, not read as 3


def test_a_tilde_is_the_home_folder_in_every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`~` in a config's paths is read as the shell reads it: `data.train: ~/t.jsonl` was looked for in a folder
    named `~` of the current one (`output_dir: ~/runs/a` made it), where `model: ~/m` was read from home."""
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write_yaml(tmp_path / "run.yaml", "task: classification\nmodel: minilm\noutput_dir: ~/runs/a\ndata:\n"
                      "  train: ~/数据/t.jsonl\n  test: ~/x y.jsonl\n  augment: {ops: [swap], synonyms: ~/s.tsv}\n"
                      "distill: {teacher: ~/runs/t}\n")
    cfg = load_config(path, ["data.validation=~/v.jsonl"])
    assert (cfg.output_dir, cfg.data.train, cfg.data.test, cfg.data.validation) == (
        f"{tmp_path}/runs/a", f"{tmp_path}/数据/t.jsonl", f"{tmp_path}/x y.jsonl", f"{tmp_path}/v.jsonl")
    assert cfg.data.augment.synonyms == f"{tmp_path}/s.tsv" and cfg.distill.teacher == f"{tmp_path}/runs/t"
    assert cfg_of("output_dir=a~b").output_dir == "a~b"  # only a leading one


def test_yaml_values_read_and_write_back_as_they_were(tmp_path: Path) -> None:
    """YAML 1.2 reading keeps what 1.1 had right: an empty value is null, `!!bool yes` a boolean; what tunelab writes
    (config.yaml, best.yaml, the UI's job file) reads back the same by YAML 1.2 and by PyYAML's 1.1 safe_load."""
    from tunelab.config.fields import yaml_text, yaml_value

    assert yaml_value("train:\n  max_grad_norm:\n") == {"train": {"max_grad_norm": None}}
    assert yaml_value("- a\n-\n- b") == ["a", None, "b"] and yaml_value("a: !!bool yes") == {"a": True}
    tree = {"texts": ["1e5", "-.5", "0o17", "yes", "0612", "2024-12-06", "12:30", "", "中文"],
            "values": [None, 1e-5, 3, True, float("inf")]}
    assert yaml_value(yaml_text(tree)) == tree and yaml.safe_load(yaml_text(tree)) == tree
    path = tmp_path / "run.yaml"
    path.write_text("task: classification\nmodel: minilm\ndata:\n  train: t.jsonl\ntrain:\n  max_grad_norm:\n")
    assert load_config(path, []).train.max_grad_norm is None


def test_missing_required_keys() -> None:
    assert config_error("model=minilm", base=False) == "config: task: required key is missing"
    assert config_error("task=classification", base=False) == "config: model: required key is missing"


# ------------------------------------------------------------------------------------ YAML files
def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "bad.yaml", "task: classification\nmodel: minilm\n  lr: 1\n")
    assert config_error(path=path, base=False).startswith(f"{path}:3: invalid YAML: ")
    res = train_cli(str(path), sets=[])
    assert_cli_error(res, f"error: {path}:3: invalid YAML: ")


def test_yaml_with_bad_bytes_or_characters(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"task: classification\nmodel: minilm\noutput_dir: caf\xe9\n")
    assert config_error(path=latin1, base=False) == (
        f"{latin1}:3: not valid UTF-8 (byte 0xe9); the line reads as Western European text in Windows-1252 (cp1252, "
        "Latin-1), the encoding of a Windows in Western Europe and the Americas: save the file as UTF-8, or convert "
        f"it: iconv -f CP1252 -t UTF-8 {latin1} > {tmp_path / 'latin1.utf8.yaml'}")
    nul = write_yaml(tmp_path / "nul.yaml", "task: classification\nmodel: mini\x00lm\n")
    assert config_error(path=nul, base=False).startswith(
        f"{nul}:2: invalid YAML: unacceptable character #x0000"
    )


def test_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "list.yaml", "- task: classification\n- model: minilm\n")
    assert config_error(path=path, base=False) == f"{path}: the config must be a mapping of keys to values"
    assert_cli_error(train_cli(str(path), sets=[]), f"error: {path}: the config must be a mapping")


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert config_error(path=path) == f"{path}: config file not found"


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "run.yaml", "task: classification\nmodel: minilm\ntrain: {lr: 1.0e-4, epochs: 2}\n"
    )
    cfg = load_config(path, ["train.epochs=5"])
    assert (cfg.train.lr, cfg.train.epochs) == (1e-4, 5.0)


# ------------------------------------------------------------------------------------ model names
def test_unknown_model_alias_lists_aliases(tmp_path: Path) -> None:
    message = config_error("model=minlm")
    assert message.startswith("--set model: 'minlm' is not a known alias")
    for alias in ("minilm", "smollm2-135m", "gemma3-270m"):
        assert alias in message
    assert_cli_error(train_cli(sets=["task=classification", "model=minlm"]), "'minlm'", "smollm2-135m")
    assert message.endswith("; did you mean minilm?")  # a near miss of an alias is named
    assert "did you mean" not in config_error("model=nosuch")


def test_the_hubs_ids_without_an_org_pass() -> None:
    """`model: bert-base-uncased` (what HF Trainer recipes write) was refused as "not a hub id of the form org/name",
    though the hub still resolves its first models' ids without an org; other names without a `/` stay refused."""
    for name in ("bert-base-uncased", "bert-base-chinese", "gpt2", "gpt2-medium", "distilbert-base-uncased",
                 "roberta-base", "xlm-roberta-large", "t5-small", "albert-base-v2", "distilroberta-base"):
        assert cfg_of(f"model={name}").model == name
    for name in ("bert", "gpt3", "bert-base-uncased-x", "roberta", "roberta-base-mnli", "xlm-mlm-anything"):
        assert config_error(f"model={name}").startswith(f"--set model: '{name}' is not a known alias"), name


def test_model_names_that_pass(tmp_path: Path) -> None:
    assert cfg_of(f"model={tmp_path}").model == str(tmp_path)  # an existing directory
    assert cfg_of("model=someorg/some-model").model == "someorg/some-model"  # a hub id (not fetched)


def test_empty_model_name() -> None:
    assert config_error("model=").startswith("--set model: is empty")  # not "the current directory"


# ------------------------------------------------------------------------------------ task & method
def test_method_shorthand(tmp_path: Path) -> None:
    assert cfg_of().method.name == "full"  # the default
    lora = cfg_of("method=lora").method
    assert (lora.name, lora.r) == ("lora", 16)
    assert cfg_of("method=lora", "method.r=8").method.r == 8
    assert cfg_of("method={name: lora, r: 2}").method.r == 2

    path = write_yaml(
        tmp_path / "lora.yaml", "task: classification\nmodel: minilm\nmethod: {name: lora, r: 4}\n"
    )
    assert load_config(path).method.r == 4
    full = load_config(path, ["method=full"]).method
    assert full.name == "full" and not hasattr(full, "r")
    shorthand = write_yaml(tmp_path / "short.yaml", "task: classification\nmodel: minilm\nmethod: lora\n")
    assert load_config(shorthand, ["method.r=8"]).method.r == 8


def test_unknown_method_or_task_name() -> None:
    message = config_error("method=adalora")
    assert message.startswith("--set method: unknown method 'adalora'; choose one of ")
    assert all(name in message for name in ("full", "lora", "freeze"))
    assert config_error("task=regression", base=False) == (
        f"--set task: unknown task 'regression'; choose one of {', '.join(TASKS.names())}"
    )
    assert config_error("method.r=8").startswith(
        "config: method.name: required key is missing; choose one of "
    )


def test_config_is_frozen() -> None:
    cfg = cfg_of("method=lora")
    with pytest.raises(ValidationError):
        cfg.model = "other"
    with pytest.raises(ValidationError):
        cfg.train.lr = 1.0
    with pytest.raises(ValidationError):
        cfg.method.r = 2


def test_output_dir_default() -> None:
    assert cfg_of().output_dir.startswith("runs/classification-")
    assert cfg_of("output_dir=runs/mine").output_dir == "runs/mine"


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = cfg_of(
        "method=lora",
        "method.r=8",
        "method.target_modules=[query, value]",
        "task.multi_label=true",
        "task.labels=[b, a]",
        "task.threshold=0.3",
        "data.train=train.jsonl",
        "data.text_pair_field=premise",
        "data.max_length=64",
        "train.lr=3e-4",
        "train.max_steps=7",
        "train.scheduler=cosine",
        "train.max_grad_norm=null",
    )
    path = write_yaml(tmp_path / "saved.yaml", config_to_yaml(cfg))
    again = load_config(path)
    assert again == cfg
    assert again.output_dir == cfg.output_dir  # not a new timestamp
    assert config_to_yaml(again) == config_to_yaml(cfg)


# ------------------------------------------------------------------------------------ docs & examples
def test_schema_matches_committed_docs() -> None:
    docs = ROOT / "docs" / "config.md"
    if not docs.is_file():
        pytest.skip("docs/config.md not generated yet")
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0, res.output
    assert res.stdout == docs.read_text(encoding="utf-8"), (
        "docs/config.md is stale: tunelab schema > docs/config.md"
    )


EXAMPLES = sorted((ROOT / "examples" / "configs").glob("*.yaml"))


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.name) for p in EXAMPLES]
    or [pytest.param(None, marks=pytest.mark.skip("no examples"))],
)
def test_example_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.task.name and cfg.model and cfg.output_dir
