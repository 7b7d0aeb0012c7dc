"""Fixtures shared by the test modules (the plain helpers they are built from are in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import fashion_folders, prune_args
from torch import nn

from sddpx_tp.cli import main
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


# --- small CLI runs on Fashion-MNIST images -------------------------------------------------------------
# Module-scoped: each test module that asks gets its own copy, made once. test_workflow and test_sweep define
# their own `data`, and test_export its own `finished_run`, which override these in their modules.


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Reference (8 a class) and held-out (16 a class) images of T-shirts (0) and shirts (6), and ResNet-18 weights."""
    return fashion_folders(tmp_path_factory.mktemp("data"), {0: 8, 6: 8}, {0: 16, 6: 16})


@pytest.fixture(scope="module")
def finished_run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of `prune` on `data` to filter rate 0.2, finished: for the tests that damage or reuse a run."""
    run = tmp_path_factory.mktemp("hardening") / "run"
    result = CliRunner().invoke(main, [*prune_args(data, run), "--max-rate", "0.2", "--step", "0.1"])
    assert result.exit_code == 0, result.stderr
    return run


@pytest.fixture(scope="module")
def head_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run that fits a head (``--head fit``), its held-out images in ``head_run.parent / "eval"``."""
    root = tmp_path_factory.mktemp("int8")
    data = fashion_folders(root, {0: 8, 6: 8}, {0: 16, 6: 16})
    run = root / "run"
    arguments = [*prune_args(data, run), "--eval", str(root / "eval"), "--head", "fit", "--max-rate", "0.25"]
    result = CliRunner().invoke(main, [*arguments, "--step", "0.25"])
    assert result.exit_code == 0, result.stderr
    return run
