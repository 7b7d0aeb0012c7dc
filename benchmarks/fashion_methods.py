"""PX vs DPX vs SD-DPX on real Fashion-MNIST 2-class tasks, held-out accuracy against filter rate.

    python benchmarks/fashion_methods.py --seeds 0 1 2 3 4 --sd-dpx-k 3 10 30 --out results/fashion_tune.json
    python benchmarks/fashion_methods.py --seeds 5 6 7 8 9 --out results/fashion_methods.json

Source model: torchvision resnet18 trained on all 10 classes at 32 px (cached in
results/cache/ after the first run, about 6 minutes on 2 cores). Each task seed
draws 2 classes and 30 reference images per class from the training split;
accuracy is measured on all held-out test images of those classes (1000 each).
Seeds 0-4 choose SD-DPX's settings; seeds 5-9 report. Resumable: runs already in
the output file are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from results_file import read_results, write_results

from sddpx_tp.api import prune
from sddpx_tp.data.fashion import CLASS_NAMES, cached_source_model, class_subset, load_split, to_model_input
from sddpx_tp.metrics import auc_lowest_class, highest_rate_kept, normalized_auc
from sddpx_tp.pruning.config import PruneConfig


def cache_path(architecture: str) -> Path:
    return Path(f"results/cache/fashion_{architecture}_32px.pt")


def task_classes(seed: int, count: int = 2) -> list[int]:
    generator = torch.Generator().manual_seed(1000 + seed)
    return sorted(torch.randperm(10, generator=generator)[:count].tolist())


def config_for(method: str, options: dict[str, Any], **fields: Any) -> PruneConfig:
    """The configuration a results file's ``method`` and ``options`` describe.

    Options are recorded as the API's keyword arguments of the time, on top of the
    papers' semantics (the API default then): ``compensate`` and ``adaptive_compensation``
    are today's ``compensation="always"`` and ``"adaptive"``.
    """
    values = {key: value for key, value in options.items() if key not in ("compensate", "adaptive_compensation")}
    if options.get("adaptive_compensation"):
        values["compensation"] = "adaptive"
    elif options.get("compensate"):
        values["compensation"] = "always"
    return PruneConfig.paper(method=method, **values, **fields)


def run_task(
    model: torch.nn.Module,
    seed: int,
    method: str,
    options: dict[str, Any],
    per_class: int,
    max_rate: float,
    class_count: int = 2,
) -> dict[str, Any]:
    classes = task_classes(seed, class_count)
    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("test")
    references = class_subset(train_images, train_labels, classes, per_class, seed)
    held_out = class_subset(test_images, test_labels, classes, None, seed)
    result = prune(
        model,
        (to_model_input(references[0]), references[1]),
        classes,
        config_for(method, options, max_rate=max_rate, seed=seed),
        evaluation=(to_model_input(held_out[0]), held_out[1]),
        progress=False,
    )
    rates = [record.filter_rate for record in result.trajectory]
    per_class_accuracy = [record.eval_accuracy for record in result.trajectory]
    accuracy = [statistics.fmean(values) for values in per_class_accuracy]  # type: ignore[arg-type]
    last = result.trajectory[-1]
    return {
        "seed": seed,
        "classes": classes,
        "class_names": [CLASS_NAMES[index] for index in classes],
        "method": method,
        "options": options,
        "auc": normalized_auc(rates, accuracy),
        "auc_lowest_class": auc_lowest_class(rates, per_class_accuracy),  # type: ignore[arg-type]
        "highest_rate_kept": highest_rate_kept(rates, per_class_accuracy),  # type: ignore[arg-type]
        "seconds": last.seconds,
        "method_seconds": last.seconds - last.evaluation_seconds,  # without measuring the held-out images
        "relevance_passes": last.relevance_passes,
        "evaluations": last.evaluations,
        "trajectory": [record.to_dict() for record in result.trajectory],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_label.setdefault(run["label"], []).append(run)
    return {
        label: {
            "tasks": len(group),
            "auc_mean": statistics.fmean(run["auc"] for run in group),
            "auc_lowest_class_mean": statistics.fmean(run["auc_lowest_class"] for run in group),
            "seconds_mean": statistics.fmean(run["seconds"] for run in group),
            "relevance_passes_mean": statistics.fmean(run["relevance_passes"] for run in group),
            "evaluations_mean": statistics.fmean(run["evaluations"] for run in group),
        }
        for label, group in by_label.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    parser.add_argument("--methods", nargs="+", default=["px", "dpx", "sd-dpx"])
    parser.add_argument("--sd-dpx-k", type=int, nargs="+", default=[10], help="K values to run SD-DPX with")
    parser.add_argument("--min-step", type=float, default=0.0125)
    parser.add_argument("--round-to", type=int, default=1, help="keep group widths multiples of this")
    parser.add_argument("--classes", type=int, default=2, help="classes per task")
    parser.add_argument("--architecture", choices=["resnet18", "mobilenet_v2"], default="resnet18")
    parser.add_argument("--ablation", action="store_true", help="SD-DPX with only the change of rate, too")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--max-rate", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=Path("results/fashion_methods.json"))
    args = parser.parse_args()

    model = cached_source_model(cache_path(args.architecture), architecture=args.architecture)
    document: dict[str, Any] = read_results(args.out)
    done = {(run["label"], run["seed"]) for run in document["runs"]}
    plan = []
    aligned = {} if args.round_to == 1 else {"round_to": args.round_to}
    suffix = "" if args.round_to == 1 else f" round_to={args.round_to}"
    for method in args.methods:
        if method == "sd-dpx" and args.ablation:
            rate_only = {"min_step": args.min_step, "order_change": False, **aligned}
            plan.append((f"dpx + rate change{suffix}", method, rate_only))
        if method == "sd-dpx":
            for k in args.sd_dpx_k:
                plan.append(
                    (f"sd-dpx K={k}{suffix}", method, {"max_excluded": k, "min_step": args.min_step, **aligned})
                )
        else:
            plan.append((method + suffix, method, aligned))
    for seed in args.seeds:
        for label, method, options in plan:
            if (label, seed) in done:
                continue
            run = run_task(model, seed, method, options, args.per_class, args.max_rate, args.classes)
            run["label"] = label
            document["runs"].append(run)
            document["summary"] = summarise(document["runs"])
            write_results(args.out, document)
            print(
                f"seed {seed} {label:>12}: AUC {run['auc']:.3f}  AUC lowest {run['auc_lowest_class']:.3f}  "
                f"{run['seconds']:.0f}s  passes {run['relevance_passes']}  evals {run['evaluations']}",
                flush=True,
            )
    print(json.dumps(document["summary"], indent=1))


if __name__ == "__main__":
    main()
