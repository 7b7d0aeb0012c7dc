"""Portability: Fashion-MNIST without Debian's package, and the canonizers on the installed torch/zennit.

Debian's folder is hidden with ``SDDPX_FASHION_MNIST=<empty folder>`` and the same files
are placed in torchvision's layout under ``SDDPX_CACHE``, as on macOS, Fedora or Windows
after the demo downloaded them once. torchvision's own ``FashionMNIST`` reads that folder
as the independent reference.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision.datasets
from click.testing import CliRunner
from helpers import calibrate_batch_norms
from torch import nn
from torchvision import models

from sddpx_tp.cli import main
from sddpx_tp.data import fashion
from sddpx_tp.data.fashion import DatasetMissingError, load_split, read_idx
from sddpx_tp.errors import UserError
from sddpx_tp.lrp.architectures import canonizers_for
from sddpx_tp.run import demo

REPO = Path(__file__).resolve().parents[1]
SOURCE = fashion.data_dir()  # Debian's folder (or the user's SDDPX_FASHION_MNIST), read before any test changes it
NAMES = [name for split in ("train", "test") for name in fashion.file_names(split)]


def _source(name: str) -> Path | None:
    return next((path for path in (SOURCE / name, SOURCE / f"{name}.gz") if path.is_file()), None)


pytestmark = pytest.mark.skipif(
    any(_source(name) is None for name in NAMES),
    reason=f"Fashion-MNIST is not installed in {SOURCE} (apt-get install dataset-fashion-mnist)",
)


def _place(raw: Path, layout: str) -> Path:
    """Write the four idx files into ``raw`` as ``unzipped``, ``gzipped`` or ``both`` (what torchvision leaves)."""
    raw.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        source = _source(name)
        assert source is not None
        if layout in ("unzipped", "both"):
            (raw / name).write_bytes(
                gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
            )
        if layout in ("gzipped", "both"):
            if source.suffix == ".gz":
                shutil.copyfile(source, raw / f"{name}.gz")
            else:
                (raw / f"{name}.gz").write_bytes(gzip.compress(source.read_bytes(), compresslevel=1))
    return raw


def _hide_debian(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """``SDDPX_FASHION_MNIST`` at an empty folder, ``SDDPX_CACHE`` at a fresh one; (empty, cache)."""
    empty, cache = tmp_path / "no-debian", tmp_path / "cache"
    empty.mkdir()
    monkeypatch.setenv("SDDPX_FASHION_MNIST", str(empty))
    monkeypatch.setenv("SDDPX_CACHE", str(cache))
    return empty, cache


def _raw(cache: Path) -> Path:
    return cache / "torchvision" / "FashionMNIST" / "raw"


def _no_download(*args: object, **kwargs: object) -> None:
    raise AssertionError("load_split downloaded although the caller did not allow it")


@pytest.fixture(scope="module")
def debian() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SDDPX_FASHION_MNIST", str(SOURCE))
        return {split: load_split(split) for split in ("train", "test")}


@pytest.mark.parametrize("layout", ["unzipped", "gzipped", "both"])
def test_torchvision_layout_gives_debians_data(
    layout: str, debian: dict[str, tuple[torch.Tensor, torch.Tensor]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cache = _hide_debian(monkeypatch, tmp_path)
    _place(_raw(cache), layout)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", _no_download)
    for split, (expected_images, expected_labels) in debian.items():
        images, labels = load_split(split)
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert images.shape == (60000 if split == "train" else 10000, 28, 28)
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels), split
    monkeypatch.undo()  # torchvision's real reader, on the same folder: the independent reference
    if layout != "gzipped":  # torchvision itself only reads the unzipped files
        for split in debian:
            reference = torchvision.datasets.FashionMNIST(str(cache / "torchvision"), train=split == "train")
            images, labels = debian[split]
            assert torch.equal(reference.data, images) and torch.equal(reference.targets, labels), split


def test_the_first_place_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDDPX_FASHION_MNIST", str(SOURCE))
    monkeypatch.setenv("SDDPX_CACHE", str(tmp_path))
    raw = _raw(tmp_path)
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(784))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 3]))
    assert len(load_split("test")[0]) == 10000
    monkeypatch.setenv("SDDPX_FASHION_MNIST", str(tmp_path / "nowhere"))
    images, labels = load_split("test")
    assert images.shape == (1, 28, 28) and labels.tolist() == [3]


def test_nothing_found_is_one_line_naming_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty, cache = _hide_debian(monkeypatch, tmp_path)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", _no_download)
    with pytest.raises(DatasetMissingError) as missing:
        load_split("train")
    message = str(missing.value)
    assert "\n" not in message
    for part in (str(empty), str(_raw(cache)), "train-images-idx3-ubyte", "apt-get install dataset-fashion-mnist",
                 "SDDPX_FASHION_MNIST", "sddpx-tp demo"):  # fmt: skip
        assert part in message, part


def test_download_lands_in_the_torchvision_folder_and_is_read_from_there(
    debian: dict[str, tuple[torch.Tensor, torch.Tensor]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, cache = _hide_debian(monkeypatch, tmp_path)
    roots: list[str] = []

    def download(root: str, train: bool = True, download: bool = False) -> None:
        """torchvision's FashionMNIST(root, train, download=True), offline: leaves the files as torchvision does."""
        assert download
        print(f"Downloading http://mirror/train-images-idx3-ubyte.gz to {root}")  # as torchvision does
        roots.append(root)
        _place(Path(root) / "FashionMNIST" / "raw", "both")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", download)
    images, labels = load_split("test", download=True)
    assert torch.equal(images, debian["test"][0]) and torch.equal(labels, debian["test"][1])
    assert roots == [str(cache / "torchvision")]
    assert capsys.readouterr().out == ""  # torchvision's chatter goes to stderr: stdout is --json's
    load_split("train", download=True)  # found now: no second download
    assert len(roots) == 1


def test_a_failed_download_is_one_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty, _ = _hide_debian(monkeypatch, tmp_path)

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://mirror/, got:\nno network\n")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(UserError) as error:
        demo._load_data()
    assert "\n" not in str(error.value) and "no network" in str(error.value) and str(empty) in str(error.value)
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--fast", "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("sddpx-tp: error: Fashion-MNIST train split")


def _unzipped(name: str) -> bytes:
    source = _source(name)
    assert source is not None
    return gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("t10k-images-idx3-ubyte", "truncated"),
        ("t10k-images-idx3-ubyte.gz", "cannot read"),
        ("t10k-images-idx3-ubyte", "not an idx file"),
        ("t10k-labels-idx1-ubyte", "expected 10000 uint8 labels"),
    ],
)
def test_broken_files_are_named_not_a_numpy_traceback(
    name: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cache = _hide_debian(monkeypatch, tmp_path)
    raw = _raw(cache)
    raw.mkdir(parents=True)
    for good in fashion.file_names("test"):
        (raw / good).write_bytes(_unzipped(good))
    broken = {
        "truncated": _unzipped("t10k-images-idx3-ubyte")[:5000],
        "cannot read": gzip.compress(_unzipped("t10k-images-idx3-ubyte")[:50000])[:3000],
        "not an idx file": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "expected 10000 uint8 labels": bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2]),
    }[problem]
    (raw / name.removesuffix(".gz")).unlink()
    (raw / name).write_bytes(broken)
    with pytest.raises(DatasetMissingError) as error:
        load_split("test")
    message = str(error.value)
    assert problem in message and str(raw / name) in message and "\n" not in message


def test_idx_reader_reads_big_endian_types_and_refuses_extra_bytes(tmp_path: Path) -> None:
    path = tmp_path / "values-idx2-int"
    values = (1, -2, 3, 70000, 5, -6)
    path.write_bytes(
        bytes([0, 0, 0x0C, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + b"".join(v.to_bytes(4, "big", signed=True) for v in values)
    )
    array = read_idx(path)
    assert array.dtype == "int32" and array.dtype.isnative and array.tolist() == [[1, -2, 3], [70000, 5, -6]]
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 7, 7]))
    with pytest.raises(DatasetMissingError, match="too long"):
        read_idx(path)


def test_demo_and_fashion_agree_on_the_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDDPX_CACHE", str(tmp_path))
    assert demo.default_cache_dir() == fashion.default_cache_dir() == tmp_path
    monkeypatch.delenv("SDDPX_CACHE")
    assert demo.default_cache_dir() == fashion.default_cache_dir() == Path.home() / ".cache" / "sddpx-tp"


def _environment(tmp_path: Path, layout: str) -> dict[str, str]:
    empty, cache = tmp_path / "no-debian", tmp_path / "cache"
    empty.mkdir()
    _place(_raw(cache), layout)
    return {**os.environ, "SDDPX_FASHION_MNIST": str(empty), "SDDPX_CACHE": str(cache)}


def _command() -> list[str]:
    script = shutil.which("sddpx-tp", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from sddpx_tp.cli import main; main()"]


@pytest.mark.slow
def test_demo_runs_from_the_torchvision_layout(tmp_path: Path) -> None:
    environment = _environment(tmp_path, "unzipped")
    out = tmp_path / "demo"
    done = subprocess.run(
        [*_command(), "demo", "--fast", "--out", str(out)], env=environment, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "run" / "report.md").is_file()
    assert "training the source model" in done.stderr
    assert (Path(environment["SDDPX_CACHE"]) / "fashion_resnet18_fast.pt").is_file()  # the cache is SDDPX_CACHE's


@pytest.mark.slow
def test_data_needing_tests_run_from_the_torchvision_layout(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_references.py", "-m", "not slow"],
        cwd=REPO, env=_environment(tmp_path, "gzipped"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout


def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=10)


CANONIZED = {
    "resnet18": lambda: models.resnet18(num_classes=10),
    "mobilenet_v2": lambda: models.mobilenet_v2(num_classes=10),
    "efficientnet-lite0": _efficientnet_lite0,
}


@pytest.mark.parametrize("architecture", list(CANONIZED))
def test_canonizers_fold_every_batch_norm_exactly_and_restore_the_model(architecture: str) -> None:
    """The canonizer path on the installed torch and zennit: BatchNorm merge, residual Sum, then removal."""
    model = calibrate_batch_norms(CANONIZED[architecture]())
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    state = {key: value.clone() for key, value in model.state_dict().items()}
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        before = model(images)
    eps = [norm.eps for norm in norms]
    instances = [instance for canonizer in canonizers_for(model) for instance in canonizer.apply(model)]
    try:
        for norm in norms:  # each one folded into its conv: an identity, but for eps
            for key, value in (("running_mean", 0.0), ("running_var", 1.0), ("weight", 1.0), ("bias", 0.0)):
                assert torch.equal(getattr(norm, key), torch.full_like(getattr(norm, key), value)), key
        with torch.no_grad():
            canonized = model(images)
            # zennit 0.5.1 keeps eps, so each folded norm still divides by sqrt(1 + eps); upstream sets eps = 0.
            drift = 1e-5 + sum(norm.eps for norm in norms)
            assert (canonized - before).abs().max() <= drift * before.abs().max()
            for norm in norms:
                norm.eps = 0.0  # what upstream zennit does: torch must run it, and the fold is then exact
            exact = model(images)
        assert (exact - before).abs().max() <= 1e-5 * before.abs().max()
    finally:
        for norm, value in zip(norms, eps, strict=True):
            norm.eps = value
        for instance in reversed(instances):
            instance.remove()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any("forward" in module.__dict__ for module in model.modules())
    with torch.no_grad():
        assert torch.equal(model(images), before)
