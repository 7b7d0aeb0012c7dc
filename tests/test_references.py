"""Image folders: every pixel format becomes the same RGB input; classes resolve by index, WordNet ID, name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sddpx_tp.data.fashion import load_split
from sddpx_tp.data.references import load_image_folder, resolve_class
from sddpx_tp.errors import UserError
from sddpx_tp.models.registry import ModelSpec, imagenet_class_names

SPEC = ModelSpec("test", input_size=28, resize_size=28, mean=(0.0,) * 3, std=(1.0,) * 3)


def _grey() -> np.ndarray:
    images, _ = load_split("test")
    return images[0].numpy()


def test_pixel_formats_convert_to_the_same_rgb(tmp_path: Path) -> None:
    grey = _grey()
    variants = {
        "grey.png": Image.fromarray(grey, mode="L"),
        "rgb.png": Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB"),
        "rgba.png": Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), mode="RGBA"),
        "cmyk.tif": Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB").convert("CMYK"),
        "sixteen.png": Image.fromarray(grey.astype(np.uint16) * 257),  # full 16-bit range
    }
    for cls in ("0", "1"):
        (tmp_path / cls).mkdir()
    for name, image in variants.items():
        image.save(tmp_path / "0" / name)
    variants["grey.png"].save(tmp_path / "1" / "grey.png")
    loaded = load_image_folder(tmp_path, SPEC, num_outputs=2)
    by_name = {
        path.name: image for path, image in zip(loaded.files, loaded.images, strict=True) if path.parent.name == "0"
    }
    expected = torch.from_numpy(grey).float().div(255).expand(3, -1, -1)
    for name, image in by_name.items():
        assert torch.allclose(image, expected, atol=1e-6), name


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    for cls in ("0", "1"):
        (tmp_path / cls).mkdir()
        Image.new("RGBA", (28, 28), (0, 0, 0, 0)).save(tmp_path / cls / "clear.png")
    loaded = load_image_folder(tmp_path, SPEC, num_outputs=2)
    assert torch.allclose(loaded.images, torch.ones_like(loaded.images))


def test_classes_resolve_by_index_wordnet_id_and_name() -> None:
    imagenet = ModelSpec("resnet18", class_names=imagenet_class_names(), imagenet=True)
    assert resolve_class("281", imagenet, 1000) == 281
    assert resolve_class("n01440764", imagenet, 1000) == 0
    assert resolve_class("Tabby", imagenet, 1000) == 281
    assert resolve_class("tiger_cat", imagenet, 1000) == 282
    # Two classes read "cardigan" (the dog, 264, and the sweater, 474): an exact spelling names one (issue 34),
    # any other spelling is ambiguous.
    assert (resolve_class("Cardigan", imagenet, 1000), resolve_class("cardigan", imagenet, 1000)) == (264, 474)
    with pytest.raises(UserError, match="ambiguous"):
        resolve_class("CARDIGAN", imagenet, 1000)
    with pytest.raises(UserError, match="1000 outputs"):
        resolve_class("1000", imagenet, 1000)
    with pytest.raises(UserError, match="no class names"):
        resolve_class("cat", ModelSpec("mine"), 10)


def test_per_class_limit_is_seeded(tmp_path: Path) -> None:
    grey = _grey()
    for cls in ("0", "1"):
        (tmp_path / cls).mkdir()
        for index in range(6):
            Image.fromarray(np.roll(grey, index, axis=0)).save(tmp_path / cls / f"{index}.png")
    first = load_image_folder(tmp_path, SPEC, num_outputs=2, per_class=3, seed=7)
    again = load_image_folder(tmp_path, SPEC, num_outputs=2, per_class=3, seed=7)
    other = load_image_folder(tmp_path, SPEC, num_outputs=2, per_class=3, seed=8)
    assert len(first.files) == 6 and first.files == again.files and first.files != other.files
