"""Several processes training one model: which rows each takes, and the engine that holds the model.

- Rows: `train.batch_size` is the global batch. Every process walks the same batch order and takes every N-th
  row of each batch (`rank_rows`); its loss is weighted by its share of the optimizer step's loss units
  (`step_share`), so the averaged gradient, the logged loss and the optimizer step are those of the step's batches
  in one process: a run's curve does not depend on how many processes ran it, and a resume may use another number.
- DDP and DeepSpeed ZeRO come from accelerate (`accelerator_kwargs`). FSDP is PyTorch's FSDP2 `fully_shard`,
  applied here to each transformer layer (the model's `_no_split_modules`, as accelerate's transformer wrap
  policy) and then to the whole model: accelerate refuses FSDP on CPU processes, and FSDP2 runs there on gloo
  (tests/test_distributed.py), so one code path serves CPUs and GPUs.
- Checkpoints and the final model hold full tensors (`full_state`, gathered from the shards onto the main
  process): the same files, sizes and names as a one-process run, never 1/N of each tensor.
"""

from __future__ import annotations

import importlib.util
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from tunelab.config.sections import DistributedConfig, TrainConfig
from tunelab.errors import ConfigError, TunelabError
from tunelab.training.checkpoint import trainable_state


def world() -> tuple[int, int]:
    """(rank, number of processes) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """Started by a launcher (torchrun, `tunelab train --nproc`, accelerate launch), even as its only process."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def ensure_group() -> None:
    """A process group for a launched run that accelerate left without one (one process): FSDP needs one."""
    if launched() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def rank_rows(ids: list[int], rank: int, processes: int) -> list[int]:
    """This process's rows of a global batch: every `processes`-th row from `rank` on. A batch with fewer rows
    than processes leaves some empty; they run the first row with weight 0 (every process must run backward)."""
    return ids[rank::processes]


def rank_weight(units: float, total_units: float, processes: int) -> float:
    """The factor on this process's mean loss that makes the processes' averaged gradients (DDP, FSDP and ZeRO all
    average) equal the gradient of the global batch's mean loss: processes × this share of the loss units."""
    return processes * units / total_units if total_units else 0.0


def step_share(units: int, own: int, rows: int, by_rows: bool, device: torch.device, processes: int) -> float:
    """`rank_weight` of this process's `units` (`own` rows) among an optimizer step's (`rows` rows in all): an
    all-reduce unless the units are rows; by rows where the step has no units at all."""
    total = rows if by_rows else total_units(units, device)
    return rank_weight(units, total, processes) if total else rank_weight(own, rows, processes)


def total_units(units: float, device: torch.device) -> float:
    """The loss units (rows, trained tokens) of the whole global batch: summed over the processes."""
    t = torch.tensor([float(units)], device=device)
    dist.all_reduce(t)
    return float(t)


# ---------------------------------------------------------------------------- engines
def check_strategy(cfg: TrainConfig, method: str | None = None, distill: bool = False) -> None:
    """Refuse what cannot run, before a process group exists (one line, the field named)."""
    d = cfg.distributed
    if d.strategy != "ddp" and distill:
        raise ConfigError(f"config: train.distributed.strategy: {d.strategy} with distill is not supported; use ddp")
    if d.strategy == "deepspeed" and not torch.cuda.is_available():
        raise ConfigError("config: train.distributed.strategy: deepspeed needs CUDA GPUs; on CPUs use fsdp or ddp")
    if d.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("config: train.distributed.strategy: deepspeed is not installed; pip install deepspeed")
    if d.strategy != "ddp" and method == "qlora":
        raise ConfigError(f"config: train.distributed.strategy: {d.strategy} with method qlora is not supported; "
                          "use ddp (every process holds the 4-bit base model)")


def accelerator_kwargs(d: DistributedConfig, cfg: TrainConfig, processes: int, mixed: str) -> dict[str, Any]:
    """Extra `Accelerator(...)` arguments: a DeepSpeed plugin for `deepspeed`, nothing for ddp / fsdp."""
    if d.strategy != "deepspeed":
        return {}
    from accelerate.utils import DeepSpeedPlugin

    zero: dict[str, Any] = {"stage": d.zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if d.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if d.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if d.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config = {
        "train_micro_batch_size_per_gpu": max(1, cfg.batch_size // processes),
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.max_grad_norm or 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": mixed == "bf16"},
        "fp16": {"enabled": mixed == "fp16"},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,  # tunelab's torch AdamW, also with offload
    }
    return {"deepspeed_plugin": DeepSpeedPlugin(hf_ds_config=config)}


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules FSDP wraps one by one: instances of the classes the model declares unsplittable (its
    transformer layers, `_no_split_modules`)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def fully_shard_model(model: torch.nn.Module, d: DistributedConfig) -> torch.nn.Module:
    """FSDP2: shard each transformer layer, then the rest (embeddings, head) as the root unit."""
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    kwargs: dict[str, Any] = {"reshard_after_forward": d.reshard_after_forward}
    if d.offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    units = shard_units(model)
    if not units:
        raise ConfigError(f"config: train.distributed.strategy: fsdp found no transformer layers in "
                          f"{type(model).__name__} (no _no_split_modules); use ddp")
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    return model


@contextmanager
def whole_models() -> Iterator[None]:
    """Build models whole inside: while accelerate's ZeRO-3 config is registered, transformers constructs every
    model partitioned (deepspeed.zero.Init), the unsharded copy for saving too. transformers keeps that registration
    in a module global with no public getter, hence the private name."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state(model: torch.nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The model's full tensors on the CPU: gathered from the shards onto the main process under FSDP (every
    process must call it; the others get {}), else a copy. `trainable_only`: the parameters that train."""
    if not is_sharded(model):
        if trainable_only:
            return trainable_state(model)
        return {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if trainable_only:
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {n: t.contiguous() for n, t in state.items() if n in trainable}
    return state


def optimizer_state(model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer's state to checkpoint: under FSDP the full state keyed by parameter name (gathered; every
    process calls it), so a resume may shard it over another number of processes; else its own state_dict."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    inner = getattr(optimizer, "optimizer", optimizer)
    return get_optimizer_state_dict(model, inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_sharded(model: torch.nn.Module, optimizer: Any, weights: dict[str, torch.Tensor],
                 optim: dict[str, Any]) -> None:
    """Under FSDP: give every process its shards of a checkpoint's full trainable weights and optimizer state."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    inner = getattr(optimizer, "optimizer", optimizer)
    set_optimizer_state_dict(model, inner, optim, options=StateDictOptions(full_state_dict=True))


def gathered(strategy: str, acc: Any, model: torch.nn.Module, unwrapped: torch.nn.Module, trainable_only: bool,
             dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's full tensors (or only the trainable ones) on the main process's CPU; every process calls it.
    DeepSpeed's 16-bit weights come back in `dtype`, the one the model had before DeepSpeed cast it, so that the
    files have the names, shapes and sizes of a one-process run."""
    if strategy == "fsdp":
        return full_state(model, trainable_only)
    if strategy != "deepspeed":
        return full_state(unwrapped, trainable_only)
    state = acc.get_state_dict(model)  # ZeRO-3: gathered onto the main process
    names = {n for n, p in unwrapped.named_parameters() if p.requires_grad}
    return {n: t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype).contiguous()
            for n, t in state.items() if n in names or not trainable_only}


def gather_objects(value: Any) -> list[Any]:
    """`value` from every process, in rank order (on every process); [value] in one process."""
    rank, n = world()
    if n == 1:
        return [value]
    buffer = io.BytesIO()  # tensors travel as torch.save bytes: all_gather_object's unpickler refuses storages
    torch.save(value, buffer)
    out: list[Any] = [None] * n
    dist.all_gather_object(out, buffer.getvalue())
    return [torch.load(io.BytesIO(b), map_location="cpu", weights_only=True) for b in out]


def broadcast_object(value: Any) -> Any:
    """The main process's `value` on every process."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def scalar(value: torch.Tensor) -> float:
    """A float from a tensor that may be a DTensor (FSDP's gradient norm)."""
    full = getattr(value, "full_tensor", None)
    return float(full() if full is not None else value)


def total(acc: Any, value: int) -> int:
    """`value` summed over the processes (each counts the tokens of its share of every batch)."""
    return int(acc.reduce(torch.tensor(value, device=acc.device), "sum")) if acc.num_processes > 1 else value


def on_main(work: Callable[[], None]) -> None:
    """`work()` (checks, the run directory's first writes) on the main process only; a user error it raises is
    raised on every process, so that all end with it (exit code 2) instead of the others waiting on a collective
    for a process that has gone — which ended them with a traceback of their own."""
    error: TunelabError | OSError | None = None  # (what the CLI takes for a user error: one line, exit code 2)
    if world()[0] == 0:
        try:
            work()
        except (TunelabError, OSError) as e:
            error = e
    message = broadcast_object(None if error is None else str(error))
    if error is not None:
        raise error
    if message is not None:
        raise TunelabError(message)
