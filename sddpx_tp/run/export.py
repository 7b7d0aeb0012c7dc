"""A finished run to ONNX, how fast it runs, and latency against filter rate: the library side of
``sddpx-tp export``, ``bench`` and ``report --latency``.

Every result is also folded into the run's report (``report.json``, ``report.md``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn
from tqdm.auto import tqdm

from sddpx_tp.environment import environment
from sddpx_tp.errors import RunFolderError, SettingError, UserError, literal
from sddpx_tp.export.bench import (
    SESSION_OPTIONS,
    BenchSettings,
    bench_onnx,
    bench_torch,
    check_bench_inputs,
    file_to_ship,
    model_facts,
    onnx_input_shape,
    session_memory,
    skipped_providers,
    speedups,
    timing_rounds,
)
from sddpx_tp.export.onnx import DEFAULT_OPSET, DEFAULT_TOLERANCE, export_onnx
from sddpx_tp.files import atomic_write, write_json
from sddpx_tp.metrics import count_macs
from sddpx_tp.models.classifier import check_finite
from sddpx_tp.run.deployment import deployment_metadata
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.run.owned_folder import file_locks
from sddpx_tp.run.quantize import (
    DEFAULT_MAX_ACCURACY_DROP,
    check_quantize_options,
    quantize_run_model,
    quantized_target,
)
from sddpx_tp.run.rebuild import (
    baseline_model,
    confirm_model_file,
    pruned_model,
    reference_images,
    source_model,
)
from sddpx_tp.run.report import refresh_run_report
from sddpx_tp.run.settings import ModelSource


def check_export_options(opset: int, tolerance: float) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not DEFAULT_OPSET <= opset <= newest:
        raise SettingError(f"{{opset}} must be in [{DEFAULT_OPSET}, {newest}] (this onnx's newest), not {opset}")
    if not 0 <= tolerance < math.inf:
        raise SettingError(f"{{tolerance}} must be a finite number >= 0, not {tolerance}")


def _check_target(path: Path, force: bool) -> None:
    if path.is_dir():
        raise SettingError(f"{literal(path)} is a folder; give {{onnx}} a file path ending in .onnx")
    if path.suffix != ".onnx":
        raise SettingError(f"{{onnx}} {literal(path)} must end in .onnx")
    if path.exists() and not force:
        raise SettingError(f"{literal(path)} exists; pass {{force}} to replace it")


def export_models(
    models: dict[Path, nn.Module],
    images: torch.Tensor,
    force: bool = False,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    derive: Callable[[dict[Path, Path], Path], dict[Path, Path]] | None = None,
    metadata: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Export each model to its path, checked against torch on ``images``: all of them or none.
    ``metadata``: entries written into every file (besides its MACs).

    Every file is exported into a staging folder and moved into place only when all
    passed the checker and the parity check; otherwise nothing is written and the error
    (:class:`~sddpx_tp.export.onnx.ParityError` past ``tolerance``) propagates.
    ``derive(staged, staging)`` may add files made from the staged ones (by final path, written
    inside ``staging``): they are published with the others, and its error also leaves nothing.
    """
    check_export_options(opset, tolerance)
    for path, model in models.items():
        _check_target(path, force)
        check_finite(model, images, f"the model for {path.name}")
    staging_parent = next(iter(models)).parent
    staging_parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=staging_parent, prefix=".sddpx-export-"))
    try:
        parities, staged = {}, {path: staging / f"{index}.onnx" for index, path in enumerate(models)}
        for path, model in models.items():
            macs = count_macs(model, images[:1])
            parities[path] = export_onnx(model, images, staged[path], images, opset=opset, tolerance=tolerance,
                                         metadata={**(metadata or {}), "macs": str(macs)})  # fmt: skip
        derived = derive(dict(staged), staging) if derive else {}
        for path, file in {**staged, **derived}.items():
            os.replace(file, path)
        return [{**model_facts(path), "parity": parities[path].to_dict()} for path in models]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_run(
    run: RunDirectory,
    onnx_path: Path | None = None,
    baseline: bool = True,
    force: bool = False,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    model_file: Path | None = None,
    quantize: str | None = None,
    max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP,
    step: int | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """One of the run's pruned models (and its unpruned baseline, same classes) as ONNX, next to each other.

    Which step: ``step``, or the last accepted step at or below filter rate ``rate``, or by default
    the step the run recommends (its accuracy target's; the last step for runs from before targets).
    A run keeps the models of its last and its recommended step, and of every step with ``keep_models``.

    ``model_file``: for a run pruned from a model file, that file, named again by the
    caller (it is unpickled; the run folder alone never makes sddpx-tp load it).
    ``quantize="int8"`` also writes the pruned model quantized (``model.int8.onnx`` next to it),
    calibrated on the references, and the unpruned one quantized the same way (``baseline.int8.onnx``:
    what a user gets without pruning, the comparison ``bench`` makes); ``"fp16"`` its float16 conversion
    (``model.fp16.onnx``, for GPU providers); past ``max_accuracy_drop`` against fp32 either raises
    :class:`~sddpx_tp.run.quantize.AccuracyDropError` and writes nothing at all."""
    check_export_options(opset, tolerance)
    check_quantize_options(quantize, max_accuracy_drop)
    settings = run.finished_settings()
    confirm_model_file(settings, model_file, run.path)
    record, step_file = chosen_step(run, step, rate)
    target = onnx_path or run.onnx
    if baseline and target.name == run.baseline_onnx.name:
        raise SettingError(
            f"{{onnx}} {literal(target)}: {run.baseline_onnx.name} is the name of the unpruned export written next "
            "to it; choose another name, or leave out the unpruned model with {baseline}"
        )
    targets = [target, target.with_name(run.baseline_onnx.name)] if baseline else [target]
    quantized = quantized_target(target, quantize) if quantize else None
    # With int8, the unpruned model quantized the same way: the baseline a user has without pruning.
    baseline_quantized = quantized_target(targets[1], quantize) if quantize == "int8" and baseline else None
    written = targets + [file for file in (quantized, baseline_quantized) if file is not None]
    with run.folder.lock(), file_locks(written):  # checked under the locks: no other export writes them meanwhile
        for path in written:
            _check_target(path, force)
        images = reference_images(settings)
        models = {target: pruned_model(settings, step_file)}
        if baseline:
            models[targets[1]] = baseline_model(settings, run.head)
        converted: dict[str, Any] = {}

        baseline_converted: dict[str, Any] = {}

        def with_quantized(staged: dict[Path, Path], staging: Path) -> dict[Path, Path]:
            assert quantized is not None and quantize is not None
            converted.update(quantize_run_model(settings, staged[target], staging / "quantized.onnx",
                                                max_accuracy_drop, quantize))  # fmt: skip
            if baseline_quantized is None:
                return {quantized: staging / "quantized.onnx"}
            # Measured, never refused: it is the comparison, not a file this run hands out.
            unpruned_int8 = staging / "baseline_quantized.onnx"
            baseline_converted.update(quantize_run_model(settings, staged[targets[1]], unpruned_int8, None, quantize))
            return {quantized: staging / "quantized.onnx", baseline_quantized: unpruned_int8}

        facts = export_models(models, images, force=force, opset=opset, tolerance=tolerance,
                              derive=with_quantized if quantized else None,
                              metadata=deployment_metadata(settings))  # fmt: skip
        results = dict(zip(["model", "baseline"], facts, strict=False))
        recommended = run.report().get("recommended")
        is_recommended = recommended is not None and recommended["step"] == record["step"]
        results["model"].update({"step": record["step"], "filter_rate": record["filter_rate"],
                                 "recommended": is_recommended})  # fmt: skip
        if quantized and quantize:
            results[quantize] = {**model_facts(quantized), **converted, "path": str(quantized)}
        if baseline_quantized is not None:
            results["baseline_int8"] = {**model_facts(baseline_quantized), **baseline_converted,
                                        "path": str(baseline_quantized)}  # fmt: skip
        write_json(run.export_json, results)
        refresh_run_report(run)
    return results


def chosen_step(run: RunDirectory, step: int | None, rate: float | None) -> tuple[dict[str, Any], Path]:
    """The trajectory record of the step to export and the file holding its model (see :func:`export_run`)."""
    if step is not None and rate is not None:
        raise SettingError("give {step} or {rate}, not both")
    trajectory = run.trajectory()
    if rate is not None:
        if not 0 <= rate < 1:
            raise SettingError(f"{{rate}} must be in [0, 1), not {rate}")
        step = max(record["step"] for record in trajectory if record["filter_rate"] <= rate + 1e-9)
    elif step is None:
        recommended = run.report().get("recommended")
        step = recommended["step"] if recommended else trajectory[-1]["step"]
    records = {record["step"]: record for record in trajectory}
    if step not in records:
        raise SettingError(f"{{step}} {step} is not a step of run {literal(run.path)}: it has steps 0 to "
                           f"{trajectory[-1]['step']}")  # fmt: skip
    path = run.model_of_step(step)
    if path is None:
        kept = sorted(number for number in records if run.model_of_step(number) is not None)
        raise SettingError(
            f"run {literal(run.path)} did not keep step {step}'s model: it keeps its last and its recommended step "
            f"({', '.join(map(str, kept))}); prune with {{keep_models}} to export any step"
        )
    return records[step], path


def export_source(source: ModelSource, path: Path, input_size: int | None = None, **options: Any) -> dict[str, Any]:
    """An unpruned registry model (or model file) as ONNX, checked on random inputs."""
    check_export_options(options.get("opset", DEFAULT_OPSET), options.get("tolerance", DEFAULT_TOLERANCE))
    _check_target(path, bool(options.get("force", False)))
    model, spec = source_model(source)
    size = input_size or spec.input_size
    images = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0))
    return {"model": export_models({path: model}, images, **options)[0]}


def _valid_onnx(path: Path, label: str) -> None:
    import onnx

    if not path.exists():
        raise UserError(f"ONNX file {path} does not exist" + (" (the baseline)" if label == "baseline" else ""))
    if not path.is_file() or path.suffix != ".onnx":
        raise UserError(f"{label} model {path} is not an ONNX file (.onnx)")
    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise UserError(f"{label} model {path} is not a valid ONNX model: {str(error).splitlines()[0]}") from None


def bench_files(models: dict[str, Path], settings: BenchSettings, torch_models: dict[str, nn.Module] | None = None,
                progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Latency and size of ONNX files (``pruned``, optionally ``baseline``), and eager torch if given.

    With ``progress``, a bar on stderr counts the timed rounds (every model run once) and shows the time left,
    then one counts the peak-memory measurements (a process per model)."""
    for label, path in models.items():
        _valid_onnx(path, label)
    facts = {label: model_facts(path) for label, path in models.items()}
    check_bench_inputs(models, settings)  # before the progress bar: a refusal stays one line
    total = timing_rounds(settings, bool(torch_models))
    with tqdm(total=total, desc=f"timing {len(models)} models", unit="round", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as rounds:  # fmt: skip
        rows = bench_onnx(models, settings, rounds)
        if torch_models:
            rows += bench_torch(torch_models, onnx_input_shape(models["pruned"]), settings, rounds)
    if progress and settings.memory:
        tqdm.write(f"measuring peak memory: one process per model and provider ({len(models)} models)",
                   file=sys.stderr)  # fmt: skip
    gains = [gain for against in ("baseline", "baseline_int8") if against in models
             for gain in speedups(rows, facts, against)]  # fmt: skip
    ship = file_to_ship(rows, [label for label in ("pruned", "int8") if label in models])
    return {"environment": environment(), "settings": settings.__dict__, "session_options": SESSION_OPTIONS,
            "skipped_providers": skipped_providers(settings.providers), "models": facts, "latency": rows,
            "memory": session_memory(models, settings), "speedups": gains, "ship": ship}  # fmt: skip


def bench_run(
    run: RunDirectory,
    settings: BenchSettings,
    with_torch: bool = True,
    model_file: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Benchmark a run's exports against each other (and the torch models), into the run's report.

    ``model_file``: as for :func:`export_run` (needed with ``with_torch`` for a run pruned from a model file)."""
    run_settings = run.finished_settings()
    models = _exported_files(run)
    if "pruned" not in models:
        raise RunFolderError(f"run {run.path} has no {run.onnx.name}: export it first")
    if with_torch:
        confirm_model_file(run_settings, model_file, run.path)
    with run.folder.lock():
        torch_models = None
        if with_torch:
            torch_models = {"pruned": pruned_model(run_settings, _exported_model_file(run))}
            if "baseline" in models:
                torch_models["baseline"] = baseline_model(run_settings, run.head)
        result = bench_files(models, settings, torch_models, progress)
        write_json(run.bench_json, result)
        refresh_run_report(run)
    return result


def _exported_files(run: RunDirectory) -> dict[str, Path]:
    """The ONNX files of the run's last export, wherever ``--onnx`` put them (``export.json``), else the default
    names: pruned fp32, the unpruned model, pruned int8, the unpruned model in int8 (what a user gets without
    pruning) and fp16, for one interleaved run."""
    recorded = json.loads(run.export_json.read_text()) if run.export_json.is_file() else {}
    defaults = {"pruned": ("model", run.onnx), "baseline": ("baseline", run.baseline_onnx),
                "int8": ("int8", run.int8_onnx), "baseline_int8": ("baseline_int8", run.baseline_int8_onnx),
                "fp16": ("fp16", run.fp16_onnx)}  # fmt: skip
    found = {}
    for label, (key, default) in defaults.items():
        entry = recorded.get(key)
        path = Path(entry["path"]) if isinstance(entry, dict) and isinstance(entry.get("path"), str) else default
        if path.is_file():
            found[label] = path
    return found


def _exported_model_file(run: RunDirectory) -> Path:
    """The torch file of the step that ``model.onnx`` holds (exports from before steps: the last)."""
    step = json.loads(run.export_json.read_text()).get("model", {}).get("step") if run.export_json.is_file() else None
    return (run.model_of_step(step) if step is not None else None) or run.model


def step_latencies(
    run: RunDirectory, threads: int = 1, runs: int = 20, model_file: Path | None = None
) -> list[dict[str, Any]]:
    """Export every kept step model and time them all, interleaved (batch 1)."""
    settings = run.finished_settings()
    confirm_model_file(settings, model_file, run.path)
    steps = run.step_models()
    if len(steps) < 2:
        raise SettingError(
            f"run {literal(run.path)} kept no step models; prune with {{keep_models}} to plot latency against rate"
        )
    images = reference_images(settings)
    trajectory = {record["step"]: record for record in run.trajectory()}
    exports = {}
    with tempfile.TemporaryDirectory(prefix="sddpx-steps-") as work:
        for step, path in steps.items():
            exports[step] = Path(work) / f"{path.stem}.onnx"
            export_onnx(pruned_model(settings, path), images, exports[step], images[:4])
        rows = bench_onnx({str(step): file for step, file in exports.items()},
                          BenchSettings(batch_sizes=(1,), threads=(threads,), warmup=2, runs=runs))  # fmt: skip
    return [
        {"step": int(row["model"]), "filter_rate": trajectory[int(row["model"])]["filter_rate"], **row} for row in rows
    ]


def latency_curve(
    run: RunDirectory, threads: int = 1, runs: int = 20, model_file: Path | None = None
) -> list[dict[str, Any]]:
    """Latency of every kept step model against filter rate, with accuracy: a JSON file and a plot."""
    rows = step_latencies(run, threads, runs, model_file)
    with run.folder.lock():
        write_json(run.latency_curve_json, rows)
        _plot(run.report()["trajectory"], rows, run.latency_plot)
        refresh_run_report(run)
    return rows


def _plot(trajectory: Sequence[dict[str, Any]], latencies: list[dict[str, Any]], path: Path) -> None:
    source = "eval_accuracy" if trajectory[0]["eval_accuracy"] is not None else "reference_accuracy"
    figure, accuracy_axis = plt.subplots(figsize=(7, 4.2))
    rates = [record["filter_rate"] for record in trajectory]
    accuracy_axis.plot(rates, [sum(r[source]) / len(r[source]) for r in trajectory], "o-", label="accuracy (mean)")
    accuracy_axis.plot(rates, [min(r[source]) for r in trajectory], "s--", label="lowest class")
    accuracy_axis.set_xlabel("filter rate")
    accuracy_axis.set_ylabel("held-out accuracy" if source == "eval_accuracy" else "reference accuracy")
    accuracy_axis.set_ylim(-0.02, 1.02)
    latency_axis = accuracy_axis.twinx()
    ordered = sorted(latencies, key=lambda row: row["filter_rate"])
    latency_axis.plot([r["filter_rate"] for r in ordered], [r["p50_ms"] for r in ordered], "^-", color="tab:red",
                      label="ONNX Runtime latency, batch 1 (p50)")  # fmt: skip
    latency_axis.set_ylabel("latency (ms)")
    latency_axis.set_ylim(bottom=0)
    handles = accuracy_axis.get_legend_handles_labels()[0] + latency_axis.get_legend_handles_labels()[0]
    accuracy_axis.legend(handles=handles, loc="lower left", fontsize=8)
    accuracy_axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=120, format="png"))
    plt.close(figure)
