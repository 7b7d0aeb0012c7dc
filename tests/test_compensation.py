"""Activation compensation: a removed constant channel leaves the outputs as they were."""

from __future__ import annotations

import pytest
import torch
from helpers import calibrate_batch_norms
from torch import nn
from torchvision import models

from sddpx_tp.api import prune
from sddpx_tp.pruning.compensation import input_channel_means
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.surgery import Candidate, PrunableModel


def _net_with_a_constant_channel(batch_norm: bool) -> nn.Module:
    """conv1's channel 2 is 0.7 everywhere (zero weights, bias 0.7, then ReLU); valid convs, no padding."""
    second = [nn.Conv2d(4, 5, 3, bias=False), nn.BatchNorm2d(5)] if batch_norm else [nn.Conv2d(4, 5, 3)]
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), *second, nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3))
    with torch.no_grad():
        model[0].weight[2].zero_()
        model[0].bias[2] = 0.7
        if batch_norm:
            model[3].running_mean.normal_(0, 0.2)
            model[3].running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("batch_norm", [False, True], ids=["into bias", "into BatchNorm mean"])
def test_removing_a_constant_channel_with_compensation_changes_nothing(batch_norm: bool) -> None:
    images = torch.randn(6, 3, 8, 8)
    outputs = {}
    for compensated in (False, True):
        model = _net_with_a_constant_channel(batch_norm)
        with torch.no_grad():
            before = model(images)
        prunable = PrunableModel(model, images)
        means = input_channel_means(model, images) if compensated else None
        prunable.remove([Candidate(0.0, "0", (2,), 1)], means)
        assert model[0].out_channels == 3 and model[2].in_channels == 3
        with torch.no_grad():
            outputs[compensated] = (model(images) - before).abs().max().item()
    assert outputs[True] < 1e-5
    assert outputs[False] > 1e-2, "without compensation the removal must show: the test would prove nothing"


def test_compensated_pruning_runs_on_a_resnet() -> None:
    model = calibrate_batch_norms(models.resnet18(num_classes=10))
    images, labels = torch.randn(8, 3, 32, 32), torch.tensor([1, 3] * 4)
    plain = prune(model, (images, labels), [1, 3], PruneConfig.paper(method="dpx", max_rate=0.3, step=0.15),
                  progress=False)  # fmt: skip
    compensated = prune(model, (images, labels), [1, 3],
                        PruneConfig.paper(method="dpx", max_rate=0.3, step=0.15, compensation="always"),
                        progress=False)  # fmt: skip
    assert compensated.trajectory[-1].filters == plain.trajectory[-1].filters
    with torch.no_grad():
        assert not torch.equal(compensated.model(images), plain.model(images))  # biases and BN means moved
