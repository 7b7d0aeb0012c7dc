"""The accuracy a pruned model must keep: which step a run recommends, and where a run may stop.

A step *meets* the target when its mean per-class accuracy is at least ``mean_kept`` of the
unpruned model's and every class keeps at least ``class_kept`` of its own.

Accuracy on a few hundred images is noisy: with 200 images a class one image is half a point,
and a class near 85 % has a standard error of 2.5 points. So a step that falls short is judged
against that noise (when the number of judging images is known): it *clearly misses* when it
falls short by more than ``confidence`` standard errors, in its mean or in any class (a
one-sided binomial test against the target value itself, which is what the images would
show if the step kept exactly the target); otherwise its shortfall is *within noise*. The
recommended step is the highest step that meets the target, up to the first class *collapse* (a
class at half its own accuracy or less: at chance on two classes, far beyond any noise); the
unpruned step always counts. Neither a dip within noise nor a clear miss ends the search: each step
is a different model, pruned further and repaired again, and one that clearly misses is often
followed by steps that meet the target on the same images (measured: benchmarks/step_rule.py on
MobileNetV2, where stopping at the first clear miss handed out 2.6 times the MACs on one tuning task
of five, and nothing on the ResNet-18 tasks; the steps chosen kept the target on images nobody used
on all 30 tuning tasks either way). A collapse is never forgiven. The step handed out must meet the target
by ``margin`` standard errors: among many noisy steps near the target, the highest that looks kept
is often one that is kept only by the luck of the draw (measured: benchmarks/step_rule.py, where
half a standard error took the steps that truly keep the target on unseen images from 19 to 20 of
the 20 tuning tasks), or half the loss the target allows, whichever is less (with a few dozen images a
class half a standard error would exceed the allowance, and nothing pruned could be handed out).
Without counts (runs from before) or with ``confidence`` 0 every shortfall is a clear miss and there is
no margin: the first miss ends the search (the rule before issue 31).

Which images judge, in order of honesty: held-out images (``--eval``), else references held
back from relevance, trials, repairs and the head's fit (only when the run stops at the target,
see :func:`hold_back`), else the references themselves (optimistic: they guided the pruning).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

Judge = Literal["eval", "holdout", "reference"]
JUDGES: dict[Judge, str] = {"eval": "held-out images", "holdout": "held-back reference images",
                            "reference": "reference images"}  # fmt: skip
Verdict = Literal["meets", "within noise", "clearly misses"]
LabelledImages = tuple[torch.Tensor, torch.Tensor]
DEFAULT_CONFIDENCE = (
    1.645  # standard errors: a one-sided 95 % test (every value from 1 to 2.3 chose alike on seeds 0-4)
)
DEFAULT_MARGIN = 0.5  # standard errors the recommended step meets the target by (chosen on task seeds 0-4)
# A run that stops at the target stops after this many steps in a row that do not meet it (within noise or
# clearly below): a lasting drop ends the run, a dip the recommended step would look past does not.
DEFAULT_PATIENCE = 3
# A class at this share of its own unpruned accuracy or less has collapsed (two classes: chance), whatever the noise.
COLLAPSE_SHARE = 0.5


@dataclass(frozen=True)
class AccuracyTarget:
    """Shares of the unpruned accuracy a step must keep (of the mean, and of each class's own), and how
    many standard errors of the judging images' noise a shortfall must exceed to count (0: any)."""

    mean_kept: float = 0.95
    class_kept: float = 0.9
    confidence: float = DEFAULT_CONFIDENCE
    patience: int = DEFAULT_PATIENCE
    margin: float = DEFAULT_MARGIN

    def verdict(self, accuracy: Sequence[float], start: Sequence[float], counts: Sequence[int] | None) -> Verdict:
        """How a step with per-class ``accuracy`` stands against the target set by the unpruned ``start``,
        judged on ``counts`` images a class (None: unknown, so any shortfall counts)."""
        mean_target = self.mean_kept * sum(start) / len(start)
        floors = [self.class_kept * value for value in start]
        mean = sum(accuracy) / len(accuracy)
        if counts is None or self.confidence <= 0:
            kept = mean >= mean_target and all(value >= floor for value, floor in zip(accuracy, floors, strict=True))
            return "meets" if kept else "clearly misses"
        # The binomial noise of an accuracy equal to the target value, on these many images.
        mean_error = math.sqrt(sum(mean_target * (1 - mean_target) / count for count in counts)) / len(counts)
        errors = [math.sqrt(floor * (1 - floor) / count) for floor, count in zip(floors, counts, strict=True)]
        shortfalls = [value - floor for value, floor in zip(accuracy, floors, strict=True)]  # of each class
        if mean < mean_target - self.confidence * mean_error or any(
            shortfall < -self.confidence * error for shortfall, error in zip(shortfalls, errors, strict=True)
        ):
            return "clearly misses"
        # The margin never asks for more than half the loss the target allows: with very few images it would
        # otherwise exceed the whole allowance, and no pruned step could ever be handed out.
        mean_margin = min(self.margin * mean_error, (sum(start) / len(start) - mean_target) / 2)
        class_margins = [min(self.margin * error, (first - floor) / 2)
                         for error, first, floor in zip(errors, start, floors, strict=True)]  # fmt: skip
        if mean >= mean_target + mean_margin and all(
            shortfall >= margin for shortfall, margin in zip(shortfalls, class_margins, strict=True)
        ):
            return "meets"
        return "within noise"

    def collapsed(self, accuracy: Sequence[float], start: Sequence[float]) -> bool:
        """Whether a class of ``accuracy`` fell to :data:`COLLAPSE_SHARE` of its own unpruned accuracy or less."""
        return any(value <= COLLAPSE_SHARE * first for value, first in zip(accuracy, start, strict=True) if first > 0)

    def _noise_aware(self, counts: Sequence[int] | None) -> bool:
        return counts is not None and self.confidence > 0

    def verdicts(self, per_class: Sequence[Sequence[float]], counts: Sequence[int] | None) -> list[Verdict]:
        """Each step's verdict against the first step (the unpruned model)."""
        return [self.verdict(accuracy, per_class[0], counts) for accuracy in per_class]

    def recommended_index(
        self, rates: Sequence[float], per_class: Sequence[Sequence[float]], counts: Sequence[int] | None = None
    ) -> int:
        """The index of the step to recommend: the highest rate that meets the target before the first step, in
        rate order, that collapses (without the noise allowance: that misses it; see the module docstring)."""
        verdicts = self.verdicts(per_class, counts)
        noise_aware = self._noise_aware(counts)
        order = sorted(range(len(rates)), key=lambda index: rates[index])
        kept = order[0]
        for index in order:
            ended = self.collapsed(per_class[index], per_class[0]) if noise_aware else verdicts[index] != "meets"
            if ended:
                break
            if verdicts[index] == "meets":
                kept = index
        return kept

    def missed_by_last(
        self, rates: Sequence[float], per_class: Sequence[Sequence[float]], counts: Sequence[int] | None = None
    ) -> bool:
        """Whether the newest step is past the recommended one."""
        return self.recommended_index(rates, per_class, counts) != len(rates) - 1

    def lost(self, rates: Sequence[float], per_class: Sequence[Sequence[float]], counts: Sequence[int] | None) -> bool:
        """Whether a run should stop: a class collapsed, or the last ``patience`` steps all fell short of the
        target (without the noise allowance: a step missed it); a run that stops keeps the recommended step."""
        verdicts = self.verdicts(per_class, counts)
        if not self._noise_aware(counts):
            return "clearly misses" in verdicts
        if any(self.collapsed(accuracy, per_class[0]) for accuracy in per_class):
            return True
        recent = verdicts[-self.patience :] if self.patience > 0 else []
        return len(recent) == self.patience and all(verdict != "meets" for verdict in recent)


def recommended_record(trajectory: Sequence[Any], target: AccuracyTarget) -> int:
    """The index of the recommended step among ``StepRecord`` objects, judged by :func:`judge_of`."""
    return target.recommended_index(*_judged(trajectory))


def target_lost(trajectory: Sequence[Any], target: AccuracyTarget) -> bool:
    """Whether a run stopping at ``target`` should stop after its newest step (see :meth:`AccuracyTarget.lost`)."""
    return target.lost(*_judged(trajectory))


def _judged(trajectory: Sequence[Any]) -> tuple[list[float], list[list[float]], list[int] | None]:
    """A trajectory's rates, the per-class accuracy that judges it, and the judging images a class."""
    judge = judge_of(trajectory[0])
    per_class = [getattr(record, f"{judge}_accuracy") for record in trajectory]
    counts = _field(trajectory[0], "judged_counts")
    return [record.filter_rate for record in trajectory], per_class, counts  # type: ignore[return-value]


def _field(record: object, name: str) -> object:
    return record.get(name) if isinstance(record, dict) else getattr(record, name, None)


def judge_of(first_record: object) -> Judge:
    """Which images judge a trajectory, from its unpruned record (a ``StepRecord`` or its dict)."""

    if _field(first_record, "eval_accuracy") is not None:
        return "eval"
    return "holdout" if _field(first_record, "holdout_accuracy") is not None else "reference"


def hold_back(references: LabelledImages, share: float, seed: int) -> tuple[LabelledImages, LabelledImages]:
    """Split references (labels: class positions) into those the run uses and those held back to judge it.

    Each class gives ``share`` of its images (rounded, at least one), drawn by ``seed``, and keeps at
    least one. Raises ``ValueError`` when a class has fewer than two images."""
    images, labels = references
    generator = torch.Generator().manual_seed(seed)
    used: list[torch.Tensor] = []
    held: list[torch.Tensor] = []
    for position in sorted(set(labels.tolist())):
        members = torch.nonzero(labels == position).flatten()
        if len(members) < 2:
            raise ValueError(f"class {position} has {len(members)} reference image; holding some back needs two")
        count = min(len(members) - 1, max(1, round(share * len(members))))
        shuffled = members[torch.randperm(len(members), generator=generator)]
        held.append(shuffled[:count].sort().values)
        used.append(shuffled[count:].sort().values)
    kept, judged = torch.cat(used), torch.cat(held)
    return (images[kept], labels[kept]), (images[judged], labels[judged])
