"""PX, DPX and SD-DPX: which filters each step removes, and when a step is accepted.

* PX ranks every group channel once, on the unpruned model; the model at each rate
  removes the lowest-ranked channels up to that rate (nested in the rate).
* DPX recomputes relevance on the current model and removes ``step`` of the
  original filters, until ``max_rate``.
* SD-DPX tries DPX's step on a copy and keeps it only if the harmonic mean H of
  per-class reference accuracy does not drop. Otherwise it skips the lowest
  candidates one at a time (change of pruning order, up to K), then halves the
  step (change of pruning rate, down to ``min_step``), and finally takes the best
  of its attempts. Trial steps work on copies: a rejected one never touches the
  current model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sddpx_tp.relevance import RelevanceConfig
from sddpx_tp.surgery import Candidate, PrunableModel
from sddpx_tp.trajectory import PruningSession

Method = Literal["px", "dpx", "sd-dpx"]
METHODS: tuple[Method, ...] = ("px", "dpx", "sd-dpx")


@dataclass(frozen=True)
class ScheduleConfig:
    """Settings of a pruning run. Rates and steps are fractions of the original filters."""

    method: Method = "sd-dpx"
    max_rate: float = 0.9
    step: float = 0.05  # p in the papers
    order_change: bool = True  # SD-DPX: skip low-relevance filters that hurt H
    rate_change: bool = True  # SD-DPX: halve the step when H drops
    max_excluded: int = 5  # K: candidates an SD-DPX step may skip before halving
    min_step: float = 0.0125  # s_min: the smallest SD-DPX step (p/4: two halvings)
    min_channels: int = 1  # a group never falls below this many channels
    relevance: RelevanceConfig = field(default_factory=lambda: RelevanceConfig(normalize=True))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if not 0 < self.max_rate < 1:
            raise ValueError(f"max_rate must be in (0, 1), not {self.max_rate}")
        if not 0 < self.step <= self.max_rate:
            raise ValueError(f"step must be in (0, max_rate], not {self.step}")
        if self.max_excluded < 0:
            raise ValueError(f"K (max_excluded) must be >= 0, not {self.max_excluded}")
        if not 0 < self.min_step <= self.step:
            raise ValueError(f"min_step must be in (0, step], not {self.min_step}")
        if self.min_channels < 1:
            raise ValueError(f"min_channels must be >= 1, not {self.min_channels}")


def run_schedule(session: PruningSession, config: ScheduleConfig) -> None:
    """Prune ``session.current`` step by step, recording every accepted step in the session."""
    schedules: dict[Method, Callable[[PruningSession, ScheduleConfig], None]] = {
        "px": _px,
        "dpx": _dpx,
        "sd-dpx": _sd_dpx,
    }
    schedules[config.method](session, config)


def _budget(session: PruningSession, config: ScheduleConfig, step: float) -> int:
    """Filters the next step may remove: ``step`` of the original, capped at ``max_rate``."""
    limit = int(config.max_rate * session.original.filters) - session.removed_filters()
    return min(round(step * session.original.filters), limit)


def _px(session: PruningSession, config: ScheduleConfig) -> None:
    state = session.schedule_state
    if "px_ranking" not in state:
        ranking = session.current.candidates(session.relevance(session.current))
        state["px_ranking"] = [[c.score, c.root, c.channel, c.filters] for c in ranking]
        # Channels of the unpruned model still present, per group, in their current order.
        state["px_remaining"] = {
            root: list(range(session.current.channels(root))) for root in {c.root for c in ranking}
        }
    ranking = [Candidate(score, root, channel, filters) for score, root, channel, filters in state["px_ranking"]]
    remaining: dict[str, list[int]] = state["px_remaining"]
    while (budget := _budget(session, config, config.step)) > 0:
        position = {root: {channel: index for index, channel in enumerate(kept)} for root, kept in remaining.items()}
        current_order = [
            Candidate(c.score, c.root, position[c.root][c.channel], c.filters)
            for c in ranking
            if c.channel in position[c.root]
        ]
        chosen = session.current.select(current_order, budget)
        if not chosen:
            return
        session.current.remove(chosen)
        for root in {c.root for c in chosen}:
            gone = {c.channel for c in chosen if c.root == root}
            remaining[root] = [channel for index, channel in enumerate(remaining[root]) if index not in gone]
        session.accept(session.current, attempts=1)


def _dpx(session: PruningSession, config: ScheduleConfig) -> None:
    while (budget := _budget(session, config, config.step)) > 0:
        candidates = session.current.candidates(session.relevance(session.current))
        chosen = session.current.select(candidates, budget)
        if not chosen:
            return
        session.current.remove(chosen)
        session.accept(session.current, attempts=1)


@dataclass
class _Attempt:
    model: PrunableModel
    harmonic_mean: float


def _sd_dpx(session: PruningSession, config: ScheduleConfig) -> None:
    best_so_far = session.reference_harmonic_mean
    while _budget(session, config, config.step) > 0:
        candidates = session.current.candidates(session.relevance(session.current))
        step = config.step
        excluded: list[tuple[str, int]] = []
        best: _Attempt | None = None
        tried: list[float] = []
        while True:
            budget = _budget(session, config, step)
            trial = session.current.copy()
            chosen = trial.select(candidates, budget, excluded=set(excluded))
            if not chosen:
                break
            trial.remove(chosen)
            harmonic_mean = session.evaluate_references(trial.model)
            tried.append(harmonic_mean)
            if best is None or harmonic_mean > best.harmonic_mean:
                best = _Attempt(trial, harmonic_mean)
            if harmonic_mean >= best_so_far:
                break  # keep going at full pace
            if config.order_change and len(excluded) < config.max_excluded:
                # `chosen` skips excluded candidates, so its first is the lowest not yet excluded.
                excluded.append((chosen[0].root, chosen[0].channel))
                continue
            if config.rate_change and step > config.min_step:
                step = max(config.min_step, step / 2)
                excluded = []
                continue
            break  # best of the attempts
        if best is None:
            return
        session.accept(best.model, attempts=len(tried), attempt_harmonic_means=tried)
        best_so_far = session.reference_harmonic_mean
