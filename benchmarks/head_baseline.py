"""The head `--head fit` fits, against a plain logistic regression, on held-out images of new classes.

    python benchmarks/head_baseline.py --seeds 0 1 2 3 4 --out results/head_baseline_tune.json
    python benchmarks/head_baseline.py --seeds 5 6 7 8 9 --out results/head_baseline.json

On the unpruned backbones of benchmarks/transfer.py (both sources, the same task
images): held-out per-class accuracy of ``fit_head`` (L2 strength by cross-validated
log-loss over a grid), and of scikit-learn's ``LogisticRegression()`` with its
defaults (C=1, raw features) as the plain baseline. No pruning: this isolates the
head. Seeds 0-4 chose the grid (see sddpx_tp/head.py); seeds 5-9 report.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from results_file import write_results
from transfer import SOURCES, plain_logistic_accuracy, task_images

from sddpx_tp.head import fit_head, pooled_features

# Candidate grids of L2 strengths (None: the library's default, STRENGTH_MULTIPLES / n on raw features).
GRIDS: dict[str, tuple[float, ...] | None] = {"default": None}


def head_accuracy(features: torch.Tensor, labels: torch.Tensor, held_out: torch.Tensor, held_out_labels: torch.Tensor,
                  grid: tuple[float, ...] | None, seed: int) -> tuple[list[float], float]:  # fmt: skip
    """Held-out per-class accuracy of the fitted head, and the strength cross-validation chose."""
    classes = sorted(set(labels.tolist()))
    positions = torch.tensor([classes.index(label) for label in labels.tolist()])
    fit = fit_head(features, positions, len(classes), seed=seed, strengths=grid)
    predicted = fit.head.logits(held_out).argmax(1)
    truth = torch.tensor([classes.index(label) for label in held_out_labels.tolist()])
    return [float((predicted[truth == index] == index).double().mean()) for index in range(len(classes))], fit.strength


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/head_baseline.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    document: dict[str, Any] = {"runs": []}
    for name in args.sources:
        source = SOURCES[name]
        model = source.load().eval()
        for seed in args.seeds:
            references, evaluation = task_images(source, seed, args.per_class, args.held_out)
            features, held_out = pooled_features(model, references[0]), pooled_features(model, evaluation[0])
            run: dict[str, Any] = {"source": name, "seed": seed, "classes": source.task(seed)}
            run["plain"] = plain_logistic_accuracy(model, references, evaluation, source.task(seed))
            for label, grid in GRIDS.items():
                accuracy, strength = head_accuracy(features, references[1], held_out, evaluation[1], grid, seed)
                run[label] = {"accuracy": accuracy, "strength": strength}
            document["runs"].append(run)
            fitted = "  ".join(f"{label} {statistics.fmean(run[label]['accuracy']):.3f} "
                               f"(strength {run[label]['strength']:g})" for label in GRIDS)  # fmt: skip
            print(f"{name} seed {seed}: plain {statistics.fmean(run['plain']):.3f}  {fitted}", flush=True)
    write_results(args.out, document, held_out_per_class=args.held_out)


if __name__ == "__main__":
    main()
