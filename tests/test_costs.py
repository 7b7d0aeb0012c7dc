"""A channel's MACs, predicted from the dependency graph, equal what removing it physically saves, as counted
by torch's FlopCounterMode on the ops actually run (an independent count): ResNet-18, MobileNetV2, and
EfficientNet-Lite0, every group."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision import models

from sddpx_tp.metrics import count_macs
from sddpx_tp.models.registry import create_model
from sddpx_tp.pruning.costs import channel_macs
from sddpx_tp.pruning.surgery import PrunableModel

BUILDERS = {
    "resnet18": lambda: models.resnet18(num_classes=4),
    "mobilenet_v2": lambda: models.mobilenet_v2(num_classes=4),
    "efficientnet-lite0": lambda: create_model("efficientnet-lite0", num_classes=4, random_init=True)[0],
}


def _without_one_channel(prunable: PrunableModel, root: str) -> nn.Module:
    """A copy of the model with channel 0 of ``root``'s group removed through torch-pruning."""
    duplicate = prunable.copy()
    group = duplicate.groups()[root]
    dependency = group[0].dep
    duplicate.graph.get_pruning_group(dependency.target.module, dependency.handler, idxs=[0]).prune()
    return duplicate.model


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_channels_predicted_macs_are_what_removing_it_saves(name: str) -> None:
    torch.manual_seed(0)
    model = BUILDERS[name]().eval()
    example = torch.randn(2, 3, 64, 64)
    prunable = PrunableModel(model, example)
    before = count_macs(model, example)
    predicted = channel_macs(prunable)
    assert len(predicted) >= 10
    for root, cost in predicted.items():
        saved = before - count_macs(_without_one_channel(prunable, root), example)
        assert cost == saved, (name, root, cost, saved)
    assert count_macs(model, example) == before  # the copies were pruned, not the model


def test_a_hand_count_on_a_small_net() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 5),
    )  # fmt: skip
    prunable = PrunableModel(copy.deepcopy(model), torch.randn(2, 3, 8, 8))
    costs = channel_macs(prunable)
    # conv 0's filter: 8*8 positions * 3*3*3; conv 2's input slice: 4*4 positions * 3*3 * 6 outputs.
    assert costs["0"] == 64 * 27 + 16 * 9 * 6
    # conv 2's filter: 4*4 positions * 3*3*8; the linear layer's 16 input features of that channel, 5 outputs.
    assert costs["2"] == 16 * 72 + 16 * 5
