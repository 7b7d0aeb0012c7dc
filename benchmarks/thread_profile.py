"""Why do pruned models lose speed at 2 threads? Per-operator profiles, unpruned and pruned side by side (issue 16).

    python benchmarks/thread_profile.py --out results/thread_profile.json

ResNet-18 at 224 px, random weights (speed does not depend on them), pruned by PX to filter
rate 0.5 with round_to 16 (as benchmarks/export_speed.py does), exported to ONNX. For each model,
batch 32, and each ONNX Runtime setting below, the median latency over --runs timed runs
(interleaved) and the per-operator time from ONNX Runtime's own profiler (a separate profiled
session, so the profiler's cost never enters the latencies):

* 1 thread, and 2 threads with the thread pool spinning (ORT's default) and not spinning;
* graph optimisation ORT_ENABLE_ALL (NCHWc layout: ReorderInput/ReorderOutput nodes) and
  ORT_ENABLE_EXTENDED (plain NCHW kernels).

"Realised" = speedup / MACs reduction (1.0: the pruned model is exactly as much faster as it has
fewer MACs). Run it alone: the latencies are compared inside one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torchvision.models import resnet18

from sddpx_tp.api import prune
from sddpx_tp.environment import environment
from sddpx_tp.export.onnx import export_onnx
from sddpx_tp.files import atomic_write
from sddpx_tp.metrics import count_macs
from sddpx_tp.models.classifier import restrict_to_classes
from sddpx_tp.pruning.config import PruneConfig

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}
SETTINGS = [  # (threads, spinning, optimisation level)
    (1, True, "all"),
    (2, True, "all"),
    (2, False, "all"),
    (1, True, "extended"),
    (2, True, "extended"),
]


def _options(threads: int, spinning: bool, level: str, profile_prefix: str | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = LEVELS[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def _latencies(sessions: dict[str, ort.InferenceSession], data: np.ndarray, runs: int) -> dict[str, float]:
    """Median ms per model, the models interleaved run by run (so a slow spell hits them alike)."""
    seconds: dict[str, list[float]] = defaultdict(list)
    for session in sessions.values():  # warm-up
        session.run(None, {session.get_inputs()[0].name: data})
    for _ in range(runs):
        for label, session in sessions.items():
            started = time.perf_counter()
            session.run(None, {session.get_inputs()[0].name: data})
            seconds[label].append(time.perf_counter() - started)
    return {label: 1000 * statistics.median(values) for label, values in seconds.items()}


def _profile(path: Path, options: ort.SessionOptions, data: np.ndarray, runs: int) -> dict[str, float]:
    """Mean ms per run spent in each operator type (ONNX Runtime's profiler, kernel time)."""
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, {session.get_inputs()[0].name: data})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000  # microseconds -> ms
    # The first run (allocation, kernel selection) is not representative: scale to a mean over the others.
    return {op: total / (runs + 1) for op, total in sorted(per_op.items(), key=lambda item: -item[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("results/thread_profile.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resnet18().eval()
    images = torch.randn(16, 3, 224, 224)
    config = PruneConfig.paper(method="px", max_rate=args.rate, step=args.rate, round_to=16)
    result = prune(model, (images, torch.tensor([0, 1] * 8)), [0, 1], config, progress=False)
    work = Path(tempfile.mkdtemp(prefix="sddpx-profile-"))
    models = {"unpruned": restrict_to_classes(model, [0, 1]), "pruned": result.model}
    files, macs = {}, {}
    for label, network in models.items():
        files[label] = work / f"{label}.onnx"
        export_onnx(network, images, files[label], images[:4])
        macs[label] = count_macs(network, images[:1])
    data = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224), dtype=np.float32)
    rows: list[dict[str, Any]] = []
    for threads, spinning, level in SETTINGS:
        sessions = {label: ort.InferenceSession(str(path), _options(threads, spinning, level),
                                                providers=["CPUExecutionProvider"])
                    for label, path in files.items()}  # fmt: skip
        latency = _latencies(sessions, data, args.runs)
        profiles = {label: _profile(path, _options(threads, spinning, level, str(work / label)), data, 3)
                    for label, path in files.items()}  # fmt: skip
        speedup = latency["unpruned"] / latency["pruned"]
        row = {"threads": threads, "spinning": spinning, "optimisation": level, "latency_ms": latency,
               "speedup": speedup, "macs_reduction": macs["unpruned"] / macs["pruned"],
               "realised": speedup / (macs["unpruned"] / macs["pruned"]), "per_operator_ms": profiles}  # fmt: skip
        rows.append(row)
        top = ", ".join(f"{op} {profiles['unpruned'].get(op, 0):.0f}/{ms:.0f}" for op, ms in
                        list(profiles["pruned"].items())[:4])  # fmt: skip
        print(f"{threads} thread(s), spinning {spinning}, {level}: unpruned {latency['unpruned']:.0f} ms, pruned "
              f"{latency['pruned']:.0f} ms, {speedup:.2f}x of {row['macs_reduction']:.2f}x MACs "
              f"({row['realised']:.2f} realised); ms unpruned/pruned: {top}", flush=True)  # fmt: skip
    document = {"environment": environment(), "rate": result.trajectory[-1].filter_rate, "batch": args.batch,
                "runs": args.runs, "macs": macs, "rows": rows}  # fmt: skip
    atomic_write(args.out, lambda path: path.write_text(json.dumps(document, indent=1)))


if __name__ == "__main__":
    main()
