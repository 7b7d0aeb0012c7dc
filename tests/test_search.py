"""SD-DPX's search beyond the paper: masked trials, the class floor and patience (issue 8)."""

from __future__ import annotations

import pytest
import torch
from helpers import calibrate_batch_norms
from torchvision import models

import sddpx_tp.pruning.session as trajectory_module
from sddpx_tp.api import PruneResult, prune
from sddpx_tp.lrp.relevance import RelevanceConfig, filter_relevance
from sddpx_tp.models.classifier import restrict_to_classes
from sddpx_tp.pruning.compensation import input_channel_means
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.surgery import Candidate, PrunableModel


def _run(task: tuple, **options: object) -> PruneResult:
    model, references, evaluation = task
    config = PruneConfig.paper(method="sd-dpx", max_rate=0.8, step=0.1, **options)
    return prune(model, references, [0, 6], config, evaluation=evaluation, progress=False)


@pytest.mark.parametrize("architecture", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("compensated", [False, True], ids=["plain", "compensated"])
def test_masked_trial_gives_the_pruned_models_outputs_and_restores_the_model(
    architecture: str, compensated: bool
) -> None:
    model = getattr(models, architecture)(num_classes=10)
    model = restrict_to_classes(calibrate_batch_norms(model), [1, 3]).eval()
    images = torch.randn(8, 3, 32, 32)
    prunable = PrunableModel(model, images, round_to=8)
    relevance = filter_relevance(model, (images, torch.tensor([0, 1] * 4)), RelevanceConfig(normalize=True))
    # The most relevant bundles: a random network's least relevant channels are dead and would change nothing.
    chosen = prunable.select(reversed(prunable.candidates(prunable.group_scores(relevance))), 600)
    means = input_channel_means(model, images) if compensated else None
    before = {key: value.clone() for key, value in model.state_dict().items()}
    pruned_copy = prunable.copy()  # traces its own graph: outside no_grad
    pruned_copy.remove(chosen, means)
    with torch.no_grad():
        unpruned = model(images)
        with prunable.masked(chosen, means) as masked_model:
            masked = masked_model(images)
        pruned = pruned_copy.model(images)
    assert (masked - pruned).abs().max().item() < 1e-5
    assert (masked - unpruned).abs().max().item() > 1e-3, "the removal must show: the test would prove nothing"
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_masked_trials_take_the_same_path_as_pruned_copies(fashion_task: tuple) -> None:
    masked = _run(fashion_task, max_excluded=2, compensation="always").trajectory
    copies = _run(fashion_task, max_excluded=2, compensation="always", masked_trials=False).trajectory
    assert any(record.attempts > 1 for record in copies), "the search never ran: the test proves nothing"
    assert [(r.filters, r.reference_accuracy, r.eval_accuracy, r.attempts) for r in masked] == [
        (r.filters, r.reference_accuracy, r.eval_accuracy, r.attempts) for r in copies
    ]


@pytest.mark.parametrize(("floor", "expected_trial"), [(0.0, 2), (0.9, 1)])
def test_class_floor_prefers_attempts_that_keep_every_class(
    fashion_task: tuple, monkeypatch: pytest.MonkeyPatch, floor: float, expected_trial: int
) -> None:
    """One step whose trials score (scripted) [1.0, 0.5], [0.9, 0.9], [1.0, 0.85]: all below the
    unpruned H of 1.0, so the best attempt is taken. By H alone that is the third (H 0.92);
    with a floor of 0.9 per class, only the second keeps both classes and must win."""
    # Per-class accuracy as the session sees it: unpruned (H, then its record), the three trials, the record.
    accuracies = [[1.0, 1.0], [1.0, 1.0], [1.0, 0.5], [0.9, 0.9], [1.0, 0.85], [0.9, 0.9]]
    scripted = iter([(accuracy, accuracy) for accuracy in accuracies])
    trials: list[list[Candidate]] = []
    removed: list[list[Candidate]] = []
    original_masked, original_remove = PrunableModel.masked, PrunableModel.remove

    def masked(self, chosen, means=None, repair=None):  # type: ignore[no-untyped-def]
        trials.append(list(chosen))
        return original_masked(self, chosen, means, repair)

    def remove(self, chosen, means=None, repair=None):  # type: ignore[no-untyped-def]
        removed.append(list(chosen))
        return original_remove(self, chosen, means, repair)

    monkeypatch.setattr(trajectory_module, "class_accuracy_and_confidence", lambda *args: next(scripted))
    monkeypatch.setattr(PrunableModel, "masked", masked)
    monkeypatch.setattr(PrunableModel, "remove", remove)
    model, references, _ = fashion_task
    config = PruneConfig.paper(method="sd-dpx", max_rate=0.1, step=0.1, max_excluded=2, rate_change=False,
                               class_floor=floor)  # fmt: skip
    prune(model, references, [0, 6], config, progress=False)
    assert len(trials) == 3 and len({tuple(trial) for trial in trials}) == 3
    assert removed == [trials[expected_trial]]


def test_patience_cuts_evaluations_and_still_reaches_the_rate(fashion_task: tuple) -> None:
    patient = _run(fashion_task, max_excluded=6, patience=1).trajectory
    thorough = _run(fashion_task, max_excluded=6).trajectory
    assert patient[-1].filter_rate == pytest.approx(0.8, abs=0.02)
    assert patient[-1].evaluations < thorough[-1].evaluations


@pytest.mark.parametrize(("option", "value"), [("class_floor", 1.5), ("class_floor", -0.1), ("patience", -1)])
def test_bad_search_settings_are_refused(fashion_task: tuple, option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        _run(fashion_task, **{option: value})


@pytest.mark.parametrize("compensation_wins", [True, False])
def test_adaptive_compensation_keeps_the_more_confident_variant(
    fashion_task: tuple, monkeypatch: pytest.MonkeyPatch, compensation_wins: bool
) -> None:
    """Both variants of the one trial reach H = 1.0 (scripted); the tie goes to the higher mean
    true-class probability, and the step is removed the way that variant was evaluated."""
    low, high = ([1.0, 1.0], [0.6, 0.6]), ([1.0, 1.0], [0.9, 0.9])
    unpruned = ([1.0, 1.0], [0.95, 0.95])
    # As the session sees it: the unpruned model (H, then its record), the trial without and with, the record.
    variants = [low, high] if compensation_wins else [high, low]
    scripted = iter([unpruned, unpruned, *variants, high])
    removals: list[bool] = []
    original_remove = PrunableModel.remove

    def remove(self, chosen, means=None, repair=None):  # type: ignore[no-untyped-def]
        removals.append(means is not None)
        return original_remove(self, chosen, means, repair)

    monkeypatch.setattr(trajectory_module, "class_accuracy_and_confidence", lambda *args: next(scripted))
    monkeypatch.setattr(PrunableModel, "remove", remove)
    model, references, _ = fashion_task
    config = PruneConfig.paper(method="sd-dpx", max_rate=0.1, step=0.1, compensation="adaptive")
    result = prune(model, references, [0, 6], config, progress=False)
    assert result.trajectory[-1].evaluations == 3  # the unpruned model, then one trial in two variants
    assert removals == [compensation_wins]


def test_adaptive_compensation_needs_masked_trials(fashion_task: tuple) -> None:
    with pytest.raises(ValueError, match="masked_trials"):
        _run(fashion_task, compensation="adaptive", masked_trials=False)
