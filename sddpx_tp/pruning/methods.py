"""PX, DPX and SD-DPX: which filters each step removes, and when a step is accepted
(progressive retraining, the fourth method, is in :mod:`sddpx_tp.pruning.progressive`).

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

Options beyond the paper (issue 8; the recommended preset turns on ``round_to`` 16,
adaptive compensation and patience 2): ``class_floor`` (a trial passes only if every
class keeps that fraction of its unpruned reference accuracy, so one class cannot
quietly collapse while H looks fine), ``patience`` (give up skipping candidates at a
step size after that many skips that did not improve on the best trial),
``compensation`` (see :mod:`sddpx_tp.pruning.compensation`; ``adaptive``: each trial is
evaluated with and without compensation and keeps the better: higher H, then higher
mean probability of the true class) and ``round_to``.

Each method registers itself (:mod:`sddpx_tp.pruning.method_registry`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sddpx_tp.metrics import harmonic_mean
from sddpx_tp.pruning.compensation import InputMeans, input_channel_means
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.method_registry import compensation_for, register_method
from sddpx_tp.pruning.repairs import StepRepair
from sddpx_tp.pruning.session import PruningSession
from sddpx_tp.pruning.surgery import Candidate, GroupScores, PrunableModel


def step_budget(session: PruningSession, config: PruneConfig, step: float) -> float:
    """Filters (or MACs, or nanoseconds of predicted latency, with cost "macs" or "latency") the next step may
    remove: ``step`` of the original, capped at ``max_rate`` (none once the run has stopped at its accuracy
    target or met its MACs or speed budget)."""
    if session.stopped:
        return 0
    if config.target.macs is not None and session.trajectory[-1].macs_ratio <= config.target.macs:
        return 0  # the MACs budget is met: the run ends here
    if config.target.speedup is not None and (session.trajectory[-1].speedup or 0.0) >= config.target.speedup:
        return 0  # the measured speed budget is met
    original = {"latency": session.original_latency_ns(), "macs": session.original.macs,
                "filters": session.original.filters}[config.cost]  # fmt: skip
    share = step * original if config.cost == "latency" else round(step * original)
    return min(share, rate_cap(session, config))


def rate_cap(session: PruningSession, config: PruneConfig) -> float:
    """What ``max_rate`` still allows the run to remove, in its cost unit: no step passes it (``--max-rate 0.1``
    ends at most at 0.1, not at 0.101 because the last channel bundle was large)."""
    if config.cost == "latency":
        return config.max_rate * session.original_latency_ns() - session.removed_latency_ns()
    if config.cost == "macs":
        return int(config.max_rate * session.original.macs) - session.removed_macs()
    return int(config.max_rate * session.original.filters) - session.removed_filters()


def _input_means(session: PruningSession, wanted: bool) -> InputMeans | None:
    """Mean inputs of the current model's layers on the references, when compensation is wanted."""
    return input_channel_means(session.current.model, session.references[0]) if wanted else None


@register_method("px")
def px(session: PruningSession, config: PruneConfig) -> None:
    state = session.schedule_state
    if "px_scores" not in state:
        ranked = session.channel_scores(session.current)
        state["px_scores"] = {root: group.scores for root, group in ranked.items()}
        state["px_filters"] = {root: group.filters_per_channel for root, group in ranked.items()}
        # Channels of the unpruned model still present, per group, in their current order.
        state["px_remaining"] = {root: list(range(len(group.scores))) for root, group in ranked.items()}
    remaining: dict[str, list[int]] = state["px_remaining"]
    while (budget := step_budget(session, config, config.step)) > 0:
        # The unpruned model's scores, looked up for the channels still present.
        current = {
            root: GroupScores(root, [state["px_scores"][root][channel] for channel in kept], state["px_filters"][root])
            for root, kept in remaining.items()
        }
        costs = session.channel_costs(session.current)
        chosen = session.current.select(
            session.current.candidates(current, cost_per_channel=costs), budget, config.cost, rate_cap(session, config)
        )
        if not chosen:
            return
        means = _input_means(session, compensation_for(config) == "always")
        session.current.remove(chosen, means, session.step_repair())
        for root in {c.root for c in chosen}:
            gone = {channel for c in chosen if c.root == root for channel in c.channels}
            remaining[root] = [channel for index, channel in enumerate(remaining[root]) if index not in gone]
        session.accept(session.current, attempts=1)


@register_method("dpx")
def dpx(session: PruningSession, config: PruneConfig) -> None:
    while (budget := step_budget(session, config, config.step)) > 0:
        scores = session.channel_scores(session.current)
        costs = session.channel_costs(session.current)
        candidates = session.current.candidates(scores, cost_per_channel=costs)
        chosen = session.current.select(candidates, budget, config.cost, rate_cap(session, config))
        if not chosen:
            return
        means = _input_means(session, compensation_for(config) == "always")
        session.current.remove(chosen, means, session.step_repair())
        session.accept(session.current, attempts=1)


@dataclass
class _Attempt:
    chosen: list[Candidate]
    rank: tuple[bool, float]  # (every class above its floor, H): the best attempt is the largest
    model: PrunableModel | None  # the pruned copy, when trials are not masked
    means: InputMeans | None  # the compensation the trial used (None: none)
    repair: StepRepair | None  # the step's repair (None: none)


def _try(session: PruningSession, config: PruneConfig, chosen: list[Candidate], means: InputMeans | None,
         adaptive: bool, repair: StepRepair | None
         ) -> tuple[list[float], PrunableModel | None, InputMeans | None]:  # fmt: skip
    """Per-class reference accuracy of the current model without ``chosen`` (repaired), the pruned copy
    (if made) and the compensation used: with ``adaptive_compensation``, the better of with and without it."""
    if adaptive:
        scored = []
        for variant in (None, means):
            with session.current.masked(chosen, variant, repair) as model:
                accuracy, confidence = session.evaluate_with_confidence(model)
            scored.append(((harmonic_mean(accuracy), harmonic_mean(confidence)), accuracy, variant))
        _, accuracy, variant = max(scored, key=lambda entry: entry[0])  # ties in H go to the more confident
        return accuracy, None, variant
    if config.search.masked_trials:
        with session.current.masked(chosen, means, repair) as model:
            return session.evaluate_classes(model), None, means
    trial = session.current.copy()
    trial.remove(chosen, means, repair)
    return session.evaluate_classes(trial.model), trial, means


@register_method("sd-dpx", evaluates_trials=True)
def sd_dpx(session: PruningSession, config: PruneConfig) -> None:
    floors = [config.search.class_floor * accuracy for accuracy in session.trajectory[0].reference_accuracy]
    best_so_far = session.reference_harmonic_mean
    compensation = compensation_for(config)
    while step_budget(session, config, config.step) > 0:
        scores = session.channel_scores(session.current)
        costs = session.channel_costs(session.current)
        # One forward serves every trial of this step.
        means = _input_means(session, compensation != "never")
        repair = session.step_repair()  # gathered once, on the model before the step, for every trial
        step = config.step
        excluded: list[Candidate] = []
        best: _Attempt | None = None
        tried: list[float] = []
        fruitless = 0  # skips in a row that did not beat the best attempt
        while True:
            budget = step_budget(session, config, step)
            skipped = {(c.root, channel) for c in excluded for channel in c.channels}
            candidates = session.current.candidates(scores, excluded=skipped, cost_per_channel=costs)
            chosen = session.current.select(candidates, budget, config.cost, rate_cap(session, config))
            if not chosen:
                break
            accuracy, trial, used_means = _try(session, config, chosen, means, compensation == "adaptive", repair)
            harmonic_mean_ = harmonic_mean(accuracy)
            tried.append(harmonic_mean_)
            guarded = all(value >= floor for value, floor in zip(accuracy, floors, strict=True))
            rank = (guarded, harmonic_mean_)
            improved = best is None or rank > best.rank
            fruitless = 0 if improved else fruitless + 1
            if improved:
                best = _Attempt(chosen, rank, trial, used_means, repair)
            if guarded and harmonic_mean_ >= best_so_far:
                break  # keep going at full pace
            gave_up = config.search.patience > 0 and fruitless >= config.search.patience
            if config.search.order_change and len(excluded) < config.search.max_excluded and not gave_up:
                # Candidates come lowest first and skip excluded ones: this is the lowest not yet excluded.
                excluded.append(chosen[0])
                continue
            if config.search.rate_change and step > config.smallest_step:
                step = max(config.smallest_step, step / 2)
                excluded, fruitless = [], 0
                continue
            break  # best of the attempts
        if best is None:
            return
        if best.model is None:  # masked trials: prune the current model itself
            session.current.remove(best.chosen, best.means, best.repair)
            best.model = session.current
        session.accept(best.model, attempts=len(tried), attempt_harmonic_means=tried)
        best_so_far = session.reference_harmonic_mean
