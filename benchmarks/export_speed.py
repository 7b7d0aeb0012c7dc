"""Does pruning buy speed? ResNet-18 pruned to filter rates 0.3/0.5/0.7, with and without --round-to.

    python benchmarks/export_speed.py --out results/export_speed.json

Random weights (speed does not depend on them), LRP-pruned by PX on 16 random
reference images at 224 px, exported to ONNX and timed with onnxruntime on the CPU
at batch 1 and 32 with 1 and 2 threads, all models interleaved in one run with the
unpruned export. Reports speedup and speedup / MACs reduction (1.0 = the MACs
reduction fully realised).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torchvision.models import resnet18

from sddpx_tp.api import prune
from sddpx_tp.environment import environment
from sddpx_tp.export.bench import BenchSettings, bench_onnx, markdown_table, model_facts, speedups
from sddpx_tp.export.onnx import export_onnx
from sddpx_tp.files import atomic_write
from sddpx_tp.metrics import count_macs
from sddpx_tp.models.classifier import restrict_to_classes
from sddpx_tp.pruning.config import PruneConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--round-to", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("results/export_speed.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resnet18().eval()
    images = torch.randn(16, 3, 224, 224)
    labels = torch.tensor([0, 1] * 8)
    work = Path(tempfile.mkdtemp(prefix="sddpx-speed-"))
    exports = {}
    baseline = restrict_to_classes(model, [0, 1])
    export_onnx(
        baseline, images, work / "baseline.onnx", images[:4], metadata={"macs": str(count_macs(baseline, images))}
    )
    exports["baseline"] = work / "baseline.onnx"
    filter_rates = {}
    for round_to in args.round_to:
        config = PruneConfig.paper(method="px", max_rate=max(args.rates), step=0.1, round_to=round_to)
        result = prune(model, (images, labels), [0, 1], config, keep_models=True, progress=False)
        for rate in args.rates:
            # The kept model nearest to the asked rate (steps of 0.1 land on it up to rounding).
            index = min(range(len(result.trajectory)), key=lambda i: abs(result.trajectory[i].filter_rate - rate))
            label = f"rate{rate:.1f}_round{round_to}"
            pruned = result.models[index]
            macs = str(count_macs(pruned, images))
            export_onnx(pruned, images, work / f"{label}.onnx", images[:4], metadata={"macs": macs})
            exports[label] = work / f"{label}.onnx"
            filter_rates[label] = result.trajectory[index].filter_rate
    settings = BenchSettings(batch_sizes=(1, 32), threads=(1, 2), warmup=3, runs=args.runs)
    facts = {label: model_facts(path) for label, path in exports.items()}
    rows = bench_onnx(exports, settings)
    gains = speedups(rows, facts, "baseline")
    for gain in gains:
        gain["filter_rate"] = filter_rates[gain["model"]]
    document = {"environment": environment(), "settings": settings.__dict__, "models": facts,
                "filter_rates": filter_rates, "latency": rows, "speedups": gains}  # fmt: skip
    atomic_write(args.out, lambda path: path.write_text(json.dumps(document, indent=1)))
    print(markdown_table(rows, gains))


if __name__ == "__main__":
    main()
