"""Cost "latency" (issue 31, part 2): a per-layer latency table, what it predicts for a model, what one channel
costs in it, and a run whose steps are shares of predicted latency.

The tables here are synthetic (each layer's latency a known bilinear function of its widths, so the interpolated
table holds it exactly) except in the measuring tests, which check what can be said of any machine: more
channels are never faster in the table, a wide conv is timed slower than a narrow one, and a table is cached."""

from __future__ import annotations

import copy
import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import prune_args
from torch import nn
from torchvision import models

from sddpx_tp import PruneConfig, prune
from sddpx_tp.cli import main
from sddpx_tp.export.latency_table import (
    LatencyTable,
    LayerGrid,
    LayerShape,
    grid_counts,
    layer_shapes,
    predicted_seconds,
)
from sddpx_tp.export.layer_latency import measure_grid, measure_latency_table
from sddpx_tp.models.registry import create_model
from sddpx_tp.pruning.costs import channel_latency
from sddpx_tp.pruning.surgery import PrunableModel

Coefficients = dict[str, tuple[float, float, float, float]]


def _synthetic(model: nn.Module, example: torch.Tensor, seed: int = 0) -> tuple[LatencyTable, Coefficients]:
    """A table whose layer ``name`` takes ``a + b*in + c*out + d*in*out`` seconds (one axis: ``a + b*width``)."""
    rng = random.Random(seed)
    layers, coefficients = {}, {}
    for name, shape in layer_shapes(model, example).items():
        a, b, c, d = (rng.uniform(1e-6, 1e-5) for _ in range(4))
        if shape.kind == "linear" or shape.depthwise:
            counts = grid_counts(shape.in_channels)
            layers[name] = LayerGrid(shape, counts, [shape.out_channels], [[a + b * n] for n in counts])
            coefficients[name] = (a, b, 0.0, 0.0)
        else:
            ins, outs = grid_counts(shape.in_channels), grid_counts(shape.out_channels)
            layers[name] = LayerGrid(shape, ins, outs, [[a + b * i + c * o + d * i * o for o in outs] for i in ins])
            coefficients[name] = (a, b, c, d)
    return LatencyTable(layers, "synthetic"), coefficients


def _by_hand(model: nn.Module, coefficients: Coefficients, skipped: set[str] = frozenset()) -> float:  # type: ignore[assignment]
    """The synthetic latency from the layers' own widths, without the table."""
    total = 0.0
    for name, module in model.named_modules():
        if name not in coefficients or any(name.startswith(f"{prefix}.") for prefix in skipped):
            continue
        a, b, c, d = coefficients[name]
        if isinstance(module, nn.Linear):
            total += a + b * module.in_features
        elif isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            total += a + b * module.in_channels
        elif isinstance(module, nn.Conv2d):
            total += a + b * module.in_channels + c * module.out_channels + d * module.in_channels * module.out_channels
    return total


BUILDERS = {
    "resnet18": lambda: models.resnet18(num_classes=4),
    "mobilenet_v2": lambda: models.mobilenet_v2(num_classes=4),
    "efficientnet-lite0": lambda: create_model("efficientnet-lite0", num_classes=4, random_init=True)[0],
}


def test_the_prediction_is_the_sum_of_the_layers_at_their_widths() -> None:
    torch.manual_seed(0)
    model = models.mobilenet_v2(num_classes=4).eval()  # dense, depthwise and linear layers
    example = torch.randn(2, 3, 64, 64)
    table, coefficients = _synthetic(model, example)
    assert predicted_seconds(table, model, example) == pytest.approx(_by_hand(model, coefficients), rel=1e-9)
    prunable = PrunableModel(model, example)
    groups = list(prunable.groups().items())
    for _root, group in groups[::3]:  # a third of the groups lose a third of their channels, physically
        width = len(group[0].idxs)
        dependency = group[0].dep
        prunable.graph.get_pruning_group(dependency.target.module, dependency.handler,
                                         idxs=list(range(width // 3))).prune()  # fmt: skip
    pruned = predicted_seconds(table, model, example)
    assert pruned == pytest.approx(_by_hand(model, coefficients), rel=1e-9)
    assert pruned < sum(table.layers[name].seconds[-1][-1] for name in table.layers)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_channels_latency_is_what_removing_it_saves_in_the_table(name: str) -> None:
    torch.manual_seed(0)
    model = BUILDERS[name]().eval()
    example = torch.randn(2, 3, 64, 64)
    table, _ = _synthetic(model, example, seed=1)
    prunable = PrunableModel(model, example)
    before = predicted_seconds(table, model, example)
    costs = channel_latency(prunable, table)
    assert len(costs) >= 10
    for root, cost in costs.items():
        duplicate = prunable.copy()
        dependency = duplicate.groups()[root][0].dep
        duplicate.graph.get_pruning_group(dependency.target.module, dependency.handler, idxs=[0]).prune()
        saved_ns = (before - predicted_seconds(table, duplicate.model, example)) * 1e9
        assert cost == pytest.approx(saved_ns, rel=1e-6), (name, root)
        assert cost > 0


def test_a_table_falls_back_to_macs_for_a_grouped_conv_and_reads_back() -> None:
    shape = LayerShape("conv", 64, 128, (3, 3), groups=32, input_size=(8, 8))
    grid = LayerGrid(shape, [64], [128], [[2e-4]])
    assert grid.latency(32, 128) == pytest.approx(1e-4) and grid.latency(32, 64) == pytest.approx(5e-5)
    table = LatencyTable({"conv": grid}, "synthetic")
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.layers["conv"] == grid and again.runtime == "synthetic"
    with pytest.raises(KeyError, match="another architecture"):
        again.layer_seconds("elsewhere", shape)


def test_a_measured_grid_never_gets_faster_with_more_channels() -> None:
    wide = LayerShape("conv", 64, 64, (3, 3), padding=(1, 1), input_size=(32, 32))
    grid = measure_grid(wide, threads=1, runs=5)
    assert grid.in_counts == [8, 16, 32, 48, 64] and grid.out_counts == [8, 16, 32, 48, 64]
    for row in grid.seconds:
        assert row == sorted(row)
    for column in zip(*grid.seconds, strict=True):
        assert list(column) == sorted(column)
    # 64 times the MACs of the narrowest point: slower by a wide margin, on any machine, busy or not.
    assert grid.seconds[-1][-1] > 4 * grid.seconds[0][0]


def test_a_measured_table_is_cached_and_a_broken_cache_is_measured_again(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()  # fmt: skip
    example = torch.randn(1, 3, 16, 16)
    first = measure_latency_table(model, example, threads=1, runs=3, cache_folder=tmp_path, progress=False)
    assert set(first.layers) == {"0", "2", "5"} and "1 thread" in first.runtime
    assert first.layers["2"].out_counts == [8] and len(first.layers["2"].in_counts) == 5  # depthwise: one axis
    (cached,) = tmp_path.glob("*.json")
    second = measure_latency_table(model, example, threads=1, runs=3, cache_folder=tmp_path, progress=False)
    assert second.layers == first.layers
    cached.write_text("{not json")
    third = measure_latency_table(model, example, threads=1, runs=3, cache_folder=tmp_path, progress=False)
    assert set(third.layers) == {"0", "2", "5"} and json.loads(cached.read_text())["runtime"] == first.runtime


def test_a_run_with_cost_latency_removes_shares_of_predicted_latency() -> None:
    torch.manual_seed(0)
    model = models.resnet18(num_classes=2).eval()
    references = (torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4))
    table, coefficients = _synthetic(model, references[0], seed=2)
    config = PruneConfig.paper(method="dpx", cost="latency", step=0.1, max_rate=0.5)
    result = prune(copy.deepcopy(model), references, [0, 1], config, progress=False, latency_table=table)
    predicted = [record.predicted_ms for record in result.trajectory]
    assert all(value is not None for value in predicted)
    first, last = predicted[0], predicted[-1]
    assert first == pytest.approx(_by_hand(model, coefficients) * 1e3, rel=1e-9)
    assert last == pytest.approx(_by_hand(result.model, coefficients) * 1e3, rel=1e-9)  # type: ignore[arg-type]
    # Each step's candidates are priced one at a time at the current widths; removing a layer's inputs and outputs
    # together saves a little less than the sum (the in*out term): within a tenth of the step, never more. Near
    # the end a step takes what max_rate still allows.
    for before, after in itertools.pairwise(predicted):
        share = min(0.1 * first, before - 0.5 * first)  # type: ignore[operator]
        assert 0.9 * share - 1e-3 * first <= before - after <= 0.12 * first  # type: ignore[operator]
    assert 0.5 * first * 0.999 <= first - last  # type: ignore[operator]
    with pytest.raises(ValueError, match="latency table"):
        from sddpx_tp.pruning.session import PruningSession

        PruningSession(PrunableModel(model, references[0]), references, 2, config)


def test_the_command_line_measures_caches_and_records_the_table(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDDPX_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    result = CliRunner().invoke(main, prune_args(data, run, "--cost", "latency"))
    assert result.exit_code == 0, result.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["settings"]["config"]["cost"] == "latency"
    trajectory = report["trajectory"]
    assert all(record["predicted_ms"] > 0 for record in trajectory)
    assert trajectory[-1]["predicted_ms"] < trajectory[0]["predicted_ms"]
    assert trajectory[0]["speed_seconds"] > 0  # the table's measuring, reported
    assert len(list((tmp_path / "cache" / "latency").glob("*.json"))) == 1


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match="not cached in .*a-file/latency .*SDDPX_CACHE"):
        table = measure_latency_table(model, torch.randn(1, 3, 8, 8), 1, runs=3, cache_folder=blocked / "latency",
                                      progress=False)  # fmt: skip
    assert set(table.layers) == {"0", "3"}
    assert blocked.read_text() == "not a folder"
