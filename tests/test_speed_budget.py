"""A speed budget (issue 31): `--target-macs R` ends the run at the first step whose MACs are at most R of the
unpruned model's, and the report says what ended the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import prune_args
from torchvision import models

from sddpx_tp import PruneConfig, prune
from sddpx_tp.cli import main
from sddpx_tp.errors import SettingError
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
