"""A run's accuracy plot: per-class accuracy against filter rate, and against what the pruning bought.

The left panel is against filter rate (the papers' axis). The right one is against speed: the measured
speedup when the run measured it (``--target-speedup``), else the speedup its latency table predicts
(``--cost latency``), else how many times fewer MACs (issue 31: the accuracy curves against filters, MACs or
latency). Held-out curves are solid, reference curves dotted; each class keeps one colour and its own
marker, so curves that coincide stay visible. The legend sits outside the axes (many classes would cover
the curves) and the layout is matplotlib's constrained one (tight_layout warned on wide legends).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from sddpx_tp.files import atomic_write
from sddpx_tp.pruning.session import StepRecord

MARKERS = "osD^v<>phX*"


def speed_axis(trajectory: Sequence[StepRecord]) -> tuple[list[float], str]:
    """The right panel's x values and label: measured speedup, else predicted, else MACs reduction."""
    if all(record.speedup is not None for record in trajectory):
        return [float(record.speedup or 1.0) for record in trajectory], "measured speedup (ONNX Runtime CPU, batch 1)"
    if all(record.predicted_ms for record in trajectory):
        first = float(trajectory[0].predicted_ms or 1.0)
        return [
            first / float(record.predicted_ms or first) for record in trajectory
        ], "speedup predicted by the latency table"
    return [1 / record.macs_ratio for record in trajectory], "x fewer MACs than unpruned"


def plot_accuracy(trajectory: list[StepRecord], class_labels: list[str], path: Path) -> None:
    """Per-class accuracy against filter rate and against speed: held-out solid (when present), references dotted."""
    rates = [record.filter_rate for record in trajectory]
    speeds, speed_label = speed_axis(trajectory)
    held_out = trajectory[0].eval_accuracy is not None
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True, layout="constrained")
    marks = max(1, len(trajectory) // 8)  # a marker every few steps: enough to tell classes apart
    for index, label in enumerate(class_labels):
        colour = f"C{index % 10}"
        marker = MARKERS[index % len(MARKERS)]
        for panel, (axis, xs) in enumerate(zip(axes, (rates, speeds), strict=True)):
            named = panel == 0  # one legend entry a class
            references = [record.reference_accuracy[index] for record in trajectory]
            axis.plot(xs, references, ":", color=colour, alpha=0.7, marker=marker, markevery=(index % marks, marks),
                      markersize=4, label=f"{label} (references)" if named and not held_out else None)  # fmt: skip
            if held_out:
                values = [record.eval_accuracy[index] for record in trajectory]  # type: ignore[index]
                axis.plot(xs, values, "-", color=colour, marker=marker, markevery=(index % marks, marks),
                          markersize=5, label=label if named else None)  # fmt: skip
    axes[0].set_xlabel("filter rate (removed filters / original filters)")
    axes[0].set_ylabel("per-class accuracy")
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel(speed_label)
    if max(speeds) > 4:
        axes[1].set_xscale("log")
        ticks = [tick for tick in (1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 200) if tick <= max(speeds) * 1.05]
        axes[1].xaxis.set_major_locator(FixedLocator(ticks))
        axes[1].xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
        axes[1].xaxis.set_minor_formatter(NullFormatter())
    for axis in axes:
        axis.grid(alpha=0.3)
    columns = 1 if len(class_labels) <= 12 else 2
    figure.legend(loc="outside right upper", fontsize=8, ncols=columns)
    figure.suptitle("solid: held-out images, dotted: reference images" if held_out else "reference images", fontsize=9)
    atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=120, format="png"))
    plt.close(figure)
