"""Measure a model's per-layer latency table on ONNX Runtime (issue 31, part 2: ``cost="latency"``).

Each conv and linear layer of the unpruned model is built alone as a one-node ONNX graph (a Conv,
or a Gemm; random weights: latency does not depend on them) and timed in ONNX Runtime at batch 1
and the run's thread count, at a grid of channel counts (:data:`~sddpx_tp.export.latency_table.GRID_FRACTIONS`
of its width), the median of ``runs``. A layer is never slower with more channels in the table:
each axis is made non-decreasing (a running maximum), so a noisy point cannot give a channel a
negative cost. The table is cached, as JSON, per layer shapes (the architecture at its input size),
runtime, provider, threads and CPU: a second run on the same machine reads it back in milliseconds.
What the measuring cost is the table's :attr:`~sddpx_tp.export.latency_table.LatencyTable.measuring_seconds`.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from tqdm.auto import tqdm

from sddpx_tp.environment import cpu_model
from sddpx_tp.export.latency_table import LatencyTable, LayerGrid, LayerShape, grid_counts, layer_shapes
from sddpx_tp.files import atomic_write

DEFAULT_RUNS = 15  # timed runs per grid point (median)
WARMUP = 3
OPSET = 17


def layer_graph(shape: LayerShape) -> bytes:
    """A one-node ONNX model computing ``shape``'s layer at batch 1 (weights random, fixed seed)."""
    generator = np.random.default_rng(0)
    if shape.kind == "linear":
        inputs = [1, shape.in_channels]
        weight = generator.standard_normal((shape.out_channels, shape.in_channels), dtype=np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        outputs = [1, shape.out_channels]
    else:
        height, width = shape.input_size
        inputs = [1, shape.in_channels, height, width]
        per_group = shape.in_channels // shape.groups
        weight = generator.standard_normal((shape.out_channels, per_group, *shape.kernel), dtype=np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(shape.kernel),
                                strides=list(shape.stride), pads=[*shape.padding, *shape.padding],
                                dilations=list(shape.dilation), group=shape.groups)  # fmt: skip
        outputs = None  # inferred by the runtime
    bias = np.zeros(shape.out_channels, dtype=np.float32)
    graph = helper.make_graph(
        [node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, inputs)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, outputs)],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # read by every onnxruntime this project supports
    return bytes(model.SerializeToString())


def time_layer(
    shape: LayerShape, threads: int, runs: int = DEFAULT_RUNS, provider: str = "CPUExecutionProvider"
) -> float:
    """Median seconds of one batch-1 run of ``shape``'s layer alone."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(layer_graph(shape), options, providers=[provider])
    if shape.kind == "linear":
        data = np.ones((1, shape.in_channels), dtype=np.float32)
    else:
        data = np.ones((1, shape.in_channels, *shape.input_size), dtype=np.float32)
    feeds = {"x": data}
    times = []
    for repetition in range(WARMUP + runs):
        started = time.perf_counter()
        session.run(None, feeds)
        if repetition >= WARMUP:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _non_decreasing(seconds: list[list[float]]) -> list[list[float]]:
    """A running maximum along both axes: more channels never cost less time in the table."""
    rows = [list(row) for row in seconds]
    for i, row in enumerate(rows):
        for j in range(len(row)):
            below = rows[i - 1][j] if i else 0.0
            left = row[j - 1] if j else 0.0
            row[j] = max(row[j], below, left)
    return rows


def measure_grid(shape: LayerShape, threads: int, runs: int = DEFAULT_RUNS) -> LayerGrid:
    """``shape``'s layer timed at its grid of widths (one point for a grouped, not depthwise, conv)."""
    if shape.grouped:
        return LayerGrid(shape, [shape.in_channels], [shape.out_channels], [[time_layer(shape, threads, runs)]])
    if shape.kind == "linear" or shape.depthwise:  # one axis: input features, or the depthwise channels
        counts = grid_counts(shape.in_channels)
        seconds = [[time_layer(shape.with_channels(count, count if shape.depthwise else shape.out_channels),
                               threads, runs)] for count in counts]  # fmt: skip
        return LayerGrid(shape, counts, [shape.out_channels], _non_decreasing(seconds))
    ins, outs = grid_counts(shape.in_channels), grid_counts(shape.out_channels)
    seconds = [[time_layer(shape.with_channels(i, o), threads, runs) for o in outs] for i in ins]
    return LayerGrid(shape, ins, outs, _non_decreasing(seconds))


def runtime_description(threads: int, provider: str = "CPUExecutionProvider") -> str:
    plural = "s" if threads != 1 else ""
    return f"onnxruntime {ort.__version__} {provider}, {threads} thread{plural}, {cpu_model()}"


def measure_latency_table(
    model: nn.Module,
    example_input: torch.Tensor,
    threads: int,
    *,
    runs: int = DEFAULT_RUNS,
    cache_folder: Path | None = None,
    progress: bool = True,
) -> LatencyTable:
    """The per-layer latency table of ``model`` at ``example_input``'s size, on ONNX Runtime's CPU provider with
    ``threads`` threads; read from ``cache_folder`` when it was measured there before, else measured and cached."""
    if threads < 1 or runs < 1:
        raise ValueError(f"threads and runs must be >= 1, not {threads} and {runs}")
    started = time.perf_counter()
    shapes = layer_shapes(model, example_input)
    runtime = runtime_description(threads)
    key = json.dumps({"layers": {n: s.to_dict() for n, s in shapes.items()}, "runtime": runtime, "runs": runs},
                     sort_keys=True)  # fmt: skip
    path = None
    if cache_folder is not None:
        path = cache_folder / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        cached = _read(path)
        if cached is not None:
            cached.measuring_seconds = time.perf_counter() - started
            return cached
    layers = {}
    for name, shape in tqdm(shapes.items(), desc="timing layers", unit="layer", disable=not progress, file=sys.stderr):
        layers[name] = measure_grid(shape, threads, runs)
    table = LatencyTable(layers, runtime)
    if path is not None:
        text = json.dumps(table.to_dict())
        try:
            atomic_write(path, lambda temporary: temporary.write_text(text))
        except OSError as error:  # a cache is a convenience: the run goes on with the table it measured
            reason = error.strerror or type(error).__name__
            warnings.warn(f"the latency table is not cached in {path.parent} ({reason}); it is measured again next "
                          "time: set SDDPX_CACHE to a folder you can write", stacklevel=2)  # fmt: skip
    table.measuring_seconds = time.perf_counter() - started
    return table


def _read(path: Path) -> LatencyTable | None:
    """A cached table, or None when there is none or it cannot be read (it is then measured again)."""
    try:
        return LatencyTable.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
