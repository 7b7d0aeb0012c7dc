"""Helpers shared by the test modules: small models, realistic BatchNorm statistics, Fashion-MNIST image folders
and the arguments of a small `sddpx-tp prune` run. The fixtures built from them are in conftest.py."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import models

from sddpx_tp.data.fashion import load_split
from sddpx_tp.models.registry import ModelSpec


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


# --- the small CLI runs on Fashion-MNIST images ---------------------------------------------------------

# How the CLI runs below preprocess their images (the same numbers as `prune_args`).
SPEC = ModelSpec("resnet18", input_size=32, resize_size=32, mean=(0.286,) * 3, std=(0.353,) * 3)


def write_class_folders(root: Path, counts: dict[int, int], offset: int) -> None:
    """``counts[c]`` Fashion-MNIST test images of class ``c`` (from its ``offset``-th on) as PNGs in ``root/c``."""
    images, labels = load_split("test")
    for cls, count in counts.items():
        folder = root / str(cls)
        folder.mkdir(parents=True)
        for index in (labels == cls).nonzero().flatten()[offset : offset + count].tolist():
            Image.fromarray(images[index].numpy()).save(folder / f"{index}.png")


def calibrated_resnet18() -> nn.Module:
    """An untrained 10-class ResNet-18 (from torch's global random state) with BatchNorms calibrated at 32 px."""
    return calibrate_batch_norms(models.resnet18(num_classes=10), size=32)


def fashion_folders(root: Path, references: dict[int, int], evaluation: dict[int, int]) -> dict[str, Path]:
    """What a CLI run reads: ``refs`` and ``eval`` class folders (see `write_class_folders`; the held-out images
    from the 100th of each class on) and the ``weights`` of a calibrated ResNet-18 made from seed 0."""
    write_class_folders(root / "refs", references, offset=0)
    write_class_folders(root / "eval", evaluation, offset=100)
    weights = root / "resnet18_fashion10.pt"
    torch.manual_seed(0)
    torch.save(calibrated_resnet18().state_dict(), weights)
    return {"refs": root / "refs", "eval": root / "eval", "weights": weights, "root": root}


def prune_args(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """`sddpx-tp prune` of ``data["weights"]`` on ``data["refs"]`` to filter rate 0.3 in steps of 0.1, into ``out``."""
    return [
        "prune", "--model", "resnet18", "--num-classes", "10", "--weights", str(data["weights"]),
        "--refs", str(data["refs"]), "--input-size", "32", "--resize-size", "32", "--mean", "0.286", "--std", "0.353",
        "--max-rate", "0.3", "--step", "0.1", "--method", "dpx", "--out", str(out), *extra,
    ]  # fmt: skip


def write_png(path: Path, width: int, height: int) -> None:
    """A valid all-black 1-bit greyscale PNG of any size, written row by row: no pixel array is ever allocated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte "none", then one bit a pixel
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
