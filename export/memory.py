"""Peak memory of an ONNX Runtime session, each measured alone in a fresh process.

A process's peak resident set only grows, so sessions measured side by side in one process
would each be charged for the others (and for torch). Each measurement therefore starts a
Python that imports onnxruntime, allocates the input batch, notes its resident set and
resets the kernel's peak mark to it (Linux: ``/proc/self/clear_refs``), then creates the
session and runs the batch once: the new peak minus the resident set before is what the
session costs (weights, arena, the run's activations). Elsewhere it is not measured (None).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_MEASURE = """
import json, sys
import numpy as np
import onnxruntime as ort

def status_bytes(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

path, provider, batch, channels, height, width, threads = sys.argv[1:8]
data = np.zeros((int(batch), int(channels), int(height), int(width)), dtype=np.float32)
before = status_bytes("VmRSS")
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # resets the peak (VmHWM) to the current resident set: imports no longer count
options = ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(path, options, providers=[provider])
session.run(None, {session.get_inputs()[0].name: data})
print(json.dumps({"session_peak_bytes": status_bytes("VmHWM") - before}))
"""


def session_peak_bytes(
    path: Path, provider: str, batch: int, input_shape: tuple[int, int, int], threads: int = 1, timeout: float = 600
) -> int | None:
    """What creating a session of ``path`` and running one ``batch`` adds to a fresh process's peak
    resident memory, in bytes; None where it cannot be measured (not Linux, or the measurement failed)."""
    if not sys.platform.startswith("linux"):
        return None
    command = [sys.executable, "-c", _MEASURE, str(path), provider, str(batch), *map(str, input_shape), str(threads)]
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
        return int(json.loads(finished.stdout.strip().splitlines()[-1])["session_peak_bytes"])
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
        return None
