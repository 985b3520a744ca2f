"""A key given twice in one JSON object of a data row (JSONL, a JSON array, a one-object .json, SQuAD, predict's
input), a column name twice in Parquet / Arrow, a key twice in a synonym file or a `--set` mapping: one line naming
the file, the line (or the place) and the key, exit code 2 — never the last value read silently. The cheap test that
spares most rows the slower parse (`jsonl.duplicate_key`) must never miss one: checked against a reference parse."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.data.jsonl import iter_json_array, iter_jsonl, iter_squad
from tunelab.data.readers import lines_table, read_table
from tunelab.errors import DataError

runner = CliRunner()
TWICE = "only its last value would be read; give each key once"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        read_table(path)
    return str(info.value)


def _cli_one_line(args: list[str], expected: str) -> None:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    assert res.stderr == f"error: {expected}\n", res.stderr
    assert "Traceback" not in res.output


def test_a_jsonl_row_with_a_key_twice_is_named_by_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.jsonl", '{"text": "good: fine", "label": "pos"}\n'
                                            '{"text": "bad", "label": "neg", "text": "worse"}\n')
    expected = f'{path}:2: json: duplicate key "text" in one object: {TWICE}'
    assert _error(path) == expected
    _cli_one_line(["data", "check", path], expected)


def test_a_key_twice_inside_a_chat_message_names_the_message(tmp_path: Path) -> None:
    row = {"messages": [{"role": "user", "content": "Q: 2+2?"}, {"role": "assistant", "content": "A: 4"}]}
    bad = json.dumps(row).replace('"content": "A: 4"', '"content": "A: 4", "role": "user"')
    path = _write(tmp_path / "chat.jsonl", json.dumps(row) + "\n" + bad + "\n")
    expected = f'{path}:2: json: duplicate key "role" in messages[1]: {TWICE}'
    assert _error(path) == expected
    _cli_one_line(["data", "check", path, "--task", "sft"], expected)


@pytest.mark.parametrize("line", [
    '{"text": "a: b", "label": "x"}',  # a `:` inside a string
    '{"text": "he said \\": no\\"", "label": "x"}',  # a quote and a `:` inside a string: the slow parse looks
    '{"text" :"spaced", "label"\t:\t"x"}',  # blanks before the `:`
    '{"text": "nested", "label": "x", "meta": {"a": {"b": [{"c": 1}, {"c": 2}]}, "d": {}}}',
    '{"text": "\\u003a escaped colons \\u003a", "label": "x", "\\u0074ext2": "t"}',
])
def test_rows_without_a_key_twice_load_as_before(tmp_path: Path, line: str) -> None:
    path = _write(tmp_path / "ok.jsonl", line + "\n")
    assert [r.data for r in iter_jsonl(path)] == [json.loads(line)]


def test_a_json_array_names_the_item_streamed_or_whole(tmp_path: Path) -> None:
    items = [{"text": "a", "label": "x"}, {"text": "b", "label": "y", "meta": {"k": 1}}, {"text": "c", "label": "z"}]
    text = json.dumps(items, indent=1).replace('"k": 1', '"k": 1, "k": 2')
    path = _write(tmp_path / "train.json", text)
    expected = f'{path}:6 (row 2): json: duplicate key "k" in meta: {TWICE}'  # (at the line the item starts on)
    assert _error(path) == expected  # read whole
    with pytest.raises(DataError) as info:
        list(iter_json_array(path, block=7))  # read a few characters at a time
    assert str(info.value) == expected
    # a non-object item before it is the first problem either way
    path.write_text(json.dumps([items[0], 7, items[1]]).replace('"k": 1', '"k": 1, "k": 2'), encoding="utf-8")
    with pytest.raises(DataError, match=r":1 \(row 2\): json: expected a JSON object, got int"):
        read_table(path)
    with pytest.raises(DataError, match=r":1 \(row 2\): json: expected a JSON object, got int"):
        list(iter_json_array(path, block=7))


def test_a_one_object_json_file_with_a_key_twice(tmp_path: Path) -> None:
    path = _write(tmp_path / "row.json", '{\n  "text": "a",\n  "label": "x",\n  "label": "y"\n}\n')
    assert _error(path) == f'{path}:1: json: duplicate key "label" in one object: {TWICE}'


def test_a_squad_file_names_the_question_with_a_key_twice(tmp_path: Path) -> None:
    qa = '{"id": "1", "question": "q?", "answers": [{"text": "c", "answer_start": 0}], "question": "r?"}'
    doc = '{"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [' + qa + ']}]}]}'
    path = _write(tmp_path / "squad.json", doc)
    expected = f'{path}: data[0].paragraphs[0].qas[0]: json: duplicate key "question" in one object: {TWICE}'
    assert _error(path) == expected
    with pytest.raises(DataError) as info:
        list(iter_squad(path, block=5))
    assert str(info.value) == expected
    top = _write(tmp_path / "top.json", doc.replace('"version": "1.1"', '"version": "1.1",\n"version": "2.0"')
                 .replace('"question": "r?"', '"x": 1'))
    assert _error(top) == f'{top}:2: json: duplicate key "version" in one object: {TWICE}'


def test_predict_input_lines_with_a_key_twice(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        lines_table(["plain text\n", '{"text": "a", "text": "b"}\n'], "<stdin>", "text")
    assert str(info.value) == f'<stdin>:2: duplicate key "text" in one object: {TWICE}'


def test_parquet_and_arrow_columns_named_twice(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    table = pa.table([pa.array(["a", "b"]), pa.array(["x", "y"]), pa.array(["c", "d"])],
                     names=["text", "label", "text"])
    pq.write_table(table, tmp_path / "train.parquet")
    feather.write_feather(table, tmp_path / "train.arrow")
    for path in (tmp_path / "train.parquet", tmp_path / "train.arrow"):
        expected = f"{path}: text: duplicate column name: a row would keep only the last column's value; give each " \
                   "column its own name"
        assert _error(path) == expected
        _cli_one_line(["data", "check", path], expected)


def test_a_synonym_file_with_a_word_twice(tmp_path: Path) -> None:
    from tunelab.data.synonyms import SynonymTable

    path = _write(tmp_path / "syn.json", '{"good": ["fine"],\n "bad": ["poor"],\n "good": ["great"]}\n')
    with pytest.raises(DataError) as info:
        SynonymTable.load(path)
    assert str(info.value) == f'{path}: synonyms: duplicate key "good" in one object: {TWICE}'


def test_a_key_twice_in_a_json_config_or_a_set_mapping(tmp_path: Path) -> None:
    """A .json config is read as JSON and its errors said as such (a key given twice with its line)."""
    config = _write(tmp_path / "run.json", '{"task": "classification",\n "model": "minilm",\n "task": "ner"}\n')
    _cli_one_line(["train", config], f"{config}:3: invalid JSON: duplicate key 'task': {TWICE}")
    upper = _write(tmp_path / "RUN.JSON", '{"task": "classification",\n "model": "minilm",\n "model": "x"}\n')
    _cli_one_line(["train", upper], f"{upper}:3: invalid JSON: duplicate key 'model': {TWICE}")
    broken = _write(tmp_path / "broken.json", '{"task": "classification",\n "model": "minilm"\n "train": {}}\n')
    _cli_one_line(["train", broken], f"{broken}:3: invalid JSON: Expecting ',' delimiter (column 2)")
    # JSON as JSON: a tab-indented file, an escaped pair of surrogates (one emoji), 1e-5 a number
    from tunelab.config.run import read_config_file

    tabbed = _write(tmp_path / "tabbed.json", '{\n\t"task": "classification",\n\t"name": "\\ud83d\\ude00",\n'
                                              '\t"train": {"lr": 1e-5}\n}\n')
    assert read_config_file(tabbed) == {"task": "classification", "name": "😀", "train": {"lr": 1e-5}}
    yml = _write(tmp_path / "run.yaml", "task: classification\nmodel: minilm\ntask: ner\n")
    _cli_one_line(["train", yml], f"{yml}:3: invalid YAML: duplicate key 'task': {TWICE}")
    _cli_one_line(["train", "--set", "data={train: a.jsonl, train: b.jsonl}"],
                  f"--set 'data={{train: a.jsonl, train: b.jsonl}}': duplicate key 'train': {TWICE}")


def _reference(text: str) -> bool:
    """Whether some object of `text` gives a key twice: every object's pairs, as the parser reads them."""
    found = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        found.append(len(set(keys)) < len(keys))
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return any(found)


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.random()
    if depth > 2 or kind < 0.4:
        return rng.choice(["", "a", ":", ": x", " :", '":', '" : x', "\\", '\\":', "{", "}", "k", "é:", 1, None,
                           2.5, True])
    if kind < 0.6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return [(rng.choice(["k", "a", ":", '"', "k:", "\\", "a\\", "a{", "b, ", "[", ": "]), _random_value(rng, depth + 1))
            for _ in range(rng.randint(0, 4))]


def _dump(value: Any, rng: random.Random) -> str:
    """JSON text of a random value whose objects are lists of pairs (so a key may come twice), in random spacing."""
    blank = lambda: rng.choice(["", " ", "\t", "  "])  # noqa: E731
    if isinstance(value, list) and all(isinstance(v, tuple) for v in value) and value:
        return "{" + ",".join(f"{blank()}{json.dumps(k)}{blank()}:{blank()}{_dump(v, rng)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v, rng) for v in value) + "]"
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


def test_the_cheap_test_never_misses_a_key_twice(tmp_path: Path) -> None:
    """3,000 random rows (keys and strings full of `:` and quotes, nested objects and lists, random blanks):
    `duplicate_key` (with each lower count of keys a caller may give it) and the JSONL and JSON-array readers (on
    every 10th) find a key twice exactly where the parser that keeps every pair sees one."""
    from tunelab.data.json_keys import duplicate_key, near_keys

    rng = random.Random(7)
    path, array = tmp_path / "row.jsonl", tmp_path / "rows.json"
    twice = 0
    for case in range(3000):
        pairs = [(rng.choice(["text", "label", "a:", '"']), _random_value(rng, 1)) for _ in range(rng.randint(1, 4))]
        text = _dump(pairs, rng)
        value = json.loads(text)
        want = _reference(text)
        twice += want
        for keys in (0, len(value), near_keys(value)):
            assert (duplicate_key(text, value, keys) is not None) == want, text
        if case % 10:
            continue  # the reader, on every 10th
        path.write_text(text + "\n", encoding="utf-8")
        array.write_text(f'[{{"text": "a: b"}}, {text}]', encoding="utf-8")
        for read in (lambda: [r.data for r in iter_jsonl(path)],
                     lambda: [r.data for r in read_table(array).records][1:]):
            try:
                assert read() == [value] and not want, text
            except DataError as err:
                assert want and "duplicate key" in str(err), (text, err)
    assert 300 < twice < 2700  # both kinds were tried
