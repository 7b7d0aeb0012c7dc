"""A sweep's results: one row per cell, one summary per method, as JSON, CSV, Markdown and two plots.

Each row comes from the cell's own run folder (``report.json``): AUC of the mean and of the
lowest class accuracy against filter rate, on the held-out images when the run had them
(else on the references, and the row says so), and "kept to": the highest filter rate up to
which the run keeps 95 % of the unpruned mean accuracy and 90 % of every class's
(:func:`sddpx_tp.metrics.highest_rate_kept`). A summary groups the cells that differ only
by class subset (same model, same grid values) and gives each metric's mean, min, max and
standard deviation. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt
import numpy as np

from sddpx_tp.errors import RunFolderError
from sddpx_tp.files import atomic_write, write_json, write_text
from sddpx_tp.metrics import highest_rate_kept
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.sweep.grid import Cell, shown_value
from sddpx_tp.text import markdown_text, plot_text

RESULT_FILES = ("results.json", "results.csv", "results.md", "accuracy.png", "auc.png")
METRICS = ("auc", "auc_lowest_class", "kept_to", "seconds", "relevance_passes", "evaluations")
HEADINGS = {
    "auc": "AUC",
    "auc_lowest_class": "AUC lowest class",
    "kept_to": "kept to",
    "seconds": "seconds",
    "relevance_passes": "relevance passes",
    "evaluations": "evaluations",
}


@dataclass(frozen=True)
class Curve:
    """A finished cell's mean accuracy against filter rate (held-out, else reference), in rate order."""

    rates: list[float]
    accuracy: list[float]


def cell_row(cell: Cell, folder: Path, outcome: dict[str, Any] | None) -> tuple[dict[str, Any], Curve | None]:
    """The table row of one cell, and its accuracy curve if it finished."""
    row: dict[str, Any] = {
        "cell": cell.id,
        "model": cell.model,
        "classes": list(cell.classes),
        **{axis: shown_value(value) for axis, value in cell.grid.items()},
    }
    row.update(
        {
            "status": "pending",
            "reason": None,
            "auc_on": None,
            **dict.fromkeys(METRICS),
            "final_rate": None,
            "threads": (outcome or {}).get("threads"),
        }
    )
    run = RunDirectory(folder)
    if not run.model.is_file():
        failed = outcome is not None and outcome.get("status") == "failed"
        row["status"] = "failed" if failed else "interrupted" if run.has_checkpoint() else "pending"
        row["reason"] = outcome.get("reason") if failed and outcome else None
        return row, None
    try:
        report = run.report()
        source = "eval" if report.get("auc_eval") else "reference"
        trajectory = report["trajectory"]
        rates = [float(record["filter_rate"]) for record in trajectory]
        per_class = [record[f"{source}_accuracy"] for record in trajectory]
        aucs = report.get(f"auc_{source}") or {}
        last = trajectory[-1]
    except (RunFolderError, KeyError, TypeError, IndexError) as error:
        row.update(status="failed", reason=f"its report cannot be read ({str(error).splitlines()[0][:200]})")
        return row, None
    row.update(
        status="done",
        auc_on="held-out" if source == "eval" else "references",
        auc=aucs.get("auc"),
        auc_lowest_class=aucs.get("auc_lowest_class"),
        kept_to=highest_rate_kept(rates, per_class),
        final_rate=last["filter_rate"],
        seconds=last["seconds"],
        relevance_passes=last["relevance_passes"],
        evaluations=last["evaluations"],
    )
    order = sorted(range(len(rates)), key=lambda index: rates[index])
    curve = Curve([rates[i] for i in order], [statistics.fmean(per_class[i]) for i in order])
    return row, curve


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def group_key(row: dict[str, Any], axes: list[str]) -> tuple[str, ...]:
    """Cells that differ only by class subset: same model, same grid values."""
    return (row["model"], *(row[axis] for axis in axes))


def summarise(rows: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    """Per model and combination of grid values: each metric over the finished class subsets."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group_key(row, axes), []).append(row)
    summary = []
    for key, members in groups.items():
        done = [row for row in members if row["status"] == "done"]
        entry: dict[str, Any] = {
            "model": key[0],
            **dict(zip(axes, key[1:], strict=True)),
            "cells": len(members),
            "done": len(done),
            "failed": sum(row["status"] == "failed" for row in members),
        }
        for metric in METRICS:
            entry[metric] = _spread([float(row[metric]) for row in done if row[metric] is not None])
        summary.append(entry)
    return summary


def write_results(
    out: Path, planned: list[Cell], outcomes: dict[str, dict[str, Any]], folders: dict[str, Path]
) -> dict[str, Any]:
    """Gather every cell's row into ``out``'s results files; returns the results document."""
    axes = list(planned[0].grid) if planned else ["method"]
    rows, curves = [], {}
    for cell in planned:
        row, curve = cell_row(cell, folders[cell.id], outcomes.get(cell.id))
        rows.append(row)
        if curve is not None:
            curves[cell.id] = curve
    counts = {
        status: sum(row["status"] == status for row in rows) for status in ("done", "failed", "interrupted", "pending")
    }
    summary = summarise(rows, axes)
    document = {"sweep": str(out), "axes": axes, "counts": counts, "cells": rows, "summary": summary}
    write_json(out / "results.json", document)
    write_text(out / "results.csv", _csv(rows, axes))
    write_text(out / "results.md", render_markdown(document))
    _plot_accuracy(rows, curves, axes, out / "accuracy.png")
    _plot_auc(summary, rows, axes, out / "auc.png")
    return document


def _csv(rows: list[dict[str, Any]], axes: list[str]) -> str:
    columns = ["cell", "model", "classes", *axes, "status", "reason", "auc_on", *METRICS, "final_rate", "threads"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "classes": "+".join(row["classes"])})
    return buffer.getvalue()


def _number(value: Any, metric: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if metric in ("seconds", "relevance_passes", "evaluations") else f"{value:.3f}"


def _cell_text(text: Any) -> str:
    """A name in a table cell as written (sddpx_tp.text); the figures, which are ours, stay readable."""
    return markdown_text(text)


def render_markdown(document: dict[str, Any]) -> str:
    axes, counts = document["axes"], document["counts"]
    lines = [
        "# Sweep results",
        "",
        ", ".join(f"{count} {status}" for status, count in counts.items()) + " cells.",
        "",
        "## Per method",
        "",
        "Over the class subsets: mean (min-max, standard deviation). AUCs are of the mean and "
        "of the lowest class accuracy against filter rate; kept to: the highest filter rate keeping 95 % of the "
        "unpruned mean accuracy and 90 % of each class's.",
        "",
    ]
    header = ["model", *axes, "cells", *(HEADINGS[metric] for metric in METRICS)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in document["summary"]:
        cells = f"{entry['done']}" + (f" ({entry['failed']} failed)" if entry["failed"] else "")
        values = []
        for metric in METRICS:
            spread = entry[metric]
            values.append(
                "n/a"
                if spread is None
                else f"{_number(spread['mean'], metric)} ({_number(spread['min'], metric)}"
                f"-{_number(spread['max'], metric)}, {_number(spread['std'], metric)})"
            )
        lines.append(
            "| "
            + " | ".join([*(_cell_text(item) for item in [entry["model"], *(entry[a] for a in axes)]), cells, *values])
            + " |"
        )
    header = ["cell", "classes", "status", *(HEADINGS[metric] for metric in METRICS)]
    lines += ["", "## Cells", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in document["cells"]:
        status = row["status"] + (f": {row['reason']}" if row["reason"] else "")
        status += " (on references)" if row["auc_on"] == "references" else ""
        names = [_cell_text(item) for item in (row["cell"], ", ".join(row["classes"]), status)]
        lines.append("| " + " | ".join([*names, *(_number(row[metric], metric) for metric in METRICS)]) + " |")
    return "\n".join(
        [*lines, "", "![accuracy against filter rate](accuracy.png)", "", "![AUC per method](auc.png)", ""]
    )


def _label(key: tuple[str, ...], axes: list[str], models: int) -> str:
    parts = ([key[0]] if models > 1 else []) + [
        value if axis == "method" else f"{axis.rpartition('.')[2]} {value}"
        for axis, value in zip(axes, key[1:], strict=True)
    ]
    return plot_text(", ".join(parts))


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=110, format="png"))
    plt.close(figure)


def _plot_accuracy(rows: list[dict[str, Any]], curves: dict[str, Curve], axes: list[str], path: Path) -> None:
    """Mean accuracy against filter rate per method: the mean over cells, and their min-max band."""
    groups: dict[tuple[str, ...], list[Curve]] = {}
    for row in rows:
        if row["cell"] in curves:
            groups.setdefault(group_key(row, axes), []).append(curves[row["cell"]])
    models = len({row["model"] for row in rows})
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for key, members in groups.items():
        end = min(curve.rates[-1] for curve in members)  # where every cell of the group has a point
        grid = np.linspace(members[0].rates[0], end, 60) if end > members[0].rates[0] else np.array([end])
        values = np.array([np.interp(grid, curve.rates, curve.accuracy) for curve in members])
        line = axis.plot(grid, values.mean(axis=0), label=f"{_label(key, axes, models)} ({len(members)})")[0]
        axis.fill_between(grid, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.15)
    axis.set_xlabel("filter rate (removed filters / original filters)")
    axis.set_ylabel("mean class accuracy (held-out)")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    if groups:
        axis.legend(loc="lower left", fontsize=8)
    axis.set_title("mean over class subsets, band: min-max")
    _save(figure, path)


def _plot_auc(summary: list[dict[str, Any]], rows: list[dict[str, Any]], axes: list[str], path: Path) -> None:
    """AUC per method: each class subset's, and the mean with its min-max range."""
    models = len({row["model"] for row in rows})
    figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(summary) + 2), 4.2))
    labels = []
    for position, entry in enumerate(summary):
        key = (entry["model"], *(entry[a] for a in axes))
        labels.append(_label(key, axes, models))
        values = [row["auc"] for row in rows if group_key(row, axes) == key and row["auc"] is not None]
        if not values:
            continue
        axis.scatter([position] * len(values), values, color="tab:gray", s=14, zorder=2)
        mean = statistics.fmean(values)
        axis.errorbar(
            [position],
            [mean],
            yerr=[[mean - min(values)], [max(values) - mean]],
            fmt="o",
            color="tab:blue",
            capsize=5,
            zorder=3,
        )
    axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("AUC of mean accuracy")
    axis.grid(alpha=0.3, axis="y")
    axis.set_title("AUC per method: class subsets (grey), mean and min-max (blue)")
    _save(figure, path)
