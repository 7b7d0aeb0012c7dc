"""PX, DPX and SD-DPX: which filters each step removes, and when a step is accepted
(progressive retraining, the fourth method, is in :mod:`sddpx_tp.progressive`).

* PX ranks every group channel once, on the unpruned model; the model at each rate
  removes the lowest-ranked channels up to that rate (nested in the rate).
* DPX recomputes relevance on the current model and removes ``step`` of the
  original filters, until ``max_rate``.
* SD-DPX tries DPX's step on a copy and keeps it only if the harmonic mean H of
  per-class reference accuracy does not drop. Otherwise it skips the lowest
  candidates one at a time (change of pruning order, up to K), then halves the
  step (change of pruning rate, down to ``min_step``), and finally takes the best
  of its attempts. A rejected trial never changes the current model: trials run on
  the current model with the removed channels masked (restored afterwards), or, as
  in the paper, on pruned copies.

Options beyond the paper (issue 8), each off unless set: ``class_floor`` (a trial
passes only if every class keeps that fraction of its unpruned reference accuracy,
so one class cannot quietly collapse while H looks fine), ``patience`` (give up
skipping candidates at a step size after that many skips that did not improve on
the best trial), ``compensate`` (see :mod:`sddpx_tp.compensation`), ``adaptive_compensation``
(each trial is evaluated with and without compensation and keeps the better: higher H,
then higher mean probability of the true class) and ``round_to``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sddpx_tp.compensation import InputMeans, input_channel_means
from sddpx_tp.metrics import harmonic_mean
from sddpx_tp.progressive import run_progressive
from sddpx_tp.relevance import RelevanceConfig
from sddpx_tp.surgery import Candidate, GroupScores, PrunableModel
from sddpx_tp.trajectory import PruningSession

Method = Literal["px", "dpx", "sd-dpx", "progressive"]
METHODS: tuple[Method, ...] = ("px", "dpx", "sd-dpx", "progressive")


@dataclass(frozen=True)
class ScheduleConfig:
    """Settings of a pruning run. Rates and steps are fractions of the original filters."""

    method: Method = "sd-dpx"
    max_rate: float = 0.9
    step: float = 0.05  # p in the papers
    order_change: bool = True  # SD-DPX: skip low-relevance filters that hurt H
    rate_change: bool = True  # SD-DPX: halve the step when H drops
    max_excluded: int = 10  # K: candidates an SD-DPX step may skip before halving (chosen on seeds 0-4)
    min_step: float = 0.0125  # s_min: the smallest SD-DPX step (p/4: two halvings)
    min_channels: int = 1  # a group never falls below this many channels
    round_to: int = 1  # keep every group's width a multiple of this (SIMD-friendly widths)
    compensate: bool = False  # fold removed channels' mean contribution into their consumers
    class_floor: float = 0.0  # SD-DPX: every class keeps this fraction of its unpruned reference accuracy
    patience: int = 0  # SD-DPX: skips without improvement before halving the step (0: up to K)
    masked_trials: bool = True  # SD-DPX: trials mask channels in place instead of pruning a copy
    adaptive_compensation: bool = False  # SD-DPX: each trial with and without compensation, the better kept
    hold: float | None = None  # progressive: stop a layer short when reference H falls more than this
    relevance: RelevanceConfig = field(default_factory=lambda: RelevanceConfig(normalize=True))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if not 0 < self.max_rate < 1:
            raise ValueError(f"max_rate must be in (0, 1), not {self.max_rate}")
        if not 0 < self.step <= self.max_rate:
            raise ValueError(f"step must be in (0, max_rate], not {self.step}")
        if self.max_excluded < 0:
            raise ValueError(f"max_excluded must be >= 0, not {self.max_excluded}")
        if not 0 < self.min_step <= self.step:
            raise ValueError(f"min_step must be in (0, step], not {self.min_step}")
        if self.min_channels < 1:
            raise ValueError(f"min_channels must be >= 1, not {self.min_channels}")
        if not 0 <= self.class_floor <= 1:
            raise ValueError(f"class_floor must be in [0, 1], not {self.class_floor}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, not {self.patience}")
        if self.hold is not None and not 0 <= self.hold <= 1:
            raise ValueError(f"hold must be in [0, 1], not {self.hold}")
        if self.adaptive_compensation and not self.masked_trials:
            raise ValueError("adaptive_compensation needs masked_trials")
        if self.round_to < 1:
            raise ValueError(f"round_to must be >= 1, not {self.round_to}")


def run_schedule(session: PruningSession, config: ScheduleConfig) -> None:
    """Prune ``session.current`` step by step, recording every accepted step in the session."""
    schedules: dict[Method, Callable[[PruningSession, ScheduleConfig], None]] = {
        "px": _px,
        "dpx": _dpx,
        "sd-dpx": _sd_dpx,
        "progressive": run_progressive,
    }
    schedules[config.method](session, config)


def _budget(session: PruningSession, config: ScheduleConfig, step: float) -> int:
    """Filters the next step may remove: ``step`` of the original, capped at ``max_rate``."""
    limit = int(config.max_rate * session.original.filters) - session.removed_filters()
    return min(round(step * session.original.filters), limit)


def _input_means(session: PruningSession, wanted: bool) -> InputMeans | None:
    """Mean inputs of the current model's layers on the references, when compensation is wanted."""
    return input_channel_means(session.current.model, session.references[0]) if wanted else None


def _px(session: PruningSession, config: ScheduleConfig) -> None:
    state = session.schedule_state
    if "px_scores" not in state:
        ranked = session.current.group_scores(session.relevance(session.current))
        state["px_scores"] = {root: group.scores for root, group in ranked.items()}
        state["px_filters"] = {root: group.filters_per_channel for root, group in ranked.items()}
        # Channels of the unpruned model still present, per group, in their current order.
        state["px_remaining"] = {root: list(range(len(group.scores))) for root, group in ranked.items()}
    remaining: dict[str, list[int]] = state["px_remaining"]
    while (budget := _budget(session, config, config.step)) > 0:
        # The unpruned model's scores, looked up for the channels still present.
        current = {
            root: GroupScores(root, [state["px_scores"][root][channel] for channel in kept], state["px_filters"][root])
            for root, kept in remaining.items()
        }
        chosen = session.current.select(session.current.candidates(current), budget)
        if not chosen:
            return
        session.current.remove(chosen, _input_means(session, config.compensate))
        for root in {c.root for c in chosen}:
            gone = {channel for c in chosen if c.root == root for channel in c.channels}
            remaining[root] = [channel for index, channel in enumerate(remaining[root]) if index not in gone]
        session.accept(session.current, attempts=1)


def _dpx(session: PruningSession, config: ScheduleConfig) -> None:
    while (budget := _budget(session, config, config.step)) > 0:
        scores = session.current.group_scores(session.relevance(session.current))
        chosen = session.current.select(session.current.candidates(scores), budget)
        if not chosen:
            return
        session.current.remove(chosen, _input_means(session, config.compensate))
        session.accept(session.current, attempts=1)


@dataclass
class _Attempt:
    chosen: list[Candidate]
    rank: tuple[bool, float]  # (every class above its floor, H): the best attempt is the largest
    model: PrunableModel | None  # the pruned copy, when trials are not masked
    means: InputMeans | None  # the compensation the trial used (None: none)


def _try(session: PruningSession, config: ScheduleConfig, chosen: list[Candidate], means: InputMeans | None
         ) -> tuple[list[float], PrunableModel | None, InputMeans | None]:  # fmt: skip
    """Per-class reference accuracy of the current model without ``chosen``, the pruned copy (if made)
    and the compensation used: with ``adaptive_compensation``, the better of with and without it."""
    if config.adaptive_compensation:
        scored = []
        for variant in (None, means):
            with session.current.masked(chosen, variant) as model:
                accuracy, confidence = session.evaluate_scores(model)
            scored.append(((harmonic_mean(accuracy), harmonic_mean(confidence)), accuracy, variant))
        _, accuracy, variant = max(scored, key=lambda entry: entry[0])  # ties in H go to the more confident
        return accuracy, None, variant
    if config.masked_trials:
        with session.current.masked(chosen, means) as model:
            return session.evaluate_classes(model), None, means
    trial = session.current.copy()
    trial.remove(chosen, means)
    return session.evaluate_classes(trial.model), trial, means


def _sd_dpx(session: PruningSession, config: ScheduleConfig) -> None:
    floors = [config.class_floor * accuracy for accuracy in session.trajectory[0].reference_accuracy]
    best_so_far = session.reference_harmonic_mean
    while _budget(session, config, config.step) > 0:
        scores = session.current.group_scores(session.relevance(session.current))
        # One forward serves every trial of this step.
        means = _input_means(session, config.compensate or config.adaptive_compensation)
        step = config.step
        excluded: list[Candidate] = []
        best: _Attempt | None = None
        tried: list[float] = []
        fruitless = 0  # skips in a row that did not beat the best attempt
        while True:
            budget = _budget(session, config, step)
            skipped = {(c.root, channel) for c in excluded for channel in c.channels}
            chosen = session.current.select(session.current.candidates(scores, excluded=skipped), budget)
            if not chosen:
                break
            accuracy, trial, used_means = _try(session, config, chosen, means)
            harmonic_mean_ = harmonic_mean(accuracy)
            tried.append(harmonic_mean_)
            guarded = all(value >= floor for value, floor in zip(accuracy, floors, strict=True))
            rank = (guarded, harmonic_mean_)
            improved = best is None or rank > best.rank
            fruitless = 0 if improved else fruitless + 1
            if improved:
                best = _Attempt(chosen, rank, trial, used_means)
            if guarded and harmonic_mean_ >= best_so_far:
                break  # keep going at full pace
            gave_up = config.patience > 0 and fruitless >= config.patience
            if config.order_change and len(excluded) < config.max_excluded and not gave_up:
                # Candidates come lowest first and skip excluded ones: this is the lowest not yet excluded.
                excluded.append(chosen[0])
                continue
            if config.rate_change and step > config.min_step:
                step = max(config.min_step, step / 2)
                excluded, fruitless = [], 0
                continue
            break  # best of the attempts
        if best is None:
            return
        if best.model is None:  # masked trials: prune the current model itself
            session.current.remove(best.chosen, best.means)
            best.model = session.current
        session.accept(best.model, attempts=len(tried), attempt_harmonic_means=tried)
        best_so_far = session.reference_harmonic_mean
