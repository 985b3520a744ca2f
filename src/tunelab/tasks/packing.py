"""Packing (`task.packing: true`): several tokenised training examples per row of at most data.max_length.

Bins: best-fit decreasing (longest example first, into the fullest row it still fits; ties by input order),
so the packing is a function of the lengths only — the same rows every run and every resume; the engine's
seeded per-epoch shuffle then orders the rows. Within a row the examples keep their input order.

Isolation. Every example's `position_ids` restart at 0, and its first label is -100 (the token is never
predicted from the previous example's last one). The collate returns `position_ids`; the loss
(tasks/causal_loss.py) passes them with `attention_mask=None` and `use_cache=False`, and transformers 5.x
then builds the mask itself: `masking_utils.find_packed_sequence_indices` starts a new sequence wherever a
position is not the previous + 1, and `create_causal_mask` ANDs the causal mask with "same sequence" —
materialised as a (B, 1, L, L) mask for eager / sdpa / flex attention, read as varlen boundaries by flash
attention. This was chosen over passing our own 4-D mask, whose form (boolean vs additive float) depends on
the attention implementation. transformers only does this when the 2-D mask is None and no cache is built,
which is why `model(**batch)` must not be used on packed batches.

Filler. A row shorter than the batch's longest gets pad tokens with positions 0, 1, ... (a sequence of its
own that real tokens never see), label -100 and attention_mask 0; the engine counts real tokens from
attention_mask, so reported throughput excludes filler.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import torch

from tunelab.errors import ConfigError
from tunelab.tasks.base import pad_batch

Features = dict[str, Any]


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity (best-fit decreasing), each in input order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # (room left, bin), sorted: the best fit is the first with room >= n
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"packing: an example of {n} tokens exceeds the row length {capacity}")
        j = bisect.bisect_left(free, (n, -1))
        if j == len(free):
            bins.append([i])
            room, b = capacity - n, len(bins) - 1
        else:
            room, b = free.pop(j)
            bins[b].append(i)
            room -= n
        if room > 0:
            bisect.insort(free, (room, b))
    return [sorted(b) for b in bins]


def pack(features: Sequence[Features], capacity: int) -> list[Features]:
    """Packed rows `{input_ids, labels, position_ids, examples}` (labelled features only)."""
    rows = []
    for b in pack_bins([len(f["input_ids"]) for f in features], capacity):
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in b:
            f = features[i]
            ids += f["input_ids"]
            labels += [-100, *f["labels"][1:]]
            positions += range(len(f["input_ids"]))
        rows.append({"input_ids": ids, "labels": labels, "position_ids": positions, "examples": len(b)})
    return rows


def collate_packed(features: Sequence[Features], pad_id: int, isolate: bool = True) -> dict[str, torch.Tensor]:
    """`pad_batch` plus `position_ids` (filler restarts at 0). `isolate=False` leaves the positions out, so
    the model sees each row as one sequence (attention across examples) — only for showing the difference."""
    batch = pad_batch(features, pad_id)
    if not isolate:
        return batch
    width = batch["input_ids"].shape[1]
    positions = torch.empty((len(features), width), dtype=torch.long)
    for r, f in enumerate(features):
        k = len(f["position_ids"])
        positions[r, :k] = torch.as_tensor(f["position_ids"])
        positions[r, k:] = torch.arange(width - k)
    batch["position_ids"] = positions
    return batch


def check_isolated(model: torch.nn.Module) -> None:
    """Packed rows go to the model with `position_ids` and no mask (`causal_loss.model_inputs`): transformers builds
    the block-diagonal mask from the position resets — for most causal LMs (Llama, Gemma, GPT-2, NeoX, Falcon, Phi),
    not all: OPT, MPT and Bloom build one causal mask over the row, so each example would attend to the ones before
    it. Refused in one line, measured once on the loaded model (two short random sequences, packed against alone)."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        gen = torch.Generator().manual_seed(0)
        vocab = model.get_input_embeddings().num_embeddings
        first, second = torch.randint(0, vocab, (4,), generator=gen), torch.randint(0, vocab, (5,), generator=gen)
        row = torch.cat([first, second])[None].to(param.device)
        positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4]], device=param.device)
        with torch.no_grad(), torch.autocast(param.device.type, enabled=False):
            packed = model(input_ids=row, position_ids=positions, attention_mask=None, use_cache=False).logits[0, 4:]
            alone = model(input_ids=second[None].to(param.device), use_cache=False).logits[0]
    finally:
        model.train(was_training)
    tol = 1e-3 if param.dtype == torch.float32 else 5e-2
    if not torch.allclose(packed.float(), alone.float(), atol=tol, rtol=tol):
        raise ConfigError(f"config: task.packing: {type(model).__name__} would let packed examples attend to each "
                          "other (its attention mask ignores where positions restart); set task.packing: false")
