"""What a new user tripped over (issue 34): suggestions for a folder that names no class, index folders in
numeric order, photos in formats not read, skip warnings with their reason, a corrupt EXIF warning that names
its file, a held-out folder that lacks a class, and a report that says its accuracy is among the chosen classes."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import prune_args
from PIL import Image

from sddpx_tp.cli import main
from sddpx_tp.data.class_folders import natural_order, similar_names
from sddpx_tp.data.references import load_image_folder
from sddpx_tp.errors import UserError
from sddpx_tp.export.onnx import read_metadata
from sddpx_tp.models.registry import ModelSpec, imagenet_class_names
from sddpx_tp.pruning.session import StepRecord
from sddpx_tp.run.plots import plot_accuracy, speed_axis

SPEC = ModelSpec("m", input_size=8, resize_size=8)


def _folder(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(root / name / f"{index}.png")
    return root


def test_a_folder_named_cat_is_offered_the_cats_of_imagenet() -> None:
    offered = similar_names("cat", imagenet_class_names())
    assert offered[:4] == ["tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"]
    assert "crate" not in offered
    assert similar_names("tabyb", imagenet_class_names())[0] == "tabby"  # a typo still finds its name


def test_the_refusal_suggests_the_names_and_the_fitted_head(tmp_path: Path) -> None:
    spec = ModelSpec("imagenet-model", input_size=8, resize_size=8, class_names=imagenet_class_names())
    root = _folder(tmp_path / "refs", {"cat": 1, "tabby": 1})
    with pytest.raises(UserError) as refused:
        load_image_folder(root, spec, 1000)
    message = str(refused.value)
    assert "'cat' matches no class name" in message and "tiger cat, Persian cat" in message and "head" in message


def test_index_folders_are_read_in_numeric_order(tmp_path: Path) -> None:
    assert natural_order(["10", "2", "100", "b", "1", "a"]) == ["1", "2", "10", "100", "a", "b"]
    root = _folder(tmp_path / "refs", {"10": 1, "2": 1, "1": 1})
    assert load_image_folder(root, SPEC, 12).classes == [1, 2, 10]


def test_photos_in_formats_not_read_are_counted_and_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "refs", {"0": 2, "1": 2})
    for index in range(3):
        (root / "0" / f"IMG_{index}.HEIC").write_bytes(b"not read")
    images = load_image_folder(root, SPEC, 2)
    assert sorted(path.name for path in images.ignored) == ["IMG_0.HEIC", "IMG_1.HEIC", "IMG_2.HEIC"]
    for path in (root / "1").iterdir():
        path.unlink()
    (root / "1" / "photo.heic").write_bytes(b"not read")
    with pytest.raises(UserError, match=r"has no readable images .*\.heic files are not read: convert them"):
        load_image_folder(root, SPEC, 2)


def test_a_corrupt_exif_warning_names_its_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "refs", {"0": 1, "1": 1})
    broken_exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06garbage"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", exif=broken_exif)
    (root / "0" / "broken.jpg").write_bytes(buffer.getvalue())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image_folder(root, SPEC, 2)
    messages = [str(warning.message) for warning in caught]
    assert any("broken.jpg" in message and "Corrupt EXIF" in message for message in messages), messages


def test_the_cli_says_why_an_image_was_skipped_and_which_files_it_did_not_read(
    data: dict[str, Path], tmp_path: Path
) -> None:
    refs = tmp_path / "refs"
    shutil.copytree(data["refs"], refs)
    folder = next(path for path in refs.iterdir() if path.is_dir())
    (folder / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "phone.HEIC").write_bytes(b"not read")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [*prune_args({**data, "refs": refs}, run), "--max-rate", "0.1"])
    assert result.exit_code == 0, result.stderr
    assert "truncated.png: not an image, or in a format PIL cannot read" in result.stderr
    assert "1 reference files (.HEIC) were not read" in result.stderr
    assert "were not read" in (run / "report.md").read_text()


def test_a_held_out_folder_without_a_class_of_the_references_says_so(data: dict[str, Path], tmp_path: Path) -> None:
    evaluation = tmp_path / "eval"
    shutil.copytree(data["eval"], evaluation)
    missing = sorted(path for path in evaluation.iterdir() if path.is_dir())[0]
    shutil.rmtree(missing)
    result = CliRunner().invoke(main, [*prune_args(data, tmp_path / "run"), "--eval", str(evaluation)])
    assert result.exit_code == 2
    assert f"has no class folder {missing.name}, a class of the references" in result.stderr
    assert "--classes" not in result.stderr  # never given: not to blame


def test_the_report_says_accuracy_is_among_the_chosen_classes(data: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [*prune_args(data, run), "--eval", str(data["eval"]), "--max-rate", "0.1"])
    assert result.exit_code == 0, result.stderr
    notes = json.loads((run / "report.json").read_text())["notes"]
    among = next(note for note in notes if note.startswith("Accuracies are among the 2 chosen classes"))
    assert "(of the model's 10)" in among and "Over all 10 outputs the unpruned model" in among
    assert among in (run / "report.md").read_text()


def _record(step: int, rate: float, accuracy: list[float], **extra: object) -> StepRecord:
    return StepRecord(step=step, filter_rate=rate, filters=100, params=100, macs=100, params_ratio=1.0,
                      macs_ratio=1.0 - 0.9 * rate, reference_accuracy=accuracy, reference_harmonic_mean=0.5,
                      eval_accuracy=accuracy, eval_harmonic_mean=0.5, seconds=0.0, relevance_passes=0, evaluations=0,
                      attempts=0, attempt_harmonic_means=[], **extra)  # type: ignore[arg-type]  # fmt: skip


def test_the_accuracy_plot_takes_many_classes_without_a_warning(tmp_path: Path) -> None:
    classes = 30  # identical curves too: every class at the same accuracy
    trajectory = [_record(step, step / 10, [1.0 - step / 20] * classes) for step in range(10)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Tight layout not applied" leaked out before
        plot_accuracy(trajectory, [f"class {index}" for index in range(classes)], tmp_path / "accuracy.png")
    with Image.open(tmp_path / "accuracy.png") as image:
        assert image.size[0] > image.size[1]  # two panels side by side, the legend beside them


def test_the_speed_panel_prefers_measured_then_predicted_then_macs() -> None:
    measured = [_record(0, 0.0, [1.0], speedup=1.0, predicted_ms=4.0), _record(1, 0.5, [1.0], speedup=3.0,
                                                                                predicted_ms=1.0)]  # fmt: skip
    assert speed_axis(measured) == ([1.0, 3.0], "measured speedup (ONNX Runtime CPU, batch 1)")
    predicted = [_record(0, 0.0, [1.0], predicted_ms=4.0), _record(1, 0.5, [1.0], predicted_ms=1.0)]
    assert speed_axis(predicted) == ([1.0, 4.0], "speedup predicted by the latency table")
    counted = [_record(0, 0.0, [1.0]), _record(1, 0.5, [1.0])]  # MACs x0.55: 1/0.55 fewer
    assert speed_axis(counted)[0] == pytest.approx([1.0, 1 / 0.55])


def test_the_exported_file_says_its_classes_and_preprocessing(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    exported = CliRunner().invoke(main, ["export", str(finished_run), "--onnx", str(target)])
    assert exported.exit_code == 0, exported.stderr
    settings = json.loads((finished_run / "state.json").read_text())["settings"]
    folders = settings["resolved"]["class_folders"]
    for path in (target, target.with_name("baseline.onnx")):
        metadata = read_metadata(path)
        assert json.loads(metadata["class_folders"]) == folders
        assert json.loads(metadata["source_outputs"]) == settings["resolved"]["classes"]
        preprocessing = json.loads(metadata["preprocessing"])
        assert (preprocessing["input_size"], preprocessing["resize_size"]) == (32, 32)
        assert preprocessing["mean"] == pytest.approx([0.286] * 3) and "centre-crop" in preprocessing["steps"]
