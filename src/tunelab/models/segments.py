"""Segment (token-type) embeddings that pretraining left untrained.

BERT-style checkpoints carry a token-type table: row 0 is added to every token of the first segment, row 1 to
every token of the second (QA's context after its question, a sentence pair's second sentence). A checkpoint
pretrained on single segments never trained row 1: m3e-small is UER's `chinese_roberta_L-4_H-512` (masked LM
without sentence pairs), and its row 1 still has the spread of a random initialisation (std 0.0196 against row 0's
0.078, `initializer_range` 0.02), 1.84 away from row 0 — more than a word embedding's typical norm (1.45). Every
second-segment token then enters the model shifted by a random vector. Extractive QA on CMRC 2018 stayed at F1
12–14 that way whatever the schedule; with row 1 started from row 0 the same config reached 40.1 (docs/results.md).
Fine-tuning can still tell the segments apart (positions and `[SEP]` already do).

Detection compares spreads, not names: a row is untrained when its standard deviation is under `UNTRAINED_SHARE` of
row 0's, within `INIT_TOLERANCE` of the config's `initializer_range` and its mean about 0 — what a fresh normal
initialisation looks like. all-MiniLM-L6-v2's two rows (std 0.0246 and 0.0238) are left alone.

The rows seeded are recorded in the model's config (`seeded_token_type_rows`, saved in RUN/model/config.json).
An adapter (LoRA) does not hold the token-type table, so whatever rebuilds the base for an adapter — `export --merge`,
the shared-base server — seeds exactly the recorded rows (`reseed_as_trained`) instead of guessing again; a run
saved before the seeding existed records nothing and is rebuilt as it was trained.
"""

from __future__ import annotations

from typing import Any

import torch

UNTRAINED_SHARE = 0.5  # a row's spread under this share of row 0's ...
INIT_TOLERANCE = 0.15  # ... and within this share of initializer_range, its mean within a quarter of it
SEEDED = "seeded_token_type_rows"


def _token_type_table(model: torch.nn.Module) -> torch.nn.Embedding | None:
    if hasattr(model, "get_base_model"):  # a peft model: the transformers model under it
        model = model.get_base_model()
    base = getattr(model, "base_model", model)
    table = getattr(getattr(base, "embeddings", None), "token_type_embeddings", None)
    if not isinstance(table, torch.nn.Embedding) or table.num_embeddings < 2:
        return None
    weight = table.weight
    if weight.device.type == "meta" or weight.dim() != 2 or weight.numel() == 0:  # not materialised, or sharded
        return None
    return table


def _seed(table: torch.nn.Embedding, rows: list[int]) -> None:
    with torch.no_grad():
        for k in rows:
            table.weight[k].copy_(table.weight[0])


def seed_untrained_segments(model: torch.nn.Module) -> str | None:
    """Copy row 0 of the model's token-type embeddings into the rows that look untrained (in place) and record them
    in `model.config`. Returns a line saying what was done, or None when there is no such table or row."""
    table = _token_type_table(model)
    if table is None:
        return None
    init = float(getattr(getattr(model, "config", None), "initializer_range", 0.02) or 0.02)
    weight = table.weight.detach().float()
    spread, mean = weight.std(dim=1), weight.mean(dim=1)
    rows = [k for k in range(1, weight.shape[0])
            if spread[k] < UNTRAINED_SHARE * spread[0] and abs(spread[k] - init) <= INIT_TOLERANCE * init
            and abs(mean[k]) <= init / 4]
    if not rows:
        return None
    _seed(table, rows)
    config = getattr(model, "config", None)
    if config is not None:
        setattr(config, SEEDED, rows)
    shown = ", ".join(f"{k} (std {spread[k]:.4f})" for k in rows)
    return (f"token-type embedding row {shown} untrained in the checkpoint (row 0: std {spread[0]:.4f}); "
            "started from row 0, so second-segment tokens (a QA context, a pair's second text) look as in pretraining")


def reseed_as_trained(model: torch.nn.Module, trained_config: Any) -> None:
    """Seed the rows a run recorded (`trained_config`: RUN/model's config) into a base rebuilt from the original
    checkpoint for its adapter; nothing when the run recorded none."""
    rows = list(getattr(trained_config, SEEDED, None) or [])
    table = _token_type_table(model)
    if rows and table is not None:
        _seed(table, rows)
