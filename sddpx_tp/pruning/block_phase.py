"""Depth before width: remove whole residual blocks before the channel steps (issue 31, part 3).

With ``config.blocks`` a run first removes whole blocks (:mod:`sddpx_tp.models.blocks`), one per
accepted step. Each round tries every removable block of the current model, its branch zeroed in
place (exactly what removing it computes), and judges the trial on the references as SD-DPX judges
a trial: per-class accuracy, their harmonic mean H. The block whose trial keeps the highest H is
removed when that H is at least ``config.block_floor`` of the unpruned model's; otherwise the
phase ends and the run's method goes on with the channels of the blocks that remain. A block whose
removal would pass ``max_rate`` (in the run's ``cost`` unit) is not tried, and the
phase ends early once a MACs or speed budget is met, as the channel steps do.

A few blocks are tried exhaustively (9 in EfficientNet-Lite0, 5 in ResNet-18), so accuracy, not
relevance, ranks them: one evaluation per block per round. No repair refits the layers after a
removed block yet; the channel steps after the phase repair as configured.
"""

from __future__ import annotations

import copy
import warnings

import torch

from sddpx_tp.metrics import count_filters, count_macs, harmonic_mean
from sddpx_tp.models.blocks import removable_blocks, restore_branch, skip_block, zero_branch
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.methods import step_budget
from sddpx_tp.pruning.session import PruningSession
from sddpx_tp.pruning.surgery import PrunableModel

DONE = "blocks_done"  # in the session's schedule state: a resumed run does not try blocks again


def _cost(session: PruningSession, name: str, config: PruneConfig, image: torch.Tensor, cost_now: float) -> float:
    """What removing the block ``name`` takes off, in the run's cost unit (filters, MACs at the references' size,
    or nanoseconds of predicted latency; ``cost_now``: the model's own, counted once a round)."""
    model = session.current.model
    if config.cost in ("macs", "latency"):
        trimmed = copy.deepcopy(model)
        skip_block(trimmed, name)
        if config.cost == "latency":
            return cost_now - session.predicted_latency_ns(trimmed)
        return cost_now - count_macs(trimmed, image)
    return count_filters(model.get_submodule(name))


def _model_cost(session: PruningSession, config: PruneConfig, image: torch.Tensor) -> float:
    if config.cost == "latency":
        return session.predicted_latency_ns(session.current.model)
    return count_macs(session.current.model, image) if config.cost == "macs" else 0.0


def remove_blocks(session: PruningSession, config: PruneConfig) -> int:
    """Remove whole blocks while the references keep ``block_floor`` of the unpruned H; returns how many."""
    state = session.schedule_state
    if state.get(DONE):
        return 0
    floor = config.block_floor * session.trajectory[0].reference_harmonic_mean
    if not removable_blocks(session.current.model):  # said, not passed over in silence
        warnings.warn(f"{type(session.current.model).__name__} has no residual block that can be removed whole "
                      "(ResNet, MobileNetV2 and EfficientNet-Lite blocks can): only channels are pruned",
                      stacklevel=2)  # fmt: skip
    removed = 0
    while (allowance := step_budget(session, config, 1.0)) > 0:  # what max_rate and the budgets still allow
        model, image = session.current.model, session.references[0][:1]
        cost_now = _model_cost(session, config, image)
        tried: list[tuple[float, str]] = []
        for block in removable_blocks(model):
            if _cost(session, block.name, config, image, cost_now) > allowance:
                continue
            saved = zero_branch(model, block)
            try:
                tried.append((harmonic_mean(session.evaluate_classes(model)), block.name))
            finally:
                restore_branch(model, block, saved)
        if not tried:
            break
        best_h, best_name = max(tried, key=lambda entry: entry[0])  # ties: the first in the model's order
        if best_h < floor:
            break
        skip_block(model, best_name)
        rebuilt = PrunableModel(model, session.references[0], config.min_channels, config.round_to)
        rebuilt.origins = {name: kept for name, kept in session.current.origins.items() if name in rebuilt.origins}
        session.accept(rebuilt, attempts=len(tried), attempt_harmonic_means=[h for h, _ in tried], phase="blocks",
                       layer=best_name)  # fmt: skip
        removed += 1
    state[DONE] = True
    return removed
