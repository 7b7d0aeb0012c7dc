"""Work that looked hung (issue 34, item 6): a sweep grid beyond a stated limit is refused at once, a sweep says
what it will run before it runs it, bench counts its timed rounds on stderr as it goes, and a long relevance
pass shows its chunks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from sddpx_tp.cli import main
from sddpx_tp.export.bench import BenchSettings, bench_onnx, timing_rounds
from sddpx_tp.lrp.relevance import filter_relevance


def _grid_config(folder: Path, values: int) -> Path:
    """A sweep config whose grid has ``values`` x ``values`` x ``values`` combinations (2 class subsets)."""
    for name in ("refs", "eval"):
        for cls in ("a", "b", "c"):
            (folder / name / cls).mkdir(parents=True, exist_ok=True)
    rates = ", ".join(f"{0.1 + 0.8 * index / values:.6f}" for index in range(values))
    config = folder / "sweep.toml"
    config.write_text(
        f'[data]\nreferences = "{folder / "refs"}"\nevaluation = "{folder / "eval"}"\n'
        '[classes]\nsubsets = [["a", "b"], ["b", "c"]]\n'
        '[models.resnet18]\nname = "resnet18"\nrandom_init = true\nnum_classes = 3\n'
        f"[grid]\nmax_rate = [{rates}]\nstep = [{rates}]\nclass_floor = [{rates}]\n"
    )
    return config


def test_a_grid_of_millions_of_cells_is_refused_at_once_in_one_line(tmp_path: Path) -> None:
    config = _grid_config(tmp_path, 100)  # 2 subsets x 100^3 values: 2,000,000 cells
    out = tmp_path / "out"
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["sweep", str(config), "--out", str(out)])
    assert time.perf_counter() - started < 30  # refused before the cells are made (that took minutes)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "2,000,000 cells" in lines[0] and "--max-cells 2000000" in lines[0] and "100 max_rate" in lines[0]
    assert not out.exists()


def test_max_cells_is_the_stated_limit_in_either_direction(tmp_path: Path) -> None:
    config = _grid_config(tmp_path, 2)  # 2 subsets x 8 combinations: 16 cells
    lower = CliRunner().invoke(main, ["sweep", str(config), "--out", str(tmp_path / "out"), "--max-cells", "15"])
    assert lower.exit_code == 2 and "16 cells" in lower.stderr and "--max-cells 16" in lower.stderr
    assert not (tmp_path / "out").exists()


def _conv_onnx(path: Path, channels: int) -> Path:
    weight = numpy_helper.from_array(np.ones((channels, 3, 3, 3), dtype=np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", channels, 16, 16])]
    graph = helper.make_graph([node], "conv", inputs, outputs, [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def update(self, n: float | None = 1) -> bool | None:
        self.n += int(n or 0)
        return None


def test_bench_counts_every_round_it_times(tmp_path: Path) -> None:
    models = {"pruned": _conv_onnx(tmp_path / "a.onnx", 4), "baseline": _conv_onnx(tmp_path / "b.onnx", 8)}
    settings = BenchSettings(batch_sizes=(1, 2), threads=(1,), warmup=2, runs=5, providers=("cpu",), memory=False)
    counter = _Counter()
    rows = bench_onnx(models, settings, counter)
    # 2 batch sizes x 1 thread count x 1 provider, 2 warm-up and 5 timed rounds each (every model once a round).
    assert counter.n == 2 * (2 + 5) == timing_rounds(settings, with_torch=False)
    assert timing_rounds(settings, with_torch=True) == 2 * 2 * (2 + 5)
    assert len(rows) == 2 * 2


def test_bench_shows_its_rounds_on_stderr_and_keeps_stdout_one_document(tmp_path: Path) -> None:
    model = _conv_onnx(tmp_path / "a.onnx", 4)
    baseline = _conv_onnx(tmp_path / "b.onnx", 8)
    result = CliRunner().invoke(main, ["bench", str(model), "--baseline", str(baseline), "--batch", "1", "--threads",
                                       "1", "--runs", "4", "--warmup", "1", "--provider", "cpu", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    json.loads(result.stdout)  # exactly one document
    assert "timing 2 models" in result.stderr and "5/5" in result.stderr
    assert "measuring peak memory" in result.stderr


def test_a_long_relevance_pass_shows_its_chunks(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    references = (torch.randn(200, 3, 8, 8), torch.arange(200) % 3)  # 13 chunks of 16
    quiet = filter_relevance(model, references)
    assert "relevance" not in capsys.readouterr().err
    shown = filter_relevance(model, references, progress=True)
    assert "relevance" in (err := capsys.readouterr().err) and "/13" in err, err  # its total, shown at once
    assert torch.equal(quiet["0"], shown["0"])  # the bar changes nothing computed
    filter_relevance(model, (references[0][:64], references[1][:64]), progress=True)  # 4 chunks: too short to show
    assert "relevance" not in capsys.readouterr().err


def test_bench_shows_each_sessions_peak_memory(tmp_path: Path) -> None:
    model = _conv_onnx(tmp_path / "a.onnx", 4)
    result = CliRunner().invoke(main, ["bench", str(model), "--batch", "1", "--threads", "1", "--runs", "3",
                                       "--warmup", "0", "--provider", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "| provider | model | batch | threads | session peak memory |" in result.stdout
    assert "| cpu | pruned | 1 | 1 |" in result.stdout and ("MiB |" in result.stdout or "not measured" in result.stdout)
