"""Issue 7: progressive retraining vs SD-DPX vs SD-DPX + short fine-tuning, with some training data.

    python benchmarks/fashion_retraining.py --seeds 5 6 7 8 9 --out results/retraining.json
    python benchmarks/plot_retraining.py results/retraining.json --out results/retraining.png

Fashion-MNIST 2-class tasks (same pairs and source ResNet-18 as benchmarks/fashion_methods.py),
30 reference images per class, 30 or 300 training images per class (the references are
among them, as they would be for a user), held-out accuracy on all test images of the pair.
At each target filter rate: progressive retraining run to that rate; SD-DPX run once to
0.9 (no training, so one run serves both data sizes), its model at the rate; and that
model fine-tuned for as many passes over the training images as progressive retraining
made in total (its layers x epochs per layer), so both retrain on equal terms.
Resumable: (seed, training size) pairs already in the output file are skipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from fashion_methods import cache_path, config_for, task_classes
from results_file import read_results, write_results

from sddpx_tp.api import prune
from sddpx_tp.data.fashion import CLASS_NAMES, cached_source_model, class_subset, load_split, to_model_input
from sddpx_tp.metrics import per_class_accuracy
from sddpx_tp.pruning.training import TrainingConfig, train

SD_DPX = {"round_to": 16}  # the CLI's default engine settings


def _accuracy(model: torch.nn.Module, held_out: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
    return per_class_accuracy(model, *held_out, 2)


def run_seed(model: torch.nn.Module, seed: int, per_class: int, rates: list[float], epochs: int) -> dict[str, Any]:
    classes = task_classes(seed)
    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("test")
    references = class_subset(train_images, train_labels, classes, 30, seed)
    training = class_subset(train_images, train_labels, classes, per_class, seed)
    held_out = class_subset(test_images, test_labels, classes, None, seed)
    as_input = {
        "references": (to_model_input(references[0]), references[1]),
        "training": (to_model_input(training[0]), training[1]),
    }
    positions = (held_out[1] == classes[1]).long()  # the restricted model's output order
    held_out_input = (to_model_input(held_out[0]), positions)
    config = TrainingConfig(epochs=epochs)
    rows: list[dict[str, Any]] = []

    started = time.perf_counter()
    sd_dpx = prune(model, as_input["references"], classes,
                   config_for("sd-dpx", SD_DPX, max_rate=max(rates), seed=seed), progress=False,
                   keep_models=True)  # fmt: skip
    sd_dpx_seconds = time.perf_counter() - started
    for rate in rates:
        index = min(range(len(sd_dpx.trajectory)), key=lambda i: abs(sd_dpx.trajectory[i].filter_rate - rate))
        record = sd_dpx.trajectory[index]
        rows.append({"method": "sd-dpx", "target_rate": rate, "filter_rate": record.filter_rate,
                     "accuracy": _accuracy(sd_dpx.models[index], held_out_input),
                     "seconds": record.seconds})  # fmt: skip

        started = time.perf_counter()
        progressive = prune(model, as_input["references"], classes,
                            config_for("progressive", SD_DPX, max_rate=rate, seed=seed, retraining=config),
                            training=as_input["training"], progress=False)  # fmt: skip
        seconds = time.perf_counter() - started
        layers = sum(1 for record in progressive.trajectory if record.phase == "retrained")
        rows.append({"method": "progressive", "target_rate": rate,
                     "filter_rate": progressive.trajectory[-1].filter_rate,
                     "accuracy": _accuracy(progressive.model, held_out_input), "seconds": seconds,
                     "epochs": layers * epochs})  # fmt: skip

        finetuned = copy.deepcopy(sd_dpx.models[index])
        positions_train = (as_input["training"][1] == classes[1]).long()
        started = time.perf_counter()
        train(finetuned, as_input["training"][0], positions_train, config, epochs=layers * epochs, seed=seed,
              progress=False)  # fmt: skip
        rows.append({"method": "sd-dpx + fine-tuning", "target_rate": rate, "filter_rate": record.filter_rate,
                     "accuracy": _accuracy(finetuned, held_out_input),
                     "seconds": record.seconds + time.perf_counter() - started, "epochs": layers * epochs})  # fmt: skip
    unpruned = sd_dpx.models[0]
    return {
        "seed": seed,
        "classes": classes,
        "class_names": [CLASS_NAMES[index] for index in classes],
        "training_per_class": per_class,
        "unpruned_accuracy": _accuracy(unpruned, held_out_input),
        "sd_dpx_run_seconds": sd_dpx_seconds,
        "rows": rows,
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table: dict[tuple[int, str, float], list[dict[str, Any]]] = {}
    for run in runs:
        for row in run["rows"]:
            table.setdefault((run["training_per_class"], row["method"], row["target_rate"]), []).append(row)
    return [
        {
            "training_per_class": size,
            "method": method,
            "target_rate": rate,
            "tasks": len(rows),
            "filter_rate_mean": statistics.fmean(row["filter_rate"] for row in rows),
            "accuracy_mean": statistics.fmean(statistics.fmean(row["accuracy"]) for row in rows),
            "lowest_class_mean": statistics.fmean(min(row["accuracy"]) for row in rows),
            "seconds_median": statistics.median(row["seconds"] for row in rows),
        }
        for (size, method, rate), rows in sorted(table.items())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    parser.add_argument("--training-per-class", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("results/retraining.json"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = cached_source_model(cache_path("resnet18"), architecture="resnet18")
    document: dict[str, Any] = read_results(args.out)
    done = {(run["seed"], run["training_per_class"]) for run in document["runs"]}
    for seed in args.seeds:
        for per_class in args.training_per_class:
            if (seed, per_class) in done:
                continue
            # Equal passes over the data for both sizes' progressive runs: 10 epochs per layer at 30 images
            # per class, 1 at 300.
            epochs = max(1, round(300 / per_class))
            run = run_seed(model, seed, per_class, args.rates, epochs)
            document["runs"].append(run)
            document["summary"] = summarise(document["runs"])
            write_results(args.out, document)
            for row in run["rows"]:
                print(f"seed {seed} n={per_class} {row['method']:>22} rate {row['filter_rate']:.2f}: "
                      f"accuracy {statistics.fmean(row['accuracy']):.3f} lowest {min(row['accuracy']):.3f} "
                      f"{row['seconds']:.0f}s", flush=True)  # fmt: skip
    print(json.dumps(document["summary"], indent=1))


if __name__ == "__main__":
    main()
