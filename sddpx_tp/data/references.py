"""Reference (and evaluation) images from an ImageFolder layout: ``dir/<class>/<image>``.

Class folders map to model outputs by output index (``7``), ImageNet WordNet ID
(``n01440764``) or class name (case-insensitive, from the model's class names or a
``--labels`` file). Images are converted to RGB (grayscale, RGBA, CMYK, palette and
16-bit too), turned as their EXIF orientation says, and preprocessed as the model
expects with torchvision's transforms.

Each kind of input is checked in one place, with a one-line reason, before anything
is decoded: image files in :func:`_read_image` (regular files only, at most
``max_pixels`` stored and after the resize), class folder names in
:func:`~sddpx_tp.data.class_folders.resolve_class`, labels files in :func:`read_labels_file` and
:func:`check_labels`. Messages show paths through :func:`printable`.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from sddpx_tp.data.class_folders import natural_order, resolve_class
from sddpx_tp.errors import SettingError, UserError, literal
from sddpx_tp.models.registry import ModelSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Photos in formats PIL does not read without plug-ins: never read, but counted and named, not passed over in silence.
UNREAD_IMAGE_SUFFIXES = {".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raw", ".psd"}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # not str.splitlines(): it also splits at form feeds, U+2028, ...
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)

# 50 megapixels: more than nearly every camera photo (12-48 MP), and under PIL's own bomb warning (89 MP).
# Decoding costs 3 bytes a pixel as RGB (150 MB at the limit) and converting or resizing a few times that,
# so one image stays well under a gigabyte. Larger (trusted) images need a larger ``max_pixels``.
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass
class ImageSet:
    """Preprocessed images with labels as model output indices.

    ``skipped`` holds (path, reason) of each unreadable file, both :func:`printable` (for messages and
    reports: bytes that are not UTF-8 show as ``\\xff``), so the path may differ from the file's real name.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[int]  # model output index of each class folder, in folder order
    folders: list[str]
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # photos in a format not read (UNREAD_IMAGE_SUFFIXES)


def printable(text: object) -> str:
    """``text`` (a path, a reason) as one printable line that encodes as UTF-8.

    File names that are not UTF-8 come back from the file system with lone surrogates, which cannot be
    written to a UTF-8 file: their bytes show as ``\\xff``; control characters (a newline) as escapes.
    """
    shown = str(text)
    with suppress(UnicodeEncodeError):  # a lone surrogate that did not come from the file system: escaped below
        shown = os.fsencode(shown).decode("utf-8", "backslashreplace")
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in shown)


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


class _Unreadable(Exception):
    """A file that cannot be read; ``str()`` is the one-line reason."""


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is (or links to) a regular file.

    FIFOs, sockets and devices are never opened: a FIFO would block forever. Symlinks are followed (as
    ``Path.resolve()`` does); the target must be a regular file. ``O_NONBLOCK`` keeps a FIFO put in the
    file's place after the check from blocking, and ``fstat`` refuses it.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        reason = printable(error.strerror or type(error).__name__)
        if path.is_symlink():
            try:
                reason = f"broken symlink to {printable(os.readlink(path))} ({reason})"
            except OSError:
                reason = f"broken symlink ({reason})"
        raise _Unreadable(reason) from None
    if not stat.S_ISREG(mode):
        raise _Unreadable("not a regular file")
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        raise _Unreadable(printable(error.strerror or type(error).__name__)) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise _Unreadable("not a regular file")
    return os.fdopen(descriptor, "rb")


def read_labels_file(path: Path, num_outputs: int | None = None) -> list[str]:
    """One class name per line, in output order (blank lines are errors: they would shift indices).

    With ``num_outputs``, the file must also hold exactly one name per output (:func:`check_labels`).
    """
    advice = "give a UTF-8 text file with one class name per line, in output order"
    try:
        with _open_regular(path) as file:
            data = file.read()
    except (_Unreadable, OSError) as error:
        reason = str(error) if isinstance(error, _Unreadable) else printable(error.strerror or error)
        raise UserError(f"labels file {printable(path)} cannot be read: {reason}; {advice}") from None
    try:
        text = data.decode("utf-8-sig")  # -sig: a byte order mark (Windows editors) is not part of the first name
    except UnicodeDecodeError as error:
        raise UserError(
            f"labels file {printable(path)} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8, one class name per line"
        ) from None
    lines = _LINE_BREAK.split(text)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or any(not line.strip() for line in lines):
        raise UserError(f"labels file {printable(path)} must hold one non-empty class name per line")
    names = [line.strip() for line in lines]
    if num_outputs is not None:
        check_labels(names, num_outputs, path)
    return names


def check_labels(names: Sequence[str], num_outputs: int, path: Path) -> None:
    """Refuse a labels file (read from ``path``) that does not hold exactly one name per model output."""
    if len(names) != num_outputs:
        count = f"{len(names)} name" + ("" if len(names) == 1 else "s")
        raise UserError(
            f"labels file {printable(path)} has {count}, but the model has {num_outputs} outputs; "
            "give one name per output, in output order"
        )


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


@contextmanager
def _pil_pixel_limit(limit: int | None) -> Iterator[None]:
    """PIL's own decompression-bomb check at ``limit`` (None: off), its warning raised as an error; restored after."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _resized(width: int, height: int, resize_size: int) -> tuple[int, int]:
    """The size torchvision's ``Resize(resize_size)`` gives: shorter side to ``resize_size``, longer side scaled."""
    short, long = sorted((max(width, 1), max(height, 1)))
    new_long = int(resize_size * long / short)
    return (resize_size, new_long) if width <= height else (new_long, resize_size)


def _check_pixels(shown: str, size: tuple[int, int], resize_size: int, max_pixels: int) -> None:
    """Refuse an image whose stored size, or its size after the model's resize, is over ``max_pixels``."""
    width, height = size
    if width * height > max_pixels:
        raise SettingError(
            f"image {literal(shown)} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "pixels; shrink it, or raise the limit with {max_pixels} if you trust the file"
        )
    new_width, new_height = _resized(width, height, resize_size)
    if new_width * new_height > max_pixels:
        raise SettingError(
            f"image {literal(shown)} is {width}x{height} pixels and would be {new_width}x{new_height} = "
            f"{new_width * new_height} pixels after resizing its shorter side to {resize_size}, over the limit of "
            f"{max_pixels} pixels; crop it to a less extreme shape, or raise the limit with {{max_pixels}}"
        )


# EXIF orientation -> the turn that shows the image as viewers do (the table of ImageOps.exif_transpose, which
# also rewrites the EXIF data and fails with struct.error where that data is corrupt).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image) -> Image.Image:
    orientation = image.getexif().get(0x0112)  # the Orientation tag
    turn = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image if turn is None else image.transpose(turn)


def _read_image(path: Path, resize_size: int, max_pixels: int) -> Image.Image:
    """The image at ``path`` as RGB, upright; :class:`_Unreadable` if it cannot be read, SettingError if too large.
    PIL's warnings ("Corrupt EXIF data") name no file: they are given again, with the file's name."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return _decode_image(path, resize_size, max_pixels)
    finally:
        for warning in caught:
            warnings.warn(f"{printable(path)}: {str(warning.message).strip()}", UserWarning, stacklevel=3)


def _decode_image(path: Path, resize_size: int, max_pixels: int) -> Image.Image:
    shown = printable(path)
    try:
        with _open_regular(path) as file:
            with _pil_pixel_limit(None):  # the size is checked here, before any pixel is decoded
                opened = Image.open(file)
            with opened:
                _check_pixels(shown, opened.size, resize_size, max_pixels)
                try:
                    with _pil_pixel_limit(max_pixels):  # frames or tiles larger than the stored size (GIF, TIFF)
                        opened.load()
                except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                    raise SettingError(
                        f"image {literal(shown)} holds a frame or tile of more than {max_pixels} pixels; re-save it "
                        "as a plain image, or raise the limit with {max_pixels} if you trust the file"
                    ) from None
                return _to_rgb(_upright(opened))
    except SettingError:  # a SettingError is a ValueError too
        raise
    except UnidentifiedImageError:  # PIL's message would name the file object, not the file
        raise _Unreadable("not an image, or in a format PIL cannot read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise _Unreadable(printable(error)) from None


def _entries(folder: Path, role: str) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as error:
        raise UserError(f"{role} folder {printable(folder)} cannot be listed: {printable(error.strerror)}") from None


def load_image_folder(
    root: Path,
    spec: ModelSpec,
    num_outputs: int,
    chosen: Sequence[str] | None = None,
    per_class: int | None = None,
    seed: int = 0,
    strict: bool = False,
    role: str = "reference",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    folder_labels: bool = False,
) -> ImageSet:
    """Read ``root/<class>/*`` into preprocessed tensors, reporting unreadable files by name.

    A file that is not a regular file (a FIFO, socket, device, broken symlink) or that PIL cannot read is
    skipped and listed in ``skipped`` (with ``strict``: a SettingError). An image over ``max_pixels``, as
    stored or after the resize, is always a SettingError: skipping it would hide that the limit can be raised.
    With ``folder_labels`` the class folders are new classes, labelled 0, 1, ... in folder order.
    """
    if max_pixels < 1:
        raise SettingError(f"{{max_pixels}} must be a positive number of pixels, not {max_pixels}")
    shown_root = printable(root)
    if not root.is_dir():
        raise UserError(f"{role} folder {shown_root} does not exist or is not a folder")
    folders = natural_order([entry.name for entry in _entries(root, role)
                             if entry.is_dir() and not entry.name.startswith(".")])  # fmt: skip
    if not folders:
        raise UserError(f"{role} folder {shown_root} has no class folders; expected {shown_root}/<class>/<image files>")
    if chosen:
        unknown = [name for name in chosen if name not in folders]
        if unknown and role != "reference":  # the classes came from the references, not from a setting
            raise UserError(
                f"{role} folder {shown_root} has no class folder {', '.join(map(printable, unknown))}, a class of the "
                f"references (it has: {', '.join(printable(name) for name in folders)})"
            )
        if unknown:
            raise SettingError(
                f"{{class_folders}} names {literal(unknown)} are not folders of {literal(shown_root)} "
                f"(it has: {literal(', '.join(printable(name) for name in folders))})"
            )
        folders = list(chosen)
    if len(folders) < 2:
        raise UserError(f"{role} folder {shown_root} needs at least two class folders, found {folders}")
    classes: list[int] = []
    for position, folder in enumerate(folders):  # every folder name is checked before any image is read
        # folder_labels: the folders are the user's own classes (a new head), labelled by their position.
        index = position if folder_labels else resolve_class(folder, spec, num_outputs)
        if index in classes:
            raise UserError(f"class folder {folder!r} maps to output {index}, like another folder")
        classes.append(index)
    transform = build_transform(spec)
    generator = torch.Generator().manual_seed(seed)
    images: list[torch.Tensor] = []
    labels: list[int] = []
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    ignored: list[Path] = []
    for folder, index in zip(folders, classes, strict=True):
        entries = _entries(root / folder, "class")
        candidates = sorted(p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES)
        ignored += sorted(Path(printable(p)) for p in entries if p.suffix.lower() in UNREAD_IMAGE_SUFFIXES)
        order = torch.randperm(len(candidates), generator=generator).tolist()
        read = 0
        for position in order:
            if per_class is not None and read >= per_class:
                break
            path = candidates[position]
            try:
                image = _read_image(path, spec.resize_size, max_pixels)
            except _Unreadable as error:
                if strict:
                    raise SettingError(
                        f"unreadable image {literal(printable(path))}: {literal(error)} "
                        "(drop {strict} to skip such files)"
                    ) from None
                skipped.append((Path(printable(path)), str(error)))  # the caller reports these
                continue
            images.append(transform(image))
            labels.append(index)
            files.append(path)
            read += 1
        if read == 0:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            unread = sorted({p.suffix for p in ignored if p.parent.name == printable(folder)})
            also = f"; its {', '.join(unread)} files are not read: convert them to JPEG or PNG" if unread else ""
            raise UserError(f"class folder {printable(root / folder)} has no readable images ({suffixes}){also}")
    return ImageSet(
        images=torch.stack(images),
        labels=torch.tensor(labels, dtype=torch.long),
        classes=classes,
        folders=list(folders),
        files=files,
        skipped=skipped,
        ignored=ignored,
    )
