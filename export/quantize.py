"""Post-training INT8 quantization of an exported ONNX model (ONNX Runtime static quantization),
and its float16 conversion for GPU providers.

The fp32 file from :func:`sddpx_tp.export.onnx.export_onnx` goes through ONNX Runtime's
pre-processing (shape inference, BatchNorm folding) and then ``quantize_static`` in the
QDQ format, calibrated with MinMax on real images. The result is written to a temporary
name in the target's folder and moved into place only when quantization finished, so a
failure never leaves a half-written or stale-looking model behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from sddpx_tp.export.onnx import batched_outputs, cpu_session
from sddpx_tp.files import publish

CALIBRATION_BATCH = 32
EVALUATION_BATCH = 32


class _ImageReader(CalibrationDataReader):
    """Feeds the calibration images in batches; the exported model's batch dimension is dynamic."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> None:
        self._input_name = input_name
        self._batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self._batches):
            return None
        batch = self._batches[self._position]
        self._position += 1
        return {self._input_name: batch}

    def rewind(self) -> None:
        self._position = 0


def _as_images(images: torch.Tensor, what: str) -> np.ndarray:
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"{what} must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    return np.ascontiguousarray(images.detach().float().cpu().numpy())


def quantize_int8(
    source: Path,
    target: Path,
    calibration: torch.Tensor,
    per_channel: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Quantize ``source`` to INT8 (QDQ) at ``target``, calibrated on ``calibration`` (N, C, H, W).

    Raises :class:`FileExistsError` when ``target`` exists and ``force`` is false, before any
    work is done. On any failure nothing is written at ``target`` and no temporary file stays.
    """
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists")
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    images = _as_images(calibration, "calibration images")
    input_name = cpu_session(source).get_inputs()[0].name
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".onnx")
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        with tempfile.TemporaryDirectory(prefix="sddpx-quantize-") as scratch:
            # Pre-processing folds BatchNorm into Conv and infers every shape, so the quantizer sees one
            # Conv per layer (one set of scales) rather than Conv + BatchNorm with an fp32 tensor between.
            prepared = Path(scratch) / "prepared.onnx"
            quant_pre_process(str(source), str(prepared))
            quantize_static(
                str(prepared),
                str(temporary),
                _ImageReader(input_name, images),
                # QDQ is what ORT's CPU kernels are optimised for since 1.11: it fuses
                # DequantizeLinear -> Conv -> QuantizeLinear into a QLinearConv at session time.
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                # U8 activations x S8 weights is the combination ORT's x86 integer GEMM (MLAS) has fast
                # kernels for, with and without VNNI; S8 activations is the ARM/GPU choice.
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                # MinMax: no histogram to size, deterministic, and good enough for post-ReLU CNN activations.
                calibrate_method=CalibrationMethod.MinMax,
            )
        _copy_metadata(source, temporary)
        publish(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
        Path(str(temporary) + ".data").unlink(missing_ok=True)
    file_bytes, source_bytes = target.stat().st_size, source.stat().st_size
    return {
        "path": str(target),
        "file_bytes": file_bytes,
        "source_bytes": source_bytes,
        "size_ratio": source_bytes / file_bytes,
        "calibration_images": len(images),
    }


def convert_fp16(source: Path, target: Path, force: bool = False) -> dict[str, Any]:
    """``source`` with float16 weights and arithmetic at ``target``; its input and output stay float32, so
    callers feed it as they feed the fp32 model. Meant for GPU providers (on the CPU, ONNX Runtime runs
    it through casts, slower than fp32). Written atomically, like :func:`quantize_int8`."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    if target.exists() and not force:
        raise FileExistsError(f"{target} exists")
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    converted = OnnxModel(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True))
    converted.topological_sort()  # the converter appends its input casts last; ONNX wants producers first
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".onnx")
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        onnx.save(converted.model, str(temporary))
        onnx.checker.check_model(str(temporary), full_check=True)
        publish(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    file_bytes, source_bytes = target.stat().st_size, source.stat().st_size
    return {"path": str(target), "file_bytes": file_bytes, "source_bytes": source_bytes,
            "size_ratio": source_bytes / file_bytes}  # fmt: skip


def _copy_metadata(source: Path, quantized: Path) -> None:
    """Keep the exporter's metadata (opset, params, MACs): the benchmark reads them from either file."""
    original = onnx.load(str(source), load_external_data=False)
    document = onnx.load(str(quantized))
    present = {entry.key for entry in document.metadata_props}
    missing = [entry for entry in original.metadata_props if entry.key not in present]
    if missing:
        document.metadata_props.extend(missing)
        onnx.save(document, str(quantized))


def _predictions(path: Path, images: np.ndarray) -> np.ndarray:
    return np.concatenate([logits.argmax(axis=1) for logits in batched_outputs(cpu_session(path), images,
                                                                                 EVALUATION_BATCH)])  # fmt: skip


def top1_agreement(a: Path, b: Path, images: torch.Tensor) -> float:
    """Fraction of ``images`` on which the two models' top-1 classes agree (ONNX Runtime, CPU).

    Agreement with the fp32 model measures what quantization changed without needing labels.
    """
    batch = _as_images(images, "images")
    return float(np.mean(_predictions(a, batch) == _predictions(b, batch)))


def onnx_accuracy(path: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of the ONNX model at ``path`` on ``images`` with integer ``labels``."""
    batch = _as_images(images, "images")
    if labels.shape != (len(batch),):
        raise ValueError(f"labels must have shape ({len(batch)},), got {tuple(labels.shape)}")
    return float(np.mean(_predictions(path, batch) == labels.cpu().numpy()))


def onnx_class_accuracy(path: Path, images: torch.Tensor, labels: torch.Tensor, classes: int) -> list[float]:
    """Top-1 accuracy of the ONNX model at ``path`` per class index ``0..classes-1`` (``labels`` are indices)."""
    batch = _as_images(images, "images")
    if labels.shape != (len(batch),):
        raise ValueError(f"labels must have shape ({len(batch)},), got {tuple(labels.shape)}")
    predictions, truth = _predictions(path, batch), labels.cpu().numpy()
    accuracies = []
    for index in range(classes):
        mask = truth == index
        if not mask.any():
            raise ValueError(f"no images of class index {index} to measure its accuracy")
        accuracies.append(float(np.mean(predictions[mask] == index)))
    return accuracies
