"""Run folders under hostile but realistic use: --force, collisions, locks, resumes, code execution."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import prune_args
from refusals import copy_run, interrupted_copy, refused, snapshot, write_user_files

from sddpx_tp.cli import main
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.run.owned_folder import OwnedFolder

# --- run folders ----------------------------------------------------------------------------------------


def test_force_never_replaces_a_folder_of_user_files(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mine"
    write_user_files(out)
    before = snapshot(out)
    refused(CliRunner().invoke(main, [*prune_args(data, out), "--force"]), "not a run folder made by sddpx-tp")
    assert snapshot(out) == before


def test_force_onto_the_working_folder_or_the_references_is_refused(
    data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = tmp_path / "work"
    write_user_files(work)
    before = snapshot(work)
    monkeypatch.chdir(work)
    refused(CliRunner().invoke(main, [*prune_args(data, Path(".")), "--force"]), "not a run folder")
    assert snapshot(work) == before
    references = snapshot(data["refs"])
    refused(CliRunner().invoke(main, [*prune_args(data, data["refs"]), "--force"]), "not a run folder")
    assert snapshot(data["refs"]) == references


def test_force_replaces_a_run_but_keeps_files_that_are_not_ours(finished_run: Path, data: dict[str, Path],
                                                                tmp_path: Path) -> None:  # fmt: skip
    run = copy_run(finished_run, tmp_path)
    (run / "my_notes.txt").write_text("keep me")
    old_state = (run / "state.json").read_bytes()
    result = CliRunner().invoke(main, [*prune_args(data, run), "--max-rate", "0.1", "--force"])
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
    data: dict[str, Path],
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
    before = snapshot(tmp_path)
    folders = {**data, "refs": refs}
    held_out = refs if where == "eval is refs" else evaluation
    refused(CliRunner().invoke(main, [*prune_args(folders, out), "--eval", str(held_out)]), expected)
    assert snapshot(tmp_path) == before


def test_held_out_images_that_are_also_references_are_reported(data: dict[str, Path], tmp_path: Path) -> None:
    evaluation = tmp_path / "eval"
    shutil.copytree(data["refs"], evaluation)  # the same images under another folder
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*prune_args(data, out), "--eval", str(evaluation), "--max-rate", "0.1"])
    assert result.exit_code == 0, result.stderr
    assert "16 of the 16 held-out images are also reference images" in result.stderr
    assert "also reference images" in (out / "report.md").read_text()


def test_a_second_writer_is_refused_while_the_run_is_in_use(finished_run: Path, data: dict[str, Path],
                                                            tmp_path: Path) -> None:  # fmt: skip
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    with RunDirectory(run).folder.lock():  # another process writing: an OS lock on another open file
        refused(CliRunner().invoke(main, [*prune_args(data, run), "--force"]), "in use by another sddpx-tp process")
        refused(CliRunner().invoke(main, ["export", str(run), "--onnx"]), "in use")
    assert snapshot(run) == before


# --- resume -----------------------------------------------------------------------------------------------


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
    data: dict[str, Path],
    tmp_path: Path,
) -> None:
    refs = tmp_path / "refs"
    shutil.copytree(data["refs"], refs)
    if damage == "replaced references":  # a run of its own, on references this test may change
        made = CliRunner().invoke(main, [*prune_args({**data, "refs": refs}, tmp_path / "own"), "--max-rate", "0.2"])
        assert made.exit_code == 0, made.stderr
        finished_run = tmp_path / "own"
    run = interrupted_copy(finished_run, tmp_path)
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
    args = prune_args({**data, "refs": refs if damage == "replaced references" else data["refs"]}, run, "--resume",
                 "--max-rate", "0.2", "--step", "0.1")  # fmt: skip
    if damage == "replaced references":
        victim = sorted((refs / "0").iterdir())[0]
        shutil.copy(sorted((refs / "6").iterdir())[0], victim)  # same name, other image
    before = snapshot(run)
    refused(CliRunner().invoke(main, args), expected)
    assert snapshot(run) == before


def test_resume_after_an_interrupt_before_the_first_step_starts_over(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    OwnedFolder(out, "run", ()).path.mkdir()
    OwnedFolder(out, "run", ()).mark()  # what a run leaves when Ctrl-C comes before its first accepted step
    (out / "prune.log").write_text("interrupted\n")
    result = CliRunner().invoke(main, [*prune_args(data, out), "--max-rate", "0.1", "--resume"])
    assert result.exit_code == 0, result.stderr
    assert (out / "model.pt").is_file()


def test_a_crash_after_pruning_leaves_a_run_that_resumes(
    data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sddpx_tp.run.workflow as run_module

    real = run_module.write_report

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    out = tmp_path / "run"
    monkeypatch.setattr(run_module, "write_report", crash)
    with pytest.raises(OSError, match="disk full"):
        CliRunner().invoke(main, [*prune_args(data, out), "--max-rate", "0.1"], catch_exceptions=False)
    assert not (out / "model.pt").exists()  # not finished: export refuses it with a clear line
    refused(CliRunner().invoke(main, ["export", str(out), "--onnx"]), "no pruned model yet")
    monkeypatch.setattr(run_module, "write_report", real)
    result = CliRunner().invoke(main, [*prune_args(data, out), "--max-rate", "0.1", "--resume"])
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
    run = copy_run(finished_run, tmp_path)
    proof, evil = tmp_path / "code-ran", tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Payload(proof)))
    document = json.loads((run / "state.json").read_text())
    document["settings"]["model"]["name"] = str(evil)
    (run / "state.json").write_text(json.dumps(document))
    for command in (["export", str(run), "--onnx"], ["report", str(run), "--latency"]):
        refused(CliRunner().invoke(main, command), f"name it with --model {evil}")
    assert not proof.exists()
    assert not (run / "model.onnx").exists()


def test_demo_force_never_replaces_a_folder_of_user_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    write_user_files(out)
    before = snapshot(out)
    refused(CliRunner().invoke(main, ["demo", "--fast", "--out", str(out), "--force"]), "not a demo folder")
    assert snapshot(out) == before


# --- found in review -----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_force_onto_a_new_or_empty_folder_runs(state: str, data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    if state == "empty":
        out.mkdir()
    result = CliRunner().invoke(main, [*prune_args(data, out), "--max-rate", "0.1", "--force"])
    assert result.exit_code == 0, result.stderr
    assert (out / "model.pt").is_file()


def test_demo_force_keeps_files_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    OwnedFolder(out, "demo", ()).path.mkdir()
    OwnedFolder(out, "demo", ()).mark()  # a demo folder ...
    (out / "refs" / "Shirt").mkdir(parents=True)
    (out / "refs" / "Shirt" / "00001.png").write_bytes(b"the demo's")
    (out / "refs" / "Shirt" / "holiday.jpg").write_bytes(b"the user's")  # ... with a user's file in it
    before = snapshot(out)
    refused(CliRunner().invoke(main, ["demo", "--fast", "--out", str(out), "--force"]), "holiday.jpg")
    assert snapshot(out) == before


def test_resume_with_another_setting_names_the_setting(finished_run: Path, data: dict[str, Path],
                                                       tmp_path: Path) -> None:  # fmt: skip
    run = interrupted_copy(finished_run, tmp_path)
    args = [*prune_args(data, run), "--max-rate", "0.2", "--step", "0.1", "--per-class", "4", "--resume"]
    refused(CliRunner().invoke(main, args), "these differ: per_class")


def test_a_run_of_an_older_version_is_named_as_such(finished_run: Path, data: dict[str, Path],
                                                    tmp_path: Path) -> None:  # fmt: skip
    run = copy_run(finished_run, tmp_path)
    (run / ".sddpx-tp").unlink()
    before = snapshot(run)
    for extra in ("--resume", "--force"):
        refused(CliRunner().invoke(main, [*prune_args(data, run), extra]), "made by an older sddpx-tp")
    assert snapshot(run) == before


def test_input_files_inside_the_output_folder_are_refused(finished_run: Path, data: dict[str, Path],
                                                          tmp_path: Path) -> None:  # fmt: skip
    run = copy_run(finished_run, tmp_path)
    weights = run / "weights.pt"
    shutil.copy(data["weights"], weights)
    before = snapshot(run)
    refused(
        CliRunner().invoke(main, [*prune_args({**data, "weights": weights}, run), "--force"]), "lies inside the output"
    )
    assert snapshot(run) == before


def test_an_interrupt_while_a_checkpoint_is_saved_waits_for_it() -> None:
    from sddpx_tp.run.folder import interrupts_deferred

    saved = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # a real signal, delivered in the middle of the save
        saved.append("checkpoint")
        saved.append("state")
    assert saved == ["checkpoint", "state"]
