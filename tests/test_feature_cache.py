"""The feature cache (data.cache): every task's training features read back from disk exactly as encoded; the key
changes with what the features depend on and only with that; a second run reuses them (same curve, same weights);
damaged or unwritable caches cost a warning, never the run; `tunelab data cache` lists and clears."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import sentiment_rows, write_jsonl
from test_matrix import VARIANTS, _table
from tunelab.cli import app
from tunelab.config.run import build_config
from tunelab.data.feature_store import FEATURES_FILE, FeatureStore, cache_entries, write_store
from tunelab.data.row_spill import CHUNK, STALE_S, SpilledRows, spill_rows
from tunelab.registry import TASKS
from tunelab.tasks import base
from tunelab.tasks.feature_cache import AUTO_ROWS, feature_key, training_features


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


def test_store_reads_back_what_was_written(tmp_path: Path) -> None:
    rows = [{"input_ids": list(range(i % 7 + 1)), "labels": [i % 3, -100], "example_index": i, "score": i / 3,
             "soft": [0.25, 0.75], "offset_mapping": [(0, 2), None, (3, 5)], "flag": i % 2 == 0}
            for i in range(50)]
    write_store(tmp_path / "k", (rows[s : s + 16] for s in range(0, 50, 16)))  # 4 record batches
    store = FeatureStore(tmp_path / "k" / FEATURES_FILE)
    want = [{**r, "offset_mapping": [[0, 2], None, [3, 5]]} for r in rows]  # tuples come back as lists
    assert len(store) == 50 and list(store) == want and store[-1] == want[-1] and store[14:18] == want[14:18]
    assert store.lengths == [len(r["input_ids"]) for r in rows]
    with pytest.raises(IndexError):
        store[50]
    assert not list(tmp_path.glob(".*.tmp")), "the temporary directory is gone"


def test_spilled_rows_read_back_what_was_written(tmp_path: Path) -> None:
    rows = [{"text": f"row {i}", "label": "ab"[i % 2], "line": i + 1, "row": {"text": f"row {i}", "id": (i, None)},
             "score": i / 3} for i in range(2 * CHUNK + 5)]  # three pickles, the last one short
    spilled = spill_rows(rows, tmp_path)
    assert isinstance(spilled, SpilledRows) and len(spilled) == len(rows)
    assert list(spilled) == rows and spilled[-1] == rows[-1]
    assert spilled[CHUNK - 2 : CHUNK + 2] == rows[CHUNK - 2 : CHUNK + 2]
    assert spilled[CHUNK]["row"]["id"] == (CHUNK, None), "pickled: tuples stay tuples"
    with pytest.raises(IndexError):
        spilled[len(rows)]
    assert list(tmp_path.iterdir()) == [], "the file is unlinked once mapped"
    stale, fresh = tmp_path / ".rows.dead.tmp", tmp_path / ".rows.writing.tmp"  # a dead writer's, a live one's
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * STALE_S,) * 2)
    spill_rows(rows, tmp_path)
    assert not stale.exists() and fresh.exists()
    fresh.unlink()
    assert spill_rows([], tmp_path) == [] and spill_rows(spilled, tmp_path) is spilled
    assert spill_rows(rows, tmp_path / "no-such-dir") is rows, "unwritable: the list is kept"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_task_reads_its_features_back(variant: str, cache: Path, request: pytest.FixtureRequest) -> None:
    """Miss (tokenised, written, mapped), then hit (mapped): both equal the in-memory features, and the hit
    leaves the task as ready to collate and score as encoding does."""
    name, arch, options, rows = VARIANTS[variant]
    model_path = str(request.getfixturevalue(f"tiny_{arch}"))
    cfg = build_config({"task": {"name": name, **options}, "model": model_path, "data": {"max_length": 24}})

    def fresh() -> tuple:
        task = TASKS.get(name)(cfg.task, cfg.data)
        examples = task.parse(_table(rows() * 3))
        _, tok = task.build_model(model_path, examples)
        return task, examples, tok

    task, examples, tok = fresh()
    want = task.train_features(task.encode(examples, tok))
    task, examples, tok = fresh()
    miss = training_features(task, examples, tok, use_cache=True)
    task, examples, tok = fresh()
    hit = training_features(task, examples, tok, use_cache=True)
    assert miss.cached == hit.cached and hit.cached is not None and len(cache_entries()) == 1
    assert list(miss.features) == list(hit.features) == _as_lists(want)
    assert hit.longest == max(len(f["input_ids"]) for f in task.encode(examples, tok))
    if name == "classification":  # encoded a chunk at a time: example_index continues across chunks
        task, examples, tok = fresh()
        cfg2 = build_config({"task": name, "model": model_path, "data": {"truncation": "sliding_window",
                                                                          "max_length": 8, "window_stride": 2}})
        task = TASKS.get(name)(cfg2.task, cfg2.data)
        task.build_model(model_path, examples)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(base, "TOKENIZE_CHUNK", 5)
            parts = training_features(task, examples, tok, use_cache=True)
        assert list(parts.features) == _as_lists(task.encode(examples, tok))
    if name == "pretrain":  # documents packed part by part, the open blocks carried: the same blocks
        task, examples, tok = fresh()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(base, "TOKENIZE_CHUNK", 2)
            mp.setenv("TUNELAB_CACHE", str(cache.parent / "parts"))
            parts = training_features(task, examples, tok, use_cache=True)
            assert len(list(task.training_parts(examples, tok))) > 1
        assert list(parts.features) == _as_lists(want)


def _as_lists(features: list[dict]) -> list[dict]:
    return json.loads(json.dumps(features))  # tuples as lists, as Arrow gives them back


def test_key_follows_what_features_depend_on(tiny_bert: Path) -> None:
    def key(rows: list[dict], data: dict | None = None, train: dict | None = None, token: str | None = None) -> str:
        cfg = build_config({"task": "classification", "model": str(tiny_bert), "data": data or {},
                            "train": train or {}})
        task = TASKS.get("classification")(cfg.task, cfg.data)
        examples = task.parse(_table(rows))
        _, tok = task.build_model(str(tiny_bert), examples)
        if token:
            tok.add_tokens([token])
        return feature_key(task, examples, tok)

    rows = sentiment_rows(12)
    base = key(rows)
    assert key(rows) == base
    assert key(rows, train={"lr": 1e-3, "epochs": 9, "seed": 7}) == base, "a sweep shares the features"
    assert key(rows, data={"train": "elsewhere.jsonl", "cache": True, "cache_limit_gb": 1}) == base, "nor paths"
    edited = [dict(r) for r in rows]
    edited[5]["text"] += " good"
    changed = {
        "a row": key(edited),
        "max_length": key(rows, data={"max_length": 32}),
        "truncation": key(rows, data={"truncation": "tail"}),
        "the tokenizer": key(rows, token="zzzz"),
        "the label map": key([{**r, "label": {"negative": "neg", "positive": "pos"}[r["label"]]} for r in rows]),
        "the rows' count": key(rows[:-1]),
    }
    assert base not in changed.values() and len(set(changed.values())) == len(changed), changed


def _train(model: Path, tmp: Path, name: str, *sets: str) -> tuple[int, str]:
    train = tmp / "train.jsonl"
    if not train.exists():
        write_jsonl(train, sentiment_rows(64, 0))
        write_jsonl(tmp / "val.jsonl", sentiment_rows(16, 1))
    args = ["task=classification", f"model={model}", f"data.train={train}", f"data.validation={tmp / 'val.jsonl'}",
            f"output_dir={tmp / name}", "train.epochs=2", "train.lr=5e-3", "train.batch_size=8",
            "train.save_steps=0", "train.precision=fp32", "train.report=false", *sets]
    res = CliRunner().invoke(app, ["train", *[a for s in args for a in ("--set", s)]])
    return res.exit_code, res.output


def _curve(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_second_run_reuses_the_cache(tiny_bert: Path, tmp_path: Path, cache: Path) -> None:
    code, out = _train(tiny_bert, tmp_path, "memory", "data.cache=false")
    assert code == 0, out
    assert not cache.exists(), "data.cache=false writes nothing"
    code, first = _train(tiny_bert, tmp_path, "first", "data.cache=true", "train.report=true")
    assert code == 0 and "tokenised training rows cached in" in first, first
    code, second = _train(tiny_bert, tmp_path, "second", "data.cache=true")
    assert code == 0 and "64 tokenised training rows reused from" in second, second
    assert _curve(tmp_path / "memory") == _curve(tmp_path / "first") == _curve(tmp_path / "second")
    weights = [(tmp_path / r / "model" / "model.safetensors").read_bytes() for r in ("memory", "first", "second")]
    assert weights[0] == weights[1] == weights[2]
    summaries = [(tmp_path / r / "data_summary.json").read_text() for r in ("memory", "first", "second")]
    assert summaries[0] == summaries[1] == summaries[2], "the spilled training rows summarise as the list did"
    page = (tmp_path / "first" / "report.html").read_text()  # its near-duplicate and label sections read them too
    assert "of 16 rows" in page and "training split is not available" not in page

    listed = CliRunner().invoke(app, ["data", "cache"])
    assert listed.exit_code == 0 and "1 cached feature sets" in listed.output and "classification" in listed.output
    cleared = CliRunner().invoke(app, ["data", "cache", "--clear"])
    assert cleared.exit_code == 0 and "deleted 1 cached feature sets" in cleared.output
    assert cache_entries() == []


def test_damaged_or_unwritable_cache_costs_a_warning(tiny_bert: Path, tmp_path: Path, cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _train(tiny_bert, tmp_path, "a", "data.cache=true")
    assert code == 0, out
    (entry,) = cache_entries()
    arrow = Path(entry["path"]) / FEATURES_FILE
    arrow.write_bytes(arrow.read_bytes()[:100])  # truncated
    code, out = _train(tiny_bert, tmp_path, "b", "data.cache=true")
    assert code == 0 and "unreadable" in out and "tokenising again" in out, out
    assert _curve(tmp_path / "a") == _curve(tmp_path / "b")
    assert FeatureStore(arrow)[0]["input_ids"], "rebuilt in place"

    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "a-file" / "cache"))  # unwritable, even for root
    code, out = _train(tiny_bert, tmp_path, "c", "data.cache=true")
    assert code == 0 and "cannot be used" in out and "tokenising in memory" in out, out
    assert _curve(tmp_path / "a") == _curve(tmp_path / "c")


def test_auto_caches_large_splits_only(tiny_bert: Path, cache: Path) -> None:
    cfg = build_config({"task": "classification", "model": str(tiny_bert)})
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(_table(sentiment_rows(12)))
    _, tok = task.build_model(str(tiny_bert), examples)
    assert training_features(task, examples, tok, use_cache=None).cached is None
    many = examples * (AUTO_ROWS // len(examples) + 1)
    got = training_features(task, many, tok, use_cache=None)
    assert got.cached is not None and len(got.features) == len(many)


def test_soft_labels_keep_one_shape_and_arrow_failures_fall_back(tiny_bert: Path, cache: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One soft label makes every label of the split a distribution: such a split is encoded whole, not in parts.
    Forced into parts anyway, the parts' label shapes differ, Arrow refuses the second, and the run tokenises in
    memory with a warning instead of failing."""
    from tunelab.tasks import feature_cache
    from tunelab.tasks.classification import Classification

    rows = sentiment_rows(12)
    rows[9]["label"] = {"positive": 0.7, "negative": 0.3}  # in the second part of 5
    cfg = build_config({"task": "classification", "model": str(tiny_bert)})
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(_table(rows))
    _, tok = task.build_model(str(tiny_bert), examples)
    want = _as_lists(task.encode(examples, tok))
    assert isinstance(want[0]["labels"], list) and not task.encodes_in_parts(examples)
    monkeypatch.setattr(base, "TOKENIZE_CHUNK", 5)
    assert list(training_features(task, examples, tok, use_cache=True).features) == want

    monkeypatch.setattr(Classification, "encodes_in_parts", lambda self, examples: True)
    examples = examples[:-1]  # another key
    said: list[str] = []
    monkeypatch.setattr(feature_cache, "say", said.append)
    got = training_features(task, examples, tok, use_cache=True)
    assert got.cached is None and list(got.features) == _as_lists(task.encode(examples, tok))
    assert any("cannot be used" in line and "tokenising in memory" in line for line in said), said
    assert len(cache_entries()) == 1 and not list(cache.glob(".*.tmp")), "the failed entry left nothing behind"


def test_least_recently_used_entries_go_first(tmp_path: Path, cache: Path) -> None:
    import os

    from tunelab.data.feature_store import META_FILE, evict

    for i, key in enumerate(["old", "mid", "new"]):  # 40 rows each; last used 3, 2, 1 hours ago
        write_store(cache / key, [[{"input_ids": list(range(500))}] * 40],
                    lambda tmp: (tmp / META_FILE).write_text("{}"))
        os.utime(cache / key / META_FILE, (0, 1_000_000 + 3600 * i))
    writing = cache / f".busy.{os.getpid()}.tmp"  # a live writer's temporary: features there, meta not yet
    writing.mkdir()
    (writing / "features.arrow").write_bytes(b"x" * 100_000)
    size = sum(p.stat().st_size for p in (cache / "old").rglob("*") if p.is_file()) / 2**30  # one entry, GB
    assert evict(10 * size, keep=cache / "new") == (0, 0.0)  # under the limit: nothing goes
    n, _ = evict(2.5 * size, keep=cache / "new")
    assert n == 1 and sorted(e["key"] for e in cache_entries()) == ["mid", "new"]
    n, _ = evict(size / 10, keep=cache / "mid")  # the entry in use stays even when it alone is over
    assert n == 1 and [e["key"] for e in cache_entries()] == ["mid"]
    assert (writing / "features.arrow").exists(), "another process's entry in the making is left alone"


def test_a_run_over_the_limit_evicts_older_entries_and_reuse_counts_as_use(tiny_bert: Path, tmp_path: Path,
                                                                            cache: Path) -> None:
    code, out = _train(tiny_bert, tmp_path, "a", "data.cache=true")
    assert code == 0 and len(cache_entries()) == 1, out
    first = cache_entries()[0]["key"]
    other = write_jsonl(tmp_path / "other.jsonl", sentiment_rows(48, 5))  # other rows: another key
    code, out = _train(tiny_bert, tmp_path, "b", "data.cache=true", f"data.train={other}",
                       "data.cache_limit_gb=0.000001")
    assert code == 0, out
    assert "removed the 1 least recently used entries" in out
    assert [e["key"] for e in cache_entries()] != [first] and len(cache_entries()) == 1
    code, out = _train(tiny_bert, tmp_path, "c", "data.cache=true", f"data.train={other}",
                       "data.cache_limit_gb=0.000001")
    assert code == 0 and "reused from" in out and "removed" not in out, out


def test_scoring_only_settings_share_the_features() -> None:
    """NER's decoding and seqeval mode change how outputs are read, not the features: one cache entry."""
    from tunelab.config.sections import DataConfig
    from tunelab.tasks.ner import Ner, NerConfig

    def ner_key(**cfg: object) -> str:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        raw = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "a": 2, "b": 3}, unk_token="[UNK]"))
        raw.pre_tokenizer = pre_tokenizers.Whitespace()
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]")
        task = Ner(NerConfig(**cfg), DataConfig(max_length=16))
        task.labels = ["O", "B-X", "I-X"]
        examples = [{"tokens": ["a", "b"], "tags": ["B-X", "I-X"], "source": "m", "line": 1, "row": {}}]
        return feature_key(task, examples, tok)

    assert ner_key() == ner_key(decoding="argmax") == ner_key(strict=True)
    assert ner_key() != ner_key(label_all_subwords=True)
