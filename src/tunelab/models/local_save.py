"""`save_pretrained` for a copy that every process writes for itself.

transformers 5 writes a model's files on rank 0 only whenever torch.distributed is initialised
(`PreTrainedModel.should_save_on_this_rank`, whatever `is_main_process` says). A local copy that each process of a
launched run builds on its own — a student cut from its teacher's layers (`model: layers:0,2`), a GGUF model
materialised on first use — would be left without weights on the other ranks. Inside a process group this writes
the config, the generation config and the weights itself (safetensors; a tensor shared by tied layers once, which
`from_pretrained` ties again); outside one it is plain `save_pretrained`."""

from __future__ import annotations

from pathlib import Path

import torch


def save_model_here(model: torch.nn.Module, directory: str | Path) -> None:
    """Write `model` (a transformers model) into `directory` from this process, on any rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        model.save_pretrained(str(directory))
        return
    from safetensors.torch import save_model

    model.config.save_pretrained(str(directory))
    generation = getattr(model, "generation_config", None)
    if generation is not None and model.can_generate():
        generation.save_pretrained(str(directory))
    save_model(model, str(Path(directory) / "model.safetensors"), metadata={"format": "pt"})
