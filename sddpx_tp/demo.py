"""``sddpx-tp demo``: the whole product, offline, on real Fashion-MNIST images.

Trains (once, cached) a 10-class ResNet-18 on Fashion-MNIST, writes a 2-class
reference folder (30 training images per class) and a held-out folder (the test
images of those classes), then runs the real verbs: ``prune`` (SD-DPX),
``export --onnx`` and ``bench``, and prints a before/after summary.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import click
import torch
from PIL import Image

from sddpx_tp.errors import UserError
from sddpx_tp.fashion import CLASS_NAMES, DatasetMissingError, cached_source_model, class_subset, load_split
from sddpx_tp.schedules import METHODS

# Folder-safe class names ("T-shirt/top" cannot be a folder); the labels file maps outputs to them.
FOLDER_NAMES = [name.replace("/", "-") for name in CLASS_NAMES]
FASHION_MEAN, FASHION_STD, FASHION_SIZE = "0.286", "0.353", 32


# Coarser than the defaults so that a demo run takes seconds, not minutes.
DEMO_SCHEDULE: dict[str, float] = {}  # the engine defaults: 5 % steps, halving down to 1.25 %
FAST_SCHEDULE = {"step": 0.4, "min_step": 0.4, "k": 1}


def default_cache_dir() -> Path:
    return Path(os.environ.get("SDDPX_CACHE", Path.home() / ".cache" / "sddpx-tp"))


def _class_index(text: str) -> int:
    wanted = text.strip().lower().replace("/", "-")
    for index, name in enumerate(FOLDER_NAMES):
        if wanted in (name.lower(), str(index)):
            return index
    raise UserError(f"unknown Fashion-MNIST class {text!r}; choose from {', '.join(FOLDER_NAMES)} (or 0-9)")


def _write_folder(root: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = root / FOLDER_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy()).save(folder / f"{index:05d}.png")


def _load_data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    try:
        return load_split("train"), load_split("test")
    except DatasetMissingError as missing:
        try:  # online fallback: torchvision's own copy
            from torchvision.datasets import FashionMNIST

            root = default_cache_dir() / "torchvision"
            train, test = (FashionMNIST(root, train=flag, download=True) for flag in (True, False))
            return (train.data, train.targets), (test.data, test.targets)
        except Exception:
            raise UserError(
                f"{missing}; or connect to the internet so torchvision can download Fashion-MNIST"
            ) from None


def _invoke(ctx: click.Context, command: click.Command, **options: Any) -> None:
    # The verbs print their own summaries; the demo prints one of its own instead.
    with contextlib.redirect_stdout(io.StringIO()):
        ctx.invoke(command, **options)


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("sddpx-demo"), help="output folder")
@click.option("--classes", default="T-shirt-top,Shirt", help="two or more Fashion-MNIST classes (names or 0-9)")
@click.option("--method", type=click.Choice(METHODS), default="sd-dpx")
@click.option("--max-rate", type=float, default=0.5, help="where accuracy still holds on this pair (see README)")
@click.option(
    "--cache-dir", type=click.Path(path_type=Path), default=None, help="source model cache [~/.cache/sddpx-tp]"
)
@click.option("--fast", is_flag=True, help="tiny source model trained for seconds (smoke test, not a result)")
@click.option("--force", is_flag=True, help="replace an existing output folder")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def demo_command(ctx: click.Context, out: Path, classes: str, method: str, max_rate: float, cache_dir: Path | None,
                 fast: bool, force: bool, as_json: bool) -> None:  # fmt: skip
    """Prune a Fashion-MNIST ResNet-18 for two classes, export it and measure it: all offline."""
    from sddpx_tp.cli_export import bench_command, export_command
    from sddpx_tp.cli_prune import prune_command

    chosen = sorted({_class_index(text) for text in classes.split(",")})
    if len(chosen) < 2:
        raise UserError("--classes needs at least two different classes")
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"output folder {out} exists and is not empty; pass --force to replace it")
    (train_images, train_labels), (test_images, test_labels) = _load_data()
    cache = (cache_dir or default_cache_dir()) / ("fashion_resnet18_fast.pt" if fast else "fashion_resnet18_32px.pt")
    if not cache.exists():
        click.echo(f"training the source model once (cached at {cache}; --cache-dir to move it)", err=True)
    training = {"epochs": 1, "limit": 2048} if fast else {}
    cached_source_model(cache, **training)
    if out.exists() and force:
        import shutil

        shutil.rmtree(out)
    refs = class_subset(train_images, train_labels, chosen, per_class=30, seed=0)
    held_out = class_subset(test_images, test_labels, chosen, per_class=100 if fast else None, seed=0)
    _write_folder(out / "refs", *refs)
    _write_folder(out / "eval", *held_out)
    (out / "labels.txt").write_text("\n".join(FOLDER_NAMES) + "\n")
    run = out / "run"
    size = FASHION_SIZE
    _invoke(ctx, prune_command, model_name="resnet18", weights=cache, num_classes=10, refs_dir=out / "refs",
            eval_dir=out / "eval", labels=out / "labels.txt", input_size=size, resize_size=size,
            mean=FASHION_MEAN, std=FASHION_STD, out=run, method=method, max_rate=max_rate,
            **(FAST_SCHEDULE if fast else DEMO_SCHEDULE))  # fmt: skip
    _invoke(ctx, export_command, run=run, onnx_path="")
    _invoke(ctx, bench_command, target=run, batches=(1, 32), threads=(1,), runs=5 if fast else 20,
            providers=("cpu", "cuda"))  # fmt: skip
    summary = _summary(run)
    if as_json:
        click.echo(json.dumps(summary))
        return
    _print(summary)


def _summary(run: Path) -> dict[str, Any]:
    report = json.loads((run / "report.json").read_text())
    first, last = report["trajectory"][0], report["trajectory"][-1]
    latency = {
        (row["engine"], row["batch"], row["model"]): row["p50_ms"]
        for row in report["benchmark"]["latency"]
        if row["provider"] == "cpu"
    }
    export = report["export"]
    return {
        "run": str(run),
        "classes": [entry["label"] for entry in report["classes"]],
        "filter_rate": last["filter_rate"],
        "params": [first["params"], last["params"]],
        "macs": [first["macs"], last["macs"]],
        "onnx_bytes": [export["baseline"]["file_bytes"], export["model"]["file_bytes"]],
        "onnx_latency_ms_batch1": [latency[("onnxruntime", 1, "baseline")], latency[("onnxruntime", 1, "pruned")]],
        "onnx_latency_ms_batch32": [latency[("onnxruntime", 32, "baseline")], latency[("onnxruntime", 32, "pruned")]],
        "held_out_accuracy": [first["eval_accuracy"], last["eval_accuracy"]],
        "seconds": last["seconds"],
        "report": str(run / "report.md"),
    }


def _print(summary: dict[str, Any]) -> None:
    def row(name: str, before: str, after: str) -> None:
        click.echo(f"  {name:<28}{before:>14}{after:>14}")

    click.echo(f"sddpx-tp demo: {' vs '.join(summary['classes'])}, filter rate {summary['filter_rate']:.2f} "
               f"({summary['seconds']:.0f} s of pruning)")  # fmt: skip
    row("", "before", "after")
    row("params", f"{summary['params'][0]:,}", f"{summary['params'][1]:,}")
    row("MACs", f"{summary['macs'][0]:,}", f"{summary['macs'][1]:,}")
    row("ONNX file", *(f"{size / 1e6:.1f} MB" for size in summary["onnx_bytes"]))
    row("ONNX latency, batch 1", *(f"{ms:.2f} ms" for ms in summary["onnx_latency_ms_batch1"]))
    row("ONNX latency, batch 32", *(f"{ms:.2f} ms" for ms in summary["onnx_latency_ms_batch32"]))
    for index, name in enumerate(summary["classes"]):
        before, after = (values[index] for values in summary["held_out_accuracy"])
        row(f"held-out accuracy: {name}", f"{100 * before:.1f} %", f"{100 * after:.1f} %")
    click.echo(f"report and plots: {summary['report']}")
