"""Cost-aware pruning (issue 31, part 2, first piece): with cost "macs" a step removes a share of the
multiply-accumulates and channels are ranked by relevance per MAC."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torchvision import models

from sddpx_tp import PruneConfig, prune
from sddpx_tp.errors import SettingError
from sddpx_tp.metrics import count_macs
from sddpx_tp.pruning.surgery import GroupScores, PrunableModel


def _two_layers() -> PrunableModel:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))  # fmt: skip
    return PrunableModel(model, torch.randn(2, 3, 8, 8))


def test_relevance_per_mac_puts_a_costly_channel_before_a_cheap_more_relevant_one() -> None:
    prunable = _two_layers()
    scores = {"0": GroupScores("0", [1.0, 2.0, 5.0, 6.0], 1), "2": GroupScores("2", [3.0, 4.0, 7.0, 8.0], 1)}
    by_relevance = prunable.candidates(scores)
    assert [(c.root, c.score) for c in by_relevance[:2]] == [("0", 1.0), ("0", 2.0)]
    # Layer 2's channels cost 100 MACs each, layer 0's 10: per MAC, 3/100, 4/100 and 7/100 rank below 1/10
    # (a group keeps one channel: 8 is never offered).
    by_cost = prunable.candidates(scores, cost_per_channel={"0": 10, "2": 100})
    assert [(c.root, c.score, c.cost) for c in by_cost[:4]] == [
        ("2", 3.0, 100), ("2", 4.0, 100), ("2", 7.0, 100), ("0", 1.0, 10)
    ]  # fmt: skip
    # A budget of 150 MACs takes the two costly channels (the last may overshoot), one of filters takes one.
    assert [c.score for c in prunable.select(by_cost, 150, "macs")] == [3.0, 4.0]
    assert [c.score for c in prunable.select(by_cost, 1, "filters")] == [3.0]


def test_a_macs_step_removes_its_share_of_the_macs() -> None:
    torch.manual_seed(0)
    model = models.resnet18(num_classes=2).eval()
    references = (torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4))
    config = PruneConfig.paper(method="dpx", cost="macs", step=0.2, max_rate=0.6)
    result = prune(model, references, [0, 1], config, progress=False)
    ratios = [record.macs_ratio for record in result.trajectory]
    original = count_macs(model, references[0])
    # Measured independently on the final model. Each full step removes close to its share: channels of
    # neighbouring groups share weights (a filter's input slice of a removed input channel), so their summed
    # costs overcount what removing both saves; the run goes on until max_rate's share is (nearly) removed.
    assert result.trajectory[-1].macs == count_macs(result.model, references[0])
    assert result.trajectory[0].macs == original
    drops = [before - after for before, after in itertools.pairwise(ratios)]
    assert all(drop >= 0.8 * 0.2 for drop in drops[:2]), drops
    # max_rate is a cap no step passes (a channel's counted cost is never below what removing it saves), and
    # the run ends short of it by less than a bundle.
    assert 1 - 0.6 - 1e-9 <= ratios[-1] <= 1 - 0.6 + 0.01
    # Ranked per MAC, the run reaches its MACs with fewer filters than ranked by relevance alone needs.
    filters = prune(model, references, [0, 1], PruneConfig.paper(method="dpx", step=0.05, max_rate=0.9), progress=False)
    needed = next(record for record in filters.trajectory if record.macs_ratio <= ratios[-1])
    assert result.trajectory[-1].filter_rate < needed.filter_rate


def test_cost_macs_is_refused_for_progressive_retraining() -> None:
    model = models.resnet18(num_classes=2).eval()
    references = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1] * 2))
    with pytest.raises(SettingError, match="cost"):
        config = PruneConfig.recommended(method="progressive", cost="macs")
        prune(model, references, [0, 1], config, training=references, progress=False)
    with pytest.raises(SettingError, match="cost"):
        PruneConfig.recommended(cost="seconds")
