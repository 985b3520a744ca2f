"""`tunelab compress RUN --prune heads:0.3|magnitude:0.5`: prune the run's model, fine-tune it briefly on the run's
training data to recover (`--recover-epochs`, default 1; 0 skips it), then load it back, score it beside the
original like an export (export/parity.py: size, metric, agreement, latency) and write it past the parity gate to
RUN/exports/<kind>-<fraction>/ (for a compressed model: beside it, <its folder>-<kind>-<fraction>) — a model
directory that eval, predict, the API and `tunelab export --format onnx` take. Tasks whose gate compares each row's
prediction only (`Task.compressible`). The pruning itself: export/prune.py."""

from __future__ import annotations

import math
import shutil
import tempfile
import zlib
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model

from tunelab import __version__
from tunelab.config.run import build_config, read_config_file
from tunelab.data.load import run_splits
from tunelab.errors import TunelabError, flag
from tunelab.export.artifact import (
    ExportResult,
    default_output,
    gate_and_commit,
    inputs_of,
    labelled_rows,
    locate_model,
)
from tunelab.export.output import claim, staged, terminated
from tunelab.export.parity import Gate, measure_fp32
from tunelab.export.prune import (
    apply_pruned_heads,
    choose_heads,
    head_counts,
    head_importance,
    heads_to_cut,
    magnitude_prune,
    make_permanent,
    merge_heads,
    original_heads,
    parse_prune,
    sparsity,
)
from tunelab.export.save import META_FILE, load_model, load_task, saved_rules
from tunelab.io import read_json, write_json_atomic
from tunelab.models.tokenizer_save import save_tokenizer
from tunelab.progress import say
from tunelab.registry import TASKS
from tunelab.training import engine

IMPORTANCE_ROWS = 512  # training rows whose gradients score the heads


def compress_run(path: Path, prune: str, recover_epochs: float = 1.0, output: Path | None = None,
                 data: Path | None = None, gate: Gate | None = None, force: bool = False,
                 batch_size: int = 64, overwrite: bool = False) -> ExportResult:
    kind, fraction = parse_prune(prune)
    if not (math.isfinite(recover_epochs) and recover_epochs >= 0):
        raise TunelabError(f"{flag('recover_epochs')}: {recover_epochs:g} is not a number of epochs (a finite number, "
                           "0 or more; 0: no recovery)")
    gate = gate or Gate()
    model_dir, run = locate_model(path)
    check_compressible(path, load_task(model_dir))
    if run is None or not (run / "config.yaml").is_file():
        raise TunelabError(f"{path}: compress needs the run directory (its config.yaml names the training data)")
    output = Path(output) if output is not None else default_output(model_dir, run, f"{kind}-{fraction:g}")
    replaced = claim("compress", output, inputs_of(model_dir, run, data, "the model it compresses"), overwrite)
    cfg = build_config(read_config_file(run / "config.yaml"), saved=True)
    task, module, tokenizer = load_model(model_dir)
    if kind == "heads":  # how many heads go, said (or refused) before the work
        before = head_counts(module)
        cut = heads_to_cut(fraction, before)
        if cut < fraction * sum(before) - 1e-9:
            why = "one head stays in every layer" if cut == sum(before) - len(before) else "a whole number of heads"
            say(f"compress: heads:{fraction:g} cuts {cut} of the model's {sum(before)} heads ({cut / sum(before):.4g}: "
                f"{why})")
    splits = run_splits(run, cfg.data, task, cfg.train.seed)  # read once: the recovery's train rows, the check's
    examples, source = labelled_rows(task, run, data, splits, "compress")
    features = task.encode(examples, tokenizer)
    original, reference = measure_fp32("torch", task, module, tokenizer, examples, features, model_dir, batch_size)
    train = splits["train"]
    task.configure_loss(cfg.train, train)
    train_features = task.encode(train, tokenizer)
    collate = partial(task.collate, pad_id=tokenizer.pad_token_id)
    record: dict[str, Any] = {"prune": prune, "from": str(model_dir.resolve()), "run": str(run.resolve()),
                              "recover_epochs": recover_epochs, "tunelab_version": __version__}
    module = module.float()
    if kind == "heads":
        rows = train_features[:IMPORTANCE_ROWS]
        batches = [collate(rows[s : s + 16]) for s in range(0, len(rows), 16)]
        pruned = choose_heads(head_importance(module, batches, task.loss_fn()), before, fraction)
        apply_pruned_heads(module, pruned)
        # the full model's numbering (a head-pruned source: its indices count the heads it has left)
        cut_before = read_json(model_dir / META_FILE).get("pruned_heads") or {}
        record.update(heads_before=sum(before), heads_after=sum(head_counts(module)),
                      heads_fraction=round(1 - sum(head_counts(module)) / sum(before), 4),
                      pruned_heads=original_heads(cut_before, pruned, int(module.config.num_attention_heads)))
        masks = None
    else:
        masks = magnitude_prune(module, fraction)
    if recover_epochs > 0:
        engine.seed_everything(cfg.train.seed)  # the run's seed: the same recovery (dropout) each time, as training
        # SIGTERM (a job stopped) mid-recovery: through the way out, so the temp folder goes with it
        with terminated(), tempfile.TemporaryDirectory(prefix="tunelab-recover-") as tmp_dir:
            # no evaluations here: a reduce_on_plateau run recovers at its peak lr after the warmup, as that ran
            plateau = {"scheduler": "constant_with_warmup"} if cfg.train.scheduler == "reduce_on_plateau" else {}
            train_cfg = cfg.train.model_copy(update={"epochs": recover_epochs, "max_steps": None, "save_steps": 0,
                                                     "early_stopping": None, "best_metric": None,
                                                     "select_best": False, "report_to": [], **plateau})
            engine.train(module, train_features, collate, train_cfg, lr=cfg.train.lr or 5e-5, out_dir=Path(tmp_dir),
                         loss_fn=task.loss_fn(), loss_units=task.loss_units)
    if masks is not None:
        make_permanent(masks)
        record["sparsity"] = round(sparsity(module), 4)
    module = module.float().eval()  # as saved: fp32, whatever the recovery's precision
    with staged(output) as tmp:
        _save(module, tokenizer, model_dir, tmp, record)
        del module
        task2, back, _ = load_model(tmp)
        row, _ = measure_fp32("pruned", task2, back, tokenizer, examples, features, tmp, batch_size, reference)
        if kind == "magnitude":
            row["zlib_bytes"] = _zlib_size(tmp / "model.safetensors")
            original["zlib_bytes"] = _zlib_size(model_dir / "model.safetensors")
        row.update({k: v for k, v in record.items() if k in ("heads_before", "heads_after", "heads_fraction",
                                                             "sparsity")})
        rows = [original, row]
        refused = gate_and_commit("compress", tmp, output, rows, gate, force, source, compress=record,
                                  replaced=replaced)
    return ExportResult(output, rows, refused, source)


def _save(module: torch.nn.Module, tokenizer: Any, model_dir: Path, out: Path, record: dict[str, Any]) -> None:
    """config.json as the run's (the full-size shapes), the pruned weights, tokenizer, tunelab.json + `compressed`."""
    shutil.copy2(model_dir / "config.json", out / "config.json")
    save_model(module, str(out / "model.safetensors"), metadata={"format": "pt"})
    save_tokenizer(tokenizer, out)
    meta = read_json(model_dir / META_FILE)
    meta.setdefault("text_rules", saved_rules(model_dir, meta))  # (a model saved before they were recorded)
    meta["compressed"] = record
    if "pruned_heads" in record:  # with the heads a head-pruned source had lost already
        meta["pruned_heads"] = merge_heads(meta.get("pruned_heads") or {}, record["pruned_heads"])
    write_json_atomic(out / META_FILE, meta)


def check_compressible(path: Path, task: Any) -> None:
    """One line, before any work, for a model whose task compress does not gate (`Task.compressible`): its parity
    compares each row's prediction, which a model that writes replies has none of."""
    if not task.compressible:
        raise TunelabError(f"{path}: compress does not take a model of task {task.cfg.name}; it prunes models of task "
                           f"{', '.join(TASKS.names(lambda cls: cls.compressible))} (tunelab distill makes a smaller "
                           "model of any task)")


def _zlib_size(path: Path) -> int:
    """Size of the file compressed by zlib (level 1): what zeros save on disk or on the wire."""
    return len(zlib.compress(path.read_bytes(), 1))
