"""The machine and library facts stored with every result: versions, commit, CPU, threads, providers, time."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import onnxruntime
import torch

from sddpx_tp import __version__

# The distributions whose versions shape a figure (their modules do not all carry __version__:
# zennit 0.5.1 has none, and torch-pruning 1.6.1 reports 1.6.0).
LIBRARIES = ("torch", "torchvision", "torch-pruning", "zennit", "onnx", "onnxruntime", "numpy")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def source_commit() -> str | None:
    """The git commit of the sddpx-tp checkout this code runs from, with ``+dirty`` when tracked files
    differ from it; None when it does not run from a git checkout (an installed wheel)."""
    folder = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()  # fmt: skip
        changes = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if changes else commit


def environment() -> dict[str, Any]:
    """Versions of everything that shapes a figure, the commit, the machine, and when it was written."""
    return {
        "sddpx_tp": __version__,
        "commit": source_commit(),
        **{name.replace("-", "_"): library_version(name) for name in LIBRARIES},
        # The modules' own: torch's has its build tag (+cpu, +cu130); onnxruntime-gpu installs the onnxruntime module.
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "available_providers": onnxruntime.get_available_providers(),
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
