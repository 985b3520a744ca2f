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
decay as one running factor: applied to a row by a forward pre-hook before a batch first reads it (`read_by`:
the gradient is then taken at dense AdamW's weights), and to all of them by `settle()` before anything else reads
the weights (evaluation, checkpoint, the end of training). The touched rows' weights and
moments are held side by side in their own buffers (`_Rows`), so a step reads and writes those rows only, not
gathers and scatters them from three whole tables (MiniLM SST-2: the embedding's optimizer step 16.0 → 2.6 ms),
and dense AdamW's two whole-table moments are not held between checkpoints — the side buffers hold three rows
(weight, two moments) per touched row, up to twice the rows touched, so they are smaller while fewer than about a
third of the rows are touched (Gemma-3 Resume NER, 20 steps: peak RSS 5.91 → 5.24 GB). `state_dict()` gives AdamW's
state (`step`, `exp_avg`, `exp_avg_sq` as whole tables, built for the checkpoint): a checkpoint resumes with or
without this. The weight must be read through the embedding's forward (where the owed decay is paid), as a module
whose weight is shared is left dense by `sparse_embedding`.

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
    """The touched rows of one embedding, side by side: their weights (a copy), AdamW moments and places, so a step
    reads and writes those rows and not the whole table (the weights' copy goes back to the table each step,
    for the forward); and the decay the never-touched rows still owe. Held in buffers that grow by doubling."""

    def __init__(self, p: torch.Tensor, m: torch.Tensor | None, v: torch.Tensor | None) -> None:
        """`m`, `v`: whole-table moments (a resumed or formerly dense run's: its rows with v != 0 join), or None."""
        self.where = torch.full((p.shape[0],), -1, dtype=torch.long, device=p.device)  # a row's place, or -1
        self.n, self.decay = 0, 1.0  # the decay since the last settle; a never-touched row owes decay / paid[row]
        self.paid = torch.ones(p.shape[0], dtype=torch.float64, device=p.device)
        self.active = torch.empty(0, dtype=torch.long, device=p.device)
        self.w, self.m, self.v = (torch.empty((0, *p.shape[1:]), dtype=p.dtype if t is None else t.dtype,
                                              device=p.device) for t in (p, m, v))
        if v is not None:
            self.add((v != 0).reshape(len(v), -1).any(dim=1).nonzero().squeeze(1), p, m, v)

    @property
    def touched(self) -> torch.Tensor:
        return self.where >= 0

    def pay(self, p: torch.Tensor, ids: torch.Tensor) -> None:
        """Never-touched rows among `ids` get the decay they owe, before they are read or join."""
        if self.decay == 1.0:
            return
        ids = ids.unique()
        ids = ids[self.where[ids] < 0]
        owed = self.decay / self.paid[ids]
        ids, owed = ids[owed != 1.0], owed[owed != 1.0]
        if len(ids):
            p.index_copy_(0, ids, p.index_select(0, ids) * owed.to(p.dtype).view(-1, *[1] * (p.dim() - 1)))
            self.paid[ids] = self.decay

    def add(self, rows: torch.Tensor, p: torch.Tensor, m: torch.Tensor | None, v: torch.Tensor | None) -> None:
        """Rows join with their weights and moments (None: zero, as a never-touched row's are)."""
        n, k = self.n, len(rows)
        if n + k > len(self.active):  # grow to twice the need, at most the table
            size = min(max(2 * (n + k), 64), len(self.where))
            self.active = _grown(self.active, size)
            self.w, self.m, self.v = (_grown(t, size) for t in (self.w, self.m, self.v))
        self.active[n:n + k] = rows
        self.where[rows] = torch.arange(n, n + k, device=rows.device)
        self.w[n:n + k] = p.index_select(0, rows)
        for mine, full in ((self.m, m), (self.v, v)):
            mine[n:n + k] = 0 if full is None else full.index_select(0, rows)
        self.n = n + k

    def moments(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """These rows' moments as whole tables (zero elsewhere), the `exp_avg` / `exp_avg_sq` dense AdamW holds."""
        out = {"exp_avg": torch.zeros_like(like), "exp_avg_sq": torch.zeros_like(like)}
        for table, compact in zip(out.values(), (self.m, self.v), strict=True):
            table.index_copy_(0, self.active[:self.n], compact[:self.n])
        return out


def _grown(t: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.empty((size, *t.shape[1:]), dtype=t.dtype, device=t.device)
    out[:len(t)] = t
    return out


class RowAdamW(torch.optim.AdamW):
    """AdamW (fused) that also takes row (sparse COO) gradients: those params are stepped on their touched rows,
    whose moments live in `_Rows` (the whole-table `exp_avg` / `exp_avg_sq` only in `state_dict()`)."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._rows: dict[torch.nn.Parameter, _Rows] = {}
        self._hooks: list[Any] = []

    def read_by(self, embedding: torch.nn.Embedding) -> None:
        """Rows owing decay pay it before `embedding`'s forward reads them, so the gradient is taken at dense
        AdamW's weights (`release()` takes the hook off)."""
        def pay(module: torch.nn.Embedding, args: tuple[Any, ...]) -> None:
            rows = self._rows.get(module.weight)
            if rows is not None:
                with torch.no_grad():
                    rows.pay(module.weight, args[0])
        self._hooks.append(embedding.register_forward_pre_hook(pay))

    def release(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.settle()  # the decay still owed goes into the weights first: the loaded state knows nothing of it
        super().load_state_dict(state_dict)
        self._rows.clear()  # the touched rows are read back from the moments

    def state_dict(self) -> dict[str, Any]:
        """AdamW's: the row params' moments as whole tables (so a checkpoint resumes with or without rows)."""
        held = {p: self.state[p] for p in self._rows}
        for p, rows in self._rows.items():  # (a new dict: the returned state refers to it)
            self.state[p] = {**held[p], "step": held[p]["step"].clone(), **rows.moments(p)}
        try:
            return super().state_dict()
        finally:
            self.state.update(held)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for p in [p for p in self._rows if p.grad is not None and not p.grad.is_sparse]:
            self.settle()  # a dense gradient after row ones: its whole-table moments back, dense from now
            rows = self._rows.pop(p)
            self.state[p].update(rows.moments(p))
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
        rows = self._rows.get(p)
        if rows is None:  # first step, or resumed / dense before: a row with a nonzero gradient ever has v != 0
            state.setdefault("step", torch.tensor(0.0, dtype=torch.float32, device=p.device))
            rows = self._rows[p] = _Rows(p, state.pop("exp_avg", None), state.pop("exp_avg_sq", None))
        grad = p.grad.coalesce()
        index, values = grad._indices()[0], grad._values()
        new = index[rows.where[index] < 0]
        if len(new):  # first touched: the decay of the steps it missed (if no forward hook took it), then it joins
            rows.pay(p, new)
            rows.add(new, p, None, None)
        n = rows.n
        g = torch.zeros((n, *p.shape[1:]), dtype=values.dtype, device=p.device)
        g.index_copy_(0, rows.where[index], values)
        w, m, v = rows.w[:n], rows.m[:n], rows.v[:n]
        state["step"] += 1
        beta1, beta2 = group["betas"]
        torch._fused_adamw_([w], [g], [m], [v], [], [state["step"]], lr=group["lr"], beta1=beta1, beta2=beta2,
                            weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                            maximize=group["maximize"])
        p.index_copy_(0, rows.active[:n], w)
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
                scale = torch.where(rows.touched, 1.0, rows.decay / rows.paid).to(p.dtype)
                p.mul_(scale.view(-1, *[1] * (p.dim() - 1)))
                rows.decay = 1.0
                rows.paid.fill_(1.0)
