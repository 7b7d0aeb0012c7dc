"""Measured speedup of a pruned model over the unpruned one, on the deployment runtime (issue 31, part 4).

A speed budget (``--target-speedup``) is judged by measuring, not by counting: each model is
exported to ONNX (with the parity check of :func:`~sddpx_tp.export.onnx.export_onnx`) and timed in
ONNX Runtime on the CPU at batch 1, interleaved with the unpruned model so that a busy machine
slows both alike. The speedup is the ratio of the two medians. What the measuring costs is kept
in :attr:`SpeedProbe.seconds` and reported with the run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from sddpx_tp.export.onnx import export_onnx

DEFAULT_RUNS = 30  # timed runs of each model per measurement (interleaved)
WARMUP = 5


def cpu_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class SpeedProbe:
    """How many times faster than ``unpruned`` a model runs: ONNX Runtime CPU, batch 1, ``threads`` threads.

    ``example`` is one input (the references' first image): its shape is the one timed. Call
    :meth:`close` (or use it as a context manager) to remove its ONNX files.
    """

    def __init__(self, unpruned: nn.Module, example: torch.Tensor, threads: int, runs: int = DEFAULT_RUNS) -> None:
        if runs < 1 or threads < 1:
            raise ValueError(f"runs and threads must be >= 1, not {runs} and {threads}")
        self.example = example[:1].detach().float().cpu()
        self.threads, self.runs = threads, runs
        self.seconds = 0.0  # what measuring has cost so far (exports and timing)
        self.measurements = 0
        self.last_ms: tuple[float, float] | None = None  # the last measurement's medians: unpruned, model
        self._folder = tempfile.TemporaryDirectory(prefix="sddpx-speed-")
        started = time.perf_counter()
        self._baseline = self._session(unpruned, "unpruned")
        self.seconds += time.perf_counter() - started

    def _session(self, model: nn.Module, name: str) -> ort.InferenceSession:
        path = Path(self._folder.name) / f"{name}.onnx"
        export_onnx(model, self.example, path, self.example)
        return cpu_session(path, self.threads)

    def __call__(self, model: nn.Module) -> float:
        """The measured speedup of ``model`` (its median batch-1 latency against the unpruned model's)."""
        started = time.perf_counter()
        session = self._session(model, f"step-{self.measurements}")
        self.measurements += 1
        data = self.example.numpy().astype(np.float32)
        sessions = {"unpruned": self._baseline, "model": session}
        feeds = {label: {item.get_inputs()[0].name: data} for label, item in sessions.items()}
        times: dict[str, list[float]] = {label: [] for label in sessions}
        for repetition in range(WARMUP + self.runs):
            for label, item in sessions.items():  # interleaved: a busy moment slows both
                begun = time.perf_counter()
                item.run(None, feeds[label])
                if repetition >= WARMUP:
                    times[label].append(time.perf_counter() - begun)
        (Path(self._folder.name) / f"step-{self.measurements - 1}.onnx").unlink(missing_ok=True)
        self.seconds += time.perf_counter() - started
        self.last_ms = (statistics.median(times["unpruned"]) * 1e3, statistics.median(times["model"]) * 1e3)
        return self.last_ms[0] / self.last_ms[1]

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self) -> SpeedProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
