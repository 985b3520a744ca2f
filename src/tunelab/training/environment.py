"""`tunelab env`: what a run would run on — versions, CPU/GPU, threads, bf16, and a config's seed.
Paste its output into a bug report or next to benchmark numbers."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

from tunelab.config.run import RunConfig
from tunelab.models.precision import resolve_precision


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(cfg: RunConfig | None = None) -> dict[str, Any]:

    info: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable}
    for package in ("torch", "transformers", "peft", "accelerate", "tunelab"):
        info[package] = _version(package)
    info["torch"] = torch.__version__  # the build too (2.11.0+cu130): the package metadata drops the local tag
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["platform"] = f"{platform.system()} {platform.release()} {platform.machine()}"
    info["cpu"] = f"{_cpu_name()} ({os.cpu_count()} logical CPUs, {affinity} usable)"
    info["torch_threads"] = torch.get_num_threads()
    info["cpu_bf16_native"] = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    if torch.cuda.is_available():
        props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        info["gpu"] = [f"{p.name} ({p.total_memory / 2**30:.1f} GiB)" for p in props]
        info["cuda"] = torch.version.cuda
        info["gpu_bf16"] = torch.cuda.is_bf16_supported()
    else:
        info["gpu"] = "none"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info["precision_auto"] = resolve_precision("auto", device)
    if cfg is not None:
        info["seed"] = cfg.train.seed
        info["precision"] = resolve_precision(cfg.train.precision, device)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
