"""The four groups of a :class:`~sddpx_tp.pruning.config.PruneConfig`: search, head, repair, target.

Each is a frozen record of defaults; the range checks that span groups live in
:mod:`sddpx_tp.pruning.config_checks`, run when the whole configuration is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sddpx_tp.pruning.accuracy_target import DEFAULT_CONFIDENCE, DEFAULT_MARGIN
from sddpx_tp.pruning.reconstruction import DEFAULT_RIDGE
from sddpx_tp.pruning.repairs import REPAIRS, RepairName
from sddpx_tp.pruning.surgery import Cost

Compensation = Literal["auto", "adaptive", "always", "never"]
COMPENSATIONS: tuple[Compensation, ...] = ("auto", "adaptive", "always", "never")
Head = Literal["keep", "fit"]
HEADS: tuple[Head, ...] = ("keep", "fit")
HeadJudge = Literal["cross-fit", "held-back"]
HEAD_JUDGES: tuple[HeadJudge, ...] = ("cross-fit", "held-back")
DEFAULT_HEAD_JUDGE: HeadJudge = "cross-fit"
DEFAULT_HEAD_FOLDS = 5
COSTS: tuple[Cost, ...] = ("filters", "macs", "latency")
DEFAULT_MIN_STEP = 0.0125  # p/4 for the default p = 0.05: two halvings


@dataclass(frozen=True)
class SearchSettings:
    """How SD-DPX searches for each step (the other methods ignore them)."""

    order_change: bool = True  # skip low-relevance candidates that hurt the harmonic mean H
    rate_change: bool = True  # halve the step when H drops
    max_excluded: int = 10  # K: candidates a step may skip before halving (chosen on seeds 0-4)
    min_step: float | None = None  # the smallest step; None: DEFAULT_MIN_STEP, or the run's step if smaller
    patience: int = 2  # skips without improvement before halving the step (0: up to K)
    masked_trials: bool = True  # trials mask channels in place instead of pruning a copy
    class_floor: float = 0.0  # every class keeps this fraction of its unpruned reference accuracy

    def smallest_step(self, step: float) -> float:
        return self.min_step if self.min_step is not None else min(DEFAULT_MIN_STEP, step)


@dataclass(frozen=True)
class HeadSettings:
    """The classifier head. ``mode`` "keep": the model's own outputs (labels are output indices); "fit": a new
    linear head for the reference classes on the frozen backbone's features (sddpx_tp.pruning.head)."""

    mode: Head = "keep"
    folds: int = DEFAULT_HEAD_FOLDS  # folds of its cross-validation and cross-fitted scores
    refit: bool = True  # refit the head on the pruned backbone after every accepted step
    # What judges the trials on images the head was not fitted on. "cross-fit": every reference, each
    # predicted by a head fitted on the other folds (the backbone's accuracy, a new head per trial);
    # "held-back": the config's ``held_back`` share of each class's references, kept out of the head's fit and
    # refits, the relevance and the repairs, predicted by the model's own head (docs/results/transfer.md).
    judge: HeadJudge = DEFAULT_HEAD_JUDGE


@dataclass(frozen=True)
class RepairSettings:
    """Repairs without training (sddpx_tp.pruning.repairs), applied to every trial and removal.

    ``methods``: () is the papers' fixed weights; any of "lstsq", "bn", "bias", applied in that order.
    Default "lstsq": on the ResNet-18 Fashion-MNIST tasks it lifted the lowest-class AUC from 0.86-0.99
    to 0.97-1.00 on the tuning seeds 0-4 and ended the accuracy cascade (docs/results/repairs.md).
    ``compensation``: "auto" lets each method choose (SD-DPX: adaptive, where it evaluates every trial
    both ways; PX, DPX, progressive: none); "adaptive" asks for it explicitly (refused for methods that
    evaluate nothing); "always" compensates every removal; "never".
    """

    methods: tuple[RepairName, ...] = ("lstsq",)
    ridge: float = DEFAULT_RIDGE  # with "lstsq": ridge strength, relative to the mean Gram diagonal
    compensation: Compensation = "auto"

    def __post_init__(self) -> None:
        # A list from the API or JSON, or one comma-separated string; kept in the order they are applied.
        given = self.methods.split(",") if isinstance(self.methods, str) else self.methods
        given = tuple(given)
        known = tuple(name for name in REPAIRS if name in given)
        ordered = known if len(known) == len(given) and set(given) <= set(REPAIRS) else given
        object.__setattr__(self, "methods", ordered)


@dataclass(frozen=True)
class TargetSettings:
    """The accuracy the recommended step keeps (``export`` writes it by default), and what ends a run."""

    mean_accuracy: float = 0.95  # the share of the unpruned mean accuracy kept
    class_accuracy: float = 0.9  # ... and of each class's own
    # A shortfall counts only beyond this many standard errors of the judging images' noise (0: any shortfall,
    # the first miss ends the search, as before issue 31; sddpx_tp.pruning.accuracy_target).
    confidence: float = DEFAULT_CONFIDENCE
    margin: float = DEFAULT_MARGIN  # standard errors the recommended step meets the target by
    stop: bool = False  # end the run once a class collapses or several steps in a row fall short of the target
    # A speed budget: end the run at the first accepted step whose MACs are at most this share of the unpruned
    # model's (0.25: 4x fewer MACs); None: prune to max_rate.
    macs: float | None = None
    # A measured speed budget: end the run at the first accepted step at least this many times faster than the
    # unpruned model (ONNX Runtime CPU, batch 1, the run's threads; sddpx_tp.export.latency); None: no budget.
    speedup: float | None = None
