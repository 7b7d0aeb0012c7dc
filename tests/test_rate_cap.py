"""`max_rate` is a cap no step passes (issue 34: `--max-rate 0.1` ended at filter rate 0.101, because the
last bundle of coupled channels was larger than what was left)."""

from __future__ import annotations

import torch
from helpers import calibrated_resnet18

from sddpx_tp import PruneConfig, prune
from sddpx_tp.metrics import count_filters
from sddpx_tp.pruning.surgery import Candidate, PrunableModel


def test_selection_passes_over_a_bundle_that_would_pass_the_cap() -> None:
    candidates = [Candidate(0.1, "a", (0,), 5), Candidate(0.2, "b", (0,), 5), Candidate(0.3, "c", (0,), 1)]
    assert [c.root for c in PrunableModel.select(candidates, 6)] == ["a", "b"]  # a step may overshoot its share
    assert [c.root for c in PrunableModel.select(candidates, 6, cap=6)] == ["a", "c"]  # never the cap
    assert PrunableModel.select(candidates, 6, cap=0.5) == []


def test_a_run_never_passes_max_rate() -> None:
    model = calibrated_resnet18().eval()  # residual groups: up to 5 filters a channel
    torch.manual_seed(0)
    references = (torch.randn(8, 3, 32, 32), torch.tensor([0, 6] * 4))
    # Random ranking, seed 1: the last step's lowest bundle was a residual one, and the run ended at 0.1002.
    config = PruneConfig.paper(method="dpx", max_rate=0.1, step=0.03, criterion="random", seed=1)
    result = prune(model, references, [0, 6], config, progress=False)
    original = count_filters(model)
    removed = original - count_filters(result.model)  # counted on the model, not taken from the records
    assert 0.1 * original - 5 <= removed <= 0.1 * original  # short of the cap by less than the largest bundle
    assert all(record.filter_rate <= 0.1 for record in result.trajectory)
