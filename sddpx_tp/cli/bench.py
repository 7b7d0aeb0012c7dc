"""``sddpx-tp bench``: latency, throughput and size of an ONNX model (or a run's exports) against a baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sddpx_tp.export.bench import BenchSettings, check_providers, markdown_table, memory_table, skipped_providers
from sddpx_tp.run.export import bench_files, bench_run
from sddpx_tp.run.folder import RunDirectory


@click.command("bench")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), help="ONNX file to compare against")
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(1, 32), help="repeatable")
@click.option("--threads", type=click.IntRange(min=1), multiple=True, default=(1, 2), help="repeatable")
@click.option(
    "--provider",
    "providers",
    multiple=True,
    default=("cpu", "cuda"),
    help="any onnxruntime execution provider: cpu, cuda, tensorrt, openvino, ... (repeatable; skipped if absent here)",
)
@click.option("--memory/--no-memory", default=True, help="measure each session's peak memory (a process per model)")
@click.option("--runs", type=click.IntRange(min=3), default=20, help="timed runs per model and setting")
@click.option("--warmup", type=click.IntRange(min=0), default=3)
@click.option("--torch/--no-torch", "with_torch", default=True, help="with a RUN: also time eager torch")
@click.option(
    "--model",
    "model_file",
    type=click.Path(path_type=Path),
    help="with a RUN pruned from a model file: that file, named to confirm it may be unpickled",
)
@click.option("--json", "as_json", is_flag=True)
def bench_command(target: Path, **options: Any) -> None:
    """Latency, throughput and size of an ONNX model (or a RUN's exports) against a baseline."""
    check_providers(options["providers"])  # unknown names fail here, before any work
    settings = BenchSettings(
        options["batches"],
        options["threads"],
        options["warmup"],
        options["runs"],
        options["providers"],
        options["memory"],
    )
    if target.is_dir():
        result = bench_run(RunDirectory(target), settings, options["with_torch"], options["model_file"], progress=True)
    else:
        models = {"pruned": target}
        if options["baseline"] is not None:
            models["baseline"] = Path(options["baseline"])
        result = bench_files(models, settings, progress=True)
    absent = skipped_providers(options["providers"])
    if absent:  # said, not silently left out (the default asks for cpu and cuda); after the work: errors stay one line
        click.echo(f"sddpx-tp: note: {', '.join(absent)} not available in this onnxruntime: timed without it",
                   err=True)  # fmt: skip
    if options["as_json"]:
        click.echo(json.dumps(result))
        return
    click.echo(markdown_table(result["latency"], result["speedups"]))
    if result["memory"]:  # measured in a process of its own per model: shown, not only stored
        click.echo("\n" + memory_table(result["memory"]))
