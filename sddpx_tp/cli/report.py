"""``sddpx-tp report``: refresh a run's report; with kept step models, plot accuracy and latency against rate."""

from __future__ import annotations

from pathlib import Path

import click

from sddpx_tp.run.export import latency_curve
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.run.report import refresh_run_report


@click.command("report")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--latency", is_flag=True, help="export and time every kept step model; plot latency against rate")
@click.option("--threads", type=click.IntRange(min=1), default=1, help="threads for the latency curve")
@click.option("--runs", type=click.IntRange(min=3), default=20, help="timed runs per step model")
@click.option(
    "--model",
    "model_file",
    type=click.Path(path_type=Path),
    help="with --latency, for a run pruned from a model file: that file, named to confirm it may be unpickled",
)
def report_command(run: Path, latency: bool, threads: int, runs: int, model_file: Path | None) -> None:
    """Rebuild RUN/report.md from the run, its export and benchmark files."""
    folder = RunDirectory(run)
    folder.finished_settings()
    if latency:
        latency_curve(folder, threads, runs, model_file)
    else:
        with folder.folder.lock():
            refresh_run_report(folder)
    click.echo(f"report: {folder.report_md}")
