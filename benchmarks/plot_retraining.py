"""Plot issue 7's benchmark: held-out accuracy at each filter rate, one panel per training-set size.

    python benchmarks/plot_retraining.py results/retraining.json --out results/retraining.png

Solid: mean accuracy over the two classes; dashed: the lowest class; both averaged over task seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plotting import plt, save_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    document = json.loads(args.results.read_text())
    summary = document["summary"]
    sizes = sorted({row["training_per_class"] for row in summary})
    figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), sharey=True, squeeze=False)
    for axis, size in zip(axes[0], sizes, strict=True):
        methods = sorted({row["method"] for row in summary if row["training_per_class"] == size})
        for method in methods:
            rows = sorted((r for r in summary if r["training_per_class"] == size and r["method"] == method),
                          key=lambda r: r["target_rate"])  # fmt: skip
            rates = [row["filter_rate_mean"] for row in rows]
            line = axis.plot(rates, [row["accuracy_mean"] for row in rows], marker="o", label=method)[0]
            axis.plot(rates, [row["lowest_class_mean"] for row in rows], marker="v", linestyle="--",
                      color=line.get_color())  # fmt: skip
        unpruned = [sum(run["unpruned_accuracy"]) / 2 for run in document["runs"] if run["training_per_class"] == size]
        axis.axhline(sum(unpruned) / len(unpruned), color="grey", linestyle=":", label="unpruned")
        tasks = min(row["tasks"] for row in summary if row["training_per_class"] == size)
        axis.set_title(f"{size} training images per class ({tasks} tasks)")
        axis.set_xlabel("filter rate")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out accuracy (dashed: lowest class)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    save_figure(figure, args.out, "ResNet-18, Fashion-MNIST 2-class tasks: retraining")


if __name__ == "__main__":
    main()
