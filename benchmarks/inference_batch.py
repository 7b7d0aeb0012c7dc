"""Inference batch size at 224 px: how fast the accuracy measurement runs (EfficientNet-Lite0, 2 threads).

    python benchmarks/inference_batch.py        # results/inference_batch.json

Why ``sddpx_tp.metrics.inference_batch`` picks 8 images at 224 px: smaller batches keep the
activations in the cache. Interleaved rounds, medians.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from results_file import write_results

from sddpx_tp.metrics import class_accuracy_and_confidence
from sddpx_tp.models.registry import create_model


def main() -> None:
    torch.set_num_threads(2)
    model, _ = create_model("efficientnet-lite0")
    images = torch.randn(128, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(2).repeat(64)
    seconds: dict[int, list[float]] = {}
    for _ in range(3):
        for batch in (8, 16, 32, 64, 128):
            started = time.perf_counter()
            class_accuracy_and_confidence(model, images, labels, 2, batch_size=batch)
            seconds.setdefault(batch, []).append(time.perf_counter() - started)
    rows = [
        {"batch": batch, "median_s": statistics.median(times), "ms_per_image": 1000 * statistics.median(times) / 128}
        for batch, times in seconds.items()
    ]
    write_results(
        Path(__file__).parent.parent / "results" / "inference_batch.json",
        {"runs": rows},
        model="efficientnet-lite0",
        size=224,
    )
    for row in rows:
        print(f"batch {row['batch']:4d}: {row['ms_per_image']:.1f} ms per image")


if __name__ == "__main__":
    main()
