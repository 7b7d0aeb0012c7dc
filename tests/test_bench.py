"""What a benchmark reports: percentiles backed by enough runs, session memory, the settings that shape it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from sddpx_tp.errors import UserError
from sddpx_tp.export.bench import BenchSettings, _percentiles, check_providers, provider_key
from sddpx_tp.export.onnx import export_onnx
from sddpx_tp.run.export import bench_files


def _onnx(path: Path, width: int) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2))  # fmt: skip
    images = torch.randn(4, 3, 16, 16)
    export_onnx(model, images, path, images)
    return path


def test_a_percentile_is_reported_only_when_enough_runs_back_it() -> None:
    rng = np.random.default_rng(0)
    few, many = list(rng.uniform(0.01, 0.02, 20)), list(rng.uniform(0.01, 0.02, 100))
    assert _percentiles(few, 1)["p99_ms"] is None and _percentiles(few, 1)["p90_ms"] is not None
    assert _percentiles(few[:9], 1)["p90_ms"] is None
    stats = _percentiles(many, 4)
    milliseconds = np.asarray(many) * 1000
    ordered = sorted(milliseconds)  # numpy's linear rule: position 0.99 * 99 = 98.01
    assert stats["p99_ms"] == pytest.approx(ordered[98] + 0.01 * (ordered[99] - ordered[98]))
    assert stats["std_ms"] == pytest.approx(float(np.std(milliseconds, ddof=1)))
    assert stats["min_ms"] == pytest.approx(float(milliseconds.min()))
    assert stats["throughput_per_s"] == pytest.approx(4 / (float(np.median(milliseconds)) / 1000))


def test_providers_are_named_as_onnxruntime_names_them_or_short() -> None:
    assert provider_key("CPUExecutionProvider") == provider_key("CPU") == provider_key("cpu") == "cpu"
    assert provider_key("TensorrtExecutionProvider") == "tensorrt"
    with pytest.raises(UserError, match=r"unknown provider 'tpu'; choose from .*cuda"):
        provider_key("tpu")
    usable = check_providers(["cpu", "cuda", "openvino"])
    assert usable[0] == "cpu"
    assert ("cuda" in usable) == ("CUDAExecutionProvider" in ort.get_available_providers())


def test_the_bench_json_carries_what_a_deployment_engineer_checks(tmp_path: Path) -> None:
    small, large = _onnx(tmp_path / "small.onnx", 8), _onnx(tmp_path / "large.onnx", 256)
    settings = BenchSettings(batch_sizes=(1, 4), threads=(1,), warmup=2, runs=12, providers=("cpu", "cuda"))
    result = bench_files({"pruned": small, "baseline": large}, settings)
    assert result["session_options"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert result["environment"]["onnxruntime"] == ort.__version__ and result["environment"]["cpu"]
    assert result["settings"]["warmup"] == 2 and result["settings"]["threads"] == (1,)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert result["skipped_providers"] == ["cuda"]
    rows = [row for row in result["latency"] if row["engine"] == "onnxruntime"]
    assert {(row["model"], row["batch"]) for row in rows} == {(m, b) for m in ("pruned", "baseline") for b in (1, 4)}
    assert all(row["runs"] == 12 and row["p99_ms"] is None and row["p90_ms"] is not None for row in rows)
    memory = {row["model"]: row["session_peak_bytes"] for row in result["memory"]}
    # 256 x 256 x 3 x 3 float weights alone are 2.4 MB; the small model's are under 3 kB.
    assert memory["baseline"] - memory["pruned"] > 2_000_000, memory
