"""Fashion-MNIST, offline: the real data behind the demo, the benchmarks and the engine tests.

Reads the idx ``.gz`` files of Debian's ``dataset-fashion-mnist`` package directly
(torchvision's reader wants them unzipped into its own layout, and its download
checks checksums that Debian's files do not match). Trains and caches the 10-class
source model that the pruning is then asked to specialise.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v2, resnet18
from tqdm.auto import tqdm

from sddpx_tp.checkpoint import atomic_write

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MEAN, STD = 0.2860, 0.3530  # of the training images


class DatasetMissingError(FileNotFoundError):
    """Fashion-MNIST is not installed where we look."""


def data_dir() -> Path:
    return Path(os.environ.get("SDDPX_FASHION_MNIST", DEBIAN_DIR))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dimensions = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of the ``train`` or ``test`` split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    directory = data_dir()
    images_path = directory / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = directory / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_path.exists() or not labels_path.exists():
        raise DatasetMissingError(
            f"Fashion-MNIST not found in {directory}; install it with "
            "'apt-get install dataset-fashion-mnist' or set SDDPX_FASHION_MNIST "
            "to a folder holding the idx .gz files"
        )
    images = torch.from_numpy(_read_idx(images_path).copy())
    labels = torch.from_numpy(_read_idx(labels_path).astype(np.int64))
    return images, labels


def to_model_input(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 [N, 28, 28] -> normalised float [N, 3, size, size] (grey repeated over RGB)."""
    x = images.float().div(255).sub(MEAN).div(STD)[:, None]
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous()


SOURCE_ARCHITECTURES = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}


def source_model(architecture: str = "resnet18", classes: int = 10) -> nn.Module:
    return SOURCE_ARCHITECTURES[architecture](num_classes=classes)


def train_source_model(
    epochs: int = 3,
    size: int = 32,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
    architecture: str = "resnet18",
) -> nn.Module:
    """A source model trained on all 10 classes (AdamW, one-cycle); ``limit`` trains on fewer images."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images, labels = load_split("train")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    model = source_model(architecture)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=5e-4)
    batches_per_epoch = (len(images) + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * batches_per_epoch
    )
    model.train()
    bar = tqdm(total=epochs * batches_per_epoch, desc="training source model", disable=not progress, leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            batch = to_model_input(images[index], size)
            if torch.rand(1, generator=generator).item() < 0.5:  # flips: cheap augmentation
                batch = batch.flip(-1)
            loss = F.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


def cached_source_model(cache: Path, **training: object) -> nn.Module:
    """Load the source model from ``cache`` (a state_dict file), training and saving it first if absent."""
    model = source_model(str(training.get("architecture", "resnet18")))
    if cache.exists():
        model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
        return model.eval()
    model = train_source_model(**training)  # type: ignore[arg-type]
    atomic_write(cache, lambda temporary: torch.save(model.state_dict(), temporary))
    return model


def class_subset(
    images: torch.Tensor, labels: torch.Tensor, classes: list[int], per_class: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``per_class`` images of each chosen class (seeded pick), labels kept as class indices."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for cls in classes:
        index = (labels == cls).nonzero().flatten()
        index = index[torch.randperm(len(index), generator=generator)]
        picked.append(index if per_class is None else index[:per_class])
    chosen = torch.cat(picked)
    return images[chosen], labels[chosen]
