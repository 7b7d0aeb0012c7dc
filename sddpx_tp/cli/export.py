"""``sddpx-tp export``: a pruned run (or a registry model) to ONNX, checked against torch."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean as mean
from typing import Any

import click

from sddpx_tp.errors import UserError
from sddpx_tp.export.onnx import DEFAULT_OPSET, DEFAULT_TOLERANCE, ParityError
from sddpx_tp.run.export import export_run, export_source
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.run.quantize import DEFAULT_MAX_ACCURACY_DROP, QUANTIZATIONS, AccuracyDropError
from sddpx_tp.run.settings import ModelSource

# Documented in the README: the export ran, but ONNX Runtime disagrees with torch, or int8 costs
# more accuracy than --max-accuracy-drop allows. Nothing is written in either case.
EXIT_CHECK_FAILED = 3


class ExportCheckFailed(click.ClickException):
    exit_code = EXIT_CHECK_FAILED


@click.command("export")
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option(
    "--onnx", "onnx_path", is_flag=False, flag_value="", default=None, help="write ONNX here [RUN/model.onnx]"
)
@click.option(
    "--model",
    "model_name",
    help="export a registry model instead of a run (the unpruned baseline); with RUN: the model file the run "
    "was pruned from, named to confirm that it may be unpickled",
)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--num-classes", type=int)
@click.option("--random-init", is_flag=True)
@click.option("--input-size", type=click.IntRange(min=8, max=4096), help="with --model: the input size [the model's]")
@click.option("--baseline/--no-baseline", default=True, help="with RUN: also export the unpruned model (same classes)")
@click.option("--opset", type=int, default=DEFAULT_OPSET)
@click.option("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="max abs logit difference")
@click.option(
    "--quantize",
    type=click.Choice(QUANTIZATIONS),
    help="with RUN: also write the pruned model as int8 (RUN/model.int8.onnx, calibrated on the references) or "
    "fp16 (RUN/model.fp16.onnx, for GPU providers)",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=DEFAULT_MAX_ACCURACY_DROP,
    help="with --quantize: the most mean per-class accuracy int8/fp16 may lose against fp32 (held-out images if the "
    "run has them, else the references); past it exit 3, nothing written",
)
@click.option(
    "--step", "step", type=click.IntRange(min=0), help="with RUN: export this accepted step [the recommended one]"
)
@click.option("--rate", type=float, help="with RUN: export the last accepted step at or below this filter rate")
@click.option("--force", is_flag=True, help="replace existing ONNX files")
@click.option("--json", "as_json", is_flag=True)
def export_command(run: Path | None, **options: Any) -> None:
    """Export a pruned run (or a registry model) to ONNX, checked against torch.

    Exit code 3: the export ran but ONNX Runtime's outputs differ from torch's by
    more than --tolerance, or the int8/fp16 model loses more than --max-accuracy-drop;
    nothing is written then.
    """
    if run is None and options["model_name"] is None:
        raise UserError("give a RUN folder, or --model NAME to export an unpruned model")
    if run is None and (options["step"] is not None or options["rate"] is not None):
        raise UserError("--step and --rate choose a step of a RUN folder; give one")
    if run is None and options["quantize"]:
        raise UserError("--quantize needs a RUN folder: it calibrates on the run's reference images")
    checks = {"force": options["force"], "opset": options["opset"], "tolerance": options["tolerance"]}
    try:
        if run is not None:
            target = Path(options["onnx_path"]) if options["onnx_path"] else None
            model_file = None if options["model_name"] is None else Path(options["model_name"])
            results = export_run(RunDirectory(run), target, baseline=options["baseline"], model_file=model_file,
                                 quantize=options["quantize"], max_accuracy_drop=options["max_accuracy_drop"],
                                 step=options["step"], rate=options["rate"], **checks)  # fmt: skip
        else:
            if not options["onnx_path"]:
                raise UserError("with --model, say where to write: --onnx PATH")
            weights = None if options["weights"] is None else str(options["weights"])
            source = ModelSource(options["model_name"], weights, options["num_classes"], options["random_init"])
            results = export_source(source, Path(options["onnx_path"]), options["input_size"], **checks)
    except (ParityError, AccuracyDropError) as error:
        raise ExportCheckFailed(str(error)) from None
    if options["as_json"]:
        click.echo(json.dumps(results))
        return
    for label, facts in results.items():
        if label in QUANTIZATIONS:
            judged = "held-out" if facts["judged_on"] == "evaluation" else "reference"
            accuracy = facts["accuracy"][facts["judged_on"]]
            click.echo(
                f"{label}: {facts['path']} ({facts['file_bytes'] / 1e6:.1f} MB, {facts['size_ratio']:.1f}x smaller "
                f"than fp32), mean per-class accuracy on {judged} images {mean(accuracy['fp32']):.3f} (fp32) -> "
                f"{mean(accuracy[label]):.3f}, top-1 agreement with fp32 {facts['top1_agreement_with_fp32']:.3f}"
            )
            continue
        chosen = f"step {facts['step']} (filter rate {facts['filter_rate']:.3f}" if "step" in facts else ""
        if chosen:
            chosen += ", recommended), " if facts["recommended"] else "), "
        click.echo(
            f"{label}: {chosen}{facts['path']} ({facts['file_bytes'] / 1e6:.1f} MB, {facts['params']:,} params), "
            f"parity max abs {facts['parity']['max_abs_diff']:.2g}, "
            f"top-1 agreement {facts['parity']['top1_agreement']:.3f}"
        )
