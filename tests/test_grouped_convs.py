"""Grouped convolutions (ResNeXt's 3x3, neither plain nor depthwise): a removal takes the same offsets from every
block of channels, so the blocks stay equal, and the masked model a trial judges is the one removal makes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from family_checks import assert_masked_equals_physical, assert_prunes_and_exports_by_name
from helpers import calibrate_batch_norms
from torch import nn
from torchvision import models

from sddpx_tp.metrics import count_macs
from sddpx_tp.pruning.costs import channel_macs
from sddpx_tp.pruning.surgery import GroupScores, PrunableModel


class _GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.grouped, self.bn2 = nn.Conv2d(16, 24, 3, padding=1, groups=4), nn.BatchNorm2d(24)
        self.conv3, self.head = nn.Conv2d(24, 8, 1), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.grouped(x)))
        return self.head(self.conv3(x).mean((2, 3)))


def _descending(prunable: PrunableModel) -> dict[str, GroupScores]:
    """Scores that fall with the channel index within each block, so the last offsets of every block go first."""
    found = {}
    for root, group in prunable.groups().items():
        width = int(group[0].dep.target.module.out_channels)
        found[root] = GroupScores(root, [float(width - index) for index in range(width)], 1)
    return found


def test_a_grouped_convs_channels_leave_by_the_same_offset_from_every_block() -> None:
    model = calibrate_batch_norms(_GroupedNet(), size=8).eval()
    prunable = PrunableModel(model, torch.randn(2, 3, 8, 8))
    assert prunable.channel_groups() == {"conv1": 4, "grouped": 4, "conv3": 1}
    candidates = prunable.candidates(_descending(prunable))
    for candidate in candidates:
        if candidate.root == "conv1":  # blocks of 4: the offset is the same in each
            assert len(candidate.channels) == 4 and len({channel % 4 for channel in candidate.channels}) == 1
            assert sorted(channel // 4 for channel in candidate.channels) == [0, 1, 2, 3]
        if candidate.root == "grouped":  # 24 outputs, blocks of 6
            assert len(candidate.channels) == 4 and len({channel % 6 for channel in candidate.channels}) == 1
    chosen = [next(c for c in candidates if c.root == root) for root in ("conv1", "grouped")]
    images = torch.randn(3, 3, 8, 8)
    with torch.no_grad(), prunable.masked(chosen) as masked:
        expected = masked(images)
    physical = prunable.copy()
    physical.remove(chosen)
    grouped = physical.model.grouped
    assert (grouped.in_channels, grouped.out_channels, grouped.groups) == (12, 20, 4)
    with torch.no_grad():
        torch.testing.assert_close(physical.model(images), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(images), prunable.model(images))  # the masking was undone


def test_round_to_counts_whole_offsets_across_the_blocks() -> None:
    model = calibrate_batch_norms(_GroupedNet(), size=8).eval()
    prunable = PrunableModel(model, torch.randn(2, 3, 8, 8), round_to=8)
    bundles = [candidate.channels for candidate in prunable.candidates(_descending(prunable))
               if candidate.root == "conv1"]  # fmt: skip
    # 16 channels in 4 blocks, 8 a bundle: the last two offsets of each block; the floor (8) allows one bundle.
    assert [sorted(bundle) for bundle in bundles] == [[2, 3, 6, 7, 10, 11, 14, 15]]


@pytest.mark.slow
def test_resnext_masked_removal_equals_physical_removal() -> None:
    torch.manual_seed(0)
    model = calibrate_batch_norms(models.resnext50_32x4d(num_classes=10), size=32).eval()
    images = torch.randn(2, 3, 32, 32)
    prunable = PrunableModel(model, images, round_to=16)
    candidates = prunable.candidates(_descending(prunable))
    chosen = prunable.select(candidates, 2000)
    assert {prunable.channel_groups()[candidate.root] for candidate in chosen} >= {1, 32}
    assert_masked_equals_physical(prunable, chosen, images)


@pytest.mark.slow
def test_the_command_line_prunes_and_exports_resnext(data: dict[str, Path], tmp_path: Path) -> None:
    assert_prunes_and_exports_by_name(data["refs"], tmp_path / "run", "resnext50_32x4d")


def test_a_grouped_consumers_macs_are_counted_by_hand_and_by_removal() -> None:
    model = calibrate_batch_norms(_GroupedNet(), size=8).eval()
    images = torch.randn(2, 3, 8, 8)
    prunable = PrunableModel(model, images)
    # One channel of conv1: its filter (3 inputs, 3x3, 64 positions) and the 6 filters of its block in the
    # grouped conv that read it (3x3, 64 positions): 1,728 + 3,456 MACs.
    assert channel_macs(prunable)["conv1"] == 3 * 9 * 64 + 6 * 9 * 64
    before = count_macs(prunable.model, images[:1])
    chosen = next(c for c in prunable.candidates(_descending(prunable)) if c.root == "conv1")
    prunable.remove([chosen])
    assert before - count_macs(prunable.model, images[:1]) == len(chosen.channels) * (3 * 9 * 64 + 6 * 9 * 64)
