"""Segment (token-type) embeddings that pretraining left untrained.

BERT-style checkpoints carry a token-type table: row 0 is added to every token of the first segment, row 1 to
every token of the second (QA's context after its question, a sentence pair's second sentence). A checkpoint
pretrained on single segments never trained row 1: m3e-small is UER's `chinese_roberta_L-4_H-512` (masked LM
without sentence pairs), and its row 1 still has the spread of a random initialisation (std 0.0196 against row 0's
0.078, `initializer_range` 0.02), 1.84 away from row 0 — more than a word embedding's typical norm (1.45). Every
second-segment token then enters the model shifted by a random vector. Extractive QA on CMRC 2018 stayed at F1
12–14 that way whatever the schedule (docs/results.md). Starting the untrained rows from row 0 gives the second
segment the embeddings the model was pretrained with; fine-tuning can still tell the segments apart (positions and
`[SEP]` already do).

Detection compares spreads, not names: a row whose standard deviation is under `UNTRAINED_SHARE` of row 0's is
taken as untrained. all-MiniLM-L6-v2's two rows (0.0246 and 0.0238) and BERT's trained pairs are far above it.
"""

from __future__ import annotations

import torch

UNTRAINED_SHARE = 0.5


def _token_type_table(model: torch.nn.Module) -> torch.nn.Embedding | None:
    base = getattr(model, "base_model", model)
    table = getattr(getattr(base, "embeddings", None), "token_type_embeddings", None)
    return table if isinstance(table, torch.nn.Embedding) and table.num_embeddings > 1 else None


def seed_untrained_segments(model: torch.nn.Module) -> str | None:
    """Copy row 0 of the model's token-type embeddings into the rows that look untrained (in place). Returns a
    line saying what was done, or None when the model has no such table or every row is trained."""
    table = _token_type_table(model)
    if table is None or table.weight.device.type == "meta":
        return None
    with torch.no_grad():
        weight = table.weight
        spread = weight.float().std(dim=1)
        rows = [k for k in range(1, weight.shape[0]) if spread[k] < UNTRAINED_SHARE * spread[0]]
        for k in rows:
            weight[k].copy_(weight[0])
    if not rows:
        return None
    shown = ", ".join(f"{k} (std {spread[k]:.4f})" for k in rows)
    return (f"token-type embedding row {shown} untrained in the checkpoint (row 0: std {spread[0]:.4f}); "
            "started from row 0, so second-segment tokens (a QA context, a pair's second text) look as in pretraining")
