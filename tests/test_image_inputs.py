"""Hostile image and labels inputs: each is refused or skipped with one line naming the file, never a hang,
a traceback or gigabytes of memory."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import numpy as np
import pytest
import torch
from helpers import write_png
from PIL import Image

from sddpx_tp.data.references import ImageSet, check_labels, load_image_folder, read_labels_file, resolve_class
from sddpx_tp.errors import SettingError, UserError
from sddpx_tp.models.registry import ModelSpec

SPEC = ModelSpec("test", input_size=28, resize_size=28, mean=(0.0,) * 3, std=(1.0,) * 3)
IMAGENET_LIKE = ModelSpec("test", input_size=224, resize_size=256, mean=(0.0,) * 3, std=(1.0,) * 3)
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIFOs, sockets, /proc: Linux")


class StillBlocked(Exception):
    """Not an OSError (as TimeoutError is), so code that skips unreadable files cannot swallow it."""


@contextmanager
def _deadline(seconds: int = 10) -> Iterator[None]:
    """Fail (instead of hanging) if the block is still running after ``seconds``: a blocked open() is interrupted."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise StillBlocked(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _memory_cap(extra: int = 1 << 30) -> Iterator[None]:
    """Allocating more than ``extra`` bytes in the block fails (MemoryError) instead of exhausting the machine."""
    status = Path("/proc/self/status").read_text()
    size = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _tree(root: Path) -> Path:
    """``root/0`` and ``root/1``, each with one readable image (a class needs one)."""
    rng = np.random.default_rng(0)
    for cls in ("0", "1"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(root / cls / "good.png")
    return root


def _skipped(images: ImageSet) -> dict[str, str]:
    return {path.name: reason for path, reason in images.skipped}


def _one_line(error: pytest.ExceptionInfo[BaseException], *names: str) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    for name in names:
        assert name in message, (name, message)
    return message


def _as_flags(error: BaseException) -> str:
    assert isinstance(error, SettingError)
    return error.render(lambda name: "--" + name.replace("_", "-"))


def test_crafted_png_is_a_real_image(tmp_path: Path) -> None:
    write_png(tmp_path / "small.png", 30, 20)
    with Image.open(tmp_path / "small.png") as image:
        assert image.size == (30, 20)
        assert not np.asarray(image.convert("L")).any()


# Files that are not regular files: never opened.


@linux_only
def test_fifo_is_skipped_without_being_opened(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.mkfifo(root / "0" / "x.png")
    with _deadline():
        images = load_image_folder(root, SPEC, num_outputs=2)
    assert "not a regular file" in _skipped(images)["x.png"]
    assert [path.name for path in images.files] == ["good.png", "good.png"]


@linux_only
def test_fifo_with_strict_is_a_one_line_error(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.mkfifo(root / "0" / "x.png")
    with _deadline(), pytest.raises(SettingError) as error:
        load_image_folder(root, SPEC, num_outputs=2, strict=True)
    _one_line(error, str(root / "0" / "x.png"), "not a regular file")
    assert "--strict" in _as_flags(error.value)


@linux_only
def test_socket_and_device_and_folder_are_skipped(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "0" / "folder.png").mkdir()
    (root / "0" / "zero.png").symlink_to("/dev/zero")  # a character device
    sock = root / "1" / "s.png"
    if len(os.fsencode(sock)) >= 100:
        pytest.skip("temporary path too long for a Unix socket")
    with socket.socket(socket.AF_UNIX) as server, _deadline():
        server.bind(str(sock))
        images = load_image_folder(root, SPEC, num_outputs=2)
    skipped = _skipped(images)
    assert set(skipped) == {"folder.png", "zero.png", "s.png"}
    assert all("not a regular file" in reason for reason in skipped.values()), skipped


def test_symlink_to_an_image_is_read(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    target = tmp_path / "elsewhere.png"
    Image.fromarray(np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1)), mode="L").save(target)
    (root / "0" / "link.png").symlink_to(target)
    images = load_image_folder(root, SPEC, num_outputs=2)
    assert not images.skipped
    loaded = dict(zip([path.name for path in images.files], images.images, strict=True))
    expected = torch.from_numpy(np.tile(np.arange(28) * 9, (28, 1))).float().div(255).expand(3, -1, -1)
    assert torch.allclose(loaded["link.png"], expected, atol=1e-6)


def test_dangling_symlink_is_skipped(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "0" / "gone.png").symlink_to(tmp_path / "missing.png")
    images = load_image_folder(root, SPEC, num_outputs=2)
    assert "gone.png" in _skipped(images)
    with pytest.raises(SettingError) as error:
        load_image_folder(root, SPEC, num_outputs=2, strict=True)
    _one_line(error, str(root / "0" / "gone.png"))


@linux_only
def test_symlink_to_a_fifo_is_skipped(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    os.mkfifo(tmp_path / "pipe")
    (root / "1" / "pipe.png").symlink_to(tmp_path / "pipe")
    with _deadline():
        images = load_image_folder(root, SPEC, num_outputs=2)
    assert "not a regular file" in _skipped(images)["pipe.png"]


# Pixel limits: refused before decoding, with or without strict.


def test_image_over_a_lower_limit_is_refused_and_read_with_the_default(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    Image.new("L", (300, 300), 128).save(root / "1" / "big.png")
    with pytest.raises(SettingError) as error:
        load_image_folder(root, SPEC, num_outputs=2, max_pixels=10_000)
    _one_line(error, str(root / "1" / "big.png"), "300x300", "90000", "10000", "max_pixels")
    assert "--max-pixels" in _as_flags(error.value)
    images = load_image_folder(root, SPEC, num_outputs=2)
    assert sorted(path.name for path in images.files) == ["big.png", "good.png", "good.png"]


@linux_only
def test_decompression_bomb_is_a_one_line_error_without_strict(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    write_png(root / "1" / "bomb.png", 20_000, 20_000)
    assert (root / "1" / "bomb.png").stat().st_size < 1_000_000
    pil_limit = Image.MAX_IMAGE_PIXELS
    with _memory_cap(), pytest.raises(SettingError) as error:
        load_image_folder(root, SPEC, num_outputs=2)
    _one_line(error, str(root / "1" / "bomb.png"), "20000x20000", "400000000", "max_pixels")
    assert pil_limit == Image.MAX_IMAGE_PIXELS  # PIL's global is restored


@linux_only
def test_extreme_aspect_ratio_is_refused_before_the_resize(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    write_png(root / "1" / "strip.png", 1_000_000, 1)  # 1 MP stored, 256 MP after resizing its short side to 256
    start = time.perf_counter()
    with _memory_cap(), pytest.raises(SettingError) as error:
        load_image_folder(root, IMAGENET_LIKE, num_outputs=2)
    assert time.perf_counter() - start < 30
    _one_line(error, str(root / "1" / "strip.png"), "1000000x1", "256", "max_pixels")


def test_our_limit_replaces_pils_own_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    Image.new("L", (100, 100), 7).save(root / "1" / "hundred.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # PIL alone would refuse the 10000-pixel image
    images = load_image_folder(root, SPEC, num_outputs=2)
    assert "hundred.png" in [path.name for path in images.files]
    assert Image.MAX_IMAGE_PIXELS == 1_000


def test_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(SettingError) as error:
        load_image_folder(_tree(tmp_path), SPEC, num_outputs=2, max_pixels=0)
    _one_line(error, "max_pixels")


# EXIF orientation.


@pytest.mark.parametrize(
    ("orientation", "rotation", "dark_top"),
    [(6, Image.Transpose.ROTATE_270, True), (8, Image.Transpose.ROTATE_90, False)],
)
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, rotation: Image.Transpose, dark_top: bool
) -> None:
    stored = np.zeros((20, 40), dtype=np.uint8)  # landscape as stored: left half black, right half white
    stored[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: the stored left side is the top as shown; 8: it is the bottom
    rotated_root, manual_root = _tree(tmp_path / "exif"), _tree(tmp_path / "manual")
    Image.fromarray(stored, mode="L").convert("RGB").save(rotated_root / "0" / "photo.jpg", exif=exif, quality=95)
    with Image.open(rotated_root / "0" / "photo.jpg") as decoded:  # the same decoded pixels, turned by hand
        decoded.convert("RGB").transpose(rotation).save(manual_root / "0" / "photo.png")
    images = load_image_folder(rotated_root, SPEC, num_outputs=2)
    manual = load_image_folder(manual_root, SPEC, num_outputs=2)
    photo = images.images[[path.name for path in images.files].index("photo.jpg")]
    expected = manual.images[[path.name for path in manual.files].index("photo.png")]
    assert torch.allclose(photo, expected, atol=1e-6)
    top, bottom = photo[:, :10].mean().item(), photo[:, 18:].mean().item()  # rows of the 28x28 centre crop
    dark, bright = (top, bottom) if dark_top else (bottom, top)
    assert dark < 0.1 and bright > 0.9, (top, bottom)


# Labels files.


def test_labels_file_not_utf8_missing_or_not_a_file(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("chat\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError) as error:
        read_labels_file(latin)
    _one_line(error, str(latin), "UTF-8")
    with pytest.raises(UserError) as error:
        read_labels_file(tmp_path / "missing.txt")
    _one_line(error, str(tmp_path / "missing.txt"))
    with pytest.raises(UserError) as error:
        read_labels_file(tmp_path)
    _one_line(error, str(tmp_path))


@linux_only
def test_labels_fifo_is_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "labels.txt")
    with _deadline(), pytest.raises(UserError) as error:
        read_labels_file(tmp_path / "labels.txt")
    _one_line(error, str(tmp_path / "labels.txt"), "not a regular file")


def test_labels_with_byte_order_mark(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_bytes(b"\xef\xbb\xbfcat\r\ndog\r\n")
    assert read_labels_file(tmp_path / "labels.txt") == ["cat", "dog"]


def test_labels_count_must_match_the_outputs(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n", encoding="utf-8")
    check_labels(["cat", "dog"], 2, path)
    assert read_labels_file(path, num_outputs=2) == ["cat", "dog"]
    for outputs in (1, 3):
        with pytest.raises(UserError) as error:
            read_labels_file(path, num_outputs=outputs)
        _one_line(error, str(path), "2 names", f"{outputs} outputs", "one name per output")
    with pytest.raises(UserError) as error:
        check_labels(["cat", "dog", "cow"], 1000, path)
    _one_line(error, str(path), "3 names", "1000 outputs")


# Folder and file names.


def test_superscript_folder_is_a_name_not_an_index(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "1").rename(root / "²")
    with pytest.raises(UserError) as error:
        load_image_folder(root, SPEC, num_outputs=10)
    _one_line(error, "'²'", "no class names")
    named = ModelSpec("named", input_size=28, resize_size=28, class_names=["zero", "one"])
    with pytest.raises(UserError) as error:
        load_image_folder(root, named, num_outputs=2)
    _one_line(error, "'²'", "matches no class name")
    with pytest.raises(UserError, match="no class names"):
        resolve_class("٣", SPEC, 10)  # Arabic-Indic three: int() would read it as 3


@linux_only
def test_file_name_that_is_not_utf8_is_reported_printably(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    try:
        (root / "0" / os.fsdecode(b"\xff.png")).write_bytes(b"not an image")
        (root / "1" / os.fsdecode(b"ok\xfe.png")).write_bytes((root / "1" / "good.png").read_bytes())
    except OSError:
        pytest.skip("the file system refuses names that are not UTF-8")
    images = load_image_folder(root, SPEC, num_outputs=2)
    assert len(images.skipped) == 1 and len(images.files) == 3
    assert all(path.exists() for path in images.files)  # images read keep their real names
    path, reason = images.skipped[0]
    message = f"skipped unreadable image {path}: {reason}"
    assert "\\xff.png" in message
    report = tmp_path / "report.md"
    report.write_text(message + json.dumps({"skipped": [[str(path), reason]]}, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(SettingError) as error:
        load_image_folder(root, SPEC, num_outputs=2, strict=True)
    _one_line(error, "\\xff.png").encode("utf-8")
