"""Fashion-MNIST, offline first: the real data behind the demo, the benchmarks and the engine tests.

:func:`load_split` is the one place that knows where Fashion-MNIST lives. It reads the
idx files (gzipped or not) from, in this order:

1. ``$SDDPX_FASHION_MNIST`` if set, else Debian's ``dataset-fashion-mnist`` folder;
2. torchvision's layout in our cache, ``<cache>/torchvision/FashionMNIST/raw`` (the
   cache is ``$SDDPX_CACHE`` or ``~/.cache/sddpx-tp``), where a torchvision download
   leaves them;
3. only if the caller allows it (the demo does; tests and benchmarks do not): a
   torchvision download into that same folder, then read as in 2.

The files are parsed here, not by torchvision: its reader wants them unzipped and its
download checks checksums of the ``.gz`` that Debian's files do not match. Also trains
and caches the 10-class source model that the pruning is then asked to specialise.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v2, mobilenet_v3_small, resnet18
from tqdm.auto import tqdm

from sddpx_tp.errors import UserError
from sddpx_tp.files import atomic_write, default_cache_dir

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
IMAGE_SHAPE = (28, 28)
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}
# idx type codes (third magic byte) -> big-endian numpy dtypes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetMissingError(FileNotFoundError):
    """Fashion-MNIST is not installed where we look (or a file there is unreadable); the message is one line."""


def data_dir() -> Path:
    """The first place looked: ``$SDDPX_FASHION_MNIST``, else Debian's package folder."""
    return Path(os.environ.get("SDDPX_FASHION_MNIST", DEBIAN_DIR))


def torchvision_root() -> Path:
    """The ``root`` handed to ``torchvision.datasets.FashionMNIST``."""
    return default_cache_dir() / "torchvision"


def torchvision_raw_dir() -> Path:
    """Where torchvision's FashionMNIST keeps the idx files under :func:`torchvision_root`."""
    return torchvision_root() / "FashionMNIST" / "raw"


def search_dirs() -> list[Path]:
    """The folders :func:`load_split` reads from, in order."""
    return [data_dir(), torchvision_raw_dir()]


def file_names(split: str) -> tuple[str, str]:
    """The idx file names (without ``.gz``) of a split's images and labels."""
    if split not in SPLIT_PREFIXES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    prefix = SPLIT_PREFIXES[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _corrupt(path: Path, problem: str) -> DatasetMissingError:
    return DatasetMissingError(
        _one_line(f"Fashion-MNIST file {path} is unusable: {problem}; delete it (or reinstall the package) and retry")
    )


def read_idx(path: Path) -> np.ndarray:
    """An idx file (``.gz`` or not) as a native-endian array; a truncated or foreign file raises DatasetMissingError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise _corrupt(path, f"cannot read it ({error})") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES or data[3] == 0:
        raise _corrupt(path, f"not an idx file (magic bytes {data[:4].hex() or 'missing'})")
    dimensions, dtype = data[3], np.dtype(_IDX_TYPES[data[2]])
    header = 4 + 4 * dimensions
    if len(data) < header:
        raise _corrupt(path, f"truncated header ({len(data)} of {header} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "too long"
        raise _corrupt(path, f"{state}: {len(data)} bytes where a {'x'.join(map(str, shape))} array needs {expected}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise _corrupt(images_path, f"expected uint8 N x 28 x 28 images, found {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise _corrupt(labels_path, f"expected {len(images)} uint8 labels, found {labels.dtype} {labels.shape}")
    if len(labels) and int(labels.max()) >= len(CLASS_NAMES):
        raise _corrupt(labels_path, f"label {int(labels.max())} is not one of the {len(CLASS_NAMES)} classes")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _download(split: str) -> str | None:
    """Download with torchvision into :func:`torchvision_root`; None, or why it failed (one line)."""
    try:
        from torchvision.datasets import FashionMNIST

        with contextlib.redirect_stdout(sys.stderr):  # its "Downloading ..." lines would spoil --json's stdout
            FashionMNIST(str(torchvision_root()), train=split == "train", download=True)
    except Exception as error:  # no network, a proxy, a full disk: reported, not raised
        return _one_line(f"{type(error).__name__}: {error}")[:300]
    return None


def load_split(split: str, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of the ``train`` or ``test`` split.

    Looks in :func:`search_dirs` for the split's idx files, unzipped or ``.gz``; with
    ``download``, fetches them with torchvision into :func:`torchvision_raw_dir` if
    none are found. Raises :class:`DatasetMissingError` (one line) otherwise.
    """
    names = file_names(split)
    places = search_dirs()
    for directory in places:
        images_path, labels_path = (_find(directory, name) for name in names)
        if images_path is not None and labels_path is not None:
            return _read_split(images_path, labels_path)
    failure = None
    if download:
        failure = _download(split)
        images_path, labels_path = (_find(torchvision_raw_dir(), name) for name in names)
        if failure is None and images_path is not None and labels_path is not None:
            return _read_split(images_path, labels_path)
        failure = failure or f"torchvision left no {names[0]} in {torchvision_raw_dir()}"
    first = "SDDPX_FASHION_MNIST" if "SDDPX_FASHION_MNIST" in os.environ else "Debian's dataset-fashion-mnist"
    looked = f"{places[0]} ({first}) and {places[1]} (torchvision's layout in the cache, SDDPX_CACHE)"
    attempt = f"; downloading it failed ({failure})" if failure else ""
    raise DatasetMissingError(
        _one_line(
            f"Fashion-MNIST {split} split not found: looked for {names[0]}[.gz] and {names[1]}[.gz] in {looked}"
            f"{attempt}; fix: 'apt-get install dataset-fashion-mnist', or set SDDPX_FASHION_MNIST to a folder "
            "holding the idx files, or run 'sddpx-tp demo' once online (it downloads them with torchvision)"
        )
    )


def to_model_input(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 [N, 28, 28] -> normalised float [N, 3, size, size] (grey repeated over RGB)."""
    x = images.float().div(255).sub(MEAN).div(STD)[:, None]
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous()


SOURCE_ARCHITECTURES = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "mobilenet_v3_small": mobilenet_v3_small}


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
    classes: list[int] | None = None,
) -> nn.Module:
    """A source model trained on all 10 classes (AdamW, one-cycle); ``limit`` trains on fewer images.

    ``classes``: train on those classes only (output ``i`` is ``classes[i]``), so that the
    others are new to the model: the transfer scenario at 32 px."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images, labels = load_split("train")
    if classes is not None:
        if sorted(set(classes)) != list(classes):
            raise ValueError(f"classes must be distinct and in increasing order, not {classes}")
        kept = torch.isin(labels, torch.tensor(classes))
        images, labels = images[kept], torch.searchsorted(torch.tensor(classes), labels[kept])
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    model = source_model(architecture, len(classes) if classes is not None else len(CLASS_NAMES))
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
    classes = training.get("classes")
    outputs = len(classes) if isinstance(classes, list) else len(CLASS_NAMES)
    model = source_model(str(training.get("architecture", "resnet18")), outputs)
    if cache.exists():
        model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
        return model.eval()
    check_cache_folder(cache.parent)  # before minutes of training, not after
    model = train_source_model(**training)  # type: ignore[arg-type]
    atomic_write(cache, lambda temporary: torch.save(model.state_dict(), temporary))
    return model


def check_cache_folder(folder: Path) -> None:
    """Refuse, in one line, a cache folder that cannot be made or written (``$SDDPX_CACHE`` naming a file, say)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sddpx-writable-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(
            f"cannot cache the trained source model in {folder} ({reason}); set SDDPX_CACHE to a folder you can write"
        ) from None


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
