"""Hostile but realistic input: run folders, numbers, weights files, broken models, resumes and exports.

Every refusal is checked the same way: exit code 2, one line on stderr, no traceback,
and nothing written or changed (byte for byte where user files are involved).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from helpers import calibrate_batch_norms
from test_cli_prune import _args, data  # noqa: F401 (data: the shared module fixture)
from torchvision import models

from sddpx_tp.cli import main
from sddpx_tp.export.onnx import check_parity, export_onnx
from sddpx_tp.owned_folder import OwnedFolder
from sddpx_tp.run_directory import RunDirectory


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (folders as empty entries): to prove nothing changed."""
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else b"<dir>"
        for path in sorted(root.rglob("*"))
    }


def _refused(result: Result, expected: str) -> str:
    """The one error line, after checking exit code 2, a single line and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sddpx-tp: error:"), result.stderr
    assert "Traceback" not in result.output and "weights_only" not in result.output
    assert expected in lines[0], lines[0]
    return lines[0]


def _user_files(folder: Path) -> None:
    (folder / "notes").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "notes" / "data.bin").write_bytes(bytes(range(256)))
    (folder / "model.pt").write_bytes(b"my own file, which happens to share a run file's name")


@pytest.fixture(scope="module")
def finished_run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    run = tmp_path_factory.mktemp("hardening") / "run"
    result = CliRunner().invoke(main, [*_args(data, run), "--max-rate", "0.2", "--step", "0.1"])
    assert result.exit_code == 0, result.stderr
    return run


def _copy_run(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


# --- run folders ----------------------------------------------------------------------------------------


def test_force_never_replaces_a_folder_of_user_files(data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "mine"
    _user_files(out)
    before = _snapshot(out)
    _refused(CliRunner().invoke(main, [*_args(data, out), "--force"]), "not a run folder made by sddpx-tp")
    assert _snapshot(out) == before


def test_force_onto_the_working_folder_or_the_references_is_refused(
    data: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = tmp_path / "work"
    _user_files(work)
    before = _snapshot(work)
    monkeypatch.chdir(work)
    _refused(CliRunner().invoke(main, [*_args(data, Path(".")), "--force"]), "not a run folder")
    assert _snapshot(work) == before
    references = _snapshot(data["refs"])
    _refused(CliRunner().invoke(main, [*_args(data, data["refs"]), "--force"]), "not a run folder")
    assert _snapshot(data["refs"]) == references


def test_force_replaces_a_run_but_keeps_files_that_are_not_ours(finished_run: Path, data: dict[str, Path],  # noqa: F811
                                                                tmp_path: Path) -> None:  # fmt: skip
    run = _copy_run(finished_run, tmp_path)
    (run / "my_notes.txt").write_text("keep me")
    old_state = (run / "state.json").read_bytes()
    result = CliRunner().invoke(main, [*_args(data, run), "--max-rate", "0.1", "--force"])
    assert result.exit_code == 0, result.stderr
    assert (run / "my_notes.txt").read_text() == "keep me"
    assert (run / "state.json").read_bytes() != old_state  # a new run
    assert json.loads((run / "report.json").read_text())["trajectory"][-1]["filter_rate"] < 0.15


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("inside refs", "lies inside the --refs folder"),
        ("inside eval", "lies inside the --eval folder"),
        ("below a file", "is a file"),
        ("eval is refs", "--eval is the same folder as --refs"),
    ],
)
def test_output_and_image_folders_that_collide_are_refused(
    where: str,
    expected: str,
    data: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    refs, evaluation = tmp_path / "refs", tmp_path / "eval"
    shutil.copytree(data["refs"], refs)
    shutil.copytree(data["eval"], evaluation)
    (tmp_path / "file").write_text("a file")
    out = {
        "inside refs": refs / "run",
        "inside eval": evaluation / "0" / "run",
        "below a file": tmp_path / "file" / "sub",
        "eval is refs": tmp_path / "run",
    }[where]
    before = _snapshot(tmp_path)
    folders = {**data, "refs": refs}
    held_out = refs if where == "eval is refs" else evaluation
    _refused(CliRunner().invoke(main, [*_args(folders, out), "--eval", str(held_out)]), expected)
    assert _snapshot(tmp_path) == before


def test_held_out_images_that_are_also_references_are_reported(data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    evaluation = tmp_path / "eval"
    shutil.copytree(data["refs"], evaluation)  # the same images under another folder
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*_args(data, out), "--eval", str(evaluation), "--max-rate", "0.1"])
    assert result.exit_code == 0, result.stderr
    assert "16 of the 16 held-out images are also reference images" in result.stderr
    assert "also reference images" in (out / "report.md").read_text()


def test_a_second_writer_is_refused_while_the_run_is_in_use(finished_run: Path, data: dict[str, Path],  # noqa: F811
                                                            tmp_path: Path) -> None:  # fmt: skip
    run = _copy_run(finished_run, tmp_path)
    before = _snapshot(run)
    with RunDirectory(run).folder.lock():  # another process writing: an OS lock on another open file
        _refused(CliRunner().invoke(main, [*_args(data, run), "--force"]), "in use by another sddpx-tp process")
        _refused(CliRunner().invoke(main, ["export", str(run), "--onnx"]), "in use")
    assert _snapshot(run) == before


# --- resume -----------------------------------------------------------------------------------------------


def _interrupted_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A finished run made to look interrupted after its last checkpoint (the final model removed)."""
    run = _copy_run(finished_run, tmp_path)
    for name in ("model.pt", "model_full.pt", "report.json", "report.md"):
        (run / name).unlink()
    return run


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncated checkpoint", "missing or damaged"),
        ("deleted checkpoint", "missing or damaged"),
        ("half-written state", "cannot read"),
        ("state of another shape", "is not a run state"),
        ("settings with a wrong type", "cannot read"),
        ("replaced references", "reference images changed"),
    ],
)
def test_resume_of_a_damaged_or_changed_run_is_refused(
    damage: str,
    expected: str,
    finished_run: Path,
    data: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    refs = tmp_path / "refs"
    shutil.copytree(data["refs"], refs)
    if damage == "replaced references":  # a run of its own, on references this test may change
        made = CliRunner().invoke(main, [*_args({**data, "refs": refs}, tmp_path / "own"), "--max-rate", "0.2"])
        assert made.exit_code == 0, made.stderr
        finished_run = tmp_path / "own"
    run = _interrupted_copy(finished_run, tmp_path)
    checkpoint, state = run / "checkpoints" / "last.pt", run / "state.json"
    if damage == "truncated checkpoint":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    elif damage == "deleted checkpoint":
        checkpoint.unlink()
    elif damage == "half-written state":
        state.write_text(state.read_text()[:500])
    elif damage == "state of another shape":
        state.write_text("[1, 2, 3]")
    elif damage == "settings with a wrong type":
        document = json.loads(state.read_text())
        document["settings"]["model"]["num_classes"] = "ten"
        state.write_text(json.dumps(document))
    args = _args({**data, "refs": refs if damage == "replaced references" else data["refs"]}, run, "--resume",
                 "--max-rate", "0.2", "--step", "0.1")  # fmt: skip
    if damage == "replaced references":
        victim = sorted((refs / "0").iterdir())[0]
        shutil.copy(sorted((refs / "6").iterdir())[0], victim)  # same name, other image
    before = _snapshot(run)
    _refused(CliRunner().invoke(main, args), expected)
    assert _snapshot(run) == before


def test_resume_after_an_interrupt_before_the_first_step_starts_over(data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "run"
    OwnedFolder(out, "run", ()).path.mkdir()
    OwnedFolder(out, "run", ()).mark()  # what a run leaves when Ctrl-C comes before its first accepted step
    (out / "prune.log").write_text("interrupted\n")
    result = CliRunner().invoke(main, [*_args(data, out), "--max-rate", "0.1", "--resume"])
    assert result.exit_code == 0, result.stderr
    assert (out / "model.pt").is_file()


def test_a_crash_after_pruning_leaves_a_run_that_resumes(
    data: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sddpx_tp.run as run_module

    real = run_module.write_report

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    out = tmp_path / "run"
    monkeypatch.setattr(run_module, "write_report", crash)
    with pytest.raises(OSError, match="disk full"):
        CliRunner().invoke(main, [*_args(data, out), "--max-rate", "0.1"], catch_exceptions=False)
    assert not (out / "model.pt").exists()  # not finished: export refuses it with a clear line
    _refused(CliRunner().invoke(main, ["export", str(out), "--onnx"]), "no pruned model yet")
    monkeypatch.setattr(run_module, "write_report", real)
    result = CliRunner().invoke(main, [*_args(data, out), "--max-rate", "0.1", "--resume"])
    assert result.exit_code == 0, result.stderr
    assert (out / "model.pt").is_file() and (out / "report.md").is_file()


# --- code execution from a run folder -------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.proof,))


def test_a_run_folder_never_makes_sddpx_tp_unpickle_a_file(finished_run: Path, tmp_path: Path) -> None:
    run = _copy_run(finished_run, tmp_path)
    proof, evil = tmp_path / "code-ran", tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Payload(proof)))
    document = json.loads((run / "state.json").read_text())
    document["settings"]["model"]["name"] = str(evil)
    (run / "state.json").write_text(json.dumps(document))
    for command in (["export", str(run), "--onnx"], ["report", str(run), "--latency"]):
        _refused(CliRunner().invoke(main, command), f"name it with --model {evil}")
    assert not proof.exists()
    assert not (run / "model.onnx").exists()


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


def test_hundreds_of_bad_numbers_each_get_one_line_and_exit_2(data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "run"
    cases = _bad_value_cases(300)
    assert len(cases) >= 300
    for option, value in cases:
        args = [*_args(data, out), f"{option}={value}"]
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
    run = _copy_run(finished_run, tmp_path)
    before = _snapshot(run)
    _refused(CliRunner().invoke(main, ["export", str(run), "--onnx", *args]), expected)
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--runs", str(10**7)], "--runs must be in"), (["--batch", "100000"], "--batch must be in"),
     (["--threads", "5000"], "--threads must be in")],
)  # fmt: skip
def test_bad_bench_numbers_exit_2(args: list[str], expected: str, finished_run: Path) -> None:
    _refused(CliRunner().invoke(main, ["bench", str(finished_run), *args]), expected)


def test_a_round_to_wider_than_every_layer_is_refused(data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "run"
    _refused(CliRunner().invoke(main, [*_args(data, out), "--round-to", "10000"]), "--round-to 10000 leaves nothing")
    assert not out.exists()


# --- broken models, weights and model files ----------------------------------------------------------------


def test_nan_weights_are_refused_before_anything_is_written(data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    state = torch.load(data["weights"], weights_only=True)
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    weights = tmp_path / "nan.pt"
    torch.save(state, weights)
    out = tmp_path / "run"
    _refused(CliRunner().invoke(main, [*_args({**data, "weights": weights}, out)]), "non-finite values")
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
    model = calibrate_batch_norms(models.resnet18(num_classes=10), size=32)
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
def test_weights_that_are_not_a_state_dict_get_one_line(kind: str, expected: str, data: dict[str, Path],  # noqa: F811
                                                        tmp_path: Path) -> None:  # fmt: skip
    weights = _weights_file(kind, tmp_path)
    out = tmp_path / "run"
    _refused(CliRunner().invoke(main, _args({**data, "weights": weights}, out)), expected)
    assert not out.exists()


@pytest.mark.parametrize(
    ("kind", "expected"), [("empty", "is an empty file"), ("onnx", "is an ONNX model"), ("text", "not a torch file")]
)
def test_model_files_that_are_not_torch_models_get_one_line(kind: str, expected: str, data: dict[str, Path],  # noqa: F811
                                                            tmp_path: Path) -> None:  # fmt: skip
    model_file = _weights_file(kind, tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["prune", "--model", str(model_file), "--refs", str(data["refs"]),
                                       "--out", str(out)])  # fmt: skip
    _refused(result, expected)
    assert not out.exists()


# --- export and bench -----------------------------------------------------------------------------------


def test_export_writes_both_files_or_neither(finished_run: Path, tmp_path: Path) -> None:
    run = _copy_run(finished_run, tmp_path)
    (run / "baseline.onnx").write_bytes(b"a user's older export")
    _refused(CliRunner().invoke(main, ["export", str(run), "--onnx"]), "baseline.onnx exists")
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
    _refused(CliRunner().invoke(main, command), expected)
    assert list(folder.iterdir()) == []


def test_demo_force_never_replaces_a_folder_of_user_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    _user_files(out)
    before = _snapshot(out)
    _refused(CliRunner().invoke(main, ["demo", "--fast", "--out", str(out), "--force"]), "not a demo folder")
    assert _snapshot(out) == before


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
def test_bad_images_and_labels_exit_2_through_prune(case: str, expected: str, data: dict[str, Path],  # noqa: F811
                                                     tmp_path: Path) -> None:  # fmt: skip
    from test_image_inputs import _png

    refs = tmp_path / "refs"
    shutil.copytree(data["refs"], refs)
    extra: list[str] = []
    if case == "bomb":
        _png(refs / "0" / "bomb.png", 20000, 20000)
    elif case == "strip":
        _png(refs / "6" / "strip.png", 1_000_000, 1)
    else:
        labels = tmp_path / "labels.txt"
        labels.write_bytes(b"T-shirt\nShirt\n" if case == "labels too short" else b"caf\xe9\n" * 10)
        extra = ["--labels", str(labels)]
    out = tmp_path / "run"
    _refused(CliRunner().invoke(main, [*_args({**data, "refs": refs}, out), *extra]), expected)
    assert not out.exists()


@pytest.mark.skipif(not hasattr(signal, "alarm"), reason="FIFOs and alarms are POSIX")
def test_a_fifo_among_the_references_is_skipped_not_waited_for(data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    refs = tmp_path / "refs"
    shutil.copytree(data["refs"], refs)
    os.mkfifo(refs / "0" / "x.png")
    signal.alarm(120)  # a regression hangs on the FIFO: fail instead of blocking the suite
    try:
        result = CliRunner().invoke(main, [*_args({**data, "refs": refs}, tmp_path / "run"), "--max-rate", "0.1"])
    finally:
        signal.alarm(0)
    assert result.exit_code == 0, result.stderr
    assert "x.png" in result.stderr and "skipped" in result.stderr


# --- found in review -----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_force_onto_a_new_or_empty_folder_runs(state: str, data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "run"
    if state == "empty":
        out.mkdir()
    result = CliRunner().invoke(main, [*_args(data, out), "--max-rate", "0.1", "--force"])
    assert result.exit_code == 0, result.stderr
    assert (out / "model.pt").is_file()


def test_demo_force_keeps_files_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    OwnedFolder(out, "demo", ()).path.mkdir()
    OwnedFolder(out, "demo", ()).mark()  # a demo folder ...
    (out / "refs" / "Shirt").mkdir(parents=True)
    (out / "refs" / "Shirt" / "00001.png").write_bytes(b"the demo's")
    (out / "refs" / "Shirt" / "holiday.jpg").write_bytes(b"the user's")  # ... with a user's file in it
    before = _snapshot(out)
    _refused(CliRunner().invoke(main, ["demo", "--fast", "--out", str(out), "--force"]), "holiday.jpg")
    assert _snapshot(out) == before


def test_export_to_a_file_named_like_the_baseline_is_refused(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "baseline.onnx"
    _refused(CliRunner().invoke(main, ["export", str(finished_run), "--onnx", str(target)]), "--no-baseline")
    assert not target.exists()


def test_resume_with_another_setting_names_the_setting(finished_run: Path, data: dict[str, Path],  # noqa: F811
                                                       tmp_path: Path) -> None:  # fmt: skip
    run = _interrupted_copy(finished_run, tmp_path)
    args = [*_args(data, run), "--max-rate", "0.2", "--step", "0.1", "--per-class", "4", "--resume"]
    _refused(CliRunner().invoke(main, args), "these differ: per_class")


def test_a_run_of_an_older_version_is_named_as_such(finished_run: Path, data: dict[str, Path],  # noqa: F811
                                                    tmp_path: Path) -> None:  # fmt: skip
    run = _copy_run(finished_run, tmp_path)
    (run / ".sddpx-tp").unlink()
    before = _snapshot(run)
    for extra in ("--resume", "--force"):
        _refused(CliRunner().invoke(main, [*_args(data, run), extra]), "made by an older sddpx-tp")
    assert _snapshot(run) == before


def test_input_files_inside_the_output_folder_are_refused(finished_run: Path, data: dict[str, Path],  # noqa: F811
                                                          tmp_path: Path) -> None:  # fmt: skip
    run = _copy_run(finished_run, tmp_path)
    weights = run / "weights.pt"
    shutil.copy(data["weights"], weights)
    before = _snapshot(run)
    _refused(CliRunner().invoke(main, [*_args({**data, "weights": weights}, run), "--force"]), "lies inside the output")
    assert _snapshot(run) == before


def test_an_interrupt_while_a_checkpoint_is_saved_waits_for_it() -> None:
    from sddpx_tp.run_directory import interrupts_deferred

    saved = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # a real signal, delivered in the middle of the save
        saved.append("checkpoint")
        saved.append("state")
    assert saved == ["checkpoint", "state"]
