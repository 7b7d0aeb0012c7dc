"""Summary plots of the study: AUC and wall time against reference images per class, AUC against classes.

    python benchmarks/plot_study.py --out results/study/summary.png

Reads results/fashion_methods_round16.json (30 references, 2 classes) and
results/study/refs_*.json and classes_*.json; missing files are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plotting import plt, save_figure

MAIN = Path("results/fashion_methods_round16.json")
STUDY = Path("results/study")


def _summary(path: Path) -> dict[str, dict[str, float]]:
    return dict(json.loads(path.read_text())["summary"]) if path.is_file() else {}


def _series(files: dict[int, Path]) -> dict[str, list[tuple[int, dict[str, float]]]]:
    series: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for x, path in sorted(files.items()):
        for label, values in _summary(path).items():
            if values["tasks"] >= 5:  # only complete experiments
                series.setdefault(label.replace(" round_to=16", ""), []).append((x, values))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STUDY / "summary.png")
    args = parser.parse_args()
    references = _series({30: MAIN, **{n: STUDY / f"refs_{n}.json" for n in (5, 10, 100)}})
    classes = _series({2: MAIN, **{n: STUDY / f"classes_{n}.json" for n in (3, 5)}})
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for label, points in references.items():
        xs = [x for x, _ in points]
        axes[0].plot(xs, [v["auc_lowest_class_mean"] for _, v in points], "o-", label=label)
        axes[1].plot(xs, [v["seconds_mean"] for _, v in points], "o-", label=label)
    for label, points in classes.items():
        axes[2].plot([x for x, _ in points], [v["auc_lowest_class_mean"] for _, v in points], "o-", label=label)
    axes[0].set(xscale="log", xlabel="reference images per class", ylabel="AUC, lowest class", title="references")
    axes[1].set(xscale="log", xlabel="reference images per class", ylabel="wall seconds per task", title="cost")
    axes[2].set(xlabel="classes per task", ylabel="AUC, lowest class", title="classes (30 references each)")
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save_figure(figure, args.out, "ResNet-18 on Fashion-MNIST, round_to 16, task seeds 5-9 (means)")


if __name__ == "__main__":
    main()
