"""`sddpx-tp prune` on real Fashion-MNIST images written as PNG folders, and every bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import SPEC, prune_args
from torchvision import models

from sddpx_tp.cli import main
from sddpx_tp.data.references import load_image_folder
from sddpx_tp.metrics import per_class_accuracy
from sddpx_tp.models.checkpoint import load_pruned
from sddpx_tp.models.classifier import restrict_to_classes


def test_full_prune_writes_a_consistent_run(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(main, prune_args(data, out, "--eval", str(data["eval"]), "--json"))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert summary["filter_rate"] == pytest.approx(0.3, abs=0.02)
    for name in ("model.pt", "model_full.pt", "report.json", "report.md", "accuracy.png", "prune.log", "state.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    last = report["trajectory"][-1]

    # Reloading the safe model file reproduces the recorded accuracies.
    architecture = restrict_to_classes(models.resnet18(num_classes=10), [0, 6])
    model = load_pruned(out / "model.pt", architecture)
    for folder, key in ((data["refs"], "reference_accuracy"), (data["eval"], "eval_accuracy")):
        images = load_image_folder(folder, SPEC, num_outputs=10)
        positions = torch.tensor([[0, 6].index(int(label)) for label in images.labels])
        assert per_class_accuracy(model, images.images, positions, 2) == pytest.approx(last[key])
    assert "held-out" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("method", "extra", "phase"),
    [("progressive", ["--epochs", "1"], "retrained"), ("sd-dpx", ["--finetune-epochs", "1"], "finetuned")],
)
def test_retraining_methods_run_from_the_cli(
    data: dict[str, Path], tmp_path: Path, method: str, extra: list[str], phase: str
) -> None:
    out = tmp_path / "run"
    args = [*prune_args(data, out, "--train", str(data["eval"]), "--json", *extra), "--method", method]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["filter_rate"] == pytest.approx(0.3, abs=0.1)
    trajectory = json.loads((out / "report.json").read_text())["trajectory"]
    assert phase in {record["phase"] for record in trajectory}
    assert ("Layer by layer" in (out / "report.md").read_text()) == (method == "progressive")


def test_without_eval_the_report_says_accuracy_is_optimistic(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*prune_args(data, out), "--max-rate", "0.1"])
    assert result.exit_code == 0, result.stderr
    assert "optimistic" in (out / "report.md").read_text()


def test_corrupt_image_is_skipped_with_a_warning(data: dict[str, Path], tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    shutil.copytree(data["refs"], refs)
    (refs / "0" / "broken.png").write_bytes(b"not an image")
    result = CliRunner().invoke(main, prune_args({**data, "refs": refs}, tmp_path / "run", "--max-rate", "0.1"))
    assert result.exit_code == 0, result.stderr
    assert "broken.png" in result.stderr
    assert "skipped" in (tmp_path / "run" / "report.md").read_text()


def _bad_refs(kind: str, data: dict[str, Path], tmp_path: Path) -> Path:
    refs = tmp_path / "bad_refs"
    if kind == "missing":
        return refs
    refs.mkdir()
    if kind == "empty":
        return refs
    shutil.copytree(data["refs"] / "0", refs / "0")
    (refs / "6").mkdir()
    if kind == "unreadable_class":
        (refs / "6" / "notes.txt").write_text("no images here")
        (refs / "6" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    elif kind == "corrupt_strict":
        shutil.copytree(data["refs"] / "6", refs / "6", dirs_exist_ok=True)
        (refs / "6" / "broken.png").write_bytes(b"garbage")
    return refs


BAD_INPUTS = {
    "missing refs folder": (["--refs", "{bad:missing}"], "does not exist"),
    "empty refs folder": (["--refs", "{bad:empty}"], "no class folders"),
    "class folder without readable images": (["--refs", "{bad:unreadable_class}"], "no readable images"),
    "corrupt image with --strict": (["--refs", "{bad:corrupt_strict}", "--strict"], "unreadable image"),
    "unknown model": (["--model", "resnet1000"], "unknown model"),
    "weights that do not fit": (["--num-classes", "7"], "does not match"),
    "max rate above 1": (["--max-rate", "1.2"], "--max-rate"),
    "max rate 0": (["--max-rate", "0"], "--max-rate"),
    "negative K": (["--k", "-1"], "--k"),
    "unknown class subset": (["--classes", "0,9"], "not folders"),
    "bad --mean": (["--mean", "0.1,0.2"], "--mean"),
    "class floor above 1": (["--class-floor", "1.5"], "--class-floor"),
    "progressive without --train": (["--method", "progressive"], "--train DIR"),
    "missing --train folder": (["--method", "progressive", "--train", "{bad:missing}"], "training folder"),
    "--train without a retraining method": (["--train", "{data:refs}"], "--finetune-epochs"),
    "fine-tuning progressive": (["--method=progressive", "--train", "{data:refs}", "--finetune-epochs", "1"], "dpx"),
    "zero learning rate": (["--method", "progressive", "--train", "{data:refs}", "--lr", "0"], "--lr"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case: str, data: dict[str, Path], tmp_path: Path) -> None:
    extra, expected = BAD_INPUTS[case]
    args = prune_args(data, tmp_path / "run")
    for index in range(0, len(extra)):
        token = extra[index]
        if token.startswith("{bad:"):
            extra = [*extra[:index], str(_bad_refs(token[5:-1], data, tmp_path)), *extra[index + 1 :]]
        elif token.startswith("{data:"):
            extra = [*extra[:index], str(data[token[6:-1]]), *extra[index + 1 :]]
    result = CliRunner().invoke(main, [*args, *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sddpx-tp: error:"), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists(), "bad input must not write anything"


@pytest.mark.parametrize(
    ("folder", "expected"),
    # "CARDIGAN": spelt neither as the dog (Cardigan) nor as the sweater (cardigan), so ambiguous.
    [("tabbby", "similar names: tabby"), ("CARDIGAN", "ambiguous"), ("n99999999", "not one of the ImageNet")],
)
def test_imagenet_class_names_resolve_or_explain(
    folder: str, expected: str, data: dict[str, Path], tmp_path: Path
) -> None:
    refs = tmp_path / "refs"
    shutil.copytree(data["refs"] / "0", refs / folder)
    shutil.copytree(data["refs"] / "6", refs / "n01440764")  # tench, by WordNet ID: valid
    result = CliRunner().invoke(main, ["prune", "--model", "resnet18", "--random-init", "--refs", str(refs),
                                       "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2
    assert expected in result.stderr


def test_existing_output_folder_is_not_overwritten(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    result = CliRunner().invoke(main, prune_args(data, out))
    assert result.exit_code == 2 and "--force" in result.stderr
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_cuda_without_cuda_is_refused(data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine state, on any machine
    result = CliRunner().invoke(main, [*prune_args(data, tmp_path / "run"), "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_prune_on_cuda_matches_cpu(data: dict[str, Path], tmp_path: Path) -> None:
    runs = {}
    for device in ("cpu", "cuda"):
        result = CliRunner().invoke(main, [*prune_args(data, tmp_path / device), "--device", device, "--json"])
        assert result.exit_code == 0, result.stderr
        runs[device] = json.loads((tmp_path / device / "report.json").read_text())["trajectory"]
    assert [r["filters"] for r in runs["cpu"]] == [r["filters"] for r in runs["cuda"]]


@pytest.mark.parametrize(
    "method_options",
    [["--method", "sd-dpx", "--k", "1"], ["--method", "progressive", "--train", "{eval}", "--epochs", "3"]],
    ids=["sd-dpx", "progressive"],
)
def test_sigint_then_resume_gives_the_uninterrupted_model(
    data: dict[str, Path], tmp_path: Path, method_options: list[str]
) -> None:
    method_options = [str(data["eval"]) if option == "{eval}" else option for option in method_options]
    extra = [*method_options, "--max-rate", "0.4", "--eval", str(data["eval"])]
    reference = CliRunner().invoke(main, prune_args(data, tmp_path / "whole", *extra))
    assert reference.exit_code == 0, reference.stderr

    out = tmp_path / "interrupted"
    command = [str(Path(sys.executable).parent / "sddpx-tp"), *prune_args(data, out, *extra)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        state = out / "state.json"
        if state.is_file() and json.loads(state.read_text())["step"] >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)  # during step 2 (progressive: retraining the first layer, or later)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert "--resume" in stderr.decode()
    assert not (out / "model.pt").exists()

    resumed = CliRunner().invoke(main, prune_args(data, out, *extra, "--resume"))
    assert resumed.exit_code == 0, resumed.stderr
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    again = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[key], again[key]) for key in whole)
    trajectory = json.loads((out / "report.json").read_text())["trajectory"]
    assert [record["step"] for record in trajectory] == list(range(len(trajectory)))


def test_resume_with_other_settings_is_refused(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert CliRunner().invoke(main, [*prune_args(data, out), "--max-rate", "0.1"]).exit_code == 0
    result = CliRunner().invoke(main, [*prune_args(data, out), "--max-rate", "0.2", "--method", "px", "--resume"])
    assert result.exit_code == 2 and "max_rate" in result.stderr and "method" in result.stderr
