"""A linear head for new classes: the fit is optimal, separable classes are separated, cross-fitting is honest."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import SPEC, prune_args

from sddpx_tp import PruneConfig, prune
from sddpx_tp.cli import main
from sddpx_tp.data.references import load_image_folder
from sddpx_tp.errors import SettingError
from sddpx_tp.models.classifier import classifier_name
from sddpx_tp.pruning.accuracy_target import hold_back
from sddpx_tp.pruning.head import CrossFittedJudge, cross_fitted_logits, fit_head, fit_logistic, pooled_features


def test_the_fit_is_the_optimum_of_the_regularised_loss() -> None:
    # Independent check: at the optimum the gradient of the objective (mean loss + strength/2 |W|^2) vanishes.
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(60, 12, generator=generator, dtype=torch.float64) * 3 + 1
    labels = torch.randint(0, 3, (60,), generator=generator)
    strength = 0.1
    head = fit_logistic(features, labels, 3, strength)
    weight, bias = head.weight.clone().requires_grad_(True), head.bias.clone().requires_grad_(True)
    loss = F.cross_entropy(features @ weight.T + bias, labels) + strength / 2 * weight.pow(2).sum()
    loss.backward()
    assert weight.grad is not None and bias.grad is not None
    assert float(weight.grad.abs().max()) < 1e-6 and float(bias.grad.abs().max()) < 1e-6


def test_the_fit_agrees_with_scikit_learn() -> None:
    # An independent solver of the same problem: scikit-learn's multinomial logistic regression minimises
    # 1/2 |W|^2 + C * sum of losses, which is ours (mean loss + strength/2 |W|^2) for C = 1 / (strength * n).
    # Three classes: for two, scikit-learn fits one weight vector instead of the symmetric pair.
    from sklearn.linear_model import LogisticRegression

    generator = torch.Generator().manual_seed(3)
    features = torch.randn(90, 8, generator=generator, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 3, (90,), generator=generator)
    features[:, 0] += labels  # some signal, so the fit is not trivial
    strength = 0.05
    head = fit_logistic(features, labels, 3, strength)
    reference = LogisticRegression(C=1 / (strength * len(labels)), tol=1e-12, max_iter=10_000)
    reference.fit(features.numpy(), labels.numpy())
    expected = torch.from_numpy(reference.predict_proba(features.numpy()))
    assert torch.allclose(head.logits(features).softmax(1), expected, atol=1e-6)


def test_separable_classes_are_separated() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat_interleave(20)
    centres = torch.tensor([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]], dtype=torch.float64)
    features = centres[labels] + 0.3 * torch.randn(60, 3, generator=generator, dtype=torch.float64)
    fit = fit_head(features, labels, 3)
    assert fit.fitted_accuracy == [1.0, 1.0, 1.0]
    assert min(fit.cross_validated_accuracy) == 1.0
    assert (fit.head.logits(centres).argmax(1) == torch.arange(3)).all()


def test_cross_fitting_sees_through_a_head_that_memorised_noise() -> None:
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(40, 400, generator=generator, dtype=torch.float64)  # more features than images
    labels = torch.arange(2).repeat_interleave(20)  # labels unrelated to the features
    head = fit_logistic(features, labels, 2, strength=1e-4)
    fitted = float((head.logits(features).argmax(1) == labels).double().mean())
    crossed = float((cross_fitted_logits(features, labels, 2, 1e-4).argmax(1) == labels).double().mean())
    assert fitted == 1.0
    assert crossed < 0.75  # chance is 0.5: the honest figure says the head knows nothing


def test_prune_with_a_fitted_head_judges_trials_by_cross_fitting(fashion_task: tuple) -> None:
    model, references, held_out = fashion_task
    config = PruneConfig.recommended(head="fit", max_rate=0.2, step=0.1)
    result = prune(model, references, [0, 6], config, evaluation=held_out, progress=False)
    name = classifier_name(model)
    head = result.model.get_submodule(name)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 2
    # A new head even though the folders are model outputs: not the old rows 0 and 6.
    assert result.head is not None
    assert not torch.allclose(result.head.head.weight.float(), model.get_submodule(name).weight[[0, 6]], atol=1e-3)
    first = result.trajectory[0]
    assert first.reference_accuracy == pytest.approx(result.head.cross_validated_accuracy)
    # The unpruned model with the fitted head: its held-out accuracy is that of a plain logistic regression.
    features = pooled_features(model, held_out[0])
    positions = (held_out[1] == 6).long()
    predicted = result.head.head.logits(features).argmax(1)
    accuracy = [float((predicted[positions == c] == c).double().mean()) for c in (0, 1)]
    assert first.eval_accuracy == pytest.approx(accuracy, abs=1e-6)
    assert min(accuracy) > 0.6


def test_a_held_back_judge_scores_the_model_on_references_kept_out_of_the_fit(fashion_task: tuple) -> None:
    model, references, held_out = fashion_task
    config = PruneConfig.recommended(head="fit", head_judge="held-back", max_rate=0.2, step=0.1)
    result = prune(model, references, [0, 6], config, evaluation=held_out, progress=False)
    assert result.head is not None
    kept, judged = hold_back((references[0], (references[1] == 6).long()), config.held_back, config.seed)
    assert judged[1].tolist().count(0) == judged[1].tolist().count(1) == 10  # a third of each class's 30
    # The head was fitted on the other 40 alone: fitting them again gives it back (fitting all 60 would not).
    again = fit_head(pooled_features(model, kept[0]), kept[1], 2, config.head.folds, config.seed)
    assert torch.allclose(again.head.weight, result.head.head.weight, atol=1e-6)
    everything = fit_head(pooled_features(model, references[0]), (references[1] == 6).long(), 2)
    assert not torch.allclose(everything.head.weight, result.head.head.weight, atol=1e-3)
    # The unpruned model is judged through that head on the held-back 20, not by cross-fitting.
    predicted = result.head.head.logits(pooled_features(model, judged[0])).argmax(1)
    accuracy = [float((predicted[judged[1] == c] == c).double().mean()) for c in (0, 1)]
    assert result.trajectory[0].reference_accuracy == pytest.approx(accuracy, abs=1e-6)
    assert len(result.trajectory) > 1


def test_a_fitted_heads_settings_need_a_fitted_head() -> None:
    # Ignored silently they would let a user believe a judge or a fold count took effect.
    for changes in ({"head_judge": "held-back"}, {"head_folds": 3}):
        with pytest.raises(SettingError, match="applies only to a fitted head"):
            PruneConfig.recommended(**changes)
        assert PruneConfig.recommended(head="fit", **changes).head.mode == "fit"


def test_cross_fitted_scores_measure_the_backbone_not_the_head(fashion_task: tuple) -> None:
    model, (images, labels), _ = fashion_task
    positions = (labels == 6).long()
    scores = CrossFittedJudge((images, positions), 2, strength=0.1)
    accuracy, confidence = scores(model)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken[0].weight.zero_()  # the first conv gone: the backbone has no features left
    broken_accuracy, _ = scores(broken)
    assert min(accuracy) > 0.6 and all(0 < value <= 1 for value in confidence)
    assert min(broken_accuracy) < min(accuracy)


def test_cli_fits_a_head_for_folders_of_new_classes_and_exports_it(data: dict[str, Path], tmp_path: Path) -> None:
    refs, evaluation = tmp_path / "refs", tmp_path / "eval"
    for source, target in ((data["refs"], refs), (data["eval"], evaluation)):
        shutil.copytree(source / "0", target / "my_tops")  # names no model output has
        shutil.copytree(source / "6", target / "my_shirts")
    run = tmp_path / "run"
    args = [*prune_args({**data, "refs": refs}, run), "--eval", str(evaluation), "--head", "fit", "--max-rate", "0.2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    report = json.loads((run / "report.json").read_text())
    assert [row["folder"] for row in report["classes"]] == ["my_shirts", "my_tops"]
    assert "new linear head" in (run / "report.md").read_text()
    exported = CliRunner().invoke(main, ["export", str(run), "--onnx", "--json"])
    assert exported.exit_code == 0, exported.stderr
    facts = json.loads(exported.stdout)
    for label in ("model", "baseline"):
        assert facts[label]["parity"]["max_abs_diff"] <= 1e-4
        session = ort.InferenceSession(facts[label]["path"], providers=["CPUExecutionProvider"])
        assert session.get_outputs()[0].shape[1] == 2  # the fitted head's two classes, inside the ONNX
    # The unpruned baseline is the backbone with the head fitted at the start (step 0's accuracy).
    baseline = onnx_accuracy(run / "baseline.onnx", evaluation, ["my_shirts", "my_tops"])
    assert baseline == pytest.approx(report["trajectory"][0]["eval_accuracy"], abs=1e-6)


def onnx_accuracy(path: Path, folder: Path, classes: list[str]) -> list[float]:
    images = load_image_folder(folder, SPEC, num_outputs=10, chosen=classes, folder_labels=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predicted = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.images.numpy()})[0]).argmax(1)
    return [float((predicted[images.labels == c] == c).float().mean()) for c in range(len(classes))]


@pytest.mark.parametrize("refit", [True, False])
def test_the_head_is_refit_on_the_pruned_backbone_or_kept(fashion_task: tuple, refit: bool) -> None:
    model, references, _ = fashion_task
    # Fixed weights (no repair): with refit_head off the start's head must come through untouched.
    config = PruneConfig.recommended(
        head="fit", refit_head=refit, max_rate=0.35, step=0.15, compensation="never", repair=()
    )
    result = prune(model, references, [0, 6], config, progress=False)
    assert result.head is not None and result.trajectory[-1].filter_rate > 0.2
    head = result.model.get_submodule(classifier_name(result.model))
    positions = (references[1] == 6).long()
    features = pooled_features(result.model, references[0])
    expected = fit_logistic(features, positions, 2, result.head.strength)
    refitted = torch.allclose(head.weight.double(), expected.weight, atol=1e-5)
    assert refitted == refit
    if not refit:  # the start's head, its columns of the kept features only (nothing compensated)
        kept = head.weight.shape[1]
        assert kept < result.head.head.weight.shape[1]
        assert torch.allclose(head.bias.double(), result.head.head.bias, atol=1e-6)
