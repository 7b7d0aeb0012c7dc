"""The machine and library facts stored with every result: versions, CPU, threads, providers."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import onnxruntime
import torch
import torch_pruning
import zennit

from sddpx_tp import __version__


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Versions of everything that shapes a figure, and the machine it ran on."""
    return {
        "sddpx_tp": __version__,
        "torch": torch.__version__,
        "torch_pruning": getattr(torch_pruning, "__version__", "unknown"),
        "zennit": getattr(zennit, "__version__", "unknown"),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "available_providers": onnxruntime.get_available_providers(),
    }
