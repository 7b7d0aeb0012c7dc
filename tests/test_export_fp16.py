"""`export --quantize fp16`: a float16 model for GPU providers, checked against fp32 on the CPU (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner
from helpers import SPEC

from sddpx_tp.cli import main
from sddpx_tp.data.references import load_image_folder


def _top1(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0].argmax(1)


def test_fp16_export_halves_the_file_and_agrees_with_fp32(head_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "mine.onnx"
    args = ["export", str(head_run), "--onnx", str(target), "--no-baseline", "--quantize", "fp16",
            "--max-accuracy-drop", "0.05", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)["fp16"]
    half = tmp_path / "mine.fp16.onnx"
    assert Path(facts["path"]) == half and half.is_file()

    # Independently of the converter: every float weight is float16, the interface stays float32.
    document = onnx.load(str(half))
    kinds = {onnx.TensorProto.DataType.Name(tensor.data_type) for tensor in document.graph.initializer}
    assert "FLOAT16" in kinds and "FLOAT" not in kinds, kinds
    assert document.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert document.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert 1.8 <= target.stat().st_size / half.stat().st_size <= 2.2  # weights dominate: about half

    # Agreement measured here, on the held-out images, by ONNX Runtime itself.
    evaluation = load_image_folder(head_run.parent / "eval", SPEC, num_outputs=10, folder_labels=True).images.numpy()
    agreement = float(np.mean(_top1(target, evaluation) == _top1(half, evaluation)))
    assert agreement >= 0.95
    assert facts["judged_on"] == "evaluation" and abs(facts["accuracy_drop"]) <= 0.05
    report = (head_run / "report.md").read_text()
    assert "FP16 (float16 weights and arithmetic" in report and "calibrated" not in report.split("FP16")[1][:120]
