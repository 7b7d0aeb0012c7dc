"""Accuracy and size metrics: per-class accuracy, harmonic mean, AUCs, filter rate, params, MACs.

Predictions are the argmax over the model's outputs, which after class restriction
are the chosen classes' logits only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Pixels per inference batch: 8 images at 224 px. Measured on EfficientNet-Lite0 at 224 px, 2 threads:
# 19 ms per image at batch 8, 35 at 32, 48 at 128 (activations that fit the cache); 32-px images keep 256.
BATCH_PIXELS = 8 * 224 * 224


def inference_batch(images: torch.Tensor, largest: int = 256) -> int:
    """A batch size for inference on ``images`` [N, C, H, W]: ``BATCH_PIXELS`` pixels, between 1 and ``largest``."""
    return max(1, min(largest, BATCH_PIXELS // max(1, images.shape[-1] * images.shape[-2])))


def inference_batches(images: torch.Tensor, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """``images`` in batches on ``device``, image batches in channels_last: CPU convs run faster on it
    (2 threads, inference: ResNet-18 0.68 vs 0.82 s at 224 px, EfficientNet-Lite0 0.81 vs 1.20 s)."""
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        yield batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch


@torch.inference_mode()  # logits only feed the metrics: no autograd bookkeeping at all
def class_accuracy_and_confidence(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int, batch_size: int | None = None
) -> tuple[list[float], list[float]]:
    """Per class index ``0..classes-1``: accuracy, and the mean softmax probability of the true class
    (a smooth companion of accuracy, which saturates at 1.0 on a few dozen reference images)."""
    batch_size = batch_size or inference_batch(images)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = torch.cat([model(batch).float().cpu() for batch in inference_batches(images, batch_size, device)])
    model.train(was_training)
    predictions = logits.argmax(dim=1)
    true_probability = logits.softmax(dim=1).gather(1, labels.view(-1, 1).long()).flatten()
    accuracies, confidences = [], []
    for index in range(classes):
        mask = labels == index
        if not bool(mask.any()):
            raise ValueError(f"no images of class index {index} to measure its accuracy")
        accuracies.append(float((predictions[mask] == index).float().mean()))
        confidences.append(float(true_probability[mask].mean()))
    return accuracies, confidences


def per_class_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int, batch_size: int | None = None
) -> list[float]:
    """Accuracy of each class index ``0..classes-1`` on the given images."""
    return class_accuracy_and_confidence(model, images, labels, classes, batch_size)[0]


def output_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, outputs: Sequence[int]
) -> list[float]:
    """Per output index in ``outputs``: the share of its images (``labels`` are output indices) that the model's
    top output over *all* its outputs calls that class (not only among ``outputs``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        batches = inference_batches(images, inference_batch(images), device)
        predictions = torch.cat([model(batch).argmax(dim=1).cpu() for batch in batches])
    model.train(was_training)
    return [float((predictions[labels == output] == output).float().mean()) for output in outputs]


def harmonic_mean(accuracies: Sequence[float]) -> float:
    """``|C| / sum(1 / a_c)``; 0 if any class is at 0."""
    if any(accuracy <= 0 for accuracy in accuracies):
        return 0.0
    return len(accuracies) / sum(1.0 / accuracy for accuracy in accuracies)


def normalized_auc(rates: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under ``values`` against ``rates``, divided by the rate span (1.0 is perfect)."""
    if len(rates) != len(values) or len(rates) < 2:
        raise ValueError("need at least two (rate, value) points of equal count")
    order = sorted(range(len(rates)), key=lambda index: rates[index])
    xs = [rates[index] for index in order]
    ys = [values[index] for index in order]
    span = xs[-1] - xs[0]
    if span <= 0:
        raise ValueError("rates must span a positive range")
    area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
    return area / span


def auc_lowest_class(rates: Sequence[float], per_class: Sequence[Sequence[float]]) -> float:
    """Paper Eq. 4: the normalised AUC of the lowest class accuracy at each rate."""
    return normalized_auc(rates, [min(accuracies) for accuracies in per_class])


def highest_rate_kept(
    rates: Sequence[float], per_class: Sequence[Sequence[float]], mean_kept: float = 0.95, class_kept: float = 0.9
) -> float:
    """The highest filter rate up to which the trajectory keeps ``mean_kept`` of the first point's mean
    accuracy and every class keeps ``class_kept`` of its own (issue 8's goal); points are taken in rate order."""
    return rates[last_point_kept(rates, per_class, mean_kept, class_kept)]


def last_point_kept(
    rates: Sequence[float], per_class: Sequence[Sequence[float]], mean_kept: float = 0.95, class_kept: float = 0.9
) -> int:
    """The index of the point at :func:`highest_rate_kept`: the last one, in rate order, before the first
    that misses either share (the first point always counts)."""
    order = sorted(range(len(rates)), key=lambda index: rates[index])
    start = per_class[order[0]]
    start_mean = sum(start) / len(start)
    kept = order[0]
    for index in order:
        accuracy = per_class[index]
        if sum(accuracy) / len(accuracy) < mean_kept * start_mean:
            break
        if any(value < class_kept * first for value, first in zip(accuracy, start, strict=True)):
            break
        kept = index
    return kept


def count_filters(model: nn.Module) -> int:
    """Output channels summed over every Conv2d: the unit of the filter rate."""
    return sum(module.out_channels for module in model.modules() if isinstance(module, nn.Conv2d))


@dataclass(frozen=True)
class ModelSize:
    filters: int
    params: int
    macs: int


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on one input.

    Counted by torch's FlopCounterMode on the aten ops actually run (convs, matmuls),
    so layer subclasses with their own forward are counted too (torch-pruning's
    counter matches layer types exactly and misses them). One MAC is two FLOPs.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example_input[:1])
    model.train(was_training)
    return counter.get_total_flops() // 2


def measure_size(model: nn.Module, example_input: torch.Tensor) -> ModelSize:
    """Filters, parameters and multiply-accumulates (MACs, not FLOPs) for one input."""
    params = sum(parameter.numel() for parameter in model.parameters())
    return ModelSize(filters=count_filters(model), params=params, macs=count_macs(model, example_input))
