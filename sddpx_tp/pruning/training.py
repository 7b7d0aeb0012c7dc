"""Retraining for users who have training images: progressive retraining's phases and short fine-tuning.

``train`` updates only the parameters of the modules it is told to; everything else
keeps its values bit for bit, BatchNorm running statistics included (frozen modules
run in eval mode, so their statistics do not move).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from sddpx_tp.errors import SettingError

Optimizer = Literal["adamw", "sgd"]
OPTIMIZERS: tuple[Optimizer, ...] = ("adamw", "sgd")


@dataclass(frozen=True)
class TrainingConfig:
    """How to retrain. ``epochs`` is per layer for progressive retraining."""

    epochs: int = 1
    finetune_epochs: int = 0  # after PX/DPX/SD-DPX: epochs of fine-tuning the whole pruned model (0: none)
    lr: float = 3e-4
    batch_size: int = 32
    optimizer: Optimizer = "adamw"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise SettingError(f"{{epochs}} must be >= 1, not {self.epochs}")
        if self.finetune_epochs < 0:
            raise SettingError(f"{{finetune_epochs}} must be >= 0, not {self.finetune_epochs}")
        if not 0 < self.lr < math.inf:
            raise SettingError(f"{{lr}} must be a positive finite number, not {self.lr}")
        if self.batch_size < 1:
            raise SettingError(f"{{batch_size}} must be >= 1, not {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise SettingError(f"{{optimizer}} must be one of {OPTIMIZERS}, not {self.optimizer!r}")


def modules_up_to(model: nn.Module, last: str) -> list[str]:
    """Names of the leaf modules defined before ``last`` (inclusive): torchvision defines layers in the
    order they run, so this is "from ``last`` back to the input"."""
    names = [name for name, module in model.named_modules() if name and next(module.children(), None) is None]
    if last not in names:
        raise ValueError(f"{last!r} is not a leaf module of the model")
    return names[: names.index(last) + 1]


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainingConfig,
    epochs: int,
    trainable: Collection[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    description: str = "retraining",
) -> float:
    """Train the parameters of the ``trainable`` modules (names; None: all) with cross-entropy;
    returns the last epoch's mean loss. The model is left in eval mode."""
    allowed = None if trainable is None else set(trainable)
    modules = {name: module for name, module in model.named_modules() if next(module.children(), None) is None}
    parameters = [
        parameter
        for name, module in modules.items()
        if allowed is None or name in allowed
        for parameter in module.parameters(recurse=False)
    ]
    if not parameters:
        raise ValueError("nothing to train: no parameters in the trainable modules")
    was_required = {parameter: parameter.requires_grad for parameter in model.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(parameters, lr=config.lr)
    device = parameters[0].device
    generator = torch.Generator().manual_seed(seed)  # the shuffling depends on the seed only: resumable
    # A last batch of one image would break BatchNorm in training mode (1x1 maps at the end of a 32 px ResNet).
    drop_last = len(labels) > config.batch_size
    loader = DataLoader(
        TensorDataset(images, labels), config.batch_size, shuffle=True, generator=generator, drop_last=drop_last
    )
    model.eval()  # frozen modules (BatchNorm statistics, dropout) stay as they are
    for name, module in modules.items():
        if allowed is None or name in allowed:
            module.train()
    mean_loss = float("nan")
    try:
        for _ in tqdm(range(epochs), desc=description, unit="epoch", disable=not progress, leave=False):
            total, count = 0.0, 0
            for batch_images, batch_labels in loader:
                loss = F.cross_entropy(model(batch_images.to(device)), batch_labels.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch_labels)
                count += len(batch_labels)
            mean_loss = total / count
    finally:
        model.eval()
        for parameter, required in was_required.items():
            parameter.requires_grad_(required)
    return mean_loss
