"""Plot a methods benchmark: held-out accuracy against filter rate, mean over task seeds with min-max shading.

    python benchmarks/plot_methods.py results/fashion_methods.json --out results/fashion_methods.png

Left: mean accuracy over the chosen classes; right: the lowest class (paper Eq. 4).
Trajectories have different rates (SD-DPX takes smaller steps), so each is
interpolated onto a common grid before averaging.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from plotting import plt, save_figure


def _curves(runs: list[dict], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean_curves, lowest_curves = [], []
    for run in runs:
        rates = [record["filter_rate"] for record in run["trajectory"]]
        accuracy = [record["eval_accuracy"] for record in run["trajectory"]]
        mean_curves.append(np.interp(grid, rates, [sum(a) / len(a) for a in accuracy]))
        lowest_curves.append(np.interp(grid, rates, [min(a) for a in accuracy]))
    return np.array(mean_curves), np.array(lowest_curves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="ResNet-18 on Fashion-MNIST 2-class tasks")
    parser.add_argument("--labels", nargs="+", help="plot only these labels (default: all)")
    args = parser.parse_args()

    document = json.loads(args.results.read_text())
    by_label: dict[str, list[dict]] = {}
    for run in document["runs"]:
        if not args.labels or run["label"] in args.labels:
            by_label.setdefault(run["label"], []).append(run)
    max_rate = max(run["trajectory"][-1]["filter_rate"] for run in document["runs"])
    grid = np.linspace(0, max_rate, 91)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for label, runs in by_label.items():
        mean_curves, lowest_curves = _curves(runs, grid)
        for axis, curves in zip(axes, (mean_curves, lowest_curves), strict=True):
            line = axis.plot(grid, curves.mean(axis=0), label=f"{label} ({len(runs)} tasks)")[0]
            axis.fill_between(grid, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.15)
    axes[0].set_ylabel("held-out accuracy")
    axes[0].set_title("mean over the classes")
    axes[1].set_title("lowest class")
    for axis in axes:
        axis.set_xlabel("filter rate")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    axes[0].legend(loc="lower left", fontsize=8)
    save_figure(figure, args.out, f"{args.title}: mean over task seeds, min-max shaded")


if __name__ == "__main__":
    main()
