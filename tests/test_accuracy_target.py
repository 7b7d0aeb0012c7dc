"""Choosing the model by accuracy: the recommended step, stopping at the target, held-back references,
and exporting any kept step (issue 16, point 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from helpers import SPEC, prune_args

from sddpx_tp import PruneConfig, prune
from sddpx_tp.cli import main
from sddpx_tp.data.references import load_image_folder
from sddpx_tp.metrics import per_class_accuracy
from sddpx_tp.models.classifier import restrict_to_classes
from sddpx_tp.pruning.accuracy_target import AccuracyTarget, hold_back


def test_without_image_counts_the_recommended_step_is_the_last_before_the_first_miss() -> None:
    target = AccuracyTarget(mean_kept=0.95, class_kept=0.9)
    rates = [0.0, 0.1, 0.2, 0.3, 0.4]
    # Unpruned mean 0.9; step 2 keeps the mean (0.875 >= 0.855) but class 1 falls to 0.75 < 0.9 * 0.9.
    per_class = [[0.9, 0.9], [0.9, 0.88], [1.0, 0.75], [0.9, 0.9], [0.1, 0.1]]
    assert target.recommended_index(rates, per_class) == 1  # step 3 recovers, but after a miss: not chosen
    assert target.missed_by_last(rates[:3], per_class[:3])
    assert not target.missed_by_last(rates[:2], per_class[:2])
    assert AccuracyTarget(0.95, 0.8).recommended_index(rates, per_class) == 3  # the class share allows 0.75
    assert AccuracyTarget(0.99, 0.0).recommended_index(rates, per_class) == 0  # mean 0.89 < 0.99 * 0.9 at step 1
    assert AccuracyTarget(0.98, 0.0).recommended_index(rates, per_class) == 1  # mean 0.875 < 0.98 * 0.9 at step 2


def test_held_back_references_are_a_seeded_share_of_each_class_and_disjoint() -> None:
    labels = torch.tensor([0] * 30 + [1] * 9)
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1)
    (used, used_labels), (held, held_labels) = hold_back((images, labels), 1 / 3, seed=4)
    assert [int((held_labels == c).sum()) for c in (0, 1)] == [10, 3]
    assert [int((used_labels == c).sum()) for c in (0, 1)] == [20, 6]
    assert not set(used.flatten().tolist()) & set(held.flatten().tolist())
    assert sorted(used.flatten().tolist() + held.flatten().tolist()) == list(range(39))
    again = hold_back((images, labels), 1 / 3, seed=4)[1][0]
    other = hold_back((images, labels), 1 / 3, seed=5)[1][0]
    assert torch.equal(held, again) and not torch.equal(held, other)
    with pytest.raises(ValueError, match="needs two"):
        hold_back((images[:31], labels[:31]), 0.5, seed=0)  # class 1 has one image


def _judged(trajectory: list, field: str) -> list[list[float]]:
    return [getattr(record, field) for record in trajectory]


def test_without_noise_allowance_a_run_stops_at_the_first_step_that_misses_the_target(fashion_task: tuple) -> None:
    model, references, evaluation = fashion_task
    config = PruneConfig.recommended(method="dpx", max_rate=0.9, step=0.1, repair=(), stop_at_target=True,
                                     target_accuracy=0.97, min_class_accuracy=0.95, target_confidence=0.0)  # fmt: skip
    result = prune(model, references, [0, 6], config, evaluation=evaluation, progress=False)
    trajectory = result.trajectory
    unpruned = trajectory[0].eval_accuracy
    assert unpruned is not None

    def meets(accuracy: list[float]) -> bool:  # the target, written out
        mean, first_mean = sum(accuracy) / 2, sum(unpruned) / 2
        return mean >= 0.97 * first_mean and all(a >= 0.95 * u for a, u in zip(accuracy, unpruned, strict=True))

    assert trajectory[-1].filter_rate < 0.85, "the run should have stopped before its max rate"
    assert not meets(trajectory[-1].eval_accuracy)  # it stopped because this step missed
    assert all(meets(record.eval_accuracy) for record in trajectory[:-1])
    assert all(record.holdout_accuracy is None for record in trajectory)  # held-out images judge; nothing held back


def test_without_evaluation_images_held_back_references_judge_the_stop(fashion_task: tuple) -> None:
    model, references, _ = fashion_task
    config = PruneConfig.recommended(method="dpx", max_rate=0.5, step=0.1, repair=(), stop_at_target=True)
    result = prune(model, references, [0, 6], config, progress=False)
    # The held-back share, drawn as the run drew it, measured independently on the final model.
    positions = (references[1] == 6).long()
    used, (held, held_labels) = hold_back((references[0], positions), config.held_back, config.seed)
    assert len(held) == 20
    measured = per_class_accuracy(result.model, held, held_labels, 2)
    assert result.trajectory[-1].holdout_accuracy == pytest.approx(measured, abs=1e-9)
    # Held back from the run: the reference accuracy it records is measured on the other 40 images only.
    unpruned = restrict_to_classes(model, [0, 6]).eval()
    assert result.trajectory[0].reference_accuracy == pytest.approx(per_class_accuracy(unpruned, *used, 2), abs=1e-9)
    assert result.trajectory[0].reference_accuracy != pytest.approx(
        per_class_accuracy(unpruned, references[0], positions, 2), abs=1e-9
    ), "the 40 and the 60 images should score differently, or this proves nothing"


def test_stopping_at_the_target_is_refused_for_progressive_retraining(fashion_task: tuple) -> None:
    model, references, _ = fashion_task
    config = PruneConfig.recommended(method="progressive", stop_at_target=True)
    with pytest.raises(ValueError, match="stop_at_target"):
        prune(model, references, [0, 6], config, training=references, progress=False)


def _onnx_accuracy(path: Path, folder: Path, classes: list[str]) -> list[float]:
    images = load_image_folder(folder, SPEC, num_outputs=10, chosen=classes, folder_labels=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: images.images.numpy()})[0]
    predicted = torch.from_numpy(logits).argmax(1)
    return [float((predicted[images.labels == c] == c).float().mean()) for c in range(len(classes))]


def test_export_writes_the_recommended_step_by_default_and_any_kept_step(data: dict[str, Path], tmp_path: Path) -> None:
    refs, evaluation = tmp_path / "refs", tmp_path / "eval"
    for source, target in ((data["refs"], refs), (data["eval"], evaluation)):
        shutil.copytree(source / "0", target / "tops")
        shutil.copytree(source / "6", target / "shirts")
    run = tmp_path / "run"
    args = [*prune_args({**data, "refs": refs}, run), "--eval", str(evaluation), "--head", "fit", "--max-rate", "0.6",
            "--target-accuracy", "0.99", "--min-class-accuracy", "0.99", "--repair", "none", "--json"]  # fmt: skip
    pruned = CliRunner().invoke(main, args)
    assert pruned.exit_code == 0, pruned.stderr
    report = json.loads((run / "report.json").read_text())
    trajectory, recommended = report["trajectory"], report["recommended"]["step"]
    assert recommended < trajectory[-1]["step"], "the target should have stopped the run after a miss"
    assert report["settings"]["config"]["stop_at_target"] is True
    classes = ["shirts", "tops"]

    # The default: the recommended step, whose accuracy the export reproduces on the held-out images.
    exported = CliRunner().invoke(main, ["export", str(run), "--onnx", "--no-baseline", "--json"])
    assert exported.exit_code == 0, exported.stderr
    facts = json.loads(exported.stdout)["model"]
    assert (facts["step"], facts["recommended"]) == (recommended, True)
    onnx_accuracy = _onnx_accuracy(run / "model.onnx", evaluation, classes)
    assert onnx_accuracy == pytest.approx(trajectory[recommended]["eval_accuracy"], abs=1e-4)

    # The last step, by number and by rate.
    last = trajectory[-1]
    for choice in (["--step", str(last["step"])], ["--rate", f"{last['filter_rate'] + 1e-6:.6f}"]):
        target = tmp_path / f"last{choice[0]}.onnx"
        exported = CliRunner().invoke(main, ["export", str(run), "--onnx", str(target), "--no-baseline", "--json",
                                             *choice])  # fmt: skip
        assert exported.exit_code == 0, exported.stderr
        assert json.loads(exported.stdout)["model"]["step"] == last["step"]
        assert _onnx_accuracy(target, evaluation, classes) == pytest.approx(last["eval_accuracy"], abs=1e-4)

    # A step the run did not keep: one line, exit 2, nothing written.
    missing = next(record["step"] for record in trajectory if record["step"] not in (recommended, last["step"]))
    target = tmp_path / "missing.onnx"
    refused = CliRunner().invoke(main, ["export", str(run), "--onnx", str(target), "--step", str(missing)])
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1 and "--keep-models" in refused.stderr, refused.stderr
    assert not target.exists()
    for bad in (["--step", "999"], ["--rate", "1.5"], ["--step", "1", "--rate", "0.1"]):
        refused = CliRunner().invoke(main, ["export", str(run), "--onnx", str(target), *bad])
        assert refused.exit_code == 2 and refused.stderr.count("\n") == 1, (bad, refused.stderr)
        assert not target.exists()


def test_a_recommended_last_step_is_stored_once_and_exported_by_default(data: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    # A target every step meets: the recommended step is the last one, which model.pt already holds.
    args = [*prune_args(data, run), "--target-accuracy", "0.01", "--min-class-accuracy", "0",
            "--repair", "none", "--json"]  # fmt: skip
    pruned = CliRunner().invoke(main, args)
    assert pruned.exit_code == 0, pruned.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["recommended"]["step"] == report["trajectory"][-1]["step"] > 0
    assert (run / "model.pt").is_file() and not (run / "recommended.pt").exists()
    exported = CliRunner().invoke(main, ["export", str(run), "--onnx", "--no-baseline", "--json"])
    assert exported.exit_code == 0, exported.stderr
    facts = json.loads(exported.stdout)["model"]
    assert (facts["step"], facts["recommended"]) == (report["trajectory"][-1]["step"], True)
