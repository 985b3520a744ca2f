"""Row gradients for the word embedding (training/sparse_rows.py): the same weights as dense AdamW, the untouched
rows skipped, and the cases where it must stay dense."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import pytest
import torch

from conftest import sentiment_rows
from tunelab.config.run import build_config
from tunelab.data.readers import Record, Table
from tunelab.registry import METHODS, TASKS
from tunelab.training import engine
from tunelab.training.sparse_rows import RowAdamW, clip_grad_norm


def _train(model_path: Path, sparse: bool, method: str = "full", **train: object) -> tuple[torch.nn.Module, object]:
    cfg = build_config({"task": "classification", "model": str(model_path), "method": method,
                        "train": {"batch_size": 8, "lr": 3e-3, "epochs": 3, "weight_decay": 0.1, "warmup": 0.2,
                                  "max_grad_norm": 0.5, "precision": "fp32", "save_steps": 0,
                                  "sparse_embeddings": sparse, **train}})
    engine.seed_everything(0)
    task = TASKS.get("classification")(cfg.task, cfg.data)
    table = Table("mem.jsonl", [Record("mem.jsonl", i + 1, r) for i, r in enumerate(sentiment_rows(32))])
    examples = task.parse(table)
    model, tok = task.build_model(str(model_path), examples)
    model = METHODS.get(method)(cfg.method).apply(model, task.head_modules(model))
    feats = task.encode(examples, tok)
    result = engine.train(model, feats, partial(task.collate, pad_id=tok.pad_token_id), cfg.train, 3e-3)
    return model, (result, feats)


BETAS = {"adam_beta1": 0.8, "adam_beta2": 0.95, "adam_epsilon": 1e-6}  # train's AdamW settings, not torch's defaults


# neftune: the noise on the embedding's output (its own forward hook, beside the rows' `read_by` pre-hook) enters
# neither the weights nor the row bookkeeping: the same weights as dense AdamW with the same noise
@pytest.mark.parametrize("extra", [{}, {"grad_accum": 2, "micro_batch_tokens": 24}, BETAS, {"neftune_alpha": 5.0}],
                         ids=["plain", "accumulated", "betas", "neftune"])
def test_row_gradients_give_dense_adamw_weights(extra: dict, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dense, _ = _train(tiny_bert, sparse=False, **extra)
    row_steps = []
    step_rows = RowAdamW._step_rows
    monkeypatch.setattr(RowAdamW, "_step_rows", lambda self, p, g: (row_steps.append(1), step_rows(self, p, g)))
    sparse, (result, feats) = _train(tiny_bert, sparse=True, **extra)
    assert len(row_steps) == result.steps == 12 // extra.get("grad_accum", 1)  # every step took the row path
    emb = sparse.get_input_embeddings()
    assert emb.sparse is False  # put back for inference and export
    used = sorted({t for f in feats for t in f["input_ids"]})
    unused = sorted(set(range(emb.num_embeddings)) - set(used))
    assert used and unused  # both kinds of rows are in the test
    a, b = dense.state_dict(), sparse.state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=2e-5, atol=2e-6, msg=name)
    key = next(k for k in a if "word_embeddings" in k)
    start = _fresh_embedding(tiny_bert)
    # untouched rows moved by weight decay alone (12 steps at lr 3e-3·schedule, wd 0.1); touched rows learned
    assert not torch.equal(b[key][unused], start[unused])
    assert (b[key][used] - start[used]).abs().max() > 10 * (b[key][unused] - start[unused]).abs().max()


def _fresh_embedding(model_path: Path) -> torch.Tensor:
    from transformers import AutoModel
    return AutoModel.from_pretrained(model_path).get_input_embeddings().weight.detach()


def test_resume_from_a_checkpoint_written_with_row_gradients(tiny_bert: Path, tmp_path: Path) -> None:
    """The checkpointed optimizer state is AdamW's (the touched rows are read back from its moments)."""
    model, _ = _train(tiny_bert, sparse=True)
    emb = model.get_input_embeddings()
    opt = RowAdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    emb.sparse = True
    batch = {"input_ids": torch.tensor([[2, 5, 5, 7]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([1])}
    for _ in range(2):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    opt.settle()
    state = opt.state_dict()
    assert set(state["state"][_index(model, emb.weight)]) == {"step", "exp_avg", "exp_avg_sq"}
    again = RowAdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    again.load_state_dict(state)
    model(**batch).loss.backward()
    again.step()
    assert again._rows[emb.weight].touched.nonzero().flatten().tolist() == [2, 5, 7]


def _index(model: torch.nn.Module, param: torch.nn.Parameter) -> int:
    return next(i for i, p in enumerate(model.parameters()) if p is param)


def test_clip_grad_norm_matches_torch_on_the_dense_equivalent() -> None:
    torch.manual_seed(0)
    emb, lin = torch.nn.Embedding(12, 4, sparse=True), torch.nn.Linear(4, 3)
    ids = torch.tensor([[1, 3, 3, 9]])
    lin(emb(ids)).pow(2).sum().backward()
    dense_grad = emb.weight.grad.to_dense().clone()
    ref = [dense_grad, lin.weight.grad.clone(), lin.bias.grad.clone()]
    norm = clip_grad_norm(list(emb.parameters()) + list(lin.parameters()), 0.1)
    want = torch.nn.utils.get_total_norm(ref)
    ref = [g * min(1.0, 0.1 / (float(want) + 1e-6)) for g in ref]
    torch.testing.assert_close(norm, want)
    torch.testing.assert_close(emb.weight.grad.to_dense(), ref[0])
    torch.testing.assert_close(lin.weight.grad, ref[1])


@pytest.mark.parametrize("case", ["tied", "lora", "l1", "sgd"])
def test_stays_dense_where_rows_are_not_exact(case: str, tiny_bert: Path, tiny_llama: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunelab.training.sparse_rows import sparse_embedding

    train = {"l1": 0.1 if case == "l1" else 0.0, "optimizer": "sgd" if case == "sgd" else "adamw"}
    cfg = build_config({"task": "classification", "model": str(tiny_bert), "train": train})
    if case == "tied":
        config = AutoConfig.from_pretrained(tiny_llama)
        config.tie_word_embeddings = True
        model = AutoModelForCausalLM.from_config(config)
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    else:
        task = TASKS.get("classification")(cfg.task, cfg.data)
        table = Table("mem.jsonl", [Record("mem.jsonl", i + 1, r) for i, r in enumerate(sentiment_rows(8))])
        model, _ = task.build_model(str(tiny_bert), task.parse(table))
        if case == "lora":
            model = METHODS.get("lora")(build_config({"task": "classification", "model": str(tiny_bert),
                                                      "method": "lora"}).method).apply(model, task.head_modules(model))
    assert sparse_embedding(model, cfg.train, 1, "ddp", "fp32", 1e-3) is None
    assert model.get_input_embeddings().sparse is False


@pytest.mark.parametrize("adam", [{}, {"betas": (0.8, 0.95), "eps": 1e-6}], ids=["defaults", "betas"])
def test_sixteen_bit_weights_match_dense_adamw_bit_for_bit(adam: dict) -> None:
    """bf16 weights: dense AdamW rounds an untouched row's p·(1 − lr·wd) back to p; the row path leaves it."""
    torch.manual_seed(0)
    weights = torch.randn(50, 8).to(torch.bfloat16)
    models = [torch.nn.Embedding(50, 8, _weight=weights.clone()) for _ in range(2)]
    models[1].sparse = True
    opts = [torch.optim.AdamW(models[0].parameters(), lr=1e-3, weight_decay=0.01, fused=True, **adam),
            RowAdamW(models[1].parameters(), lr=1e-3, weight_decay=0.01, fused=True, **adam)]
    for ids in ([3, 4], [4, 9], [17]):
        for model, opt in zip(models, opts, strict=True):
            model(torch.tensor(ids)).float().pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
    opts[1].settle()
    assert torch.equal(models[0].weight, models[1].weight)
    assert torch.equal(models[1].weight[20:], weights[20:])  # never touched: unchanged, as dense left them


def test_eligibility_of_sixteen_bit_weights_and_the_flag_after_an_error(tiny_bert: Path) -> None:
    from tunelab.training.sparse_rows import sparse_embedding

    cfg = build_config({"task": "classification", "model": str(tiny_bert), "train": {"weight_decay": 0.01}}).train
    for lr, ok in ((5e-5, True), (1.0, False)):  # lr·wd against bf16's eps/4 = 2^-9
        emb = torch.nn.Embedding(10, 4).to(torch.bfloat16)
        model = torch.nn.Sequential(emb)
        model.get_input_embeddings = lambda emb=emb: emb
        assert (sparse_embedding(model, cfg, 1, "ddp", "bf16", lr) is not None) is ok

    def boom(m: torch.nn.Module, batch: dict) -> torch.Tensor:
        raise RuntimeError("boom")

    cfg2 = build_config({"task": "classification", "model": str(tiny_bert), "train": {"batch_size": 8}})
    task = TASKS.get("classification")(cfg2.task, cfg2.data)
    examples = task.parse(Table("m.jsonl", [Record("m.jsonl", i + 1, r) for i, r in enumerate(sentiment_rows(8))]))
    model, tok = task.build_model(str(tiny_bert), examples)
    with pytest.raises(RuntimeError, match="boom"):
        engine.train(model, task.encode(examples, tok), partial(task.collate, pad_id=tok.pad_token_id), cfg2.train,
                     1e-3, loss_fn=boom)
    assert model.get_input_embeddings().sparse is False  # put back after the error too


def _dense_and_rows(rows: int, lr: float) -> tuple[list[torch.nn.Embedding], list[torch.optim.AdamW]]:
    """Two equal embeddings of `rows` × 4: one under dense fused AdamW, one under RowAdamW with its decay hook."""
    torch.manual_seed(0)
    weights = torch.randn(rows, 4)
    models = [torch.nn.Embedding(rows, 4, _weight=weights.clone()) for _ in range(2)]
    models[1].sparse = True
    opts = [torch.optim.AdamW(models[0].parameters(), lr=lr, weight_decay=0.1, fused=True),
            RowAdamW(models[1].parameters(), lr=lr, weight_decay=0.1, fused=True)]
    opts[1].read_by(models[1])
    return models, opts


def test_state_dict_moments_are_dense_adamws_through_growth_and_reload() -> None:
    """The touched rows' moments live in growing side buffers; state_dict() gives dense AdamW's whole tables, and
    an optimizer loaded from it goes on as dense AdamW does (here past the buffers' first size of 64 rows). Rows
    first read late owe weight decay: they pay it before the forward reads them, so their gradients are dense's."""
    models, opts = _dense_and_rows(300, lr=1e-2)  # rows first read at step 4 owe 3 steps of decay: paid first
    batches = [torch.arange(i * 40, i * 40 + 50) % 300 for i in range(6)] + [torch.tensor([7, 7, 299])]

    def step(ids: torch.Tensor) -> None:
        for model, opt in zip(models, opts, strict=True):
            model(ids).pow(2).sum().backward()
            opt.step()
            opt.zero_grad()

    for ids in batches[:4]:
        step(ids)
    opts[1].settle()
    dense, rows = opts[0].state_dict()["state"][0], opts[1].state_dict()["state"][0]
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(rows[key], dense[key], rtol=1e-5, atol=1e-7)
    assert rows[key] is not opts[1].state_dict()["state"][0][key]  # a copy each time, not the live buffers
    opts[1].release()
    opts[1] = RowAdamW(models[1].parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    opts[1].read_by(models[1])
    opts[1].load_state_dict({"state": {0: {k: v.clone() for k, v in rows.items()}},
                             "param_groups": opts[0].state_dict()["param_groups"]})
    for ids in batches[4:]:
        step(ids)
    opts[1].settle()
    torch.testing.assert_close(models[1].weight, models[0].weight, rtol=1e-5, atol=1e-7)


def test_a_state_loaded_without_settling_keeps_the_owed_decay() -> None:
    """load_state_dict on an optimizer whose never-touched rows still owe weight decay: it is paid into the weights
    first (it was dropped: 2.5e-2 off dense AdamW), and the saved step is a copy, not the live counter."""
    models, opts = _dense_and_rows(100, lr=1e-1)
    for i, ids in enumerate(([1, 2], [2, 3], [3, 4], [50, 60], [60, 70])):
        for model, opt in zip(models, opts, strict=True):
            model(torch.tensor(ids)).pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
        if i == 2:
            saved = opts[1].state_dict()
            step = saved["state"][0]["step"].item()
            opts[1].load_state_dict(copy.deepcopy(saved))
    assert saved["state"][0]["step"].item() == step  # not moved by the later steps
    opts[1].settle()
    torch.testing.assert_close(models[1].weight, models[0].weight, rtol=1e-5, atol=1e-6)
