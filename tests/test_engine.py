"""The pruning engine on real architectures and on a small model trained here on real Fashion-MNIST."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from helpers import calibrate_batch_norms
from torch import nn
from torchvision import models

import sddpx_tp.pruning.session as trajectory_module
from sddpx_tp.api import PruneResult, prune
from sddpx_tp.metrics import (
    auc_lowest_class,
    class_accuracy_and_confidence,
    count_macs,
    harmonic_mean,
    highest_rate_kept,
    normalized_auc,
)
from sddpx_tp.models.checkpoint import load_pruned, save_pruned
from sddpx_tp.pruning.config import PruneConfig


def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


ARCHITECTURES = {
    "resnet18": lambda: models.resnet18(num_classes=10),
    "resnet50": lambda: models.resnet50(num_classes=10),
    "vgg16": lambda: models.vgg16(num_classes=10),
    "vgg16_bn": lambda: models.vgg16_bn(num_classes=10),
    "mobilenet_v2": lambda: models.mobilenet_v2(num_classes=10),
    "efficientnet_lite0": _efficientnet_lite0,
}


def _conv_filters_by_hand(model: nn.Module) -> int:
    return sum(m.weight.shape[0] for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.slow
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_prunes_half_the_filters_and_reloads_exactly(architecture: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ARCHITECTURES[architecture]()
    if architecture != "efficientnet_lite0":
        model = calibrate_batch_norms(model)
    model.eval()
    images = torch.randn(8, 3, 64, 64)
    labels = torch.tensor([1, 3] * 4)
    result = prune(
        model, (images, labels), [1, 3], PruneConfig.paper(method="dpx", max_rate=0.5, step=0.25), progress=False
    )
    first, last = result.trajectory[0], result.trajectory[-1]
    assert last.filter_rate == pytest.approx(0.5, abs=0.02)
    assert last.params < first.params and last.macs < first.macs
    with torch.no_grad():
        outputs = result.model(images)
    assert outputs.shape == (8, 2)

    save_pruned(result.model, tmp_path / "model.pt")
    rebuilt = load_pruned(tmp_path / "model.pt", ARCHITECTURES[architecture]())
    with torch.no_grad():
        assert torch.equal(rebuilt(images), outputs)


def test_filter_rate_is_counted_exactly() -> None:
    model = calibrate_batch_norms(models.resnet18(num_classes=10))
    before = _conv_filters_by_hand(model)
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([2, 5] * 3)
    result = prune(
        model, (images, labels), [2, 5], PruneConfig.paper(method="dpx", max_rate=0.3, step=0.1), progress=False
    )
    after = _conv_filters_by_hand(result.model)
    assert result.trajectory[-1].filters == after
    assert result.trajectory[-1].filter_rate == pytest.approx(1 - after / before, abs=1e-12)
    assert _conv_filters_by_hand(model) == before, "the caller's model must not be pruned"


@pytest.mark.parametrize("method", ["px", "dpx", "sd-dpx"])
def test_round_to_keeps_every_width_aligned(method: str) -> None:
    model = calibrate_batch_norms(models.mobilenet_v2(num_classes=10))
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([2, 5] * 3)
    config = PruneConfig.paper(method=method, max_rate=0.4, step=0.2, round_to=8)
    result = prune(model, (images, labels), [2, 5], config, progress=False)
    assert result.trajectory[-1].filter_rate > 0.3
    widths = [m.out_channels for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(width % 8 == 0 for width in widths), widths


def test_macs_count_convs_and_linears_by_hand() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8*3*9 MACs at each of 16*16 positions
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise: 8*9 at 8*8 positions
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 5),
    )
    by_hand = 8 * 3 * 9 * 16 * 16 + 8 * 9 * 8 * 8 + 8 * 8 * 8 * 5
    assert count_macs(model, torch.randn(1, 3, 16, 16)) == by_hand


def test_metrics_against_hand_computed_values() -> None:
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / (2 + 1))
    assert harmonic_mean([0.9, 0.0]) == 0.0
    assert normalized_auc([0.0, 0.5, 1.0], [1.0, 1.0, 0.0]) == pytest.approx(0.75)
    assert auc_lowest_class([0.0, 1.0], [[1.0, 0.5], [0.0, 1.0]]) == pytest.approx(0.25)
    # Logits given directly (identity layer): class 0 images score [2, 0] and [0, 1]; class 1 [0, 3].
    identity = nn.Linear(2, 2)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(2))
        identity.bias.zero_()
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0, 1])
    accuracy, confidence = class_accuracy_and_confidence(identity, logits, labels, 2)
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731  (softmax of two logits)
    assert accuracy == [0.5, 1.0]
    assert confidence == pytest.approx([(sigmoid(2) + sigmoid(-1)) / 2, sigmoid(3)])
    # Start mean 0.9: 0.95 of it is 0.855; class floors 0.9 * (1.0, 0.8) = (0.9, 0.72).
    per_class = [[1.0, 0.8], [0.95, 0.8], [0.98, 0.74], [0.99, 0.71], [1.0, 0.8]]
    assert highest_rate_kept([0.0, 0.2, 0.4, 0.6, 0.8], per_class) == 0.4  # 0.6: class 2 below its floor
    assert highest_rate_kept([0.0, 0.2, 0.4], [[1.0, 0.8], [0.9, 0.7], [1.0, 0.8]], class_kept=0.5) == 0.0  # mean


def _run(task: tuple, method: str, max_rate: float = 0.8, **options: object) -> PruneResult:
    model, references, evaluation = task
    config = PruneConfig.paper(method=method, max_rate=max_rate, step=0.1, **options)
    return prune(model, references, [0, 6], config, evaluation=evaluation, progress=False)


def test_trained_model_is_accurate_before_pruning(fashion_task: tuple) -> None:
    result = _run(fashion_task, "px", max_rate=0.1)
    assert result.trajectory[0].eval_harmonic_mean > 0.7  # T-shirt vs Shirt: a hard pair, far above chance


@pytest.mark.parametrize("method", ["px", "dpx"])
def test_px_and_dpx_trajectories_are_monotone(fashion_task: tuple, method: str) -> None:
    rates = [record.filter_rate for record in _run(fashion_task, method).trajectory]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.8, abs=0.02)
    assert all(later > earlier for earlier, later in itertools.pairwise(rates))


def test_sd_dpx_accepts_the_best_of_its_attempts(fashion_task: tuple) -> None:
    result = _run(fashion_task, "sd-dpx", max_excluded=2)
    assert any(record.attempts > 1 for record in result.trajectory), "the search never ran: the test proves nothing"
    for record in result.trajectory[1:]:
        assert record.reference_harmonic_mean == pytest.approx(max(record.attempt_harmonic_means))


def test_sd_dpx_without_its_functions_is_dpx(fashion_task: tuple) -> None:
    dpx = _run(fashion_task, "dpx").trajectory
    bare = _run(fashion_task, "sd-dpx", order_change=False, rate_change=False).trajectory
    assert len(bare) == len(dpx)
    for ours, theirs in zip(bare, dpx, strict=True):
        assert (ours.filters, ours.params, ours.macs) == (theirs.filters, theirs.params, theirs.macs)
        assert ours.reference_accuracy == theirs.reference_accuracy
        assert ours.eval_accuracy == theirs.eval_accuracy


def test_rejected_trial_leaves_current_model_untouched(fashion_task: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    session_class = trajectory_module.PruningSession
    snapshots: list[dict[str, torch.Tensor]] = []
    checked = []
    original_accept, original_evaluate = session_class.accept, session_class.evaluate_classes

    def accept(self, model, *args, **kwargs):  # type: ignore[no-untyped-def]
        original_accept(self, model, *args, **kwargs)
        snapshots.append({key: value.clone() for key, value in self.current.model.state_dict().items()})

    def evaluate_classes(self, model):  # type: ignore[no-untyped-def]
        if snapshots and model is not self.current.model:  # a trial: the current model must be as accepted
            state = self.current.model.state_dict()
            checked.append(all(torch.equal(state[key], value) for key, value in snapshots[-1].items()))
        return original_evaluate(self, model)

    monkeypatch.setattr(session_class, "accept", accept)
    monkeypatch.setattr(session_class, "evaluate_classes", evaluate_classes)
    result = _run(fashion_task, "sd-dpx", max_excluded=2, masked_trials=False)  # trials on pruned copies
    rejected = sum(record.attempts - 1 for record in result.trajectory[1:])
    assert rejected > 0, "no trial was rejected: the test proves nothing"
    assert checked and all(checked)


def test_bad_settings_are_refused(fashion_task: tuple) -> None:
    model, references, _ = fashion_task
    with pytest.raises(ValueError, match="max_rate"):
        prune(model, references, [0, 6], PruneConfig.paper(max_rate=1.0), progress=False)
    with pytest.raises(ValueError, match="max_excluded"):
        prune(model, references, [0, 6], PruneConfig.paper(max_excluded=-1), progress=False)
    with pytest.raises(ValueError, match="not among the chosen classes"):
        prune(model, references, [0, 5], PruneConfig.paper(), progress=False)
