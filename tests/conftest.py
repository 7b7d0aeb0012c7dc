"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sddpx_tp.data.fashion import class_subset, load_split, to_model_input

LabelledImages = tuple[torch.Tensor, torch.Tensor]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers. Each keeps to one thread (and so do the processes the tests
    # start, which inherit the environment): two workers of two threads each on a two-core machine oversubscribe
    # it, and torch's spinning threads then slow both many times over.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


class _SmallNet(nn.Sequential):
    def __init__(self) -> None:
        def block(inputs: int, outputs: int) -> list[nn.Module]:
            return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]

        super().__init__(
            *block(3, 16),
            nn.MaxPool2d(2),
            *block(16, 32),
            nn.MaxPool2d(2),
            *block(32, 48),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(48, 10),
        )


@pytest.fixture(scope="session")
def fashion_task() -> tuple[nn.Module, LabelledImages, LabelledImages]:
    """A small CNN trained for seconds on real Fashion-MNIST; T-shirt vs Shirt references."""
    torch.manual_seed(0)
    images, labels = load_split("train")
    images, labels = images[:12000], labels[:12000]
    model = _SmallNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(2):
        for start in range(0, len(images), 128):
            loss = F.cross_entropy(model(to_model_input(images[start : start + 128], 28)), labels[start : start + 128])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    reference_images, reference_labels = class_subset(images, labels, [0, 6], per_class=30, seed=1)
    test_images, test_labels = load_split("test")
    held_out = class_subset(test_images, test_labels, [0, 6], per_class=200, seed=2)
    return (
        model,
        (to_model_input(reference_images, 28), reference_labels),
        (to_model_input(held_out[0], 28), held_out[1]),
    )
