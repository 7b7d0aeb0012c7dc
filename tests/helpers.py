"""Shared test fixtures: small models and realistic BatchNorm statistics."""

from __future__ import annotations

import torch
from torch import nn


def calibrate_batch_norms(model: nn.Module, size: int = 64, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-identity statistics that match the activations, as training would.

    Running mean/var come from a forward pass in train mode; gamma is random; beta is
    chosen so the merged bias is small (z+ absorbs relevance into positive biases,
    which is correct LRP but would blur a conservation check).
    """
    generator = torch.Generator().manual_seed(seed)
    batch_norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    for module in batch_norms:
        module.reset_running_stats()
        module.momentum = None
        module.weight.data = torch.rand(module.weight.shape, generator=generator) + 0.5
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, size, size, generator=generator))
    for module in batch_norms:
        scale = module.weight / (module.running_var + module.eps).sqrt()
        noise = 0.01 * torch.randn(module.bias.shape, generator=generator)
        module.bias.data = (module.running_mean * scale).detach() + noise
    return model.eval()


class SmallConvNet(nn.Sequential):
    """conv-ReLU-conv-ReLU-pool-linear, the reference test's network."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(6 * 4 * 4, classes),
        )
