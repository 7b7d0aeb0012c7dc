"""ONNX export of pruned models (checker, onnxruntime parity, smaller files) and the bench/export verbs."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from helpers import calibrate_batch_norms, calibrated_resnet18, prune_args, write_class_folders
from torch import nn
from torchvision import models

import sddpx_tp.export.onnx as onnx_module
from sddpx_tp.api import prune
from sddpx_tp.cli import main
from sddpx_tp.export.onnx import ParityError, export_onnx, initializer_shapes
from sddpx_tp.pruning.config import PruneConfig


def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


ARCHITECTURES = {
    "resnet18": lambda: calibrate_batch_norms(models.resnet18(num_classes=10)),
    "vgg16_bn": lambda: calibrate_batch_norms(models.vgg16_bn(num_classes=10)),
    "mobilenet_v2": lambda: calibrate_batch_norms(models.mobilenet_v2(num_classes=10)),
    "efficientnet_lite0": lambda: _efficientnet_lite0().eval(),
}


def _pruned(architecture: str, images: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    model = ARCHITECTURES[architecture]()
    labels = torch.tensor([1, 3] * (len(images) // 2))
    result = prune(
        model, (images, labels), [1, 3], PruneConfig.paper(method="px", max_rate=0.5, step=0.5), progress=False
    )
    assert result.trajectory[-1].filter_rate == pytest.approx(0.5, abs=0.02)
    return result.model, model


@pytest.mark.slow
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_pruned_export_is_valid_smaller_and_agrees_with_torch(architecture: str, tmp_path: Path) -> None:
    images = torch.randn(8, 3, 64, 64)
    pruned, original = _pruned(architecture, images)
    parity = export_onnx(pruned, images, tmp_path / "pruned.onnx", images)
    assert parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0
    onnx.checker.check_model(str(tmp_path / "pruned.onnx"), full_check=True)
    assert not list(tmp_path.glob("*.data")), "the export must be one self-contained file"

    session = ort.InferenceSession(str(tmp_path / "pruned.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        data = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            expected = pruned(data).numpy()
        actual = session.run(None, {session.get_inputs()[0].name: data.numpy()})[0]
        assert actual.shape == (batch, 2)
        assert np.abs(actual - expected).max() < 1e-4

    from sddpx_tp.models.classifier import restrict_to_classes

    export_onnx(restrict_to_classes(original, [1, 3]), images, tmp_path / "unpruned.onnx", images)
    assert (tmp_path / "pruned.onnx").stat().st_size < (tmp_path / "unpruned.onnx").stat().st_size
    # The initializers carry the removed channels: every conv weight that shrank in torch shrank in ONNX.
    pruned_shapes = initializer_shapes(tmp_path / "pruned.onnx")
    unpruned_shapes = initializer_shapes(tmp_path / "unpruned.onnx")
    torch_convs = Counter(tuple(m.weight.shape) for m in pruned.modules() if isinstance(m, nn.Conv2d))
    onnx_4d = Counter(shape for shape in pruned_shapes.values() if len(shape) == 4)
    assert not torch_convs - onnx_4d, "every pruned conv weight must appear with its pruned shape"
    unpruned_filters = sum(m.out_channels for m in original.modules() if isinstance(m, nn.Conv2d))
    assert sum(shape[0] * count for shape, count in torch_convs.items()) < 0.55 * unpruned_filters
    assert sum(np.prod(s) for s in pruned_shapes.values()) < sum(np.prod(s) for s in unpruned_shapes.values())


def test_parity_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    images = torch.randn(4, 3, 8, 8)
    export = onnx_module._export_to

    def export_then_perturb(model: nn.Module, *args: object) -> None:
        export(model, *args)  # type: ignore[arg-type]
        with torch.no_grad():
            model[0].weight.add_(0.5)  # torch now computes something else than the ONNX file

    monkeypatch.setattr(onnx_module, "_export_to", export_then_perturb)
    with pytest.raises(ParityError, match="disagree"):
        export_onnx(model, images, tmp_path / "model.onnx", images)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished run made by the CLI on Fashion-MNIST images (as in test_cli_prune)."""
    root = tmp_path_factory.mktemp("export")
    write_class_folders(root / "refs", {0: 6, 6: 6}, offset=0)
    weights = root / "weights.pt"
    torch.save(calibrated_resnet18().state_dict(), weights)
    run = root / "run"
    data = {"refs": root / "refs", "weights": weights}
    result = CliRunner().invoke(main, [*prune_args(data, run), "--max-rate", "0.5", "--step", "0.25"])
    assert result.exit_code == 0, result.stderr
    return run


def test_export_and_bench_a_run(finished_run: Path) -> None:
    exported = CliRunner().invoke(main, ["export", str(finished_run), "--onnx", "--json"])
    assert exported.exit_code == 0, exported.stderr
    files = json.loads(exported.stdout)
    assert files["model"]["file_bytes"] < files["baseline"]["file_bytes"]
    assert files["model"]["parity"]["max_abs_diff"] < 1e-4

    benched = CliRunner().invoke(
        main, ["bench", str(finished_run), "--batch", "1", "--batch", "4", "--threads", "1", "--runs", "3", "--json"]
    )
    assert benched.exit_code == 0, benched.stderr
    result = json.loads(benched.stdout)
    configs = {(r["engine"], r["batch"], r["model"]) for r in result["latency"]}
    assert {("onnxruntime", 1, "pruned"), ("onnxruntime", 4, "baseline"), ("torch", 4, "pruned")} <= configs
    assert all(g["macs_reduction"] > 1 for g in result["speedups"])
    report = (finished_run / "report.md").read_text()
    assert "## ONNX export" in report and "## Latency" in report


def test_export_without_the_reference_folder_warns_and_uses_random_inputs(finished_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "moved"
    shutil.copytree(finished_run, run)
    state = json.loads((run / "state.json").read_text())
    state["settings"]["images"]["references"] = str(tmp_path / "gone")
    (run / "state.json").write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="reference folder .* is gone; using random inputs"):
        result = CliRunner().invoke(main, ["export", str(run), "--onnx", str(tmp_path / "m.onnx"), "--no-baseline"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "m.onnx").is_file()


def test_export_refuses_to_overwrite(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "mine.onnx"
    target.write_text("precious")
    result = CliRunner().invoke(main, ["export", str(finished_run), "--onnx", str(target), "--no-baseline"])
    assert result.exit_code == 2 and "--force" in result.stderr
    assert target.read_text() == "precious"


def test_export_parity_failure_exit_code(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    result = CliRunner().invoke(
        main, ["export", str(finished_run), "--onnx", str(target), "--no-baseline", "--tolerance", "0"]
    )
    # Zero tolerance: any float difference at all between the runtimes fails the parity check.
    assert result.exit_code == 3, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "disagree" in result.stderr
    assert not target.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bench", "{text}"], "not an ONNX file"),
        (["bench", "{fake_onnx}"], "not a valid ONNX model"),
        (["bench", "{run_without_model}"], "no pruned model"),
        (["export", "{run_without_model}", "--onnx"], "no pruned model"),
        (["bench", "{text}", "--provider", "tpu"], "unknown provider"),
        (["export", "--onnx", "x.onnx"], "give a RUN folder"),
    ],
)
def test_export_and_bench_bad_input(args: list[str], expected: str, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "fake.onnx").write_bytes(b"\x00garbage")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.json").write_text(json.dumps({"settings": {}}))
    paths = {
        "{text}": tmp_path / "notes.txt",
        "{fake_onnx}": tmp_path / "fake.onnx",
        "{run_without_model}": tmp_path / "run",
    }
    result = CliRunner().invoke(main, [str(paths.get(arg, arg)) for arg in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_report_plots_latency_against_rate_from_kept_models(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "refs", {0: 4, 6: 4}, offset=0)
    weights = tmp_path / "weights.pt"
    torch.save(calibrated_resnet18().state_dict(), weights)
    run = tmp_path / "run"
    data = {"refs": tmp_path / "refs", "weights": weights}
    pruned = CliRunner().invoke(main, [*prune_args(data, run), "--max-rate", "0.5", "--step", "0.25", "--keep-models"])
    assert pruned.exit_code == 0, pruned.stderr
    assert len(list((run / "steps").glob("step-*.pt"))) == 3  # the unpruned model and two steps

    result = CliRunner().invoke(main, ["report", str(run), "--latency", "--runs", "3"])
    assert result.exit_code == 0, result.stderr
    curve = json.loads((run / "latency_curve.json").read_text())
    assert sorted(row["step"] for row in curve) == [0, 1, 2]
    assert (run / "accuracy_latency.png").is_file()
    assert "accuracy_latency.png" in (run / "report.md").read_text()


def test_report_latency_needs_kept_models(finished_run: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(finished_run), "--latency"])
    assert result.exit_code == 2 and "--keep-models" in result.stderr
