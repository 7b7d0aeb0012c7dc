"""``sddpx-tp demo``: the whole product, offline, on real Fashion-MNIST images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sddpx_tp.pruning.method_registry import available_methods
from sddpx_tp.run.demo import run_demo


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("sddpx-demo"), help="output folder")
@click.option("--classes", default="T-shirt-top,Shirt", help="two or more Fashion-MNIST classes (names or 0-9)")
@click.option("--method", type=click.Choice(available_methods()), default="sd-dpx")
@click.option("--max-rate", type=float, default=0.5, help="where accuracy still holds on this pair (see README)")
@click.option(
    "--cache-dir", type=click.Path(path_type=Path), default=None, help="source model cache [~/.cache/sddpx-tp]"
)
@click.option(
    "--transfer",
    is_flag=True,
    help="the paper's scenario: an ImageNet EfficientNet-Lite0 at 224 px with a new head for the two classes",
)
@click.option("--fast", is_flag=True, help="a coarse schedule and a tiny source model (smoke test, not a result)")
@click.option("--force", is_flag=True, help="replace an existing output folder")
@click.option("--json", "as_json", is_flag=True)
def demo_command(out: Path, classes: str, method: str, max_rate: float, cache_dir: Path | None, transfer: bool,
                 fast: bool, force: bool, as_json: bool) -> None:  # fmt: skip
    """Prune a model for two Fashion-MNIST classes, export it and measure it: all offline.

    By default a Fashion-MNIST ResNet-18 that knows the classes; with --transfer an
    ImageNet EfficientNet-Lite0 that does not, with a head fitted for them."""
    summary = run_demo(out, classes, method, max_rate, cache_dir, fast, force, transfer)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        _print(summary)


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
