"""Speed at kept accuracy: what the tool ships against the unpruned model in int8 (issue 31's headline).

    python benchmarks/ship_speed.py --seeds 5 6 7 8 9 --no-time --out results/ship_speed_lite0.json
    python benchmarks/ship_speed.py --seeds 5 6 7 8 9 --out results/ship_speed_lite0.json  # times them
    python benchmarks/ship_speed.py --out results/ship_speed_lite0.json --table
    python benchmarks/ship_speed.py --blocks --seeds 5 6 7 8 9 --out results/ship_speed_lite0_blocks.json
    python benchmarks/ship_speed.py --cost latency --seeds 5 6 7 8 9 --out results/ship_speed_lite0_latency.json
    python benchmarks/ship_speed.py --max-rate 0.97 --seeds 0 1 2 3 4 --out results/ship_speed_lite0_cap_tune.json

The new user of issue 31: an ImageNet EfficientNet-Lite0 (real weights), two Fashion-MNIST
classes at 224 px per task seed (the tasks of ``results/transfer.json``), 30 references a class,
``--head fit`` and every other setting at the command line's default, pruned to filter rate 0.9 (``--max-rate``)
with the test split's 200 *judging* images a class as ``--eval`` (what the step rule sees). The
recommended step (the noise-aware rule; the first-miss rule's step is recorded beside it) and the
unpruned model are exported to ONNX and quantized to int8 as ``export --quantize int8`` does
(static QDQ, per-channel, calibrated on the references). All four files are judged on the other
800 *check* images a class, which nothing saw, and timed in one interleaved ONNX Runtime CPU run
at batch 1 and 1 thread (the issue's setting) over ``--runs`` runs. The target is kept on the
check images when the mean per-class accuracy is at least 0.95 of the unpruned fp32 model's and
every class at least 0.9 of its own. The file to ship is the fastest pruned file that keeps it.
Resumable per task; stamped like every benchmark record. The ONNX files stay in
``results/cache/ship_speed/`` so that pruning (``--no-time``) and timing can run at different
times: time them alone, on a quiet machine (each task's four files are compared inside one run).
``--cost latency`` prunes with steps and ranking in latency, from a table measured on the unpruned model at
1 thread, the setting the files are timed at (cached in ``results/cache/latency``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from results_file import read_results, write_results
from step_rule import split_test_images, task_of
from transfer import SOURCES

from sddpx_tp.api import prune
from sddpx_tp.data.fashion import CLASS_NAMES, class_subset, load_split
from sddpx_tp.environment import environment
from sddpx_tp.export.bench import BenchSettings, bench_onnx, model_facts
from sddpx_tp.export.layer_latency import measure_latency_table
from sddpx_tp.export.onnx import export_onnx
from sddpx_tp.export.quantize import onnx_class_accuracy, quantize_int8
from sddpx_tp.models.blocks import skipped_blocks
from sddpx_tp.pruning.accuracy_target import recommended_record
from sddpx_tp.pruning.config import PruneConfig

MEAN_KEPT, CLASS_KEPT = 0.95, 0.9
FILES = ("unpruned fp32", "unpruned int8", "pruned fp32", "pruned int8")


def keeps_target(accuracy: list[float], unpruned: list[float]) -> bool:
    """The issue's test on the check images: mean and every class kept against the unpruned fp32 model."""
    mean_kept = statistics.fmean(accuracy) >= MEAN_KEPT * statistics.fmean(unpruned)
    return mean_kept and all(mine >= CLASS_KEPT * theirs for mine, theirs in zip(accuracy, unpruned, strict=True))


def run_task(model: torch.nn.Module, source: str, seed: int, work: Path, blocks: bool = False,
             cost: str = "filters", max_rate: float = 0.9) -> dict[str, Any]:  # fmt: skip
    """Prune one task, export and quantize its unpruned and recommended models, judge them on the check images."""
    classes, prepare = task_of(source, seed)
    train_images, train_labels = load_split("train")
    raw = class_subset(train_images, train_labels, classes, 30, seed)
    references = (prepare(raw[0]), raw[1])
    judging, check = split_test_images(classes, seed, prepare)
    config = PruneConfig.recommended(head="fit", max_rate=max_rate, seed=seed, blocks=blocks, cost=cost)
    table_ = None
    if cost == "latency":  # timed as the files will be: batch 1, 1 thread
        table_ = measure_latency_table(model, references[0][:1], 1, cache_folder=Path("results/cache/latency"))
    result = prune(model, references, classes, config, evaluation=judging, keep_models=True, progress=False,
                   latency_table=table_)  # fmt: skip
    chosen = recommended_record(result.trajectory, config.accuracy_target)
    first_miss = recommended_record(result.trajectory, config.replace(target_confidence=0.0).accuracy_target)
    positions = torch.tensor([classes.index(int(label)) for label in check[1]])
    files: dict[str, Path] = {}
    for label, step_model in (("unpruned", result.models[0]), ("pruned", result.models[chosen])):
        fp32, int8 = work / f"{seed}-{label}.onnx", work / f"{seed}-{label}.int8.onnx"
        export_onnx(step_model, references[0], fp32, references[0][:8])
        quantize_int8(fp32, int8, references[0], force=True)
        files[f"{label} fp32"], files[f"{label} int8"] = fp32, int8
    check_accuracy = {label: onnx_class_accuracy(path, check[0], positions, len(classes))
                      for label, path in files.items()}  # fmt: skip
    record, miss = result.trajectory[chosen], result.trajectory[first_miss]
    return {
        "seed": seed,
        "classes": classes,
        "class_names": [CLASS_NAMES[cls] for cls in classes],
        "steps": len(result.trajectory),
        "recommended": {
            "index": chosen,
            "filter_rate": record.filter_rate,
            "macs_ratio": record.macs_ratio,
            "params_ratio": record.params_ratio,
            "judging_accuracy": record.eval_accuracy,
        },
        "config": config.to_dict(),
        "blocks_removed": skipped_blocks(result.models[chosen]),
        "first_miss": {"index": first_miss, "filter_rate": miss.filter_rate, "macs_ratio": miss.macs_ratio},
        "check_accuracy": check_accuracy,
        "kept_on_check": {
            label: keeps_target(accuracy, check_accuracy["unpruned fp32"]) for label, accuracy in check_accuracy.items()
        },
        "files": {label: model_facts(path) for label, path in files.items()},
        "paths": {label: str(path) for label, path in files.items()},
        # Every step's judging accuracy: a step rule can be judged again offline without pruning again.
        "judged_counts": result.trajectory[0].judged_counts,
        "judging": [
            {"filter_rate": step.filter_rate, "macs_ratio": step.macs_ratio, "accuracy": step.eval_accuracy}
            for step in result.trajectory
        ],
        "prune_seconds": result.trajectory[-1].seconds,
        "environment": environment(),
    }


def time_task(run: dict[str, Any], runs: int) -> None:
    """Time the task's four files in one interleaved run (batch 1, 1 thread), into ``run``."""
    files = {label: Path(path) for label, path in run["paths"].items()}
    settings = BenchSettings(batch_sizes=(1,), threads=(1,), warmup=10, runs=runs, memory=False)
    run["latency"], run["runs"], run["timing_environment"] = bench_onnx(files, settings), runs, environment()


def speeds(run: dict[str, Any]) -> dict[str, float]:
    """Median batch-1 latency (ms) of each file."""
    return {row["model"]: row["p50_ms"] for row in run["latency"] if row["batch"] == 1 and row["threads"] == 1}


def shipped(run: dict[str, Any]) -> str | None:
    """The fastest pruned file that keeps the target on the check images (None: neither does)."""
    ms = speeds(run)
    kept = [label for label in ("pruned fp32", "pruned int8") if run["kept_on_check"][label]]
    return min(kept, key=lambda label: ms[label]) if kept else None


def _gains(ms: dict[str, float], name: str) -> str:
    return f"{ms['unpruned fp32'] / ms[name]:.2f} / {ms['unpruned int8'] / ms[name]:.2f}"


def table(document: dict[str, Any]) -> str:
    """Per task: the recommended step, both pruned files against the unpruned fp32 and int8 files (batch 1,
    1 thread, median), and the file to ship: the fastest that keeps the target on the check images."""
    lines = [
        "| task (seed: classes) | recommended filter rate (first miss) | MACs x | pruned fp32: x faster than "
        "unpruned fp32 / int8 | pruned int8: x faster than unpruned fp32 / int8 | int8 keeps the target | shipped "
        "| shipped: x smaller than fp32 / int8 | check accuracy, mean (unpruned fp32 / shipped) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(document["runs"], key=lambda run: run["seed"]):
        if "latency" not in run:
            continue
        ms, chosen = speeds(run), shipped(run)
        size = {name: facts["file_bytes"] for name, facts in run["files"].items()}
        label = chosen or "pruned int8"
        removed = f", {len(run['blocks_removed'])} blocks" if run.get("config", {}).get("blocks") else ""
        lines.append(
            f"| {run['seed']}: {' vs '.join(run['class_names'])} | {run['recommended']['filter_rate']:.2f} "
            f"({run['first_miss']['filter_rate']:.2f}{removed}) | {run['recommended']['macs_ratio']:.3f} | "
            f"{_gains(ms, 'pruned fp32')} | {_gains(ms, 'pruned int8')} | "
            f"{'yes' if run['kept_on_check']['pruned int8'] else 'no'}"
            f" | {chosen.removeprefix('pruned ') if chosen else 'neither keeps it'} | "
            f"{size['unpruned fp32'] / size[label]:.1f} / {size['unpruned int8'] / size[label]:.1f} | "
            f"{statistics.fmean(run['check_accuracy']['unpruned fp32']):.3f} / "
            f"{statistics.fmean(run['check_accuracy'][label]):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=list(SOURCES), default="efficientnet-lite0")
    parser.add_argument("--blocks", action="store_true", help="prune with --blocks (whole blocks first)")
    parser.add_argument("--cost", choices=["filters", "macs", "latency"], default="filters", help="prune with --cost")
    parser.add_argument("--max-rate", type=float, default=0.9, help="the filter-rate cap")
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per file at batch 1")
    parser.add_argument("--threads", type=int, default=2, help="torch threads while pruning")
    parser.add_argument("--out", type=Path, default=Path("results/ship_speed_lite0.json"))
    parser.add_argument("--table", action="store_true", help="only print --out's table")
    parser.add_argument(
        "--time",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the tasks' files (--no-time: prune and judge only, while the machine is busy)",
    )
    args = parser.parse_args()
    if args.table:
        print(table(read_results(args.out)))
        return
    torch.set_num_threads(args.threads)
    model = SOURCES[args.source].load()
    document = read_results(args.out)
    done = {run["seed"] for run in document["runs"]}
    work = Path("results/cache/ship_speed")
    for seed in args.seeds:
        if seed in done:
            continue
        folder = work / ("blocks" if args.blocks else "") / ("" if args.cost == "filters" else args.cost)
        folder = folder / ("" if args.max_rate == 0.9 else f"cap{args.max_rate:g}")
        document["runs"].append(run_task(model, args.source, seed, folder, args.blocks, args.cost, args.max_rate))
        write_results(args.out, document, source=args.source)
        print(f"seed {seed}: pruned and judged", flush=True)
    for run in document["runs"]:
        if args.time and "latency" not in run and run["seed"] in args.seeds:
            time_task(run, args.runs)
            write_results(args.out, document, source=args.source)
            ms = speeds(run)
            print(f"seed {run['seed']}: rate {run['recommended']['filter_rate']:.2f}, shipped {shipped(run)}, "
                  f"int8 {ms['unpruned fp32'] / ms['pruned int8']:.2f}x fp32 / "
                  f"{ms['unpruned int8'] / ms['pruned int8']:.2f}x int8", flush=True)  # fmt: skip
    print(table(document))


if __name__ == "__main__":
    main()
