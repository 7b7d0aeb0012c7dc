"""The record of a pruning run: every accepted step, with the counters that explain its cost.

A ``PruningSession`` owns the current model, the reference and evaluation images,
the counts of relevance passes and evaluations, and the trajectory. Schedules ask
it for relevance and accuracy and hand it each accepted model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sddpx_tp.export.latency_table import LatencyTable, predicted_seconds
from sddpx_tp.lrp.architectures import support_for
from sddpx_tp.lrp.relevance import filter_relevance
from sddpx_tp.metrics import ModelSize, class_accuracy_and_confidence, harmonic_mean, measure_size, per_class_accuracy
from sddpx_tp.pruning.accuracy_target import target_lost
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.costs import channel_latency, channel_macs
from sddpx_tp.pruning.criteria import channel_scores, names_code, user_importance
from sddpx_tp.pruning.repairs import StepRepair, step_repair
from sddpx_tp.pruning.surgery import GroupScores, PrunableModel

LabelledImages = tuple[torch.Tensor, torch.Tensor]
Judgement = tuple[list[float], list[float]]  # per class: accuracy and mean true-class probability


@dataclass(frozen=True)
class StepRecord:
    """One accepted model of the trajectory (step 0 is the unpruned model)."""

    step: int
    filter_rate: float
    filters: int
    params: int
    macs: int
    params_ratio: float
    macs_ratio: float
    reference_accuracy: list[float]
    reference_harmonic_mean: float
    eval_accuracy: list[float] | None
    eval_harmonic_mean: float | None
    seconds: float  # wall time since the run started
    relevance_passes: int  # cumulative
    evaluations: int  # cumulative reference evaluations (trial models included)
    attempts: int  # models tried for this step
    attempt_harmonic_means: list[float]  # reference H of each model tried (SD-DPX), in order
    evaluation_seconds: float = 0.0  # part of ``seconds`` spent on the held-out images (not the method's cost)
    relevance_seconds: float = 0.0  # part of ``seconds`` spent in relevance passes
    reference_seconds: float = 0.0  # part of ``seconds`` spent judging models on the references (trials too)
    phase: str = "pruning"  # "pruning", or after training: "retrained" (progressive) or "finetuned"
    layer: str | None = None  # progressive retraining: the group this record pruned or retrained after
    holdout_accuracy: list[float] | None = None  # on references held back from the run (stop_at_target only)
    # Images a class behind the accuracy that judges the target (held-out, else held-back references; None when
    # the references judge): the noise the recommended step is chosen against (sddpx_tp.pruning.accuracy_target).
    judged_counts: list[int] | None = None
    # With a speed budget: how many times faster than the unpruned model this step runs, measured (batch 1;
    # sddpx_tp.export.latency), and the cumulative part of ``seconds`` the measuring took.
    speedup: float | None = None
    speed_seconds: float = 0.0
    # With cost "latency": this step's latency predicted by the run's latency table, in milliseconds
    # (sddpx_tp.export.latency_table; the table's measuring is counted in speed_seconds at step 0).
    predicted_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        return cls(**data)


class PruningSession:
    """State shared by the schedules: current model, data, counters, trajectory."""

    original: ModelSize
    relevance_passes: int
    evaluations: int
    trajectory: list[StepRecord]
    schedule_state: dict[str, Any]  # what a schedule needs to continue (JSON-able)
    started: float
    evaluation_seconds: float  # cumulative time measuring the held-out images
    relevance_seconds: float  # cumulative time in relevance passes
    reference_seconds: float  # cumulative time judging models on the references
    speed_seconds: float  # cumulative time measuring speedups (a speed budget)

    def __init__(
        self,
        model: PrunableModel,
        references: LabelledImages,
        classes: int,
        config: PruneConfig,
        *,
        evaluation: LabelledImages | None = None,
        training: LabelledImages | None = None,
        held_back: LabelledImages | None = None,
        speed_probe: Callable[[nn.Module], float] | None = None,
        latency_table: LatencyTable | None = None,
        reference_judge: Callable[[nn.Module], Judgement] | None = None,
        on_before_accept: Callable[[nn.Module], Judgement | None] | None = None,
        original_model: nn.Module | None = None,
        keep_models: bool = False,
        progress: bool = True,
        on_accept: Callable[[PruningSession], None] | None = None,
        resume: tuple[list[StepRecord], dict[str, Any]] | None = None,
    ) -> None:
        """Start at ``model`` (recorded as step 0), or continue a run: ``resume`` holds its
        trajectory and schedule state, and ``model`` is its last accepted model.

        ``config`` gives the criterion, relevance, repairs, retraining, seed, the rate to stop at and,
        with ``target.stop``, the accuracy target. ``held_back``: references held back from everything
        else, measured at every accepted step. With a target the run is :attr:`stopped` once it is lost
        (:meth:`AccuracyTarget.lost`), judged on the evaluation images, else on ``held_back``, else on the
        references. ``original_model``: the unpruned model, which the repairs target. ``speed_probe``: measures
        how many times faster than the unpruned model a model runs, at every accepted step (a speed budget).
        ``latency_table``: what the layers cost in time, needed with cost "latency"."""
        relevance_config, max_rate, training_config = config.relevance, config.max_rate, config.retraining
        criterion, seed, repair, ridge = config.criterion, config.seed, config.repair.methods, config.repair.ridge
        self.cost = config.cost
        if config.cost == "latency" and latency_table is None:
            raise ValueError('cost "latency" needs a latency table (sddpx_tp.export.layer_latency measures one)')
        self.latency_table = latency_table
        stop_at = config.accuracy_target if config.target.stop else None
        self.current = model
        # Checked once per run (an fx trace for plain nets); pruning never changes the family.
        self.architecture = support_for(model.model)
        self.references = references
        # How a model is judged on the references: its own outputs, or (a fitted head) cross-fitted heads.
        self.reference_judge = reference_judge or (
            lambda model: class_accuracy_and_confidence(model, *references, classes)
        )
        # E.g. refit a fitted head on the pruned backbone; it may return the model's reference judgement,
        # when it computed them on the way (they are then not computed again).
        self.on_before_accept = on_before_accept
        self.evaluation = evaluation
        self.held_back = held_back
        self.speed_probe = speed_probe
        self.stop_at = stop_at
        self.classes = classes
        self.relevance_config = relevance_config
        # What ranks the channels (sddpx_tp.pruning.criteria); a user's importance named as module:attribute is
        # imported and built once here, so it is one instance for the whole run, as in torch-pruning's pruners.
        self.criterion = user_importance(criterion) if names_code(criterion) else criterion
        self.seed = seed
        self.repair, self.ridge = repair, ridge
        if repair and original_model is None:
            raise ValueError("repairs need the unpruned model (original_model)")
        self.original_model = original_model  # what a reconstruction targets
        self.keep_models = keep_models
        self.progress = progress
        self.training = training  # images and labels for retraining methods (progressive, fine-tuning)
        self.training_config = training_config
        self.example_input = references[0][:1]
        self.on_accept = on_accept
        self.models: list[nn.Module] = []
        # "filter rate 5 % of 10 %", not tqdm's own percentage of the bar (which read "50%" at filter rate 0.05).
        self.progress = progress
        self._bar = tqdm(total=round(max_rate * 100), desc="filter rate", disable=not progress, leave=False,
                         bar_format="{desc} {n} % of {total} %|{bar}| [{elapsed}<{remaining}{postfix}]")  # fmt: skip
        if resume is None:
            self.original = measure_size(model.model, self.example_input)
            self.relevance_passes = 0
            self.evaluations = 0
            self.trajectory = []
            self.schedule_state = {}
            self.started = time.perf_counter()
            self.evaluation_seconds = self.relevance_seconds = self.reference_seconds = 0.0
            self.speed_seconds = latency_table.measuring_seconds if latency_table is not None else 0.0
            self.reference_harmonic_mean = self.evaluate_references(model.model)
            self.accept(model, attempts=0)
        else:
            self.trajectory, self.schedule_state = list(resume[0]), dict(resume[1])
            origins = self.schedule_state.get("channel_origins")
            if origins is not None:
                self.current.origins = {name: list(kept) for name, kept in origins.items()}
            elif "lstsq" in repair and len(self.trajectory) > 1:
                raise ValueError("this run cannot resume with repair lstsq: its checkpoint does not say which "
                                 "unpruned channel each kept channel is")  # fmt: skip
            first, last = self.trajectory[0], self.trajectory[-1]
            self.original = ModelSize(filters=first.filters, params=first.params, macs=first.macs)
            self.relevance_passes, self.evaluations = last.relevance_passes, last.evaluations
            self.started = time.perf_counter() - last.seconds
            self.evaluation_seconds = last.evaluation_seconds
            self.relevance_seconds, self.reference_seconds = last.relevance_seconds, last.reference_seconds
            self.speed_seconds = last.speed_seconds
            self.reference_harmonic_mean = last.reference_harmonic_mean
            self._bar.update(round(last.filter_rate * 100))

    @property
    def stopped(self) -> bool:
        """Whether the run has reached its accuracy target's limit: schedules take no further step."""
        if self.stop_at is None or not self.trajectory:
            return False
        return target_lost(self.trajectory, self.stop_at)

    def channel_scores(self, model: PrunableModel) -> dict[str, GroupScores]:
        """Each group's per-channel scores under the run's criterion; one scoring pass (counted and
        timed as a relevance pass, whichever criterion it is)."""
        started = time.perf_counter()
        scores = channel_scores(
            self.criterion,
            model,
            self.references,
            lambda: filter_relevance(
                model.model, self.references, self.relevance_config, self.architecture, progress=self.progress
            ),
            self.seed,
            self.relevance_passes,
        )
        self.relevance_passes += 1
        self.relevance_seconds += time.perf_counter() - started
        return scores

    def step_repair(self) -> StepRepair | None:
        """The run's repairs for the next step of the current model (None: none), timed as reference work."""
        if not self.repair or self.original_model is None:
            return None
        started = time.perf_counter()
        repair = step_repair(
            self.repair, self.current.model, self.original_model, self.current.origins, self.references[0], self.ridge
        )
        self.reference_seconds += time.perf_counter() - started
        return repair

    def evaluate_references(self, model: nn.Module) -> float:
        """H on the reference images; every call counts as one evaluation."""
        return harmonic_mean(self.evaluate_classes(model))

    def evaluate_classes(self, model: nn.Module) -> list[float]:
        """Per-class accuracy on the reference images; every call counts as one evaluation."""
        return self.evaluate_with_confidence(model)[0]

    def evaluate_with_confidence(self, model: nn.Module) -> tuple[list[float], list[float]]:
        """Per-class accuracy and mean true-class probability on the references; one evaluation."""
        self.evaluations += 1
        return self._timed_judgement(model)

    def _timed_judgement(self, model: nn.Module) -> tuple[list[float], list[float]]:
        started = time.perf_counter()
        judgement = self.reference_judge(model)
        self.reference_seconds += time.perf_counter() - started
        return judgement

    def removed_filters(self) -> int:
        return self.original.filters - self.trajectory[-1].filters if self.trajectory else 0

    def removed_macs(self) -> int:
        return self.original.macs - self.trajectory[-1].macs if self.trajectory else 0

    def original_latency_ns(self) -> float:
        return (self.trajectory[0].predicted_ms or 0.0) * 1e6

    def removed_latency_ns(self) -> float:
        return self.original_latency_ns() - (self.trajectory[-1].predicted_ms or 0.0) * 1e6 if self.trajectory else 0

    def predicted_latency_ns(self, model: nn.Module) -> float:
        """With cost "latency": ``model``'s latency predicted by the run's table, in nanoseconds."""
        assert self.latency_table is not None
        return predicted_seconds(self.latency_table, model, self.example_input) * 1e9

    def channel_costs(self, model: PrunableModel) -> dict[str, float] | None:
        """What one channel of each of ``model``'s groups costs now in the run's unit: MACs with cost "macs",
        nanoseconds of predicted latency with "latency"; None with "filters"."""
        if self.cost == "latency":
            assert self.latency_table is not None
            return channel_latency(model, self.latency_table)
        return {root: float(macs) for root, macs in channel_macs(model).items()} if self.cost == "macs" else None

    def accept(
        self,
        model: PrunableModel,
        attempts: int,
        attempt_harmonic_means: list[float] | None = None,
        phase: str = "pruning",
        layer: str | None = None,
    ) -> None:
        """Make ``model`` current and append its record to the trajectory."""
        judged = None
        if self.on_before_accept is not None:
            started = time.perf_counter()
            judged = self.on_before_accept(model.model)
            if judged is not None:  # the refit judged the model as well: timed as judging
                self.reference_seconds += time.perf_counter() - started
        self.current = model
        if "lstsq" in self.repair:  # a resumed run must know which unpruned channel each one is
            self.schedule_state["channel_origins"] = {name: list(kept) for name, kept in model.origins.items()}
        size = measure_size(model.model, self.example_input)
        reference_accuracy = (judged if judged is not None else self._timed_judgement(model.model))[0]
        self.reference_harmonic_mean = harmonic_mean(reference_accuracy)
        eval_accuracy = None
        if self.evaluation is not None:
            evaluation_started = time.perf_counter()
            eval_accuracy = per_class_accuracy(model.model, *self.evaluation, self.classes)
            self.evaluation_seconds += time.perf_counter() - evaluation_started
        holdout_accuracy = None
        if self.held_back is not None:  # part of the method's cost: it decides where the run stops
            holdout_started = time.perf_counter()
            holdout_accuracy = per_class_accuracy(model.model, *self.held_back, self.classes)
            self.reference_seconds += time.perf_counter() - holdout_started
        speedup = None
        if self.speed_probe is not None:
            speed_started = time.perf_counter()
            speedup = 1.0 if not self.trajectory else self.speed_probe(model.model)  # step 0 is the unpruned model
            self.speed_seconds += time.perf_counter() - speed_started
        predicted_ms = None
        if self.latency_table is not None:
            predicted_ms = predicted_seconds(self.latency_table, model.model, self.example_input) * 1e3
        record = StepRecord(
            step=len(self.trajectory),
            filter_rate=1 - size.filters / self.original.filters,
            filters=size.filters,
            params=size.params,
            macs=size.macs,
            params_ratio=size.params / self.original.params,
            macs_ratio=size.macs / self.original.macs,
            reference_accuracy=reference_accuracy,
            reference_harmonic_mean=self.reference_harmonic_mean,
            eval_accuracy=eval_accuracy,
            eval_harmonic_mean=None if eval_accuracy is None else harmonic_mean(eval_accuracy),
            seconds=time.perf_counter() - self.started,
            relevance_passes=self.relevance_passes,
            evaluations=self.evaluations,
            attempts=attempts,
            attempt_harmonic_means=attempt_harmonic_means or [],
            evaluation_seconds=self.evaluation_seconds,
            relevance_seconds=self.relevance_seconds,
            reference_seconds=self.reference_seconds,
            phase=phase,
            layer=layer,
            holdout_accuracy=holdout_accuracy,
            judged_counts=self._judged_counts(),
            speedup=speedup,
            speed_seconds=self.speed_seconds,
            predicted_ms=predicted_ms,
        )
        self.trajectory.append(record)
        if self.keep_models:
            self.models.append(copy.deepcopy(model.model))
        self._bar.update(min(round(record.filter_rate * 100), self._bar.total) - self._bar.n)
        self._bar.set_postfix(H=f"{record.reference_harmonic_mean:.3f}")
        if self.on_accept is not None:
            self.on_accept(self)

    def _judged_counts(self) -> list[int] | None:
        judged = self.evaluation if self.evaluation is not None else self.held_back
        if judged is None:
            return None
        return [int((judged[1] == position).sum()) for position in range(self.classes)]

    def close(self) -> None:
        self._bar.close()
