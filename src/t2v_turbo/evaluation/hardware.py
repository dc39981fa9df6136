"""What machine a number was measured on: recorded with every evaluation and benchmark result."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux, `platform.processor()` elsewhere)."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text(errors="ignore").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict:
    """CPU model, cores, torch threads, torch/python versions and the GPU (if any) as a dict."""
    from .. import __version__

    info = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "t2v_turbo": __version__,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
        info["cuda"] = torch.version.cuda
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:  # pragma: no cover - a core dependency
        pass
    return info


def machine_label(info: dict | None = None) -> str:
    """One line for table captions, e.g. 'AMD EPYC, 2 cores (2 torch threads), torch 2.13.0+cpu'."""
    info = info or machine_info()
    label = f"{info['cpu']}, {info['cpu_cores']} cores ({info['torch_threads']} torch threads), torch {info['torch']}"
    if info.get("gpu"):
        label += f", GPU {info['gpu']}"
    return label
