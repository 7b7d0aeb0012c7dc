"""``export --quantize int8`` on a finished run: calibrated on its references, judged on its held-out
images, in the report and the benchmark, and all-or-nothing past ``--max-accuracy-drop``.

The run fits a head (``--head fit``) so that its fp32 accuracy is far above chance and a broken
quantization shows as a drop. Nothing of onnxruntime or torch is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import sddpx_tp.run.quantize as run_quantize
from sddpx_tp.cli import main
from sddpx_tp.export.quantize import quantize_int8


def _export(run: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["export", str(run), "--quantize", "int8", *extra])
    return result.exit_code, result.stdout, result.stderr


def test_int8_export_is_smaller_judged_on_held_out_images_and_benchmarked(head_run: Path) -> None:
    code, stdout, stderr = _export(head_run, "--max-accuracy-drop", "1", "--json")
    assert code == 0, stderr
    files = json.loads(stdout)
    int8 = files["int8"]
    assert Path(int8["path"]) == head_run / "model.int8.onnx"
    assert (head_run / "model.onnx").is_file() and (head_run / "baseline.onnx").is_file()
    fp32_bytes = (head_run / "model.onnx").stat().st_size
    assert int8["file_bytes"] == (head_run / "model.int8.onnx").stat().st_size
    assert int8["size_ratio"] == pytest.approx(fp32_bytes / int8["file_bytes"])
    assert int8["size_ratio"] >= 3.0  # ResNet-18's weights dominate the file: fp32 -> int8 is ~4x
    assert int8["calibration_images"] == 16

    # The fp32 ONNX model's held-out accuracy is the pruning's own (torch), measured when the step was
    # accepted: this checks the images, their labels and the class order independently of the quantization
    # code. (The report's reference accuracy of a fitted head is cross-fitted; the exported head was fitted
    # on every reference, so on them it is what a fitted head gets: all correct.)
    # The exported step is the recommended one (export's default), not necessarily the last.
    exported = json.loads((head_run / "report.json").read_text())["trajectory"][files["model"]["step"]]
    assert files["model"]["recommended"] is True
    assert int8["accuracy"]["evaluation"]["fp32"] == pytest.approx(exported["eval_accuracy"])
    assert int8["accuracy"]["reference"]["fp32"] == [1.0, 1.0]
    assert int8["judged_on"] == "evaluation"
    held_out = int8["accuracy"]["evaluation"]
    expected_drop = sum(held_out["fp32"]) / 2 - sum(held_out["int8"]) / 2
    assert int8["accuracy_drop"] == pytest.approx(expected_drop)
    assert 0.5 <= int8["top1_agreement_with_fp32"] <= 1.0
    assert "INT8" in (head_run / "report.md").read_text()

    bench = ["bench", str(head_run), "--batch", "1", "--threads", "1", "--runs", "3", "--no-torch", "--no-memory"]
    benched = CliRunner().invoke(main, [*bench, "--json"])
    assert benched.exit_code == 0, benched.stderr
    result = json.loads(benched.stdout)
    assert {row["model"] for row in result["latency"]} == {"baseline", "pruned", "int8", "baseline_int8"}
    over = {(gain["model"], gain["against"]) for gain in result["speedups"]}
    assert {model for model, against in over if against == "baseline"} == {"pruned", "int8", "baseline_int8"}
    assert {model for model, against in over if against == "baseline_int8"} == {"baseline", "pruned", "int8"}

    # The unpruned model quantized the same way: what a user gets without pruning, measured, not refused.
    unpruned_int8 = files["baseline_int8"]
    assert Path(unpruned_int8["path"]) == head_run / "baseline.int8.onnx"
    assert unpruned_int8["size_ratio"] >= 3.0 and unpruned_int8["max_accuracy_drop"] is None
    assert unpruned_int8["file_bytes"] == (head_run / "baseline.int8.onnx").stat().st_size

    # Which file to ship: the faster of the pruned fp32 and int8 models, read off the latency rows here.
    latency = {row["model"]: row["p50_ms"] for row in result["latency"]}
    fastest = min(("pruned", "int8"), key=lambda label: latency[label])
    ship = result["ship"]
    assert ship["model"] == fastest and ship["batch"] == 1 and ship["threads"] == 1
    assert ship["speedup_over_baseline_int8"] == pytest.approx(latency["baseline_int8"] / latency[fastest])
    assert ship["speedup_over_baseline"] == pytest.approx(latency["baseline"] / latency[fastest])
    report = (head_run / "report.md").read_text()
    assert "Ship model" in report and "faster than the unpruned model quantized to int8" in report


def test_past_the_accuracy_limit_exit_3_and_nothing_is_written(head_run: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # A real quantization with a wrong calibration set: images scaled to 1/1000 give activation
    # ranges far too small, every activation saturates, and the int8 model's predictions collapse.
    def miscalibrated(source: Path, target: Path, calibration: torch.Tensor, **options: object) -> dict:
        return quantize_int8(source, target, calibration * 1e-3, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(run_quantize, "quantize_int8", miscalibrated)
    before = (head_run / "export.json").read_bytes() if (head_run / "export.json").exists() else None
    target = tmp_path / "mine.onnx"
    code, _, stderr = _export(head_run, "--onnx", str(target), "--max-accuracy-drop", "0.01")
    assert code == 3, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "int8 loses" in lines[0] and "held-out" in lines[0], stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # no fp32, no baseline, no staging left
    after = (head_run / "export.json").read_bytes() if (head_run / "export.json").exists() else None
    assert after == before


def test_an_existing_int8_file_is_never_replaced_without_force(head_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "mine.onnx"
    (tmp_path / "mine.int8.onnx").write_text("precious")
    code, _, stderr = _export(head_run, "--onnx", str(target), "--no-baseline")
    assert code == 2 and "--force" in stderr, stderr
    assert (tmp_path / "mine.int8.onnx").read_text() == "precious"
    assert not target.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["export", "--model", "resnet18", "--onnx", "x.onnx", "--quantize", "int8"], "needs a RUN"),
        (["export", "{run}", "--quantize", "int8", "--max-accuracy-drop", "2"], "--max-accuracy-drop"),
        (["export", "{run}", "--quantize", "int4"], "--quantize"),
    ],
)
def test_bad_quantize_options(head_run: Path, args: list[str], expected: str) -> None:
    result = CliRunner().invoke(main, [str(head_run) if arg == "{run}" else arg for arg in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
