"""The accuracy a pruned model must keep: which step a run recommends, and where a run may stop.

A step *meets* the target when its mean per-class accuracy is at least ``mean_kept`` of the
unpruned model's and every class keeps at least ``class_kept`` of its own. The recommended
step is the last one before the first that misses it (the unpruned step always counts), so a
model that recovers after a collapse is never recommended over the collapse.

Which images judge, in order of honesty: held-out images (``--eval``), else references held
back from relevance, trials, repairs and the head's fit (only when the run stops at the target,
see :func:`hold_back`), else the references themselves (optimistic: they guided the pruning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from sddpx_tp.metrics import last_point_kept

Judge = Literal["eval", "holdout", "reference"]
JUDGES: dict[Judge, str] = {"eval": "held-out images", "holdout": "held-back reference images",
                            "reference": "reference images"}  # fmt: skip
LabelledImages = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class AccuracyTarget:
    """Shares of the unpruned accuracy a step must keep: of the mean, and of each class's own."""

    mean_kept: float = 0.95
    class_kept: float = 0.9

    def recommended_index(self, rates: Sequence[float], per_class: Sequence[Sequence[float]]) -> int:
        """The index of the step to recommend (see the module docstring)."""
        return last_point_kept(rates, per_class, self.mean_kept, self.class_kept)

    def missed_by_last(self, rates: Sequence[float], per_class: Sequence[Sequence[float]]) -> bool:
        """Whether the newest step is past the recommended one: the run has lost too much."""
        return self.recommended_index(rates, per_class) != len(rates) - 1


def recommended_record(trajectory: Sequence[Any], target: AccuracyTarget) -> int:
    """The index of the recommended step among ``StepRecord`` objects, judged by :func:`judge_of`."""
    judge = judge_of(trajectory[0])
    per_class = [getattr(record, f"{judge}_accuracy") for record in trajectory]
    return target.recommended_index([record.filter_rate for record in trajectory], per_class)


def judge_of(first_record: object) -> Judge:
    """Which images judge a trajectory, from its unpruned record (a ``StepRecord`` or its dict)."""

    def field(name: str) -> object:
        return first_record.get(name) if isinstance(first_record, dict) else getattr(first_record, name, None)

    if field("eval_accuracy") is not None:
        return "eval"
    return "holdout" if field("holdout_accuracy") is not None else "reference"


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
