"""The baseline criteria (random, magnitude, bn-scale, taylor) against independent computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import calibrate_batch_norms
from torch import nn

from sddpx_tp.api import prune
from sddpx_tp.errors import SettingError
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.criteria import CRITERIA, channel_scores
from sddpx_tp.pruning.surgery import PrunableModel


def _net() -> nn.Sequential:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1, bias=False),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    for batch_norm in (model[1], model[4]):
        nn.init.uniform_(batch_norm.weight, 0.2, 2.0)  # distinct scales, so bn-scale ranks something
        nn.init.uniform_(batch_norm.bias, -0.1, 0.1)
    return calibrate_batch_norms(model).eval()


def _references() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(12, 3, 8, 8, generator=generator), torch.tensor([0, 1, 2] * 4)


def _scores(criterion: str, model: nn.Module, pass_index: int = 0, seed: int = 0) -> dict[str, list[float]]:
    prunable = PrunableModel(model, _references()[0])
    found = channel_scores(criterion, prunable, _references(), lambda: {}, seed, pass_index)  # type: ignore[arg-type]
    return {root: group.scores for root, group in found.items()}


def _by_mean(values: torch.Tensor) -> list[float]:
    return (values / values.mean()).tolist()


def test_magnitude_is_the_mean_squared_norm_of_every_member_of_the_group() -> None:
    model = _net()
    first, batch_norm, consumer = model[0].weight, model[1].weight, model[3].weight
    # The group of the first conv's channels: its filters, its BatchNorm's scales, the next conv's input slices.
    members = [first.flatten(1).pow(2).sum(1), batch_norm.pow(2), consumer.transpose(0, 1).flatten(1).pow(2).sum(1)]
    expected = _by_mean(torch.stack(members).mean(0).detach())
    assert _scores("magnitude", model)["0"] == pytest.approx(expected, rel=1e-5)


def test_bn_scale_ranks_by_the_absolute_batch_norm_scale() -> None:
    model = _net()
    with torch.no_grad():
        model[4].weight[2] = -3.0  # a negative scale counts by its size
    scores = _scores("bn-scale", model)
    assert scores["0"] == pytest.approx(_by_mean(model[1].weight.detach().abs()), rel=1e-5)
    assert scores["3"] == pytest.approx(_by_mean(model[4].weight.detach().abs()), rel=1e-5)
    assert max(range(5), key=scores["3"].__getitem__) == 2


def test_taylor_is_weight_times_the_gradient_of_the_cross_entropy_and_leaves_no_gradient_behind() -> None:
    model = _net()
    model[8].weight.requires_grad_(False)  # a frozen head stays frozen
    images, labels = _references()
    # Independent reference: one autograd call on a copy, every parameter differentiable.
    reference = _net()
    loss = F.cross_entropy(reference(images), labels)
    first, consumer = reference[0].weight, reference[3].weight
    first_grad, consumer_grad = torch.autograd.grad(loss, [first, consumer])
    members = [(first * first_grad).abs().flatten(1).sum(1), (consumer * consumer_grad).abs().sum((0, 2, 3))]
    expected = _by_mean(torch.stack(members).mean(0).detach())  # torch-pruning's Taylor leaves BatchNorms out
    assert _scores("taylor", model)["0"] == pytest.approx(expected, rel=1e-4)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert model[8].weight.requires_grad is False and model[0].weight.requires_grad is True


def test_taylor_gives_a_dead_channel_nothing() -> None:
    model = _net()
    with torch.no_grad():
        model[1].weight[4] = 0.0  # the channel's BatchNorm outputs its bias, a constant ...
        model[1].bias[4] = 0.0  # ... of zero: nothing downstream depends on it
    scores = _scores("taylor", model)["0"]
    assert scores[4] == pytest.approx(0.0, abs=1e-7)
    assert min(score for index, score in enumerate(scores) if index != 4) > 1e-3


def test_random_scores_are_reproducible_and_change_with_the_seed_and_the_pass() -> None:
    model = _net()
    assert _scores("random", model, pass_index=1, seed=7) == _scores("random", model, pass_index=1, seed=7)
    assert _scores("random", model, pass_index=2, seed=7) != _scores("random", model, pass_index=1, seed=7)
    assert _scores("random", model, pass_index=1, seed=8) != _scores("random", model, pass_index=1, seed=7)


@pytest.mark.parametrize("criterion", [c for c in CRITERIA if c != "lrp"])
def test_every_criterion_drives_a_run_and_decides_what_it_removes(fashion_task: tuple, criterion: str) -> None:
    model, references, evaluation = fashion_task
    config = PruneConfig.paper(method="dpx", max_rate=0.3, step=0.15, criterion=criterion)
    result = prune(model, references, [0, 6], config, evaluation=evaluation, progress=False)
    baseline = prune(model, references, [0, 6], config.replace(criterion="lrp"), evaluation=evaluation, progress=False)
    assert result.trajectory[-1].filter_rate == pytest.approx(0.3, abs=0.02)
    assert result.trajectory[-1].relevance_passes == 2
    widths = [module.out_channels for module in result.model.modules() if isinstance(module, nn.Conv2d)]
    lrp_widths = [module.out_channels for module in baseline.model.modules() if isinstance(module, nn.Conv2d)]
    kept = {name: value for name, value in result.model.state_dict().items() if name.endswith("weight")}
    lrp_kept = {name: value for name, value in baseline.model.state_dict().items() if name.endswith("weight")}
    assert widths != lrp_widths or any(not torch.equal(kept[name], lrp_kept[name]) for name in kept), (
        f"{criterion} removed exactly the channels LRP removed: the setting did nothing"
    )


def test_an_unknown_criterion_is_refused() -> None:
    with pytest.raises(SettingError, match="criterion"):
        PruneConfig.recommended(criterion="entropy")  # type: ignore[arg-type]
