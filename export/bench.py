"""Latency and size benchmarks: ONNX Runtime (CPU, and CUDA where present) and eager torch.

Candidates are timed *interleaved* — one run of each in turn, the order alternating
every round — so drift on a shared machine (another job, thermal limits) hits all
of them alike; the figures to quote are the medians and the ratios between them.
A percentile is reported only when enough runs back it (p90 from 10 runs, p99 from
100; otherwise null), with the mean, standard deviation and fastest run. Any execution
provider onnxruntime knows can be asked for (``cpu``, ``cuda``, ``CUDAExecutionProvider``,
...); one this installation lacks is skipped and listed as skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from sddpx_tp.errors import SettingError, UserError
from sddpx_tp.export.memory import session_peak_bytes
from sddpx_tp.export.onnx import read_metadata

# Every provider onnxruntime knows, by its short name ("cuda") and its own ("CUDAExecutionProvider").
PROVIDERS = {name.removesuffix("ExecutionProvider").lower(): name for name in ort.get_all_providers()}
# The fewest timed runs that back each percentile; with fewer it is reported as null.
PERCENTILE_RUNS = {"p50_ms": 1, "p90_ms": 10, "p99_ms": 100}
SESSION_OPTIONS = {"graph_optimization_level": "ORT_ENABLE_ALL", "inter_op_num_threads": 1,
                   "intra_op_num_threads": "the row's threads", "execution_mode": "ORT_SEQUENTIAL"}  # fmt: skip


@dataclass(frozen=True)
class BenchSettings:
    batch_sizes: Sequence[int] = (1, 32)
    threads: Sequence[int] = (1, 2)
    warmup: int = 3
    runs: int = 20
    providers: Sequence[str] = ("cpu",)
    memory: bool = True  # also measure each session's peak memory (a fresh process per model)

    def __post_init__(self) -> None:
        limits = {"batch_sizes": (self.batch_sizes, 1, 4096), "threads": (self.threads, 1, 1024),
                  "warmup": ((self.warmup,), 0, 10_000), "runs": ((self.runs,), 3, 1_000_000)}  # fmt: skip
        for name, (values, low, high) in limits.items():
            for value in values:
                if not low <= value <= high:
                    raise SettingError(f"{{{name}}} must be in [{low}, {high}], not {value}")


def _percentiles(seconds: list[float], batch: int) -> dict[str, float | int | None]:
    values = np.asarray(seconds) * 1000
    found: dict[str, float | int | None] = {
        name: float(np.percentile(values, int(name[1:3]))) if len(values) >= runs else None
        for name, runs in PERCENTILE_RUNS.items()
    }
    p50 = float(np.percentile(values, 50))
    return {
        **found,
        "mean_ms": float(values.mean()),
        "std_ms": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min_ms": float(values.min()),
        "throughput_per_s": batch / (p50 / 1000),
        "runs": len(seconds),
    }


class Rounds(Protocol):
    """Where timing reports its progress: one round is every model run once (a tqdm bar is one)."""

    def update(self, n: float | None = 1) -> bool | None: ...


def timing_rounds(settings: BenchSettings, with_torch: bool) -> int:
    """Rounds :func:`bench_onnx` (and :func:`bench_torch`, ``with_torch``) will time: for a progress bar's total."""
    per_setting = settings.warmup + settings.runs
    onnx_settings = len(check_providers(settings.providers)) * len(settings.threads) * len(settings.batch_sizes)
    torch_settings = len(settings.threads) * len(settings.batch_sizes) if with_torch else 0
    return (onnx_settings + torch_settings) * per_setting


def _interleaved(
    runners: Mapping[str, Callable[[], object]], warmup: int, runs: int, rounds: Rounds | None = None
) -> dict[str, list[float]]:
    for _ in range(warmup):
        for runner in runners.values():
            runner()
        if rounds is not None:
            rounds.update(1)
    times: dict[str, list[float]] = {label: [] for label in runners}
    labels = list(runners)
    for round_index in range(runs):
        for label in labels if round_index % 2 == 0 else reversed(labels):
            start = time.perf_counter()
            runners[label]()
            times[label].append(time.perf_counter() - start)
        if rounds is not None:
            rounds.update(1)
    return times


def onnx_input_shape(path: Path) -> tuple[int, int, int]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or not all(isinstance(size, int) for size in shape[1:]):
        raise UserError(f"{path}: expected an image input [batch, channels, height, width], found {shape}")
    return int(shape[1]), int(shape[2]), int(shape[3])


def _free_memory() -> int | None:
    """Bytes of memory available now (Linux), or None where it cannot be read."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_input_memory(path: Path, shape: tuple[int, int, int], batch: int) -> None:
    """Refuse, before allocating it, an input that would not fit in half the free memory (a model file can
    declare any input size; the activations need more still)."""
    needed = 4 * batch * shape[0] * shape[1] * shape[2]
    free = _free_memory()
    if free is not None and needed > free // 2:
        raise UserError(
            f"{path} takes inputs of {list(shape)}: one batch of {batch} needs {needed / 2**30:.1f} GiB before the "
            f"model runs, and {free / 2**30:.1f} GiB are free; use a smaller batch or a model with a smaller input"
        )


def _session(path: Path, provider: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # as SESSION_OPTIONS records
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=[PROVIDERS[provider]])


def provider_key(name: str) -> str:
    """``cuda``, ``CUDA`` or ``CUDAExecutionProvider`` -> ``cuda``; an error if onnxruntime knows no such provider."""
    by_full_name = {full.lower(): short for short, full in PROVIDERS.items()}
    key = name.lower()
    if key in PROVIDERS:
        return key
    if key in by_full_name:
        return by_full_name[key]
    raise UserError(f"unknown provider {name!r}; choose from {', '.join(sorted(PROVIDERS))}")


def check_providers(providers: Sequence[str]) -> list[str]:
    """The requested providers that this installation has (short names); unknown names are errors,
    known ones it lacks (CUDA without onnxruntime-gpu) are left out (see :func:`skipped_providers`)."""
    available = set(ort.get_available_providers())
    return [key for key in map(provider_key, providers) if PROVIDERS[key] in available]


def skipped_providers(providers: Sequence[str]) -> list[str]:
    usable = set(check_providers(providers))
    return [key for key in map(provider_key, providers) if key not in usable]


def check_bench_inputs(models: Mapping[str, Path], settings: BenchSettings) -> tuple[int, int, int]:
    """The models' common input shape, after checking they share one and its largest batch fits in memory."""
    shapes = {label: onnx_input_shape(path) for label, path in models.items()}
    if len(set(shapes.values())) > 1:
        raise UserError(f"the models take different inputs and cannot be compared: {shapes}")
    shape = next(iter(shapes.values()))
    _check_input_memory(next(iter(models.values())), shape, max(settings.batch_sizes))
    return shape


def bench_onnx(
    models: Mapping[str, Path], settings: BenchSettings, rounds: Rounds | None = None
) -> list[dict[str, Any]]:
    """Latency of every model, per provider, thread count and batch size (interleaved); ``rounds`` counts them."""
    channels, height, width = check_bench_inputs(models, settings)
    rows = []
    for provider in check_providers(settings.providers):
        for threads in settings.threads:
            sessions = {label: _session(path, provider, threads) for label, path in models.items()}
            for batch in settings.batch_sizes:
                data = np.random.default_rng(0).standard_normal((batch, channels, height, width), dtype=np.float32)
                runners = {
                    label: (lambda s=session, d=data: s.run(None, {s.get_inputs()[0].name: d}))
                    for label, session in sessions.items()
                }
                for label, seconds in _interleaved(runners, settings.warmup, settings.runs, rounds).items():
                    rows.append({"engine": "onnxruntime", "provider": provider, "threads": threads, "batch": batch,
                                 "model": label, **_percentiles(seconds, batch)})  # fmt: skip
    return rows


def session_memory(models: Mapping[str, Path], settings: BenchSettings) -> list[dict[str, Any]]:
    """Each model's session peak memory per provider, at the largest batch and the fewest threads."""
    if not settings.memory:
        return []
    shape = onnx_input_shape(next(iter(models.values())))
    batch, threads = max(settings.batch_sizes), min(settings.threads)
    return [
        {"provider": provider, "model": label, "batch": batch, "threads": threads,
         "session_peak_bytes": session_peak_bytes(path, PROVIDERS[provider], batch, shape, threads)}
        for provider in check_providers(settings.providers)
        for label, path in models.items()
    ]  # fmt: skip


def _torch_runner(model: nn.Module, data: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(data)

    return run


def bench_torch(
    models: Mapping[str, nn.Module],
    input_shape: tuple[int, int, int],
    settings: BenchSettings,
    rounds: Rounds | None = None,
) -> list[dict[str, Any]]:
    """The same measurement for eager torch on the CPU, so users see what ONNX gained."""
    rows = []
    previous_threads = torch.get_num_threads()
    try:
        for threads in settings.threads:
            torch.set_num_threads(threads)
            for batch in settings.batch_sizes:
                data = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))

                runners = {label: _torch_runner(model.eval(), data) for label, model in models.items()}
                for label, seconds in _interleaved(runners, settings.warmup, settings.runs, rounds).items():
                    rows.append({"engine": "torch", "provider": "cpu", "threads": threads, "batch": batch,
                                 "model": label, **_percentiles(seconds, batch)})  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)
    return rows


def model_facts(path: Path) -> dict[str, Any]:
    metadata = read_metadata(path)
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".data")),
        "params": int(metadata["params"]) if "params" in metadata else None,
        "macs": int(metadata["macs"]) if "macs" in metadata else None,
        "opset": metadata.get("opset"),
    }


def speedups(rows: list[dict[str, Any]], facts: Mapping[str, dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Per configuration: candidate speedup over the baseline, and its ratio to the MACs reduction."""
    by_config: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for row in rows:
        key = (row["engine"], row["provider"], row["threads"], row["batch"])
        by_config.setdefault(key, {})[row["model"]] = row
    result = []
    for (engine, provider, threads, batch), by_model in by_config.items():
        if baseline not in by_model:
            continue
        for label, row in by_model.items():
            if label == baseline:
                continue
            speedup = by_model[baseline]["p50_ms"] / row["p50_ms"]
            macs, base_macs = facts.get(label, {}).get("macs"), facts.get(baseline, {}).get("macs")
            reduction = base_macs / macs if macs and base_macs else None
            result.append(
                {
                    "engine": engine,
                    "provider": provider,
                    "threads": threads,
                    "batch": batch,
                    "model": label,
                    "against": baseline,
                    "speedup": speedup,
                    "macs_reduction": reduction,
                    "speedup_over_macs_reduction": None if reduction is None else speedup / reduction,
                }
            )
    return result


def markdown_table(rows: list[dict[str, Any]], gains: list[dict[str, Any]]) -> str:
    """The latency rows, with each model's speedup over the unpruned fp32 model (and its share of the MACs
    reduction) and, where it was timed, over the unpruned model quantized to int8."""
    gain = {(g["engine"], g["provider"], g["threads"], g["batch"], g["model"], g.get("against", "baseline")): g
            for g in gains}  # fmt: skip
    over_int8 = any(g.get("against") == "baseline_int8" for g in gains)
    lines = [
        "| engine | provider | threads | batch | model | p50 ms | p90 ms | p99 ms | images/s | speedup "
        "| / MACs reduction |" + (" vs unpruned int8 |" if over_int8 else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if over_int8 else ""),
    ]
    for row in rows:
        key = (row["engine"], row["provider"], row["threads"], row["batch"], row["model"])
        g, g8 = gain.get((*key, "baseline")), gain.get((*key, "baseline_int8"))
        speed = f"{g['speedup']:.2f}x" if g else ""
        ratio = f"{g['speedup_over_macs_reduction']:.2f}" if g and g["speedup_over_macs_reduction"] else ""
        int8 = (f" {g8['speedup']:.2f}x |" if g8 else " |") if over_int8 else ""
        lines.append(
            f"| {row['engine']} | {row['provider']} | {row['threads']} | {row['batch']} | {row['model']} "
            f"| {_ms(row['p50_ms'])} | {_ms(row['p90_ms'])} | {_ms(row['p99_ms'])} | {row['throughput_per_s']:.1f} "
            f"| {speed} | {ratio} |{int8}"
        )
    return "\n".join(lines)


def memory_table(rows: list[dict[str, Any]]) -> str:
    """Each session's peak memory (what creating it and running one batch adds to a fresh process), as
    Markdown; empty when it was not measured."""
    if not rows:
        return ""
    lines = ["| provider | model | batch | threads | session peak memory |", "|---|---|---|---|---|"]
    for row in rows:
        peak = row["session_peak_bytes"]
        shown = "not measured" if peak is None else f"{peak / 2**20:.1f} MiB"
        lines.append(f"| {row['provider']} | {row['model']} | {row['batch']} | {row['threads']} | {shown} |")
    return "\n".join(lines)


def file_to_ship(rows: list[dict[str, Any]], candidates: list[str]) -> dict[str, Any] | None:
    """The fastest of ``candidates`` (labels of models that keep the accuracy: the pruned fp32 model, and
    its int8 one when export admitted it) in ONNX Runtime at batch 1 on the first provider and the fewest
    threads timed, with its speedups over the unpruned fp32 and int8 models; None without such rows."""
    timed = [row for row in rows if row["engine"] == "onnxruntime" and row["batch"] == 1]
    if not timed:
        return None
    provider, threads = timed[0]["provider"], min(row["threads"] for row in timed)
    at = {row["model"]: row for row in timed if row["provider"] == provider and row["threads"] == threads}
    offered = [label for label in candidates if label in at]
    if not offered:
        return None
    best = min(offered, key=lambda label: at[label]["p50_ms"])
    choice: dict[str, Any] = {"model": best, "provider": provider, "threads": threads, "batch": 1,
                              "p50_ms": at[best]["p50_ms"]}  # fmt: skip
    for against in ("baseline", "baseline_int8"):
        if against in at:
            choice[f"speedup_over_{against}"] = at[against]["p50_ms"] / at[best]["p50_ms"]
    return choice


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"  # a percentile too few runs would back
