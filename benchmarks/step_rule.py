"""Which step to recommend: the data to judge step rules on images nobody used (issue 31, part 1).

    python benchmarks/step_rule.py --seeds 0 1 2 3 4 --out results/step_rule_tune.json
    python benchmarks/step_rule.py --seeds 5 6 7 8 9 --out results/step_rule.json
    python benchmarks/step_rule.py --source fashion-resnet18-8 --seeds 0 1 2 3 4 \
        --out results/step_rule_transfer_tune.json
    python benchmarks/step_rule.py --source mobilenet_v2 --methods default --seeds 0 1 2 3 4 5 6 7 8 9 \
        --out results/step_rule_mobilenet_v2.json

Fashion-MNIST 2-class tasks, 30 references per class, pruned to filter rate 0.9 by DPX and by
the CLI's default (SD-DPX, round_to 16, lstsq). Sources: ``resnet18``, the 10-class ResNet-18
(as benchmarks/fashion_methods.py; DPX with the papers' semantics); ``fashion-resnet18-8``, the
8-class ResNet-18 that never saw T-shirt/top and Shirt, with a head fitted for them (as
benchmarks/transfer.py: accuracy near 0.77, where a step's noise matters). The test split's
1,000 images a class are split by the task seed into 200 *judging* images (the run's ``--eval``:
what a step rule sees) and 800 *check* images that nothing sees. Every accepted step's model is
kept and evaluated on both; per step the file stores the filter rate, the MACs ratio, per-class
accuracy on each split and, for the judging images, which images each step got right (a paired
comparison needs them). The rules themselves are compared offline
(``benchmarks/step_rule_report.py``), so one run serves every rule and every setting of one.
Resumable, and stamped like every benchmark record (results_file.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from fashion_methods import cache_path, task_classes
from results_file import read_results, write_results
from transfer import SOURCES, VARIANTS

from sddpx_tp.api import prune
from sddpx_tp.data.fashion import CLASS_NAMES, cached_source_model, class_subset, load_split, to_model_input
from sddpx_tp.metrics import inference_batch, inference_batches
from sddpx_tp.pruning.config import PruneConfig

JUDGING_PER_CLASS = 200
METHODS: dict[str, dict[str, PruneConfig]] = {
    "resnet18": {
        "dpx": PruneConfig.paper(method="dpx", max_rate=0.9),
        "default": PruneConfig.recommended(max_rate=0.9),
        # Issue 31, part 2: the same two with steps and ranking in MACs (max_rate 0.9 of the MACs).
        "dpx, cost macs": PruneConfig.paper(method="dpx", max_rate=0.9, cost="macs"),
        "default, cost macs": PruneConfig.recommended(max_rate=0.9, cost="macs"),
    },
    "fashion-resnet18-8": {
        "dpx": PruneConfig.recommended(head="fit", max_rate=0.9, **VARIANTS["dpx"]),
        "default": PruneConfig.recommended(head="fit", max_rate=0.9, **VARIANTS["sd-dpx + lstsq (the default)"]),
    },
    # The 10-class MobileNetV2 at the command line's default (cap 0.97): accuracy, not the cap, ends its runs.
    "mobilenet_v2": {"default": PruneConfig.recommended()},
}
TaskImages = tuple[torch.Tensor, torch.Tensor]


FASHION_SOURCES = ("resnet18", "mobilenet_v2")  # 10-class Fashion-MNIST sources at 32 px, trained once and cached


def source_model(source: str) -> torch.nn.Module:
    if source in FASHION_SOURCES:
        return cached_source_model(cache_path(source), architecture=source)
    return SOURCES[source].load()


def task_of(source: str, seed: int) -> tuple[list[int], Any]:
    """The task's classes and how its images become model input."""
    if source in FASHION_SOURCES:
        return task_classes(seed), to_model_input
    return SOURCES[source].task(seed), SOURCES[source].prepare


def split_test_images(classes: list[int], seed: int, prepare: Any) -> tuple[TaskImages, TaskImages]:
    """(judging, check): the task's test images, each class's shuffled by ``seed`` and cut at 200."""
    images, labels = load_split("test")
    every = class_subset(images, labels, classes, None, seed)  # all of each class, shuffled by the seed
    judging, check = [], []
    for cls in classes:
        members = (every[1] == cls).nonzero().flatten()
        judging.append(members[:JUDGING_PER_CLASS])
        check.append(members[JUDGING_PER_CLASS:])
    judged, checked = ((prepare(every[0][torch.cat(part)]), every[1][torch.cat(part)]) for part in (judging, check))
    return judged, checked


@torch.no_grad()
def correct(model: torch.nn.Module, images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Which images the model (outputs: the task's classes, in order) gets right."""
    model.eval()
    predictions = torch.cat(
        [model(batch).argmax(1) for batch in inference_batches(images, inference_batch(images), torch.device("cpu"))]
    )
    return predictions == positions


def per_class(hits: torch.Tensor, positions: torch.Tensor, count: int) -> list[float]:
    return [hits[positions == position].float().mean().item() for position in range(count)]


def run_task(model: torch.nn.Module, source: str, seed: int, method: str) -> dict[str, Any]:
    classes, prepare = task_of(source, seed)
    train_images, train_labels = load_split("train")
    references = class_subset(train_images, train_labels, classes, 30, seed)
    judging, check = split_test_images(classes, seed, prepare)
    result = prune(
        model,
        (prepare(references[0]), references[1]),
        classes,
        METHODS[source][method].replace(seed=seed),
        evaluation=judging,
        keep_models=True,
        progress=False,
    )
    position = {cls: index for index, cls in enumerate(classes)}
    judging_positions = torch.tensor([position[int(label)] for label in judging[1]])
    check_positions = torch.tensor([position[int(label)] for label in check[1]])
    steps = []
    for record, step_model in zip(result.trajectory, result.models, strict=True):
        judged = correct(step_model, judging[0], judging_positions)
        checked = correct(step_model, check[0], check_positions)
        steps.append(
            {
                "filter_rate": record.filter_rate,
                "macs_ratio": record.macs_ratio,
                "params_ratio": record.params_ratio,
                "judging_accuracy": per_class(judged, judging_positions, len(classes)),
                "check_accuracy": per_class(checked, check_positions, len(classes)),
                "judging_correct": "".join("1" if hit else "0" for hit in judged.tolist()),
            }
        )
    # The session's own evaluation is the judging images: the two must agree (a check on this script).
    for step, record in zip(steps, result.trajectory, strict=True):
        assert record.eval_accuracy is not None
        assert max(abs(a - b) for a, b in zip(step["judging_accuracy"], record.eval_accuracy, strict=True)) < 1e-9
    return {
        "seed": seed,
        "source": source,
        "method": method,
        "classes": classes,
        "class_names": [CLASS_NAMES[index] for index in classes],
        "judging_labels": judging_positions.tolist(),
        "check_counts": [int((check_positions == position).sum()) for position in range(len(classes))],
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--source", choices=sorted(METHODS), default="resnet18")
    parser.add_argument("--methods", nargs="+", default=["default", "dpx"], help="keys of METHODS[source]")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    unknown = sorted(set(args.methods) - set(METHODS[args.source]))
    if unknown:
        parser.error(f"--source {args.source} has no methods {unknown}; choose from {sorted(METHODS[args.source])}")
    torch.set_num_threads(args.threads)
    model = source_model(args.source)
    document = read_results(args.out)
    done = {(run["method"], run["seed"]) for run in document["runs"]}
    for seed in args.seeds:
        for method in args.methods:
            if (method, seed) in done:
                continue
            run = run_task(model, args.source, seed, method)
            document["runs"].append(run)
            write_results(args.out, document, source=args.source, judging_per_class=JUDGING_PER_CLASS)
            last = run["steps"][-1]
            print(f"seed {seed} {method:>8}: {len(run['steps'])} steps to {last['filter_rate']:.2f}", flush=True)


if __name__ == "__main__":
    main()
