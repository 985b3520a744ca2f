"""Task x method matrix on tiny random models: a few steps train what they should, freeze what they
should, and the exported model reloads and predicts exactly like the trained one. Every registered task meets
every registered method: a pair is either a case (trained, exported, reloaded) or a documented refusal."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import POS, WORDS, say_rows, sentiment_rows, write_jsonl
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError, TunelabError
from tunelab.evaluation.evaluate import logits_for
from tunelab.export.save import load_model, save_model
from tunelab.methods.qlora import qlora_missing
from tunelab.models.precision import resolve_precision
from tunelab.registry import METHODS, TASKS
from tunelab.training import batching, engine
from tunelab.training.rdrop import RDropLoss

CASES = [
    ("bert", "full", {}),
    ("bert", "freeze", {"k": 1}),
    ("bert", "freeze", {"k": 0}),
    ("bert", "lora", {"r": 4}),
    ("bert", "dora", {"r": 4}),
    ("llama", "full", {}),
    ("llama", "lora", {"r": 4}),
]


def _table(rows: list[dict]) -> Table:
    return Table("mem.jsonl", [Record("mem.jsonl", i + 1, r) for i, r in enumerate(rows)])


@pytest.mark.parametrize(("arch", "method", "options"), CASES,
                         ids=[f"{a}-{m}" + "".join(f"-{k}{v}" for k, v in o.items()) for a, m, o in CASES])
def test_train_freeze_export(
    arch: str, method: str, options: dict, tiny_bert: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    model_path = str(tiny_bert if arch == "bert" else tiny_llama)
    cfg = build_config(
        {
            "task": "classification",
            "model": model_path,
            "output_dir": str(tmp_path),
            "method": {"name": method, **options},
            "train": {"max_steps": 3, "batch_size": 8, "lr": 1e-2, "save_steps": 0},
        }
    )
    engine.seed_everything(0)
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(_table(sentiment_rows(24)))
    model, tok = task.build_model(model_path, examples)
    m = METHODS.get(method)(cfg.method)
    model = m.apply(model, task.head_modules(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    assert any("classifier" in n or "score" in n for n in trainable), "the head must train"
    if method == "freeze":
        assert not any("embed" in n for n in trainable)
    if method in ("lora", "dora"):
        assert all("lora_" in n or "modules_to_save" in n for n in trainable), sorted(trainable)

    feats = task.encode(examples, tok)
    result = engine.train(model, feats, partial(task.collate, pad_id=tok.pad_token_id), cfg.train, lr=1e-2)
    assert result.steps == 3 and math.isfinite(result.train_loss)
    after = dict(model.named_parameters())
    changed = {n for n in before if not _unchanged(before[n], after[n])}
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)}"
    moved = {n for n in trainable if "lora_A" not in n}  # lora_A is not guaranteed to move first
    assert len(changed & moved) >= len(moved) // 2, f"trainable parameters barely moved: {sorted(moved - changed)}"

    want = logits_for(task, model, tok, examples)
    saved = save_model(model, tok, task, m, cfg, tmp_path)
    assert (tmp_path / "model" / "tunelab.json").is_file()
    assert (tmp_path / "adapter").is_dir() == (method in ("lora", "dora"))
    task2, model2, tok2 = load_model(tmp_path / "model")
    got = logits_for(task2, model2, tok2, task2.parse(_table(sentiment_rows(24)), labelled=False))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert saved is not None


def test_adapter_holds_the_head(tiny_bert: Path, tmp_path: Path) -> None:
    """The LoRA adapter saved under RUN/adapter includes the trained classification head."""
    from safetensors.torch import load_file

    cfg = build_config(
        {
            "task": "classification",
            "model": str(tiny_bert),
            "output_dir": str(tmp_path),
            "method": "lora",
            "train": {"max_steps": 1, "save_steps": 0},
        }
    )
    task = TASKS.get("classification")(cfg.task, cfg.data)
    examples = task.parse(_table(sentiment_rows(8)))
    model, tok = task.build_model(str(tiny_bert), examples)
    m = METHODS.get("lora")(cfg.method)
    model = m.apply(model, task.head_modules(model))
    save_model(model, tok, task, m, cfg, tmp_path)
    keys = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")).keys()
    assert any("classifier" in k for k in keys), sorted(keys)


def test_batch_order_groups_and_covers() -> None:
    lengths = [int(x) for x in np.random.default_rng(0).integers(2, 100, size=1000)]
    order = batching.batch_order(lengths, 16, seed=3, group_by_length=True)
    assert sorted(i for b in order for i in b) == list(range(1000))
    assert order == batching.batch_order(lengths, 16, seed=3, group_by_length=True)
    assert order != batching.batch_order(lengths, 16, seed=4, group_by_length=True)
    pad = sum(len(b) * max(lengths[i] for i in b) for b in order)
    plain = batching.batch_order(lengths, 16, seed=3, group_by_length=False)
    pad_plain = sum(len(b) * max(lengths[i] for i in b) for b in plain)
    assert pad < 0.7 * pad_plain
    assert max(lengths[i] for i in order[0]) == max(lengths)  # longest first: OOM shows at step 1


def test_resolve_precision_auto_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"  # TUNELAB_PRECISION=fp32 (conftest)
    monkeypatch.delenv("TUNELAB_PRECISION")
    p = resolve_precision("auto", torch.device("cpu"))
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert p == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


# -- every registered task x every registered method ------------------------------------------------
FILL = [w for w in WORDS[14:] if w not in ("the", "a")]  # QA filler words: never an answer


def _ner_rows() -> list[dict]:
    return [{"tokens": ["the", "actor", "is", "good"], "tags": ["O", "B-PER", "O", "O"]} if i % 2 else
            {"tokens": ["a", "film", "story", "was", "bad"], "tags": ["O", "B-LOC", "I-LOC", "O", "O"]}
            for i in range(8)]


def _qa_rows() -> list[dict]:
    """The answer is the one positive word among 6-30 filler words: long contexts take two windows."""
    rng, rows = random.Random(0), []
    for _ in range(8):
        words = [rng.choice(FILL) for _ in range(rng.randint(6, 30))]
        k = rng.randrange(len(words))
        words[k] = rng.choice(POS)
        start = len(" ".join(words[:k])) + (1 if k else 0)
        rows.append({"context": " ".join(words), "question": "good",
                     "answers": {"text": [words[k]], "answer_start": [start]}})
    return rows


def _docs() -> list[dict]:
    return [{"text": " ".join(WORDS[i : i + 8])} for i in range(0, 24, 2)]


# variant -> (task, tiny model, task options, rows): every registered task, and the task settings that change
# which methods it accepts (packing; the masked-LM objective)
VARIANTS: dict[str, tuple[str, str, dict, Callable[[], list[dict]]]] = {
    "classification": ("classification", "bert", {}, lambda: sentiment_rows(8)),
    "ner": ("ner", "bert", {}, _ner_rows),
    "qa": ("qa", "bert", {"doc_stride": 4, "max_question_length": 4}, _qa_rows),
    "sft": ("sft", "llama", {}, lambda: say_rows(WORDS[:8])),  # ChatML added: new tokens
    "sft_packed": ("sft", "llama", {"packing": True}, lambda: say_rows(WORDS[:8])),
    "pretrain": ("pretrain", "llama", {}, _docs),  # objective auto: clm
    "pretrain_mlm": ("pretrain", "bert", {}, _docs),  # objective auto: mlm, on a fresh masked-LM head
}
METHOD_OPTIONS = {"freeze": {"k": 1}, "lora": {"r": 4}, "dora": {"r": 4}, "qlora": {"r": 4},
                  "prefix": {"num_virtual_tokens": 3}, "prompt": {"num_virtual_tokens": 3}}
_CAUSAL_ONLY = (r"^config: method: {m} tuning works with causal LMs only \(task sft, or pretrain with objective "
                r"clm\); this run builds a {cls}; use lora$")
REFUSED = {  # (variant, method) -> the one-line message of the ConfigError
    **{(v, m): _CAUSAL_ONLY.format(m=m, cls=cls) for v, cls in (
        ("classification", "BertForSequenceClassification"), ("ner", "BertForTokenClassification"),
        ("qa", "BertForQuestionAnswering"), ("pretrain_mlm", "BertForMaskedLM")) for m in ("prefix", "prompt")},
    **{("sft_packed", m): rf"^config: task.packing: {m} tuning cannot be packed \(its virtual tokens would be "
                          r"shared by every example of a row\); set task.packing: false$"
       for m in ("prefix", "prompt")},
}
PAIRS = [(v, m) for v in VARIANTS for m in METHODS.names()]


def test_the_matrix_is_complete() -> None:
    assert {task for task, *_ in VARIANTS.values()} == set(TASKS.names())
    assert set(METHODS.names()) == {"full", *METHOD_OPTIONS}
    assert set(REFUSED) < set(PAIRS)


def _prepare(variant: str, method: str, model_path: Path, tmp_path: Path) -> tuple:
    """What pipeline.run does before training, in its order; refusals surface here."""
    name, _, task_options, rows = VARIANTS[variant]
    cfg = build_config({"task": {"name": name, **task_options}, "model": str(model_path),
                        "output_dir": str(tmp_path), "method": {"name": method, **METHOD_OPTIONS.get(method, {})},
                        "data": {"max_length": 24},
                        "train": {"max_steps": 3, "batch_size": 4, "lr": 1e-2, "save_steps": 0}})
    engine.seed_everything(0)
    task = TASKS.get(name)(cfg.task, cfg.data)
    task.check_method(method)
    examples = task.parse(_table(rows()))
    model, tok = task.build_model(str(model_path), examples)
    task.configure_loss(cfg.train, examples)
    m = METHODS.get(method)(cfg.method)
    return cfg, task, examples, m.apply(model, task.head_modules(model), task.new_token_ids), tok, m


def _unchanged(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Bit-identical, wherever training left the tensor (a GPU run moves it to cuda). A frozen tensor that was only
    cast counts as unchanged when the cast explains it: bitsandbytes casts a 4-bit layer's bias to the compute dtype
    in its forward."""
    after = after.detach().to(before.device)
    if after.dtype != before.dtype:
        before = before.to(after.dtype)
    return before.shape == after.shape and torch.equal(before.reshape(-1).view(torch.uint8),
                                                       after.reshape(-1).view(torch.uint8))


def _numbers(scores: object) -> np.ndarray:
    """Every number of a task's scores, flat: classification and NER arrays, QA's (window logits, offsets) lists,
    sft / pretrain per-example [loss sum, token count]."""
    if isinstance(scores, np.ndarray) and scores.dtype != object:
        return scores.astype(np.float64).ravel()
    if isinstance(scores, list | tuple | np.ndarray):
        return np.concatenate([np.zeros(0), *(_numbers(s) for s in scores)])
    return np.zeros(0) if scores is None else np.asarray([float(scores)])


@pytest.mark.parametrize(("variant", "method"), [pytest.param(v, m, id=f"{v}-{m}") for v, m in PAIRS
                                                 if (v, m) not in REFUSED])
def test_task_method(variant: str, method: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model_path = request.getfixturevalue(f"tiny_{VARIANTS[variant][1]}")
    if method == "qlora" and qlora_missing():
        with pytest.raises(ConfigError) as err:  # refused before anything loads, in one line
            _prepare(variant, method, model_path, tmp_path)
        assert "\n" not in str(err.value) and "qlora needs a CUDA GPU" in str(err.value)
        pytest.skip("qlora needs a CUDA GPU (and bitsandbytes); on CPU tunelab refuses it")
    cfg, task, examples, model, tok, m = _prepare(variant, method, model_path, tmp_path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and (method == "full") == (trainable == set(before)), sorted(trainable)

    untrained = logits_for(task, model, tok, examples)
    feats = task.train_features(task.encode(examples, tok))
    result = engine.train(model, feats, partial(task.collate, pad_id=tok.pad_token_id), cfg.train, lr=cfg.train.lr,
                          loss_fn=task.loss_fn(), loss_units=task.loss_units)
    assert result.steps == 3 and math.isfinite(result.train_loss)
    changed = {n for n, p in model.named_parameters() if not _unchanged(before[n], p)}
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)}"
    # lora_A is not guaranteed to move first; a module nothing reads gets no gradient (the pooler a masked LM keeps
    # for export, and its LoRA adapters)
    moved = {n for n in trainable if "lora_A" not in n}
    assert len(moved - changed) <= len(moved) // 4, f"trainable parameters did not move: {sorted(moved - changed)}"

    want = logits_for(task, model, tok, examples)  # sft / pretrain: per example [loss sum, tokens]
    assert np.abs(_numbers(want) - _numbers(untrained)).max() > 1e-4, "training left the scores as they were"
    save_model(model, tok, task, m, cfg, tmp_path)
    assert (tmp_path / "adapter").is_dir() == (method not in ("full", "freeze"))
    task2, model2, tok2 = load_model(tmp_path / "model")
    got = logits_for(task2, model2, tok2, task2.parse(_table(VARIANTS[variant][3]())))
    # qlora (GPU only, not run on CPU) trains on NF4-quantised base weights and exports the adapter merged into the
    # unquantised ones: the reloaded model differs from the trained one by the quantisation error
    atol = 1e-5 if method != "qlora" else 0.1 * np.abs(_numbers(want)).max()
    np.testing.assert_allclose(_numbers(got), _numbers(want), atol=atol)


@pytest.mark.parametrize(("variant", "method", "message"), [pytest.param(v, m, msg, id=f"{v}-{m}")
                                                            for (v, m), msg in REFUSED.items()])
def test_task_refuses_method(variant: str, method: str, message: str, request: pytest.FixtureRequest,
                             tmp_path: Path) -> None:
    model_path = request.getfixturevalue(f"tiny_{VARIANTS[variant][1]}")
    with pytest.raises(TunelabError, match=message) as err:
        _prepare(variant, method, model_path, tmp_path)
    assert isinstance(err.value, ConfigError) and "\n" not in str(err.value)


# ------------------------------------------------------------------------ R-Drop (train.rdrop), per task
@pytest.mark.parametrize("variant", ["classification", "ner", "qa"])
def test_rdrop_adds_the_divergence_of_two_dropout_samples(variant: str, request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    model_path = request.getfixturevalue(f"tiny_{VARIANTS[variant][1]}")
    cfg, task, examples, model, tok, _ = _prepare(variant, "full", model_path, tmp_path)
    batch = task.collate(task.train_features(task.encode(examples, tok))[:4], pad_id=tok.pad_token_id)
    plain = task.loss_fn() or (lambda m, b: m(**b).loss)

    def rdrop(alpha: float, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return RDropLoss(task, task.loss_fn(), alpha)(model, batch)

    model.eval()  # no dropout: both copies agree, so R-Drop is the plain loss whatever alpha
    assert float(rdrop(1.0, 0).detach()) == pytest.approx(float(plain(model, batch).detach()), rel=1e-5)
    model.train()  # dropout: the same two samples (seed) with and without the divergence (large alpha: the tiny
    extra = float(rdrop(1000.0, 0) - rdrop(0.0, 0))  # model's two samples differ little)
    assert extra > 1e-4 and float(rdrop(2000.0, 0) - rdrop(0.0, 0)) == pytest.approx(2 * extra, rel=1e-3)
    if variant == "classification":  # the divergence itself: ¼ (KL(p‖q) + KL(q‖p)), the paper's eq. 3 halved
        torch.manual_seed(0)
        twice = {k: torch.cat([v, v]) for k, v in batch.items()}
        logp = torch.log_softmax(model(**twice).logits.float(), -1)
        p, q = logp[:4], logp[4:]
        kl = (p.exp() * (p - q)).sum(-1).mean() + (q.exp() * (q - p)).sum(-1).mean()
        assert extra == pytest.approx(250 * float(kl), rel=1e-3)
    model.zero_grad()
    rdrop(1.0, 1).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    loss = RDropLoss(task, task.loss_fn(), 1.0)  # the engine's passes halved: stacked, a pass keeps to the limit
    small = cfg.train.model_copy(update={"micro_batch_tokens": 64})
    assert engine.Loop(model, [], batch, small, 1e-3, None, None, loss, None).pass_tokens == 32
    feats = task.train_features(task.encode(examples, tok))  # and through the engine (row gradients, passes)
    result = engine.train(model, feats, partial(task.collate, pad_id=tok.pad_token_id), cfg.train, lr=cfg.train.lr,
                          loss_fn=RDropLoss(task, task.loss_fn(), 1.0), loss_units=task.loss_units)
    assert result.steps == 3 and math.isfinite(result.train_loss)


def test_a_teacher_trained_with_rdrop_distills(tmp_path: Path) -> None:
    """The teacher's config carries train.rdrop; the student's does not (R-Drop and distill do not combine)."""
    from tunelab.studies.distill import distill_config

    teacher = tmp_path / "teacher"
    (teacher / "model").mkdir(parents=True)
    (teacher / "model" / "tunelab.json").write_text("{}", encoding="utf-8")
    (teacher / "config.yaml").write_text("task: ner\nmodel: minilm\ntrain: {rdrop: 1.0, epochs: 2}\n",
                                         encoding="utf-8")
    cfg = distill_config(teacher, "layers:0", 2.0, 0.5, None, [])
    assert cfg.train.rdrop == 0 and cfg.train.epochs == 2 and cfg.distill is not None


def test_rdrop_refusals(tiny_llama: Path, tiny_bert: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tunelab.cli import app

    data = write_jsonl(tmp_path / "say.jsonl", say_rows(WORDS[:8]))
    cases = [(["task=sft", f"model={tiny_llama}"], "--set train.rdrop: task sft has no output divergence"),
             (["task=classification", f"model={tiny_bert}", f"distill.teacher={tiny_bert}"],
              "--set train.rdrop: R-Drop and distill cannot be combined")]
    for sets, message in cases:
        args = [*sets, f"data.train={data}", f"output_dir={tmp_path / 'run'}", "train.rdrop=0.5"]
        res = CliRunner().invoke(app, ["train", *[a for s in args for a in ("--set", s)]])
        assert res.exit_code == 2 and res.output.strip().startswith(f"error: {message}"), res.output
        assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_freeze_keeps_embeddings_frozen_whatever_their_name() -> None:
    """GPT-2's embeddings are `wte` / `wpe` (no "embed" in the name): frozen like any model's; k=0 (a linear probe)
    trains the final norm and the head only, k=1 the top block too."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from tunelab.methods.freeze import Freeze, FreezeConfig

    def trainable(k: int) -> set[str]:
        model = GPT2ForSequenceClassification(GPT2Config(vocab_size=40, n_positions=16, n_embd=8, n_layer=2, n_head=2))
        model = Freeze(FreezeConfig(k=k)).apply(model, ["score"])
        return {n for n, p in model.named_parameters() if p.requires_grad}

    assert trainable(0) == {"transformer.ln_f.weight", "transformer.ln_f.bias", "score.weight"}
    one = trainable(1)
    assert one - trainable(0) == {n for n in one if n.startswith("transformer.h.1.")} != set()


def test_lora_on_a_head_of_two_layers_trains_and_merges(tmp_path: Path) -> None:
    """DistilBERT's classification head is pre_classifier + classifier, both new: both train whole (saved with the
    adapter) — peft matched `classifier` to `pre_classifier` by suffix too, over its LoRA layer: a TypeError after
    the run had started."""
    import json

    from transformers import DistilBertConfig, DistilBertModel
    from typer.testing import CliRunner

    from conftest import WORDS, _tokenizer, write_jsonl
    from tunelab.cli import app

    tok = _tokenizer(WORDS, bert=True)
    model = tmp_path / "distil"
    DistilBertModel(DistilBertConfig(vocab_size=len(tok), dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                                     max_position_embeddings=64, pad_token_id=tok.pad_token_id)).save_pretrained(model)
    tok.save_pretrained(model)
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16))
    run = tmp_path / "run"
    sets = ["task=classification", f"model={model}", f"data.train={train}", "data.max_length=32", f"output_dir={run}",
            "method=lora", "train.max_steps=2", "train.batch_size=8", "train.save_steps=0", "train.report=false"]
    res = CliRunner().invoke(app, ["train", *(x for s in sets for x in ("--set", s))])
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert sorted(saved["modules_to_save"]) == ["classifier", "pre_classifier"]
    res = CliRunner().invoke(app, ["export", str(run), "--merge"])
    assert res.exit_code == 0, res.output
