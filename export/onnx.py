"""ONNX export (torch's dynamo exporter), onnx's full checker, and a parity check against torch.

The file is self-contained (no ``.onnx.data`` side file), has a dynamic batch
dimension, records the opset and carries the model's params and MACs as metadata
so the benchmark can report them. It is written to a temporary name and moved into
place only after the checker and the parity check passed.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from sddpx_tp.files import publish

DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
METADATA_PREFIX = "sddpx."


class ParityError(Exception):
    """ONNX Runtime's outputs differ from torch's by more than the tolerance."""


@dataclass(frozen=True)
class Parity:
    images: int
    max_abs_diff: float
    max_rel_diff: float  # max |onnx - torch| / max |torch|
    top1_agreement: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _export_to(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    # The exporter prints progress on stdout, which belongs to --json's one document; keep it out.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            external_data=False,
        )


def cpu_session(path: Path) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU provider: what parity, quantization and accuracy checks run on."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def batched_outputs(session: ort.InferenceSession, images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """The session's first output for ``images`` (N, C, H, W), ``batch_size`` images at a time, in order."""
    input_name = session.get_inputs()[0].name
    for start in range(0, len(images), batch_size):
        yield session.run(None, {input_name: images[start : start + batch_size]})[0]


def check_parity(path: Path, model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> Parity:
    """Run ``images`` through ONNX Runtime (CPU) and torch; compare logits and top-1."""
    max_abs, scale, agree = 0.0, 0.0, 0
    model = model.eval()
    inputs = np.ascontiguousarray(images.float().cpu().numpy())
    with torch.no_grad():
        for start, actual in zip(range(0, len(images), batch_size),
                                 batched_outputs(cpu_session(path), inputs, batch_size), strict=True):  # fmt: skip
            expected = model(torch.from_numpy(inputs[start : start + batch_size])).numpy()
            difference = np.abs(actual - expected)
            # NaN never compares larger, so max() would hide it: a non-finite output is an infinite difference.
            max_abs = max(max_abs, float(difference.max()) if np.isfinite(difference).all() else math.inf)
            scale = max(scale, float(np.abs(expected).max()) if np.isfinite(expected).all() else math.inf)
            agree += int((actual.argmax(axis=1) == expected.argmax(axis=1)).sum())
    return Parity(len(images), max_abs, max_abs / max(scale, 1e-12), agree / len(images))


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: Path,
    parity_images: torch.Tensor,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    metadata: dict[str, str] | None = None,
) -> Parity:
    """Export ``model`` to ``path``; raise :class:`ParityError` (writing nothing) past ``tolerance``."""
    model = model.eval().cpu()
    example = example_input[:1].float().cpu().repeat(2, 1, 1, 1)  # batch >= 2 keeps the batch dim symbolic
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        _export_to(model, example, temporary, opset)
        document = onnx.load(str(temporary))
        entries = {
            "opset": str(opset),
            "params": str(sum(parameter.numel() for parameter in model.parameters())),
            **(metadata or {}),
        }
        for key, value in entries.items():
            document.metadata_props.append(onnx.StringStringEntryProto(key=METADATA_PREFIX + key, value=value))
        onnx.save(document, str(temporary))
        onnx.checker.check_model(str(temporary), full_check=True)
        parity = check_parity(temporary, model, parity_images)
        if not parity.max_abs_diff <= tolerance:
            raise ParityError(
                f"ONNX Runtime and torch disagree by {parity.max_abs_diff:.3g} (max abs) on {parity.images} "
                f"images, above the tolerance {tolerance:g}; top-1 agreement {parity.top1_agreement:.3f}"
            )
        publish(temporary, path)
        return parity
    finally:
        temporary.unlink(missing_ok=True)
        Path(str(temporary) + ".data").unlink(missing_ok=True)


def read_metadata(path: Path) -> dict[str, str]:
    document = onnx.load(str(path), load_external_data=False)
    return {
        entry.key[len(METADATA_PREFIX) :]: entry.value
        for entry in document.metadata_props
        if entry.key.startswith(METADATA_PREFIX)
    }


def initializer_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    document = onnx.load(str(path), load_external_data=False)
    return {initializer.name: tuple(initializer.dims) for initializer in document.graph.initializer}
