"""What the benchmark ran on: CPU model and cores, GPU, library versions, date."""
from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import os
import platform

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:
        return "not installed"


def machine_info(device: str = "cpu") -> dict:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device,
        "cpu": cpu_model(),
        "cpu_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    for module in ("torch", "triton", "numba", "numpy", "scipy", "torchlpc", "philtorch", "torchaudio"):
        info[module] = _version(module)
    try:
        import numba

        info["numba_threads"] = numba.get_num_threads()
    except Exception:
        pass
    return info
