"""``sddpx-tp export`` and ``sddpx-tp bench``: a run (or a registry model) to ONNX, and how fast it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from sddpx_tp.errors import UserError
from sddpx_tp.export.bench import (
    BenchSettings,
    bench_onnx,
    bench_torch,
    check_providers,
    environment,
    markdown_table,
    model_facts,
    onnx_input_shape,
    speedups,
)
from sddpx_tp.export.onnx import DEFAULT_OPSET, DEFAULT_TOLERANCE, ParityError, export_onnx
from sddpx_tp.metrics import count_macs
from sddpx_tp.registry import create_model
from sddpx_tp.report import refresh_run_report
from sddpx_tp.runstore import baseline_model, finished_settings, pruned_model, reference_images, write_json

EXIT_PARITY = 3  # documented in the README: the export ran, but ONNX Runtime disagrees with torch


class ParityFailed(click.ClickException):
    exit_code = EXIT_PARITY


def _export_one(model: nn.Module, images: torch.Tensor, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    if path.exists() and not options["force"]:
        raise UserError(f"{path} exists; pass --force to replace it")
    macs = count_macs(model, images[:1])
    try:
        parity = export_onnx(model, images, path, images, opset=options["opset"], tolerance=options["tolerance"],
                             metadata={"macs": str(macs)})  # fmt: skip
    except ParityError as error:
        raise ParityFailed(str(error)) from None
    return {**model_facts(path), "parity": parity.to_dict()}


@click.command("export")
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option(
    "--onnx", "onnx_path", is_flag=False, flag_value="", default=None, help="write ONNX here [RUN/model.onnx]"
)
@click.option("--model", "model_name", help="export a registry model instead of a run (the unpruned baseline)")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--num-classes", type=click.IntRange(min=2))
@click.option("--random-init", is_flag=True)
@click.option("--input-size", type=click.IntRange(min=8), help="with --model: the input size [the model's]")
@click.option("--baseline/--no-baseline", default=True, help="with RUN: also export the unpruned model (same classes)")
@click.option("--opset", type=click.IntRange(min=13), default=DEFAULT_OPSET)
@click.option("--tolerance", type=click.FloatRange(min=0), default=DEFAULT_TOLERANCE, help="max abs logit difference")
@click.option("--force", is_flag=True, help="replace existing ONNX files")
@click.option("--json", "as_json", is_flag=True)
def export_command(run: Path | None, **options: Any) -> None:
    """Export a pruned run (or a registry model) to ONNX, checked against torch.

    Exit code 3: the export ran but ONNX Runtime's outputs differ from torch's by
    more than --tolerance; nothing is written then.
    """
    if (run is None) == (options["model_name"] is None):
        raise UserError("give either a RUN folder or --model NAME (not both)")
    results: dict[str, Any] = {}
    if run is not None:
        settings = finished_settings(run)
        pruned = pruned_model(run, settings)
        images = reference_images(settings)
        target = Path(options["onnx_path"]) if options["onnx_path"] else run / "model.onnx"
        results["model"] = _export_one(pruned, images, target, options)
        if options["baseline"]:
            results["baseline"] = _export_one(
                baseline_model(settings), images, target.with_name("baseline.onnx"), options
            )
        write_json(run / "export.json", results)
        refresh_run_report(run)
    else:
        if not options["onnx_path"]:
            raise UserError("with --model, say where to write: --onnx PATH")
        model, spec = create_model(
            options["model_name"], options["weights"], options["num_classes"], options["random_init"]
        )
        size = options["input_size"] or spec.input_size
        images = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0))
        results["model"] = _export_one(model, images, Path(options["onnx_path"]), options)
    _report(results, options["as_json"], lambda r: "\n".join(
        f"{label}: {facts['path']} ({facts['file_bytes'] / 1e6:.1f} MB, {facts['params']:,} params), parity max abs "
        f"{facts['parity']['max_abs_diff']:.2g}, top-1 agreement {facts['parity']['top1_agreement']:.3f}"
        for label, facts in r.items()))  # fmt: skip


def _report(results: dict[str, Any], as_json: bool, render: Any) -> None:
    click.echo(json.dumps(results) if as_json else render(results))


@click.command("bench")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), help="ONNX file to compare against")
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(1, 32), help="repeatable")
@click.option("--threads", type=click.IntRange(min=1), multiple=True, default=(1, 2), help="repeatable")
@click.option("--provider", "providers", multiple=True, default=("cpu", "cuda"), help="cpu, cuda (skipped if absent)")
@click.option("--runs", type=click.IntRange(min=3), default=20, help="timed runs per model and setting")
@click.option("--warmup", type=click.IntRange(min=0), default=3)
@click.option("--torch/--no-torch", "with_torch", default=True, help="with a RUN: also time eager torch")
@click.option("--json", "as_json", is_flag=True)
def bench_command(target: Path, **options: Any) -> None:
    """Latency, throughput and size of an ONNX model (or a RUN's exports) against a baseline."""
    check_providers(options["providers"])  # unknown names fail here, before any work
    settings = BenchSettings(
        options["batches"], options["threads"], options["warmup"], options["runs"], options["providers"]
    )
    run = target if target.is_dir() else None
    if run is not None:
        candidate, baseline = run / "model.onnx", run / "baseline.onnx"
        if not candidate.is_file():
            raise UserError(f"run {run} has no model.onnx; run 'sddpx-tp export {run} --onnx' first")
    else:
        candidate, baseline = target, options["baseline"]
    models = {"pruned": candidate}
    if baseline is not None and Path(baseline).is_file():
        models["baseline"] = Path(baseline)
    elif options["baseline"] is not None:
        raise UserError(f"baseline {baseline} is not a file")
    for label, path in models.items():
        if not path.is_file() or path.suffix != ".onnx":
            raise UserError(f"{path} is not an ONNX file (.onnx)")
        _valid_onnx(path, label)
    facts = {label: model_facts(path) for label, path in models.items()}
    rows = bench_onnx(models, settings)
    if run is not None and options["with_torch"]:
        run_settings = finished_settings(run)
        torch_models = {"pruned": pruned_model(run, run_settings)}
        if "baseline" in models:
            torch_models["baseline"] = baseline_model(run_settings)
        rows += bench_torch(torch_models, onnx_input_shape(candidate), settings)
    gains = speedups(rows, facts, "baseline") if "baseline" in models else []
    result = {"environment": environment(), "settings": settings.__dict__, "models": facts, "latency": rows,
              "speedups": gains}  # fmt: skip
    if run is not None:
        write_json(run / "bench.json", result)
        refresh_run_report(run)
    _report(result, options["as_json"], lambda r: markdown_table(r["latency"], r["speedups"]))


def _valid_onnx(path: Path, label: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise UserError(f"{label} model {path} is not a valid ONNX model: {str(error).splitlines()[0]}") from None
