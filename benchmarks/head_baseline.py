"""The head `--head fit` fits, against a plain logistic regression, on held-out images of new classes.

    python benchmarks/head_baseline.py --seeds 0 1 2 3 4 --out results/head_baseline_tune.json
    python benchmarks/head_baseline.py --seeds 5 6 7 8 9 --out results/head_baseline.json

On the unpruned backbones of benchmarks/transfer.py (both sources, the same task
images): held-out per-class accuracy of ``fit_head`` (L2 strength by cross-validated
log-loss over a grid), and of scikit-learn's ``LogisticRegression()`` with its
defaults (C=1, raw features) as the plain baseline. No pruning: this isolates the
head. Seeds 0-4 chose the grid (see sddpx_tp/pruning/head.py); seeds 5-9 report.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from results_file import write_results
from transfer import SOURCES, LabelledImages, plain_logistic_accuracy, task_images, unpruned_features

from sddpx_tp.pruning.head import fit_head


def head_accuracy(features: LabelledImages, held_out: LabelledImages, seed: int) -> tuple[list[float], float]:
    """Held-out per-class accuracy of the fitted head (the library's default grid), and the strength chosen."""
    classes = sorted(set(features[1].tolist()))
    positions = torch.tensor([classes.index(label) for label in features[1].tolist()])
    fit = fit_head(features[0], positions, len(classes), seed=seed)
    predicted = fit.head.logits(held_out[0]).argmax(1)
    truth = torch.tensor([classes.index(label) for label in held_out[1].tolist()])
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
            features, held_out = unpruned_features(model, *task_images(source, seed, args.per_class, args.held_out))
            accuracy, strength = head_accuracy(features, held_out, seed)
            run: dict[str, Any] = {
                "source": name,
                "seed": seed,
                "classes": source.task(seed),
                "plain": plain_logistic_accuracy(features, held_out, source.task(seed)),
                "default": {"accuracy": accuracy, "strength": strength},
            }
            document["runs"].append(run)
            print(f"{name} seed {seed}: plain {statistics.fmean(run['plain']):.3f}  fitted head "
                  f"{statistics.fmean(accuracy):.3f} (strength {strength:g})", flush=True)  # fmt: skip
    write_results(args.out, document, held_out_per_class=args.held_out)


if __name__ == "__main__":
    main()
