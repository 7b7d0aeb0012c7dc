"""Time one relevance pass against a plain forward and a plain forward+backward, in one run.

    python benchmarks/relevance_speed.py --out results/relevance_speed.json

ResNet-18 (random weights: speed does not depend on them) at 224 px on 60 images.
Each measurement is repeated and the median is reported, interleaved so that
machine drift hits every variant alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.models import resnet18

from sddpx_tp.lrp.relevance import RelevanceConfig, filter_relevance


def _timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[20, 60])
    parser.add_argument("--with-zennit", action="store_true", help="also time the zennit engine (slow)")
    parser.add_argument("--out", type=Path, default=Path("results/relevance_speed.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resnet18(num_classes=1000).eval()
    images = torch.randn(args.images, 3, args.size, args.size)
    labels = torch.randint(0, 1000, (args.images,))

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()

    variants: dict[str, Callable[[], object]] = {"forward": forward, "forward_backward": forward_backward}
    for chunk in args.chunk_sizes:
        config = RelevanceConfig(engine="fast", chunk_size=chunk)
        variants[f"relevance_fast_chunk{chunk}"] = lambda c=config: filter_relevance(model, (images, labels), c)
    if args.with_zennit:
        config = RelevanceConfig(engine="zennit", chunk_size=20)
        variants["relevance_zennit_chunk20"] = lambda: filter_relevance(model, (images, labels), config)

    for function in variants.values():  # warm-up
        function()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, function in variants.items():
            times[name].append(_timed(function))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "model": "resnet18",
        "images": args.images,
        "size": args.size,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "median_seconds": medians,
        "all_seconds": times,
        "ratio_to_forward_backward": {name: value / medians["forward_backward"] for name, value in medians.items()},
        "ratio_to_forward": {name: value / medians["forward"] for name, value in medians.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(".tmp")
    temporary.write_text(json.dumps(result, indent=2))
    temporary.replace(args.out)
    print(
        json.dumps(
            {"median_seconds": medians, "ratio_to_forward_backward": result["ratio_to_forward_backward"]},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
