"""Word-embedding rows that no batch has touched are skipped by backward, clipping and AdamW — exactly.

Hand-written because neither torch nor transformers offers it: `nn.Embedding(sparse=True)` gives row
gradients, but torch's AdamW refuses them and `SparseAdam` is a different optimizer (no weight decay, moments
of untouched rows frozen). Full fine-tuning of an encoder spends a large part of each step on its word embeddings:
MiniLM's are 11.7M of its 22.7M parameters, yet 4,000 SST-2 sentences touch 6,586 of the 30,522 rows (Gemma-3's
262,144 rows are 168M of its 268M parameters). A dense step fills a 47 MB gradient, takes its norm and runs AdamW
over every row.

Why skipping them is exact: a row whose gradients have all been zero has zero AdamW moments, so its update is
only weight decay, p ← p·(1 − lr·wd). So the embedding runs with `sparse=True` (backward yields the rows of the
batch's tokens), `clip_grad_norm` takes the norm of those rows, and `RowAdamW` runs torch's fused AdamW kernel on
the rows touched so far (element by element the dense kernel's arithmetic) and keeps the never-touched rows'
decay as one running factor: applied to a row when a batch first touches it, and to all of them by `settle()`
before anything reads the weights (evaluation, checkpoint, the end of training). The optimizer's state is
AdamW's (`step`, `exp_avg`, `exp_avg_sq`): a checkpoint resumes with or without this.

Used only where that holds: AdamW, one process without FSDP/DeepSpeed, no L1 penalty, no fp16 loss scaling, a
trainable `nn.Embedding` whose weight no other module shares (a tied LM head gets dense gradients) and that has
no max_norm; 16-bit weights only while lr · weight decay is below a quarter of their eps (`RowAdamW._decay`).
`train.sparse_embeddings: false` turns it off.
"""

from __future__ import annotations

from typing import Any

import torch

from tunelab.config.sections import TrainConfig


def sparse_embedding(model: torch.nn.Module, cfg: TrainConfig, processes: int, strategy: str,
                     precision: str, lr: float) -> torch.nn.Embedding | None:
    """The word embedding to train with row gradients (its `sparse` flag set), or None where that is not exact."""
    if not cfg.sparse_embeddings or cfg.optimizer != "adamw" or cfg.l1 or processes != 1 or strategy != "ddp":
        return None
    if precision == "fp16":
        return None
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # transformers cannot tell which module it is
        return None
    if not isinstance(emb, torch.nn.Embedding) or not emb.weight.requires_grad or emb.max_norm is not None:
        return None
    if emb.weight.dtype != torch.float32 and lr * cfg.weight_decay >= torch.finfo(emb.weight.dtype).eps / 4:
        return None  # 16-bit weights: see RowAdamW._decay
    shared = sum(p is emb.weight for _, p in model.named_parameters(remove_duplicate=False))
    if shared != 1:  # tied to an output layer: that layer's gradient is dense anyway
        return None
    emb.sparse = True
    return emb


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ for a mix of dense and sparse gradients (torch's refuses sparse ones)."""
    dense = [p.grad for p in params if p.grad is not None and not p.grad.is_sparse]
    sparse = [p for p in params if p.grad is not None and p.grad.is_sparse]
    for p in sparse:
        p.grad = p.grad.coalesce()  # a token seen twice in the batch: one row, its gradients summed
    norms = [torch.nn.utils.get_total_norm(dense)] if dense else []
    norms += [torch.linalg.vector_norm(p.grad._values()) for p in sparse]
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # torch's clip coefficient
    if dense:
        torch._foreach_mul_(dense, coef)
    for p in sparse:
        p.grad._values().mul_(coef)
    return total


class _Rows:
    """The touched rows of one embedding and the decay the others still owe."""

    def __init__(self, touched: torch.Tensor) -> None:
        self.touched = touched
        self.decay = 1.0  # the never-touched rows are owed p *= decay
        self.update()

    def update(self) -> None:
        """`active`: the touched rows' indices; `where[row]`: a touched row's place among them."""
        self.active = self.touched.nonzero().squeeze(1)
        self.where = torch.empty(len(self.touched), dtype=torch.long, device=self.touched.device)
        self.where[self.active] = torch.arange(len(self.active), device=self.touched.device)


class RowAdamW(torch.optim.AdamW):
    """AdamW (fused) that also takes row (sparse COO) gradients: those params are stepped on their touched rows."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._rows: dict[torch.nn.Parameter, _Rows] = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._rows.clear()  # the touched rows are read back from the moments

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for p, rows in self._rows.items():
            if p.grad is not None and not p.grad.is_sparse:  # a dense gradient after row ones: all rows from now
                self.settle()
                rows.touched[:] = True
                rows.update()
        sparse = [(p, g) for g in self.param_groups for p in g["params"] if p.grad is not None and p.grad.is_sparse]
        held = {p: p.grad for p, _ in sparse}
        for p in held:
            p.grad = None  # the dense kernel skips params without a gradient
        loss = super().step(closure)
        for p, group in sparse:
            p.grad = held[p]
            self._step_rows(p, group)
        return loss

    def _step_rows(self, p: torch.nn.Parameter, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        rows = self._rows.get(p)
        if rows is None:  # a row with a nonzero gradient ever has a nonzero second moment
            rows = self._rows[p] = _Rows((state["exp_avg_sq"] != 0).any(dim=1))
        grad = p.grad.coalesce()
        index, values = grad._indices()[0], grad._values()
        new = index[~rows.touched[index]]
        if len(new):  # first touched: the decay of the steps it missed, then it joins the active rows
            if rows.decay != 1.0:
                p.index_copy_(0, new, p.index_select(0, new) * rows.decay)
            rows.touched[new] = True
            rows.update()
        active = rows.active
        g = torch.zeros((len(active), *p.shape[1:]), dtype=values.dtype, device=p.device)
        g[rows.where[index]] = values
        w, m, v = (t.index_select(0, active) for t in (p, state["exp_avg"], state["exp_avg_sq"]))
        state["step"] += 1
        beta1, beta2 = group["betas"]
        torch._fused_adamw_([w], [g], [m], [v], [], [state["step"]], lr=group["lr"], beta1=beta1, beta2=beta2,
                            weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                            maximize=group["maximize"])
        for target, rows_now in ((p, w), (state["exp_avg"], m), (state["exp_avg_sq"], v)):
            target.index_copy_(0, active, rows_now)
        self._decay(p, rows, group["lr"] * group["weight_decay"])

    @staticmethod
    def _decay(p: torch.Tensor, rows: _Rows, rate: float) -> None:
        """The untouched rows owe one more step of decay. 16-bit weights owe nothing: dense AdamW rounds
        p·(1 − rate) back to p when rate < eps/4 (the next lower value is at least p·eps/2 away), which
        `sparse_embedding` made sure of for the peak lr."""
        if p.dtype == torch.float32:
            rows.decay *= 1.0 - rate

    @torch.no_grad()
    def settle(self) -> None:
        """Apply the decay the never-touched rows owe: after this the weights are those of dense AdamW."""
        for p, rows in self._rows.items():
            if rows.decay != 1.0:
                scale = torch.where(rows.touched, 1.0, rows.decay).to(p.dtype)
                p.mul_(scale.view(-1, *[1] * (p.dim() - 1)))
                rows.decay = 1.0
