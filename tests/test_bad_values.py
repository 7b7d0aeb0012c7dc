"""Bad values a user can hand in: numbers, broken models, weights and model files, paths, images, labels."""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import calibrated_resnet18, prune_args, write_png
from refusals import copy_run, refused, snapshot

from sddpx_tp.cli import main
from sddpx_tp.export.onnx import check_parity, export_onnx

# --- numbers --------------------------------------------------------------------------------------------

_NOT_NUMBERS = ["nan", "inf", "-inf", "abc", "", "1,2", "0x10", "1e999", "--"]
_BAD_NUMBERS: dict[str, list[str]] = {
    "--max-rate": ["0", "1", "-0.5", "1.5", "1e308", "-1e308", "nan", "inf", "-inf"],
    "--step": ["0", "-0.1", "0.95", "1e308", "nan", "inf"],
    "--min-step": ["0", "-1", "0.5", "nan", "inf", "-inf"],
    "--class-floor": ["-0.1", "1.01", "nan", "inf", "-inf", "1e308"],
    "--hold": ["-0.1", "1.5", "nan", "inf"],
    "--lr": ["0", "-1e-3", "nan", "inf", "-inf", "1e309"],
    "--mean": ["nan", "inf", "-inf", "0.1,0.2", "0.1,nan,0.3", "1,2,3,4"],
    "--std": ["0", "-1", "nan", "inf", "0.1,0,0.2", "0.1,-0.1,0.2"],
    "--k": ["-1", "-10", "1.5", "nan"],
    "--patience": ["-1", "2.5"],
    "--seed": ["-1", str(2**63), str(2**64), str(2**70), "1.5", "nan"],
    "--input-size": ["0", "7", "-32", "4097", str(10**9), "nan"],
    "--resize-size": ["0", "-1", str(10**9), "16"],  # 16 < the input size 32: the crop would pad
    "--num-classes": ["0", "1", "-5", str(10**9), "nan"],
    "--per-class": ["0", "-3", "nan"],
    "--max-pixels": ["0", "-1", "1.5", "nan"],
    "--round-to": ["0", "-16", "nan"],
    "--epochs": ["0", "-1"],
    "--batch-size": ["0", "-8"],
    "--chunk-size": ["0", "-1"],
    "--threads": ["0", "-2", "100000"],
    "--ridge": ["0", "-1", "-1e-3", "nan", "inf", "-inf"],
    "--target-accuracy": ["0", "-0.1", "1.5", "nan", "inf"],
    "--min-class-accuracy": ["-0.1", "1.01", "nan", "-inf"],
    "--holdout": ["0", "1", "-0.5", "nan", "inf"],
}


def _bad_value_cases(count: int) -> list[tuple[str, str]]:
    generator = random.Random(13)
    cases = [(option, value) for option, values in _BAD_NUMBERS.items() for value in values]
    cases += [(option, generator.choice(_NOT_NUMBERS)) for option in _BAD_NUMBERS for _ in range(4)]
    for _ in range(count - len(cases)):
        option = generator.choice(list(_BAD_NUMBERS))
        value = generator.choice(_BAD_NUMBERS[option] + _NOT_NUMBERS)
        cases.append((option, value))
    return cases


def test_hundreds_of_bad_numbers_each_get_one_line_and_exit_2(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    cases = _bad_value_cases(300)
    assert len(cases) >= 300
    for option, value in cases:
        args = [*prune_args(data, out), f"{option}={value}"]
        if option in ("--epochs", "--batch-size", "--lr", "--hold"):
            args += ["--method", "progressive", "--train", str(data["eval"])]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (option, value, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sddpx-tp: error:"), (option, value, result.stderr)
        assert "Traceback" not in result.output, (option, value)
        assert not out.exists(), (option, value)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tolerance", "nan"], "--tolerance must be a finite number"),
        (["--tolerance", "inf"], "--tolerance must be a finite number"),
        (["--tolerance", "-1"], "--tolerance must be a finite number"),
        (["--opset", "5"], "--opset must be in"),
        (["--opset", str(10**6)], "--opset must be in"),
    ],
)
def test_bad_export_numbers_exit_2_before_writing(args: list[str], expected: str, finished_run: Path,
                                                  tmp_path: Path) -> None:  # fmt: skip
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    refused(CliRunner().invoke(main, ["export", str(run), "--onnx", *args]), expected)
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--runs", str(10**7)], "--runs must be in"), (["--batch", "100000"], "--batch must be in"),
     (["--threads", "5000"], "--threads must be in")],
)  # fmt: skip
def test_bad_bench_numbers_exit_2(args: list[str], expected: str, finished_run: Path) -> None:
    refused(CliRunner().invoke(main, ["bench", str(finished_run), *args]), expected)


def test_a_round_to_wider_than_every_layer_is_refused(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    refused(
        CliRunner().invoke(main, [*prune_args(data, out), "--round-to", "10000"]), "--round-to 10000 leaves nothing"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--repair", "stretch"], "--repair takes lstsq, bn, bias, not stretch"),
        (["--repair", "bn,{x}"], "--repair takes lstsq, bn, bias, not bn,{x}"),
        (["--repair", "bn,bn"], "--repair names a repair twice"),
        (["--criterion", "entropy"], "Invalid value for '--criterion'"),
        # A fitted head's settings without --head fit would be ignored: refused instead.
        (["--head-judge", "held-back"], "--head-judge held-back applies only to a fitted head; add --head fit"),
        (["--head-folds", "3"], "--head-folds 3 applies only to a fitted head; add --head fit"),
    ],
)
def test_bad_repairs_and_criteria_exit_2_before_writing(args: list[str], expected: str, data: dict[str, Path],
                                                        tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "run"
    refused(CliRunner().invoke(main, [*prune_args(data, out), *args]), expected)
    assert not out.exists()


# --- broken models, weights and model files ----------------------------------------------------------------


def test_nan_weights_are_refused_before_anything_is_written(data: dict[str, Path], tmp_path: Path) -> None:
    state = torch.load(data["weights"], weights_only=True)
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    weights = tmp_path / "nan.pt"
    torch.save(state, weights)
    out = tmp_path / "run"
    refused(CliRunner().invoke(main, [*prune_args({**data, "weights": weights}, out)]), "non-finite values")
    assert not out.exists()


def test_parity_with_nan_outputs_fails(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    images = torch.randn(4, 3, 8, 8)
    model(images)
    path = tmp_path / "model.onnx"
    export_onnx(model, images, path, images)

    class NaN(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 2), float("nan"))

    parity = check_parity(path, NaN(), images)
    assert parity.max_abs_diff == float("inf")


def _weights_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"weights-{kind.replace(' ', '-')}.pt"
    model = calibrated_resnet18()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "onnx":
        path = tmp_path / "model.onnx"
        export_onnx(model, torch.randn(2, 3, 32, 32), path, torch.randn(2, 3, 32, 32))
    elif kind == "pickled model":
        torch.save(model, path)
    elif kind == "torchscript":
        torch.jit.save(torch.jit.trace(model, torch.randn(1, 3, 32, 32)), path)
    elif kind == "truncated":
        torch.save(model.state_dict(), path)
        path.write_bytes(path.read_bytes()[: 1 << 16])
    elif kind == "text":
        path.write_text("not weights")
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("empty", "is an empty file"),
        ("onnx", "is an ONNX model"),
        ("pickled model", "holds pickled Python objects"),
        ("torchscript", "is a TorchScript archive"),
        ("truncated", "truncated or damaged"),
        ("text", "not a torch file"),
    ],
)
def test_weights_that_are_not_a_state_dict_get_one_line(kind: str, expected: str, data: dict[str, Path],
                                                        tmp_path: Path) -> None:  # fmt: skip
    weights = _weights_file(kind, tmp_path)
    out = tmp_path / "run"
    refused(CliRunner().invoke(main, prune_args({**data, "weights": weights}, out)), expected)
    assert not out.exists()


@pytest.mark.parametrize(
    ("kind", "expected"), [("empty", "is an empty file"), ("onnx", "is an ONNX model"), ("text", "not a torch file")]
)
def test_model_files_that_are_not_torch_models_get_one_line(kind: str, expected: str, data: dict[str, Path],
                                                            tmp_path: Path) -> None:  # fmt: skip
    model_file = _weights_file(kind, tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["prune", "--model", str(model_file), "--refs", str(data["refs"]),
                                       "--out", str(out)])  # fmt: skip
    refused(result, expected)
    assert not out.exists()


# --- export and bench -----------------------------------------------------------------------------------


def test_export_writes_both_files_or_neither(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path)
    (run / "baseline.onnx").write_bytes(b"a user's older export")
    refused(CliRunner().invoke(main, ["export", str(run), "--onnx"]), "baseline.onnx exists")
    assert not (run / "model.onnx").exists()
    assert (run / "baseline.onnx").read_bytes() == b"a user's older export"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["export", "{run}", "--onnx", "{folder}", "--force"], "is a folder"),
        (["export", "{run}", "--onnx", "{folder}/model.txt"], "must end in .onnx"),
        (["bench", "{folder}/nothere.onnx"], "does not exist"),
    ],
)
def test_export_and_bench_paths(args: list[str], expected: str, finished_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    command = [arg.replace("{run}", str(finished_run)).replace("{folder}", str(folder)) for arg in args]
    refused(CliRunner().invoke(main, command), expected)
    assert list(folder.iterdir()) == []


# --- image files and labels, through the command line ----------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bomb", "over the limit of 50000000 pixels"),
        ("strip", "after resizing its shorter side"),
        ("labels too short", "has 2 names, but the model has 10 outputs"),
        ("labels not utf-8", "is not UTF-8 text"),
    ],
)
def test_bad_images_and_labels_exit_2_through_prune(case: str, expected: str, data: dict[str, Path],
                                                     tmp_path: Path) -> None:  # fmt: skip
    refs = tmp_path / "refs"
    shutil.copytree(data["refs"], refs)
    extra: list[str] = []
    if case == "bomb":
        write_png(refs / "0" / "bomb.png", 20000, 20000)
    elif case == "strip":
        write_png(refs / "6" / "strip.png", 1_000_000, 1)
    else:
        labels = tmp_path / "labels.txt"
        labels.write_bytes(b"T-shirt\nShirt\n" if case == "labels too short" else b"caf\xe9\n" * 10)
        extra = ["--labels", str(labels)]
    out = tmp_path / "run"
    refused(CliRunner().invoke(main, [*prune_args({**data, "refs": refs}, out), *extra]), expected)
    assert not out.exists()


@pytest.mark.skipif(not hasattr(signal, "alarm"), reason="FIFOs and alarms are POSIX")
def test_a_fifo_among_the_references_is_skipped_not_waited_for(data: dict[str, Path], tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    shutil.copytree(data["refs"], refs)
    os.mkfifo(refs / "0" / "x.png")
    signal.alarm(120)  # a regression hangs on the FIFO: fail instead of blocking the suite
    try:
        result = CliRunner().invoke(main, [*prune_args({**data, "refs": refs}, tmp_path / "run"), "--max-rate", "0.1"])
    finally:
        signal.alarm(0)
    assert result.exit_code == 0, result.stderr
    assert "x.png" in result.stderr and "skipped" in result.stderr


def test_export_to_a_file_named_like_the_baseline_is_refused(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "baseline.onnx"
    refused(CliRunner().invoke(main, ["export", str(finished_run), "--onnx", str(target)]), "--no-baseline")
    assert not target.exists()
