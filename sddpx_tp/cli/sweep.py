"""``sddpx-tp sweep``: a grid of runs from a config file, on local worker processes or a Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sddpx_tp.sweep.backends import Backend, LocalBackend, RayBackend, cpu_count
from sddpx_tp.sweep.config import read_config
from sddpx_tp.sweep.grid import MAX_CELLS
from sddpx_tp.sweep.runner import run_sweep

EXIT_CELLS_FAILED = 1  # the sweep ran to its end, but some cells failed (each is named on stderr and in the table)
DEFAULT_WORKERS = min(8, cpu_count())


@click.command("sweep")
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="the sweep folder (rerun it to continue)")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", help="where the cells run")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=DEFAULT_WORKERS,
    help="local: cells at a time; each gets cores / workers torch threads",
)
@click.option("--ray-address", help="ray: 'auto' or host:port of a running cluster [default: start a local one]")
@click.option("--cpus-per-cell", type=float, default=1.0, help="ray: CPUs each cell reserves (and its torch threads)")
@click.option("--gpus-per-cell", type=float, default=0.0, help="ray: GPUs each cell reserves (a fraction shares one)")
@click.option("--json", "as_json", is_flag=True, help="print the results table as one JSON document on stdout")
@click.option(
    "--trust-model",
    "trusted_models",
    multiple=True,
    type=click.Path(path_type=Path),
    help="a pickled model file the config names, which you trust to be unpickled (it runs its code); repeatable",
)
@click.option(
    "--max-cells",
    type=click.IntRange(min=1),
    default=MAX_CELLS,
    show_default=True,
    help="refuse a grid of more cells than this (a mistyped grid is refused at once, not after minutes of planning)",
)
def sweep_command(
    config_file: Path,
    out: Path,
    backend: str,
    workers: int,
    ray_address: str | None,
    cpus_per_cell: float,
    gpus_per_cell: float,
    as_json: bool,
    trusted_models: tuple[Path, ...],
    max_cells: int,
) -> None:
    """Run every cell of a sweep config (models x class subsets x grid values) into one folder, and tabulate them."""
    config = read_config(config_file, trusted_models)
    if backend == "ray":
        chosen: Backend = RayBackend(ray_address, cpus_per_cell, gpus_per_cell)
    else:
        for name, given in (
            ("--ray-address", ray_address is not None),
            ("--cpus-per-cell", cpus_per_cell != 1.0),
            ("--gpus-per-cell", gpus_per_cell != 0.0),
        ):
            if given:
                raise click.UsageError(f"{name} is for --backend ray")
        chosen = LocalBackend(workers)
    results = run_sweep(config, out, chosen, max_cells=max_cells)
    if as_json:
        click.echo(json.dumps(results))
    else:
        _print_summary(results, out)
    if results["counts"]["failed"]:
        raise click.exceptions.Exit(EXIT_CELLS_FAILED)


def _print_summary(results: dict[str, Any], out: Path) -> None:
    axes = results["axes"]
    for entry in results["summary"]:
        auc, kept = entry["auc"], entry["kept_to"]
        what = ", ".join([entry["model"], *(str(entry[axis]) for axis in axes)])
        figures = (
            "no finished cell"
            if auc is None
            else (f"AUC {auc['mean']:.3f} ({auc['min']:.3f}-{auc['max']:.3f}), kept to {kept['mean']:.2f}")
        )
        click.echo(f"{what}: {figures} over {entry['done']} class subsets")
    counts = ", ".join(f"{count} {status}" for status, count in results["counts"].items() if count)
    click.echo(f"{counts}; table: {out / 'results.md'}")
