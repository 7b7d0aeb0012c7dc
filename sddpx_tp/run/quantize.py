"""A run's pruned ONNX model quantized to INT8 (calibrated on the run's references) or converted to
float16 (for GPU providers), and what it costs in accuracy: judged on the held-out images when the
run has them, else on the references.

The references are the calibration set, so an accuracy judged on them is optimistic; the
report says which images a verdict comes from.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from sddpx_tp.errors import RunFolderError, SettingError, literal
from sddpx_tp.export.quantize import convert_fp16, onnx_class_accuracy, quantize_int8, top1_agreement
from sddpx_tp.run.rebuild import labelled_images
from sddpx_tp.run.settings import RunSettings

QUANTIZATIONS = ("int8", "fp16")
DESCRIPTIONS = {
    "int8": "int8 static, QDQ, per-channel s8 weights, u8 activations, MinMax",
    "fp16": "float16 weights and arithmetic, float32 input and output (for GPU providers)",
}
# One point of mean per-class accuracy: the goal for int8 against the pruned fp32 model.
DEFAULT_MAX_ACCURACY_DROP = 0.01


class AccuracyDropError(Exception):
    """The quantized (or fp16) model loses more accuracy against fp32 than allowed (nothing is written then)."""


def check_quantize_options(quantize: str | None, max_accuracy_drop: float | None) -> None:
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise SettingError(f"{{quantize}} must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    if max_accuracy_drop is not None and not 0 <= max_accuracy_drop <= 1:
        raise SettingError(
            f"{{max_accuracy_drop}} is a fraction of accuracy in [0, 1] (0.01 = one point), not {max_accuracy_drop}"
        )


def quantized_target(fp32_target: Path, kind: str) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (or ``.fp16.onnx``): next to the fp32 file it came from."""
    return fp32_target.with_name(f"{fp32_target.stem}.{kind}.onnx")


def quantize_run_model(
    settings: RunSettings, fp32: Path, target: Path, max_accuracy_drop: float | None, kind: str = "int8"
) -> dict[str, Any]:
    """Quantize the run's fp32 export ``fp32`` to ``target`` (``kind``: int8 or fp16) and measure it
    against fp32, per class.

    Raises :class:`AccuracyDropError` when the mean per-class accuracy falls by more than
    ``max_accuracy_drop`` (None: no limit); ``target`` is left for the caller to discard then.
    """
    references = labelled_images(settings, "reference")
    if references is None:
        raise RunFolderError(
            f"the run's reference folder {literal(settings.images.references)} is gone: {kind} export "
            "calibrates or checks on those images"
        )
    evaluation = labelled_images(settings, "evaluation")
    if kind == "int8":
        facts = quantize_int8(fp32, target, references[0], force=True)
    else:
        facts = convert_fp16(fp32, target, force=True)
    assert settings.resolved is not None  # a finished run's settings
    classes = len(settings.resolved.classes)
    accuracy: dict[str, dict[str, list[float]]] = {}
    for role, images in (("reference", references), ("evaluation", evaluation)):
        if images is not None:
            accuracy[role] = {
                "fp32": onnx_class_accuracy(fp32, *images, classes),
                kind: onnx_class_accuracy(target, *images, classes),
            }
    judged_on = "evaluation" if evaluation is not None else "reference"
    judged = accuracy[judged_on]
    drop = statistics.fmean(judged["fp32"]) - statistics.fmean(judged[kind])
    all_images = references[0] if evaluation is None else torch.cat([references[0], evaluation[0]])
    result = {
        **facts,
        "quantization": DESCRIPTIONS[kind],
        "accuracy": accuracy,
        "judged_on": judged_on,
        "accuracy_drop": drop,
        "max_accuracy_drop": max_accuracy_drop,
        "top1_agreement_with_fp32": top1_agreement(fp32, target, all_images),
    }
    if max_accuracy_drop is not None and drop > max_accuracy_drop:
        calibration = " (calibration)" if kind == "int8" else ""
        where = "held-out" if judged_on == "evaluation" else f"reference{calibration}"
        raise AccuracyDropError(
            f"{kind} loses {drop:.3f} of mean per-class accuracy on the {where} images "
            f"({statistics.fmean(judged['fp32']):.3f} -> {statistics.fmean(judged[kind]):.3f}), more than the "
            f"allowed {max_accuracy_drop:g}; nothing was written"
        )
    return result
