"""Silent wrong results (issue 34, item 4): a resize that pads the input is refused whichever way it is given,
and random weights are the run's own (drawn from --seed), so export rebuilds the network that was pruned."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from sddpx_tp.cli import main
from sddpx_tp.run.rebuild import baseline_model
from sddpx_tp.run.settings import RunSettings


def test_a_resize_smaller_than_the_models_input_is_refused_without_the_input_size(
    data: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    arguments = ["prune", "--model", "resnet18", "--num-classes", "10", "--weights", str(data["weights"]),
                 "--refs", str(data["refs"]), "--resize-size", "16", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "sddpx-tp: error: --resize-size 16 is smaller than the model's input size 224: the crop would pad the image "
        "with black; give --input-size too, or a resize size >= 224"
    ]
    assert not out.exists()


def _random_run(data: dict[str, Path], out: Path, seed: int) -> dict[str, torch.Tensor]:
    arguments = ["prune", "--model", "resnet18", "--num-classes", "10", "--random-init", "--refs", str(data["refs"]),
                 "--input-size", "32", "--resize-size", "32", "--max-rate", "0.2", "--step", "0.1", "--method", "dpx",
                 "--seed", str(seed), "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.stderr
    return torch.load(out / "model.pt", weights_only=True)["state_dict"]


def test_random_weights_are_drawn_from_the_seed(data: dict[str, Path], tmp_path: Path) -> None:
    first, again, other = (_random_run(data, tmp_path / name, seed) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert any(first[key].shape != other[key].shape or not torch.equal(first[key], other[key]) for key in first)
    # The unpruned baseline export rebuilds is the same network every time (it drew new weights before).
    report = tmp_path / "a" / "report.json"
    settings = RunSettings.from_dict(json.loads(report.read_text())["settings"], str(report))
    one, two = baseline_model(settings).state_dict(), baseline_model(settings).state_dict()
    assert all(torch.equal(one[key], two[key]) for key in one)
