"""The benchmarks' resumable JSON results: read what is done, write after every run (atomically)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from sddpx_tp.files import atomic_write


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def write_results(path: Path, document: dict[str, Any], **environment: Any) -> None:
    """Stamp the machine facts that matter for timings, then replace ``path`` atomically."""
    document["environment"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        **environment,
    }
    atomic_write(path, lambda target: target.write_text(json.dumps(document, indent=1)))
