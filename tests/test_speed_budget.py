"""Speed budgets (issue 31): `--target-macs R` ends the run at the first step whose MACs are at most R of the
unpruned model's, `--target-speedup X` at the first step measured X times faster; the report says what ended it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import prune_args
from torchvision import models

from sddpx_tp import PruneConfig, prune
from sddpx_tp.cli import main
from sddpx_tp.errors import SettingError
from sddpx_tp.export.latency import SpeedProbe
from sddpx_tp.metrics import count_macs


def test_the_run_stops_at_the_first_step_that_meets_the_budget() -> None:
    torch.manual_seed(0)
    model = models.resnet18(num_classes=2).eval()
    references = (torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4))
    result = prune(model, references, [0, 1], PruneConfig.paper(method="dpx", target_macs=0.6), progress=False)
    ratios = [record.macs_ratio for record in result.trajectory]
    assert ratios[-1] <= 0.6 and all(ratio > 0.6 for ratio in ratios[:-1])
    # Counted on the model itself, not taken from the record.
    assert count_macs(result.model, references[0]) <= 0.6 * count_macs(model, references[0])
    with pytest.raises(SettingError, match="target_macs"):
        PruneConfig.recommended(target_macs=1.5)


def test_the_report_says_the_budget_ended_the_run(data: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(main, prune_args(data, run, "--target-macs", "0.8"))
    assert result.exit_code == 0, result.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["ended"] == "macs budget"
    assert report["trajectory"][-1]["macs_ratio"] <= 0.8 < report["trajectory"][-2]["macs_ratio"]
    assert "its MACs budget was met" in (run / "report.md").read_text()
    plain = tmp_path / "plain"
    assert CliRunner().invoke(main, prune_args(data, plain)).exit_code == 0
    assert json.loads((plain / "report.json").read_text())["ended"] == "max rate"


def _inverse_macs_probe(unpruned: torch.nn.Module, images: torch.Tensor) -> Callable[[torch.nn.Module], float]:
    """A stand-in for a device measurement: MACs counted independently of the run's records."""
    base = count_macs(unpruned, images[:1])
    return lambda model: base / count_macs(model, images[:1])


def test_a_measured_speed_budget_stops_at_the_first_step_that_meets_it() -> None:
    torch.manual_seed(0)
    model = models.resnet18(num_classes=2).eval()
    references = (torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4))
    probe = _inverse_macs_probe(model, references[0])
    config = PruneConfig.paper(method="dpx", target_speedup=1.5)
    result = prune(model, references, [0, 1], config, progress=False, speed_probe=probe)
    measured = [record.speedup for record in result.trajectory]
    assert measured[0] == 1.0 and all(value is not None for value in measured)
    assert measured[-1] >= 1.5 and all(value < 1.5 for value in measured[:-1])  # type: ignore[operator]
    assert probe(result.model) == pytest.approx(measured[-1])
    with pytest.raises(SettingError, match="target_speedup"):
        PruneConfig.recommended(target_speedup=1.0)
    with pytest.raises(SettingError, match="target_speedup"):
        prune(model, references, [0, 1], PruneConfig.recommended(method="progressive", target_speedup=2.0),
              training=references, progress=False)  # fmt: skip


def test_the_default_probe_times_onnx_runtime_against_the_unpruned_model() -> None:
    torch.manual_seed(0)
    model = models.resnet18(num_classes=2).eval()
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, 2)).eval()  # fmt: skip
    example = torch.randn(1, 3, 96, 96)
    with SpeedProbe(model, example, threads=1, runs=10) as probe:
        assert probe(tiny) > 5  # a few hundred times fewer MACs: wide margins, the machine may be busy
        assert 0.3 < probe(model) < 3  # the same network: about 1
        assert probe.measurements == 2 and probe.seconds > 0
        folder = Path(probe._folder.name)
    assert not folder.exists()


def test_the_report_shows_the_measured_speedup_of_every_step(data: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(main, prune_args(data, run, "--target-speedup", "1000"))
    assert result.exit_code == 0, result.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["ended"] == "max rate"  # a budget nothing meets: measured at every step all the same
    assert all(record["speedup"] > 0 for record in report["trajectory"])
    assert report["trajectory"][-1]["speed_seconds"] > 0
    assert "measured speedup (ONNX Runtime CPU, batch 1)" in (run / "report.md").read_text()
    refused = CliRunner().invoke(main, prune_args(data, tmp_path / "refused", "--target-speedup", "0.5"))
    assert refused.exit_code == 2 and "--target-speedup" in refused.stderr
    assert not (tmp_path / "refused").exists()
