"""Ship the right model: unpruned fp32 against pruned fp32 and pruned int8 at filter rates 0.3/0.5/0.7 (issue 16).

    python benchmarks/deploy.py --architecture resnet18 --out results/deploy_resnet18.json
    python benchmarks/deploy.py --architecture mobilenet_v2 --out results/deploy_mobilenet_v2.json
    python benchmarks/deploy.py --out results/deploy_resnet18.json --table

Accuracy: the Fashion-MNIST source model at 32 px (the size it was trained at), pruned by the
CLI default (`PruneConfig.recommended()`) for each task seed; its accepted models nearest to each
filter rate are exported to ONNX (fp32) and quantized to int8 (ONNX Runtime static quantization:
QDQ, per-channel weights, calibrated on the task's 60 references); the per-class held-out
accuracy of both is measured through ONNX Runtime.

Speed and size: for the first task seed, the same pruned weights are exported for 224 px inputs
(the layers do not depend on the input size: both networks pool adaptively), the int8 models
calibrated on the references upsampled to 224 px, and every model is timed with the unpruned fp32
model in one interleaved run (ONNX Runtime CPU, 1 and 2 threads; batch 1 over --runs timed runs,
batch 32 over 10). The file sizes
are those of the 224 px exports. Run it alone: times are compared inside one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from fashion_methods import cache_path, task_classes
from results_file import read_results, write_results

from sddpx_tp.api import prune
from sddpx_tp.data.fashion import cached_source_model, class_subset, load_split, to_model_input
from sddpx_tp.environment import environment
from sddpx_tp.export.bench import BenchSettings, bench_onnx, model_facts
from sddpx_tp.export.onnx import export_onnx
from sddpx_tp.export.quantize import onnx_class_accuracy, quantize_int8, top1_agreement
from sddpx_tp.metrics import count_macs
from sddpx_tp.models.classifier import restrict_to_classes
from sddpx_tp.pruning.config import PruneConfig

RATES = (0.3, 0.5, 0.7)


def _nearest(trajectory: list[Any], rate: float) -> int:
    return min(range(len(trajectory)), key=lambda index: abs(trajectory[index].filter_rate - rate))


def _upsampled(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def accuracy_task(model: torch.nn.Module, seed: int, work: Path) -> tuple[dict[str, Any], dict[float, Any]]:
    """One task: fp32 and int8 held-out accuracy at each rate; also the pruned models, for timing."""
    classes = task_classes(seed)
    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("test")
    raw_references = class_subset(train_images, train_labels, classes, 30, seed)
    raw_held_out = class_subset(test_images, test_labels, classes, None, seed)
    references = (to_model_input(raw_references[0]), raw_references[1])
    held_out = to_model_input(raw_held_out[0])
    positions = torch.tensor([classes.index(int(label)) for label in raw_held_out[1]])
    config = PruneConfig.recommended(max_rate=max(RATES) + 0.05, seed=seed)
    evaluation = (held_out, raw_held_out[1])  # torch's accuracy at each step: what the fp32 export must match
    result = prune(model, references, classes, config, evaluation=evaluation, keep_models=True, progress=False)
    unpruned = restrict_to_classes(model, classes).eval()
    rows: dict[str, Any] = {"seed": seed, "classes": classes, "rates": []}
    models: dict[float, Any] = {}
    for label, pruned, record in [("unpruned", unpruned, result.trajectory[0])] + [
        (f"{rate:.1f}", result.models[index], result.trajectory[index])
        for rate in RATES
        for index in [_nearest(result.trajectory, rate)]
    ]:
        fp32, int8 = work / f"{seed}-{label}.onnx", work / f"{seed}-{label}.int8.onnx"
        export_onnx(pruned, references[0], fp32, references[0])
        quantize_int8(fp32, int8, references[0], force=True)
        accuracy = {name: onnx_class_accuracy(path, held_out, positions, len(classes))
                    for name, path in (("fp32", fp32), ("int8", int8))}  # fmt: skip
        rows["rates"].append({
            "label": label, "filter_rate": record.filter_rate, "params_ratio": record.params_ratio,
            "macs_ratio": record.macs_ratio, "torch_eval_accuracy": record.eval_accuracy,
            "held_out_accuracy": accuracy, "top1_agreement_int8_fp32": top1_agreement(fp32, int8, held_out),
        })  # fmt: skip
        models[record.filter_rate if label != "unpruned" else 0.0] = (label, pruned, references[0])
    return rows, models


def speed_task(models: dict[float, Any], work: Path, runs: int) -> dict[str, Any]:
    """Export every model for 224 px (fp32 and int8) and time them all in one interleaved run."""
    files: dict[str, Path] = {}
    macs: dict[str, int] = {}
    for _, (label, model, references) in sorted(models.items()):
        calibration = _upsampled(references, 224)
        # At 224 px the early, wide-image layers dominate the MACs; relevance at 32 px ranks the filters of
        # other layers, so a filter rate's MACs reduction differs between the two sizes.
        macs[label] = count_macs(model, calibration[:1])
        fp32, int8 = work / f"{label}-224.onnx", work / f"{label}-224.int8.onnx"
        export_onnx(model, calibration, fp32, calibration[:8])
        quantize_int8(fp32, int8, calibration, force=True)
        files[f"{label} fp32"], files[f"{label} int8"] = fp32, int8
    # Batch 1 with enough runs for p99; batch 32 (seconds a run at 1 thread) with enough for p90.
    rows = bench_onnx(files, BenchSettings(batch_sizes=(1,), threads=(1, 2), warmup=5, runs=runs, memory=False))
    rows += bench_onnx(files, BenchSettings(batch_sizes=(32,), threads=(1, 2), warmup=2, runs=10, memory=False))
    return {"files": {label: model_facts(path) for label, path in files.items()}, "latency": rows,
            "macs_224": macs, "runs": runs, "environment": environment()}  # fmt: skip


def table(document: dict[str, Any]) -> str:
    """Accuracy (mean over tasks of the mean per-class held-out accuracy, and of the lowest class), size
    and latency at 1 thread, against the unpruned fp32 model."""
    speed = document.get("speed", {})
    latency = {(row["model"], row["threads"], row["batch"]): row["p50_ms"] for row in speed.get("latency", [])}
    sizes = {label: facts["file_bytes"] for label, facts in speed.get("files", {}).items()}
    macs = speed.get("macs_224", {})
    lines = ["| model | filter rate | MACs reduction at 224 px | held-out accuracy (mean / lowest class) | size MB | "
             "x smaller | batch 1, 1 thread: ms | x faster | batch 32, 2 threads: ms | x faster |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    base_size, base_1, base_32 = (
        sizes.get("unpruned fp32"),
        latency.get(("unpruned fp32", 1, 1)),
        latency.get(("unpruned fp32", 2, 32)),
    )
    for label in ["unpruned", *(f"{rate:.1f}" for rate in RATES)]:
        entries = [row for run in document["runs"] for row in run["rates"] if row["label"] == label]
        if not entries:
            continue
        rate = statistics.fmean(row["filter_rate"] for row in entries)
        for kind in ("fp32", "int8"):
            means = [statistics.fmean(row["held_out_accuracy"][kind]) for row in entries]
            lowest = [min(row["held_out_accuracy"][kind]) for row in entries]
            name = f"{label} {kind}"
            size, one, many = sizes.get(name), latency.get((name, 1, 1)), latency.get((name, 2, 32))
            lines.append(
                f"| {name} | {rate:.2f} | "
                + (f"{macs['unpruned'] / macs[label]:.2f}x | " if label in macs and "unpruned" in macs else "- | ")
                + f"{statistics.fmean(means):.3f} / {statistics.fmean(lowest):.3f} | "
                + (f"{size / 1e6:.1f} | {base_size / size:.1f}x | " if size and base_size else "- | - | ")
                + (f"{one:.2f} | {base_1 / one:.1f}x | " if one and base_1 else "- | - | ")
                + (f"{many:.1f} | {base_32 / many:.1f}x |" if many and base_32 else "- | - |")
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=["resnet18", "mobilenet_v2"], default="resnet18")
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    parser.add_argument("--runs", type=int, default=100, help="timed runs per model and setting (p99 needs 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads while pruning")
    parser.add_argument("--out", type=Path, default=Path("results/deploy_resnet18.json"))
    parser.add_argument("--table", action="store_true", help="only print --out's table")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the first seed's models (--no-speed: accuracy only, e.g. while the machine "
                        "is busy; a later run with --speed re-prunes the first seed and times it)")  # fmt: skip
    args = parser.parse_args()
    if args.table:
        print(table(read_results(args.out)))
        return
    torch.set_num_threads(args.threads)
    model = cached_source_model(cache_path(args.architecture), architecture=args.architecture)
    document = read_results(args.out)
    done = {run["seed"] for run in document["runs"]}
    with tempfile.TemporaryDirectory(prefix="sddpx-deploy-") as scratch:
        work = Path(scratch)
        for seed in args.seeds:
            timing = args.speed and seed == args.seeds[0] and "speed" not in document
            if seed in done and not timing:
                continue
            rows, models = accuracy_task(model, seed, work)
            if seed not in done:
                document["runs"].append(rows)
            if timing:
                document["speed"] = speed_task(models, work, args.runs)
            write_results(args.out, document, architecture=args.architecture)
            summary = [
                f"{row['label']} fp32 {statistics.fmean(row['held_out_accuracy']['fp32']):.3f} "
                f"int8 {statistics.fmean(row['held_out_accuracy']['int8']):.3f}"
                for row in rows["rates"]
            ]
            print(f"seed {seed}: " + ", ".join(summary), flush=True)
    print(table(document))


if __name__ == "__main__":
    main()
