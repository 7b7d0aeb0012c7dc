"""Whole residual blocks (issue 31, part 3): a removed block is its shortcut, exactly, and runs carry it through."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import calibrate_batch_norms, prune_args
from torch import nn
from torchvision import models

from sddpx_tp import PruneConfig, prune
from sddpx_tp.cli import main
from sddpx_tp.errors import SettingError
from sddpx_tp.export.onnx import export_onnx
from sddpx_tp.models.blocks import SkippedBlock, removable_blocks, skip_block, skipped_blocks
from sddpx_tp.models.checkpoint import load_pruned, save_pruned
from sddpx_tp.models.registry import create_model

# Counted by hand from the architectures' tables: blocks with an identity shortcut (stride 1, as many
# channels out as in, no downsample). ResNet-18: layer1.0-1, layer2.1, layer3.1, layer4.1; MobileNetV2's
# bottleneck rows (t, c, n, s) repeat n times and skip on every repeat after the first: 1+2+3+2+2.
EXPECTED = {"resnet18": 5, "resnet50": 12, "mobilenet_v2": 10, "efficientnet-lite0": 9}


def _model(name: str) -> nn.Module:
    if name == "efficientnet-lite0":
        return create_model(name)[0].eval()  # its real ImageNet weights
    return calibrate_batch_norms(getattr(models, name)(num_classes=10), size=64).eval()


def _with_branch_silenced(model: nn.Module, branch_end: str, images: torch.Tensor) -> torch.Tensor:
    """The model's output with one BatchNorm's output replaced by zeros (a hook: independent of the BN's weights)."""
    norm = model.get_submodule(branch_end)
    handle = norm.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
    try:
        with torch.no_grad():
            return model(images)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_removed_block_is_the_model_with_its_branch_zeroed(name: str) -> None:
    model = _model(name)
    images = torch.randn(2, 3, 64, 64)
    blocks = removable_blocks(model)
    assert len(blocks) == EXPECTED[name]
    for block in blocks[:: max(1, len(blocks) // 3)]:  # a few, from the first to the last
        expected = _with_branch_silenced(model, block.branch_end, images)
        trimmed = copy.deepcopy(model)
        skip_block(trimmed, block.name)
        assert isinstance(trimmed.get_submodule(block.name), SkippedBlock)
        with torch.no_grad():
            torch.testing.assert_close(trimmed(images), expected, atol=1e-5, rtol=1e-5)


def test_a_model_without_blocks_exports_with_parity_and_reloads_from_the_safe_format(tmp_path: Path) -> None:
    model = _model("resnet18")
    for name in ("layer1.1", "layer3.1"):
        skip_block(model, name)
    images = torch.rand(4, 3, 64, 64)
    parity = export_onnx(model, images, tmp_path / "m.onnx", images)  # raises ParityError past its tolerance
    assert parity.max_abs_diff < 1e-3
    save_pruned(model, tmp_path / "m.pt")
    rebuilt = load_pruned(tmp_path / "m.pt", models.resnet18(num_classes=10))
    assert skipped_blocks(rebuilt) == ["layer1.1", "layer3.1"]
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), model(images))
    with pytest.raises(ValueError, match="cannot remove"):
        load_pruned(tmp_path / "m.pt", models.vgg11(num_classes=10))


def test_the_block_phase_removes_blocks_before_channels_and_stops_at_its_floor() -> None:
    model = _model("resnet18")
    references = (torch.rand(16, 3, 32, 32), torch.tensor([0, 1] * 8))
    config = PruneConfig.paper(method="dpx", blocks=True, block_floor=1e-9, max_rate=0.3, step=0.1)
    result = prune(model, references, [0, 1], config, progress=False)
    phases = [record.phase for record in result.trajectory]
    count = phases.count("blocks")
    assert count >= 1 and phases[1 : 1 + count] == ["blocks"] * count and set(phases[1 + count :]) <= {"pruning"}
    assert len(skipped_blocks(result.model)) == count
    # The phase took every block that fitted under max_rate (a floor this low admits any), and no more.
    after = result.trajectory[count]
    assert after.filter_rate <= 0.3
    left = 0.3 * result.trajectory[0].filters - (result.trajectory[0].filters - after.filters)
    for name in {"layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"} - set(skipped_blocks(result.model)):
        block = model.get_submodule(name)
        assert sum(conv.out_channels for conv in block.modules() if isinstance(conv, nn.Conv2d)) > left
    # A floor no removal keeps: no block goes.
    strict = prune(model, references, [0, 1], config.replace(block_floor=1.0, max_rate=0.2), progress=False)
    assert "blocks" not in [record.phase for record in strict.trajectory] or all(
        record.reference_harmonic_mean >= strict.trajectory[0].reference_harmonic_mean
        for record in strict.trajectory
        if record.phase == "blocks"
    )
    with pytest.raises(SettingError, match="blocks"):
        prune(model, references, [0, 1], PruneConfig.recommended(method="progressive", blocks=True),
              training=references, progress=False)  # fmt: skip


def test_blocks_through_the_command_line_export_and_report(data: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    pruned = CliRunner().invoke(main, prune_args(data, run, "--blocks", "--block-floor", "0.5"))
    assert pruned.exit_code == 0, pruned.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["settings"]["config"]["blocks"] is True
    removed = [record["layer"] for record in report["trajectory"] if record["phase"] == "blocks"]
    exported = CliRunner().invoke(main, ["export", str(run), "--onnx", str(tmp_path / "m.onnx")])
    assert exported.exit_code == 0, exported.stderr
    rebuilt = load_pruned(run / "model.pt", models.resnet18(num_classes=10))
    assert removed and sorted(skipped_blocks(rebuilt)) == sorted(removed)
    assert "Removed whole: " + ", ".join(removed) in (run / "report.md").read_text()


def test_relevance_flows_through_a_removed_block_of_efficientnet_lite0() -> None:
    from sddpx_tp.lrp.relevance import RelevanceConfig, filter_relevance

    model = _model("efficientnet-lite0")
    skip_block(model, "_blocks.2")  # its BatchNorms are gone: the canonizers must not look for them
    images, labels = torch.rand(2, 3, 64, 64), torch.tensor([1, 2])
    relevance = filter_relevance(model, (images, labels), RelevanceConfig())
    assert "_blocks.2._depthwise_conv" not in relevance and "_blocks.3._depthwise_conv" in relevance
    assert all(torch.isfinite(values).all() for values in relevance.values())
