"""Checks every supported family passes, shared by the family test modules: masked removal equals physical
removal, and the command line prunes a model by name and exports it to ONNX with parity."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from click.testing import CliRunner

from sddpx_tp.cli import main
from sddpx_tp.pruning.surgery import Candidate, PrunableModel


def assert_masked_equals_physical(prunable: PrunableModel, chosen: Sequence[Candidate], images: torch.Tensor) -> None:
    """The masked model a trial judges gives the outputs of the model that removal makes."""
    with torch.no_grad(), prunable.masked(chosen) as masked:
        expected = masked(images)
    physical = prunable.copy()
    physical.remove(chosen)
    with torch.no_grad():
        torch.testing.assert_close(physical.model(images), expected, rtol=1e-4, atol=1e-5)


def assert_prunes_and_exports_by_name(refs: Path, run: Path, name: str, size: str = "32", step: str = "0.15") -> None:
    """`sddpx-tp prune --model NAME --random-init` to filter rate 0.3, then `export --onnx` of its last step."""
    result = CliRunner().invoke(main, [
        "prune", "--model", name, "--random-init", "--num-classes", "10", "--refs", str(refs),
        "--input-size", size, "--resize-size", size, "--max-rate", "0.3", "--step", step, "--method", "dpx",
        "--out", str(run),
    ])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads((run / "report.json").read_text())["trajectory"][-1]["filter_rate"] > 0.25
    # The last step (a random network's accuracy recommends nothing): kept by every run.
    exported = CliRunner().invoke(main, ["export", str(run), "--onnx", "--rate", "0.99", "--json"])
    assert exported.exit_code == 0, exported.stderr
    files = json.loads(exported.stdout)
    assert files["model"]["parity"]["max_abs_diff"] < 1e-4
    assert files["model"]["file_bytes"] < files["baseline"]["file_bytes"]
