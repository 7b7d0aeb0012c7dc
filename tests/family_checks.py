"""Checks every supported family passes, shared by the family test modules: masked removal equals physical
removal, and the command line prunes a model by name and exports it to ONNX with parity."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from click.testing import CliRunner

from sddpx_tp.cli import main
from sddpx_tp.lrp.relevance import RelevanceConfig, filter_relevance, layer_relevance
from sddpx_tp.pruning.surgery import Candidate, PrunableModel


def assert_masked_equals_physical(prunable: PrunableModel, chosen: Sequence[Candidate], images: torch.Tensor) -> None:
    """The masked model a trial judges gives the outputs of the model that removal makes."""
    with torch.no_grad(), prunable.masked(chosen) as masked:
        expected = masked(images)
    physical = prunable.copy()
    physical.remove(chosen)
    with torch.no_grad():
        torch.testing.assert_close(physical.model(images), expected, rtol=1e-4, atol=1e-5)


class IndexScores:
    """Channel importance by index: the lowest indices go first, in every group."""

    def __init__(self, root: str, width: int) -> None:
        self.root, self.scores, self.filters_per_channel = root, [float(index) for index in range(width)], 1


def assert_lowest_channels_masked_as_removed(model: torch.nn.Module, images: torch.Tensor, count: int) -> None:
    """Choose ``count`` channels, the lowest indices of every group first (more than three groups), and check
    that masking them gives the outputs that removing them does."""
    prunable = PrunableModel(model, images)
    scores = {root: IndexScores(root, len(group[0].idxs)) for root, group in prunable.groups().items()}
    chosen = prunable.select(prunable.candidates(scores), count)  # type: ignore[arg-type]
    assert len({candidate.root for candidate in chosen}) > 3
    assert_masked_equals_physical(prunable, chosen, images)


def assert_relevance_conserved(model: torch.nn.Module, parts: Sequence[str], size: int, engine: str) -> None:
    """The relevance at ``parts`` (a cut of the graph: together their outputs carry everything) is the one unit
    an image started with at the output, within 5 %."""
    modules = dict(model.named_modules())
    images, labels = torch.randn(4, 3, size, size), torch.randint(0, 10, (4,))
    found = layer_relevance(model, (images, labels), {part: modules[part] for part in parts},
                            RelevanceConfig(engine=engine))  # type: ignore[arg-type]  # fmt: skip
    total = sum(found[part].signed.sum().item() for part in parts) / len(images)
    assert abs(total - 1.0) <= 0.05, total


def assert_engines_agree(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The fast engine's filter relevance equals zennit's on every layer (to 1e-4 of the layer's total)."""
    fast = filter_relevance(model, (images, labels), RelevanceConfig(engine="fast"))
    reference = filter_relevance(model, (images, labels), RelevanceConfig(engine="zennit"))
    assert fast.keys() == reference.keys() and len(fast) > 1
    for layer, scores in reference.items():
        torch.testing.assert_close(fast[layer], scores, rtol=1e-4, atol=1e-4 * scores.sum().item())


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
