"""Depth before width, and cost: which variant hands out the fastest model at kept accuracy? (issue 31)

    python benchmarks/blocks.py --seeds 0 1 2 3 4 --out results/blocks_tune.json
    python benchmarks/blocks.py --seeds 5 6 7 8 9 --out results/blocks_resnet18.json
    python benchmarks/blocks.py --out results/blocks_resnet18.json --table
    python benchmarks/blocks.py --variants costs --max-rate 0.97 --seeds 0 1 2 3 4 --out results/cost_tune.json
    python benchmarks/blocks.py --variants costs --max-rate 0.97 --seeds 5 6 7 8 9 --out results/cost_resnet18.json
    python benchmarks/blocks.py --out results/cost_resnet18.json --prediction
    python benchmarks/blocks.py --source mobilenet_v2 --variants costs --max-rate 0.97 --seeds 0 1 2 3 4 \
        --out results/cost_mobilenet_v2_tune.json     (and --seeds 5 6 7 8 9 --out results/cost_mobilenet_v2.json)
    python benchmarks/blocks.py --source mobilenet_v2 --variants heads --labels default --max-rate 0.97 \
        --seeds 5 6 7 8 9 --out results/ship_mobilenet_v2.json     (and 0-4: results/ship_mobilenet_v2_tune.json)

The Fashion-MNIST ResNet-18 (or ``--source mobilenet_v2``) tasks of ``benchmarks/step_rule.py`` (10-class
source at 32 px, two classes a task, 30 references a class; the test split's 200 judging images a class are ``--eval``
and the other 800 check images are seen by nothing), pruned to filter rate 0.9 by the command
line's default with blocks off and on (``--blocks``, at each ``--floors`` value). For each, the
recommended step (the noise-aware rule on the judging images) is judged on the check images and
timed at 224 px (the layers do not depend on the input size) in ONNX Runtime CPU, batch 1, 1 thread,
interleaved with the unpruned model in fp32 and in int8 (what a user gets without pruning: static
QDQ, per-channel, calibrated on the references upsampled), ``--runs`` runs each; the recommended model in
int8 too, judged on the check images from a file exported and calibrated at the source's 32 px. The file
shipped is the faster pruned file (fp32 or int8) that keeps the target. The target is kept
when the check images' mean per-class accuracy is at least 0.95 of the unpruned model's and every
class at least 0.9 of its own. Resumable per task and variant.

``--variants costs`` compares steps and ranking in filters, MACs and latency (``cost="latency"``, with
a latency table measured on the unpruned model at 224 px, 1 thread, as the models are timed; cached
in ``results/cache/latency``), blocks off and on. For the latency variants every accepted step is
also exported at 224 px and timed against the unpruned model (20 interleaved runs): the table's
predicted latency (the unpruned model's measured latency times the predicted ratio) against the
measured one, the issue's 15 % check (``--prediction`` prints it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from results_file import read_results, write_results
from ship_speed import keeps_target
from step_rule import FASHION_SOURCES, correct, per_class, source_model, split_test_images, task_of

from sddpx_tp.api import prune
from sddpx_tp.data.fashion import class_subset, load_split
from sddpx_tp.export.bench import BenchSettings, bench_onnx
from sddpx_tp.export.latency import SpeedProbe
from sddpx_tp.export.layer_latency import measure_latency_table
from sddpx_tp.export.onnx import export_onnx
from sddpx_tp.export.quantize import onnx_class_accuracy, quantize_int8
from sddpx_tp.metrics import count_macs
from sddpx_tp.models.blocks import skipped_blocks
from sddpx_tp.pruning.accuracy_target import recommended_record
from sddpx_tp.pruning.config import PruneConfig


def variants(floors: list[float], which: str = "blocks", max_rate: float = 0.9) -> dict[str, PruneConfig]:
    found = {"default": PruneConfig.recommended(max_rate=max_rate)}
    for floor in floors:
        found[f"default, blocks {floor:g}"] = PruneConfig.recommended(max_rate=max_rate, blocks=True,
                                                                      block_floor=floor)  # fmt: skip
    if which == "heads":  # the head refit on the references (what the transfer tasks use) with each cost
        found["default, head fit"] = PruneConfig.recommended(max_rate=max_rate, head="fit")
        found["default, head fit, cost macs"] = PruneConfig.recommended(max_rate=max_rate, head="fit", cost="macs")
        for floor in floors:
            found[f"default, head fit, blocks {floor:g}"] = PruneConfig.recommended(
                max_rate=max_rate, head="fit", blocks=True, block_floor=floor
            )
    if which == "costs":
        for cost in ("macs", "latency"):
            found[f"default, cost {cost}"] = PruneConfig.recommended(max_rate=max_rate, cost=cost)
        for floor in floors:
            found[f"default, cost latency, blocks {floor:g}"] = PruneConfig.recommended(
                max_rate=max_rate, cost="latency", blocks=True, block_floor=floor
            )
    return found


def _predictions(models: list[torch.nn.Module], predicted_ms: list[float], large: torch.Tensor
                 ) -> list[dict[str, float]]:  # fmt: skip
    """Each step's latency at 224 px, 1 thread, measured interleaved with the unpruned model, beside the table's
    prediction: its own sum (raw) and the unpruned model's measured latency times the predicted ratio."""
    rows = []
    with SpeedProbe(models[0], large, threads=1, runs=20) as probe:
        for index, model in enumerate(models):
            probe(model)
            assert probe.last_ms is not None
            unpruned_ms, measured_ms = probe.last_ms
            rows.append({"step": index, "measured_ms": measured_ms, "raw_predicted_ms": predicted_ms[index],
                         "predicted_ms": unpruned_ms * predicted_ms[index] / predicted_ms[0]})  # fmt: skip
    return rows


def _files_at_224(unpruned: torch.nn.Module, pruned: torch.nn.Module, images: torch.Tensor, runs: int
                  ) -> dict[str, float]:  # fmt: skip
    """Median batch-1 latency (ms, 1 thread) of the unpruned model in fp32 and int8 (what a user gets without
    pruning: static QDQ, per-channel, calibrated on the references) and the pruned one in fp32 and int8, timed
    interleaved at 224 px."""
    with tempfile.TemporaryDirectory(prefix="sddpx-blocks-") as scratch:
        folder = Path(scratch)
        files = {"unpruned fp32": folder / "unpruned.onnx", "unpruned int8": folder / "unpruned.int8.onnx",
                 "pruned fp32": folder / "pruned.onnx", "pruned int8": folder / "pruned.int8.onnx"}  # fmt: skip
        for model, name in ((unpruned, "unpruned"), (pruned, "pruned")):
            export_onnx(model, images, files[f"{name} fp32"], images[:8])
            quantize_int8(files[f"{name} fp32"], files[f"{name} int8"], images, force=True)
        settings = BenchSettings(batch_sizes=(1,), threads=(1,), warmup=10, runs=runs, memory=False)
        return {row["model"]: row["p50_ms"] for row in bench_onnx(files, settings)}


def _int8_check_accuracy(pruned: torch.nn.Module, references: torch.Tensor, check: torch.Tensor,
                         positions: torch.Tensor, classes: int) -> list[float]:  # fmt: skip
    """The pruned model's int8 file judged on the check images, exported and calibrated at the source's own 32 px
    (the exported graph's spatial size is fixed; the timed 224 px file has the same weights, and only the
    activations' scales differ)."""
    with tempfile.TemporaryDirectory(prefix="sddpx-blocks-") as scratch:
        fp32, int8 = Path(scratch) / "pruned.onnx", Path(scratch) / "pruned.int8.onnx"
        export_onnx(pruned, references, fp32, references[:8])
        quantize_int8(fp32, int8, references, force=True)
        return onnx_class_accuracy(int8, check, positions, classes)


def run_task(model: torch.nn.Module, source: str, seed: int, label: str, config: PruneConfig, runs: int
             ) -> dict[str, Any]:  # fmt: skip
    large_example = torch.zeros(1, 3, 224, 224)
    table = None
    if config.cost == "latency":  # at the size and threads the models are timed at, not the 32 px they are pruned at
        table = measure_latency_table(model, large_example, 1, cache_folder=Path("results/cache/latency"))
    classes, prepare = task_of(source, seed)
    train_images, train_labels = load_split("train")
    raw = class_subset(train_images, train_labels, classes, 30, seed)
    references = (prepare(raw[0]), raw[1])
    judging, check = split_test_images(classes, seed, prepare)
    config = config.replace(seed=seed)
    result = prune(model, references, classes, config, evaluation=judging, keep_models=True, progress=False,
                   latency_table=table)  # fmt: skip
    chosen = recommended_record(result.trajectory, config.accuracy_target)
    position = {cls: index for index, cls in enumerate(classes)}
    positions = torch.tensor([position[int(label)] for label in check[1]])
    check_accuracy = [per_class(correct(step, check[0], positions), positions, len(classes))
                      for step in (result.models[0], result.models[chosen])]  # fmt: skip
    large = F.interpolate(references[0], size=(224, 224), mode="bilinear", align_corners=False)
    latency = _files_at_224(result.models[0], result.models[chosen], large, runs)
    int8_accuracy = _int8_check_accuracy(result.models[chosen], references[0], check[0], positions, len(classes))
    kept_files = {"pruned fp32": keeps_target(check_accuracy[1], check_accuracy[0]),
                  "pruned int8": keeps_target(int8_accuracy, check_accuracy[0])}  # fmt: skip
    ship = min((name for name, kept in kept_files.items() if kept), key=latency.__getitem__, default=None)
    record = result.trajectory[chosen]
    predictions = None
    if table is not None:
        predicted = [step.predicted_ms or 0.0 for step in result.trajectory]
        predictions = _predictions(result.models, predicted, large)
    return {
        "seed": seed,
        "label": label,
        "classes": classes,
        "config": config.to_dict(),
        "recommended": {
            "index": chosen,
            "filter_rate": record.filter_rate,
            "macs_ratio": record.macs_ratio,
            "phase": record.phase,
        },
        "blocks_removed": skipped_blocks(result.models[chosen]),
        "macs_ratio_224": count_macs(result.models[chosen], large) / count_macs(result.models[0], large),
        "speedup_224": latency["unpruned fp32"] / latency["pruned fp32"],
        "speedup_over_int8_224": latency["unpruned int8"] / latency["pruned fp32"],
        "latency_ms_224": latency,
        "check_accuracy": {
            "unpruned": check_accuracy[0],
            "recommended": check_accuracy[1],
            "recommended int8": int8_accuracy,
        },
        "kept_on_check": kept_files["pruned fp32"],
        "kept_on_check_files": kept_files,
        "shipped": ship,
        "seconds": result.trajectory[-1].seconds,
        "steps": len(result.trajectory),
        "predictions": predictions,
        "table_seconds": None if table is None else table.measuring_seconds,
    }


def _shipped_gains(run: dict[str, Any]) -> tuple[float, float] | None:
    """The shipped file's speedup over unpruned fp32 and int8; None where neither pruned file keeps the target (or
    the run predates the pruned int8 file, when the fp32 file is the only candidate)."""
    name = run["shipped"] if "shipped" in run else ("pruned fp32" if run["kept_on_check"] else None)
    if name is None:
        return None
    ms = run["latency_ms_224"]
    return ms["unpruned fp32"] / ms[name], ms["unpruned int8"] / ms[name]


def table(document: dict[str, Any]) -> str:
    lines = [
        "| variant | tasks | pruned fp32 keeps the target on check | pruned fp32: x faster than unpruned fp32 "
        "(median; per task) | pruned fp32: x faster than unpruned int8 (median; per task) | shipped file: x faster "
        "than unpruned fp32 / int8 (per task; int8 where it is faster and keeps the target) | MACs x at 224 px "
        "(median) | blocks removed (median) | s (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    labels = list(dict.fromkeys(run["label"] for run in document["runs"]))
    for label in labels:
        runs = sorted((run for run in document["runs"] if run["label"] == label), key=lambda run: run["seed"])
        cells = []
        for key in ("speedup_224", "speedup_over_int8_224"):
            values = [run[key] for run in runs]
            cells.append(f"{statistics.median(values):.2f} ({', '.join(f'{value:.2f}' for value in values)})")
        gains = [_shipped_gains(run) for run in runs]
        shipped = ", ".join("none kept" if gain is None else f"{gain[0]:.2f} / {gain[1]:.2f}"
                            + (" int8" if run.get("shipped") == "pruned int8" else "")
                            for gain, run in zip(gains, runs, strict=True))  # fmt: skip
        lines.append(
            f"| {label} | {len(runs)} | {sum(run['kept_on_check'] for run in runs)}/{len(runs)} | {cells[0]} | "
            f"{cells[1]} | {shipped} | {statistics.median(run['macs_ratio_224'] for run in runs):.3f} | "
            f"{statistics.median(len(run['blocks_removed']) for run in runs):g} | "
            f"{statistics.median(run['seconds'] for run in runs):.0f} |"
        )
    return "\n".join(lines)


def prediction_table(document: dict[str, Any]) -> str:
    """Per latency variant and task: the median absolute error of the table's predicted latency over the run's
    steps (calibrated on the unpruned model's measured latency, and raw), and the worst step's."""
    lines = ["| variant | seed | steps | median abs. error | worst step | median abs. error, raw table sum |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for run in document["runs"]:
        if not run.get("predictions"):
            continue
        errors = [abs(row["predicted_ms"] / row["measured_ms"] - 1) for row in run["predictions"]]
        raw = [abs(row["raw_predicted_ms"] / row["measured_ms"] - 1) for row in run["predictions"]]
        lines.append(f"| {run['label']} | {run['seed']} | {len(errors)} | {statistics.median(errors):.1%} | "
                     f"{max(errors):.1%} | {statistics.median(raw):.1%} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=FASHION_SOURCES, default="resnet18", help="the Fashion-MNIST source model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--floors", type=float, nargs="+", default=[0.99])
    parser.add_argument(
        "--variants",
        choices=["blocks", "costs", "heads"],
        default="blocks",
        help="blocks off and on (default), also steps in MACs and in latency (costs), or the head refit (heads)",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=0.9,
        help="of each variant's cost unit (0.97 with --variants costs: a cap in filters and one in "
        "latency are not the same cap, so neither binds and the accuracy target decides)",
    )
    parser.add_argument("--labels", nargs="+", help="run only these variants (by label; default: all of --variants)")
    parser.add_argument("--prediction", action="store_true", help="only print the latency table's prediction check")
    parser.add_argument("--runs", type=int, default=50, help="timed runs of each model, interleaved")
    parser.add_argument("--threads", type=int, default=2, help="torch threads while pruning")
    parser.add_argument("--out", type=Path, default=Path("results/blocks_tune.json"))
    parser.add_argument("--table", action="store_true", help="only print --out's table")
    args = parser.parse_args()
    if args.table:
        print(table(read_results(args.out)))
        return
    if args.prediction:
        print(prediction_table(read_results(args.out)))
        return
    torch.set_num_threads(args.threads)
    model = source_model(args.source)
    document = read_results(args.out)
    done = {(run["seed"], run["label"]) for run in document["runs"]}
    for seed in args.seeds:
        for label, config in variants(args.floors, args.variants, args.max_rate).items():
            if (seed, label) in done or (args.labels and label not in args.labels):
                continue
            run = run_task(model, args.source, seed, label, config, args.runs)
            document["runs"].append(run)
            write_results(args.out, document, source=args.source)
            print(f"seed {seed} {label}: rate {run['recommended']['filter_rate']:.2f}, blocks "
                  f"{len(run['blocks_removed'])}, {run['speedup_224']:.2f}x, kept {run['kept_on_check']}",
                  flush=True)  # fmt: skip
    print(table(document))


if __name__ == "__main__":
    main()
