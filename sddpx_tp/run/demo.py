"""The demo: the whole product, offline, on real Fashion-MNIST images.

Writes a 2-class reference folder (30 training images per class) and a held-out
folder (test images of those classes), then runs the real workflow: prune (SD-DPX,
the recommended configuration), export to ONNX and benchmark, and returns a
before/after summary. Two scenarios:

* the default: a 10-class ResNet-18 trained (once, cached) on Fashion-MNIST at
  32 px, restricted to the two classes it already knows;
* ``transfer``: the paper's own, an ImageNet-pretrained EfficientNet-Lite0 (its
  packaged weights, frozen) at 224 px, for two classes ImageNet does not have: a
  new head is fitted on the references (``head="fit"``).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sddpx_tp.data.fashion import (
    CLASS_NAMES,
    DatasetMissingError,
    cached_source_model,
    check_cache_folder,
    class_subset,
    default_cache_dir,
    load_split,
)
from sddpx_tp.errors import Interrupted, SettingError, UserError, literal
from sddpx_tp.export.bench import BenchSettings
from sddpx_tp.models.registry import EFFICIENTNET_LITE0, IMAGENET_MEAN, IMAGENET_STD
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.run.export import bench_run, export_run
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.run.owned_folder import OwnedFolder
from sddpx_tp.run.settings import ImageFolders, ModelSource, Preprocessing, RunSettings
from sddpx_tp.run.workflow import prune_run

# Folder-safe class names ("T-shirt/top" cannot be a folder); the labels file maps outputs to them.
FOLDER_NAMES = [name.replace("/", "-") for name in CLASS_NAMES]
FASHION_MEAN, FASHION_STD, FASHION_SIZE = 0.286, 0.353, 32
# --fast: coarser than the defaults, so that a smoke test takes seconds, not minutes.
FAST_SCHEDULE = {"step": 0.4, "min_step": 0.4, "max_excluded": 1}
# The transfer scenario's held-out images per class (all test images of the default's take too long at 224 px).
TRANSFER_HELD_OUT, TRANSFER_HELD_OUT_FAST = 300, 50
# What --force replaces in a demo folder: labels.txt; refs/ and eval/ only if they hold nothing but the demo's
# images (_check_demo_images); run/ by the run folder's own rules.
DEMO_ENTRIES = ("labels.txt",)
_DEMO_IMAGE = re.compile(r"[0-9]{5}\.png")


def _class_index(text: str) -> int:
    wanted = text.strip().lower().replace("/", "-")
    for index, name in enumerate(FOLDER_NAMES):
        if wanted in (name.lower(), str(index)):
            return index
    raise SettingError(
        f"unknown Fashion-MNIST class {text!r}; choose from {', '.join(FOLDER_NAMES)} (or 0-9) in {{classes}}"
    )


def _write_folder(root: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = root / FOLDER_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy()).save(folder / f"{index:05d}.png")


def _load_data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    try:  # Debian's package, else torchvision's copy in the cache, else a torchvision download
        return load_split("train", download=True), load_split("test", download=True)
    except DatasetMissingError as error:
        raise UserError(str(error)) from None


def run_demo(
    out: Path,
    classes: str = "T-shirt-top,Shirt",
    method: str = "sd-dpx",
    max_rate: float = 0.5,
    cache_dir: Path | None = None,
    fast: bool = False,
    force: bool = False,
    transfer: bool = False,
) -> dict[str, Any]:
    """Prune a model for two Fashion-MNIST ``classes``, export and benchmark it; the summary.

    ``transfer``: an ImageNet EfficientNet-Lite0 with a new head, instead of the Fashion-MNIST ResNet-18."""
    chosen = sorted({_class_index(text) for text in classes.split(",")})
    if len(chosen) < 2:
        raise SettingError("{classes} needs at least two different classes")
    config = PruneConfig.recommended(method=method, max_rate=max_rate, head="fit" if transfer else "keep",
                                     **(FAST_SCHEDULE if fast else {}))  # fmt: skip
    folder = OwnedFolder(out, "demo", DEMO_ENTRIES)
    # Before the minutes of training: a folder of user files is never replaced, nor a file the demo did not write.
    folder.check_writable(force)
    image_folders = [out / "refs", out / "eval"]
    if force and folder.is_ours():
        for image_folder in image_folders:
            _check_demo_images(image_folder)
        RunDirectory(out / "run").check_writable(force=True, resume=False)
    (train_images, train_labels), (test_images, test_labels) = _load_data()
    refs = class_subset(train_images, train_labels, chosen, per_class=30, seed=0)
    if transfer:
        held_out_per_class: int | None = TRANSFER_HELD_OUT_FAST if fast else TRANSFER_HELD_OUT
        # The class folders are the labels: the new head's outputs, in folder name order.
        model, labels = ModelSource(EFFICIENTNET_LITE0), None
        preprocessing = Preprocessing(224, 224, IMAGENET_MEAN, IMAGENET_STD)
    else:
        held_out_per_class = 100 if fast else None
        weights = _source_model(cache_dir, fast)
        model, labels = ModelSource("resnet18", weights=str(weights), num_classes=10), out / "labels.txt"
        preprocessing = Preprocessing(FASHION_SIZE, FASHION_SIZE, (FASHION_MEAN,) * 3, (FASHION_STD,) * 3)
    held_out = class_subset(test_images, test_labels, chosen, per_class=held_out_per_class, seed=0)
    labels_file = None if labels is None else str(labels)
    folders = ImageFolders(references=str(out / "refs"), evaluation=str(out / "eval"), labels=labels_file)
    settings = RunSettings(model=model, images=folders, config=config, preprocessing=preprocessing)
    run = RunDirectory(out / "run")
    with folder.writing(force):
        for image_folder in image_folders:
            _check_demo_images(image_folder)  # again, under the lock
            shutil.rmtree(image_folder, ignore_errors=True)
        _write_folder(out / "refs", *refs)
        _write_folder(out / "eval", *held_out)
        if labels is not None:
            labels.write_text("\n".join(FOLDER_NAMES) + "\n")
        try:
            prune_run(settings, run.path, force=force)  # the run folder's own rules: only its own files go
        except Interrupted:
            raise Interrupted(run.path, hint="run the demo again with --force to start over") from None
        export_run(run, force=force)
        # --fast times the ONNX files only, briefly: eager torch and the per-model memory processes cost more
        # than the rest of a smoke test at 224 px.
        bench = BenchSettings(batch_sizes=(1, 32), threads=(1,), warmup=1 if fast else 3, runs=3 if fast else 20,
                              providers=("cpu", "cuda"), memory=not fast)  # fmt: skip
        bench_run(run, bench, with_torch=not fast)
    return _summary(run)


def _source_model(cache_dir: Path | None, fast: bool) -> Path:
    """The default scenario's Fashion-MNIST ResNet-18 weights file, trained once and cached."""
    cache = (cache_dir or default_cache_dir()) / ("fashion_resnet18_fast.pt" if fast else "fashion_resnet18_32px.pt")
    if not cache.exists():
        check_cache_folder(cache.parent)  # refused before the word "training"
        print(f"training the source model once (cached at {cache})", file=sys.stderr)
    cached_source_model(cache, **({"epochs": 1, "limit": 2048} if fast else {}))
    return cache


def _check_demo_images(folder: Path) -> None:
    """Refuse to replace an image folder holding anything the demo does not write there."""
    if not folder.exists():
        return
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        ours = parts[0] in FOLDER_NAMES and (
            (len(parts) == 1 and path.is_dir()) or (len(parts) == 2 and _DEMO_IMAGE.fullmatch(parts[1]) is not None)
        )
        if not ours or path.is_symlink():
            raise SettingError(
                f"{literal(folder)} holds {literal(path.name)}, which the demo did not write, so {{force}} will not "
                "replace it: move it out, or choose another {out}"
            )


def _summary(run: RunDirectory) -> dict[str, Any]:
    report = run.report()
    export = report["export"]
    # "after" is the exported model: the step the run recommends, not necessarily its last.
    first, last = report["trajectory"][0], report["trajectory"][export["model"]["step"]]
    latency = {
        (row["engine"], row["batch"], row["model"]): row["p50_ms"]
        for row in report["benchmark"]["latency"]
        if row["provider"] == "cpu"
    }
    return {
        "run": str(run.path),
        "classes": [entry["label"] for entry in report["classes"]],
        "filter_rate": last["filter_rate"],
        "params": [first["params"], last["params"]],
        "macs": [first["macs"], last["macs"]],
        "onnx_bytes": [export["baseline"]["file_bytes"], export["model"]["file_bytes"]],
        "onnx_latency_ms_batch1": [latency[("onnxruntime", 1, "baseline")], latency[("onnxruntime", 1, "pruned")]],
        "onnx_latency_ms_batch32": [latency[("onnxruntime", 32, "baseline")], latency[("onnxruntime", 32, "pruned")]],
        "held_out_accuracy": [first["eval_accuracy"], last["eval_accuracy"]],
        "seconds": report["trajectory"][-1]["seconds"],
        "report": str(run.report_md),
    }
