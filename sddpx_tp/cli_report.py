"""``sddpx-tp report``: refresh a run's report; with kept step models, plot accuracy and latency against rate."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sddpx_tp.checkpoint import atomic_write
from sddpx_tp.errors import UserError
from sddpx_tp.export.bench import BenchSettings, bench_onnx
from sddpx_tp.export.onnx import export_onnx
from sddpx_tp.report import refresh_run_report
from sddpx_tp.runstore import RunDirectory, finished_settings, pruned_model, reference_images, write_json


def _step_latencies(run: Path, settings: dict[str, Any], threads: int, runs: int) -> list[dict[str, Any]]:
    """Export every kept step model and time them all, interleaved (batch 1)."""
    steps = RunDirectory(run).step_models()
    if len(steps) < 2:
        raise UserError(f"run {run} kept no step models; prune with --keep-models to plot latency against rate")
    images = reference_images(settings)
    trajectory = {record["step"]: record for record in json.loads((run / "state.json").read_text())["trajectory"]}
    exports = {}
    with tempfile.TemporaryDirectory(prefix="sddpx-steps-") as work:
        for path in steps:
            step = int(path.stem.split("-")[1])
            export_onnx(pruned_model(run, settings, path), images, Path(work) / f"{path.stem}.onnx", images[:4])
            exports[step] = Path(work) / f"{path.stem}.onnx"
        rows = bench_onnx({str(step): file for step, file in exports.items()},
                          BenchSettings(batch_sizes=(1,), threads=(threads,), warmup=2, runs=runs))  # fmt: skip
    return [
        {"step": int(row["model"]), "filter_rate": trajectory[int(row["model"])]["filter_rate"], **row} for row in rows
    ]


def _plot(trajectory: list[dict[str, Any]], latencies: list[dict[str, Any]], path: Path) -> None:
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


@click.command("report")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--latency", is_flag=True, help="export and time every kept step model; plot latency against rate")
@click.option("--threads", type=click.IntRange(min=1), default=1, help="threads for the latency curve")
@click.option("--runs", type=click.IntRange(min=3), default=20, help="timed runs per step model")
def report_command(run: Path, latency: bool, threads: int, runs: int) -> None:
    """Rebuild RUN/report.md from the run, its export and benchmark files."""
    settings = finished_settings(run)
    if latency:
        rows = _step_latencies(run, settings, threads, runs)
        write_json(run / "latency_curve.json", rows)
        trajectory = json.loads((run / "report.json").read_text())["trajectory"]
        _plot(trajectory, rows, run / "accuracy_latency.png")
    refresh_run_report(run)
    click.echo(f"report: {run / 'report.md'}")
