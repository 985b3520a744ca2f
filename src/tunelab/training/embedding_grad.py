"""Word-embedding gradients written only where the batch's tokens are.

PyTorch's embedding backward allocates a dense zero gradient of the whole table for every backward pass
(MiniLM: 30,522 x 384 floats, 47 MB) and scatters the batch's few hundred rows into it; with
`zero_grad(set_to_none=True)` the table is freed and allocated again at the next step. On the 2-core CI
machine that `fill_` was 14 % of a bf16 MiniLM training step (torch.profiler, 60 steps of the SST-2 job of
benchmarks/classification.py: 23 ms of ~150 ms per step, more than the zeroing itself costs in isolation:
the fresh pages fault in).

`FastEmbeddingGrad` keeps one gradient buffer per trained word embedding for the whole run: the backward
adds the batch's rows into it (`index_add_`, the same sums as the dense kernel), `weight.grad` is that buffer
(the optimizer, clipping and the finiteness check see an ordinary dense gradient), and when the loop has
dropped the gradients after an optimizer step (`.grad is None`) the next backward zeroes only the rows the
previous step touched. Same gradients (to float summation order), same optimizer; less memory traffic.

Used by the training loop in one process only (DDP / FSDP / DeepSpeed hook gradients as autograd produces
them), for an `nn.Embedding` with defaults (no max_norm, no scale_grad_by_freq, dense) whose weight trains and is
not tied to an output layer. `restore()` puts the module's own forward back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, ids: torch.Tensor, weight: torch.Tensor, owner: FastEmbeddingGrad) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.owner = owner
        return F.embedding(ids, weight, owner.padding_idx)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[None, None, None]:
        (ids,) = ctx.saved_tensors
        ctx.owner.accumulate(ids, grad_out)
        return None, None, None


class FastEmbeddingGrad:
    def __init__(self, module: torch.nn.Embedding) -> None:
        self.module, self.padding_idx = module, module.padding_idx
        self.weight = module.weight
        self.buffer: torch.Tensor | None = None
        self.touched: list[torch.Tensor] = []

    def accumulate(self, ids: torch.Tensor, grad_out: torch.Tensor) -> None:
        w = self.weight
        if self.buffer is None:
            self.buffer = torch.zeros_like(w)
        if w.grad is None:  # a new step: clear what the last one wrote
            if self.touched:
                self.buffer.index_fill_(0, torch.cat(self.touched).unique(), 0)
                self.touched = []
            w.grad = self.buffer
        elif w.grad is not self.buffer:  # someone else's gradient (zero_grad(set_to_none=False) keeps ours)
            self.buffer = w.grad
        flat = ids.reshape(-1)
        rows = grad_out.reshape(-1, grad_out.shape[-1]).to(self.buffer.dtype)
        if self.padding_idx is not None:  # the padding row gets no gradient, as in F.embedding's backward
            keep = flat != self.padding_idx
            flat, rows = flat[keep], rows[keep]
        self.buffer.index_add_(0, flat, rows)
        self.touched.append(flat)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.weight.requires_grad):
            return F.embedding(ids, self.weight, self.padding_idx)
        return _Lookup.apply(ids, self.weight, self)

    def restore(self) -> None:
        self.module.__dict__.pop("forward", None)


def use_fast_embedding_grad(model: torch.nn.Module, processes: int) -> FastEmbeddingGrad | None:
    """Switch the model's input word embedding to `FastEmbeddingGrad` where that is safe (see the module text)."""
    if processes != 1 or not hasattr(model, "get_input_embeddings"):
        return None
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if (type(emb) is not torch.nn.Embedding or not emb.weight.requires_grad or emb.max_norm is not None
            or emb.scale_grad_by_freq or emb.sparse or getattr(out, "weight", None) is emb.weight):
        return None
    fast = FastEmbeddingGrad(emb)
    emb.forward = fast.forward  # an instance attribute: restore() removes it
    return fast
