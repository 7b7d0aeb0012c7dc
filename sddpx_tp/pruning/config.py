"""``PruneConfig``: every setting of a pruning run in one frozen, validated record.

Two presets:

* :meth:`PruneConfig.recommended` (the default of ``prune`` and of ``sddpx-tp prune``):
  SD-DPX with aligned bundles of 16 channels, least-squares repair of the consumers
  (``lstsq``, which makes compensation unnecessary) and patience 2, chosen by measurement
  (docs/results/beyond-the-paper.md and repairs.md).
* :meth:`PruneConfig.paper`: the papers' semantics (single filters, fixed weights: no
  compensation and no repair, no patience). Its trials are masked, which changes the cost, not the result.

Range checks live here; the rules that depend on the method (which method needs
training images, where adaptive compensation is evaluated) live with the method
registry, :func:`sddpx_tp.pruning.method_registry.check_config`. Errors name the fields as
``{field}`` placeholders (:class:`~sddpx_tp.errors.SettingError`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from sddpx_tp.errors import SettingError, literal
from sddpx_tp.lrp.relevance import RelevanceConfig
from sddpx_tp.pruning.accuracy_target import DEFAULT_CONFIDENCE, DEFAULT_MARGIN, AccuracyTarget
from sddpx_tp.pruning.criteria import CriterionChoice, criterion_label, criterion_problem
from sddpx_tp.pruning.reconstruction import DEFAULT_RIDGE
from sddpx_tp.pruning.repairs import REPAIRS, RepairName
from sddpx_tp.pruning.surgery import Cost
from sddpx_tp.pruning.training import TrainingConfig

Compensation = Literal["auto", "adaptive", "always", "never"]
Head = Literal["keep", "fit"]
HEADS: tuple[Head, ...] = ("keep", "fit")
HeadJudge = Literal["cross-fit", "held-back"]
HEAD_JUDGES: tuple[HeadJudge, ...] = ("cross-fit", "held-back")
DEFAULT_HEAD_JUDGE: HeadJudge = "cross-fit"
DEFAULT_HEAD_FOLDS = 5
COMPENSATIONS: tuple[Compensation, ...] = ("auto", "adaptive", "always", "never")
COSTS: tuple[Cost, ...] = ("filters", "macs")
DEFAULT_MIN_STEP = 0.0125  # p/4 for the default p = 0.05: two halvings
MAX_SEED = 2**63  # torch generators take 64-bit seeds; a larger one would fail mid-run


@dataclass(frozen=True)
class PruneConfig:
    """Settings of a pruning run. Rates and steps are fractions of the original filters.

    ``compensation``: ``"auto"`` lets each method choose (SD-DPX: adaptive, where it
    evaluates every trial both ways; PX, DPX, progressive: none); ``"adaptive"``
    asks for it explicitly (refused for methods that evaluate nothing); ``"always"``
    compensates every removal; ``"never"``.
    """

    method: str = "sd-dpx"
    max_rate: float = 0.9
    step: float = 0.05  # p in the papers
    order_change: bool = True  # SD-DPX: skip low-relevance candidates that hurt H
    rate_change: bool = True  # SD-DPX: halve the step when H drops
    max_excluded: int = 10  # K: candidates an SD-DPX step may skip before halving (chosen on seeds 0-4)
    min_step: float | None = None  # the smallest SD-DPX step; None: DEFAULT_MIN_STEP, or ``step`` if smaller
    min_channels: int = 1  # a group never falls below this many channels
    round_to: int = 16  # keep every group's width a multiple of this (SIMD-friendly widths)
    compensation: Compensation = "auto"
    class_floor: float = 0.0  # SD-DPX: every class keeps this fraction of its unpruned reference accuracy
    patience: int = 2  # SD-DPX: skips without improvement before halving the step (0: up to K)
    masked_trials: bool = True  # SD-DPX: trials mask channels in place instead of pruning a copy
    hold: float | None = None  # progressive: stop a layer short when reference H falls more than this
    seed: int = 0
    # "keep": the model's own outputs (labels are output indices); "fit": a new linear head for the
    # reference classes on the frozen backbone's features, judged as ``head_judge`` says (sddpx_tp.pruning.head).
    head: Head = "keep"
    head_folds: int = DEFAULT_HEAD_FOLDS  # with head "fit": folds of its cross-validation and cross-fitted scores
    refit_head: bool = True  # with head "fit": refit the head on the pruned backbone after every accepted step
    # With head "fit": what judges the trials on images the head was not fitted on. "cross-fit": every reference,
    # each predicted by a head fitted on the other folds (the backbone's accuracy, a new head per trial);
    # "held-back": ``holdout`` of each class's references, kept out of the head's fit and refits, the relevance
    # and the repairs, predicted by the model's own head (docs/results/transfer.md).
    head_judge: HeadJudge = DEFAULT_HEAD_JUDGE
    # Repairs without training (sddpx_tp.pruning.repairs), applied to every trial and removal: () is the
    # papers' fixed weights; any of "lstsq", "bn", "bias", in that order. Default "lstsq": on the
    # ResNet-18 Fashion-MNIST tasks it lifted the lowest-class AUC from 0.86-0.99 to 0.97-1.00 on the
    # tuning seeds 0-4 and ended the accuracy cascade (docs/results/repairs.md).
    repair: tuple[RepairName, ...] = ("lstsq",)
    ridge: float = DEFAULT_RIDGE  # with repair "lstsq": ridge strength, relative to the mean Gram diagonal
    # What ranks the channels: LRP relevance, a baseline, or a user's torch-pruning Importance (an instance, or
    # "module:attribute" naming one; sddpx_tp.pruning.criteria).
    criterion: CriterionChoice = "lrp"
    # What a step's share (and max_rate) is of, and what candidates are ranked per unit of: "filters" (the papers),
    # or "macs" at the references' input size, relevance per MAC (sddpx_tp.pruning.costs; issue 31).
    cost: Cost = "filters"
    # The step a run recommends (and ``export`` writes by default) keeps these shares of the unpruned
    # accuracy: of the mean, and of each class's own (sddpx_tp.pruning.accuracy_target).
    target_accuracy: float = 0.95
    min_class_accuracy: float = 0.9
    # A shortfall counts only beyond this many standard errors of the judging images' noise (0: any shortfall,
    # the first miss ends the search, as before issue 31).
    target_confidence: float = DEFAULT_CONFIDENCE
    target_margin: float = DEFAULT_MARGIN  # standard errors the recommended step meets the target by
    stop_at_target: bool = False  # end the run once a step clearly misses the target (or several fall short)
    # A speed budget: end the run at the first accepted step whose MACs are at most this share of the unpruned
    # model's (0.25: 4x fewer MACs); None: prune to max_rate.
    target_macs: float | None = None
    # With stop_at_target and no evaluation images: the share of each class's references held back
    # from relevance, trials, repairs and the head's fit, to judge the target on images the run never used.
    # With head_judge "held-back": the share of the (remaining) references held back to judge the trials.
    holdout: float = 1 / 3
    relevance: RelevanceConfig = field(default_factory=lambda: RelevanceConfig(normalize=True))
    retraining: TrainingConfig = field(default_factory=TrainingConfig)  # with training images only

    @classmethod
    def recommended(cls, **changes: Any) -> PruneConfig:
        """What ``sddpx-tp prune`` runs by default (``changes`` override single fields)."""
        return cls(**changes)

    @classmethod
    def paper(cls, **changes: Any) -> PruneConfig:
        """The papers' semantics: single filters, fixed weights (no compensation, no repair), no patience."""
        return cls(**{"round_to": 1, "compensation": "never", "patience": 0, "repair": (), **changes})

    @property
    def accuracy_target(self) -> AccuracyTarget:
        return AccuracyTarget(self.target_accuracy, self.min_class_accuracy, self.target_confidence,
                              margin=self.target_margin)  # fmt: skip

    def replace(self, **changes: Any) -> PruneConfig:
        return dataclasses.replace(self, **changes)

    @property
    def smallest_step(self) -> float:
        return self.min_step if self.min_step is not None else min(DEFAULT_MIN_STEP, self.step)

    def __post_init__(self) -> None:
        # A list from the API or JSON, or one comma-separated string.
        given = self.repair.split(",") if isinstance(self.repair, str) else self.repair
        object.__setattr__(self, "repair", tuple(given))
        repairs = ",".join(map(str, self.repair))
        checks = [
            (0 < self.max_rate < 1, f"{{max_rate}} must be in (0, 1), not {self.max_rate}"),
            (0 < self.step <= self.max_rate, f"{{step}} must be in (0, max_rate], not {self.step}"),
            (self.max_excluded >= 0, f"{{max_excluded}} must be >= 0, not {self.max_excluded}"),
            (0 < self.smallest_step <= self.step, f"{{min_step}} must be in (0, step], not {self.min_step}"),
            (self.min_channels >= 1, f"{{min_channels}} must be >= 1, not {self.min_channels}"),
            (self.round_to >= 1, f"{{round_to}} must be >= 1, not {self.round_to}"),
            (0 <= self.class_floor <= 1, f"{{class_floor}} must be in [0, 1], not {self.class_floor}"),
            (self.patience >= 0, f"{{patience}} must be >= 0, not {self.patience}"),
            (self.hold is None or 0 <= self.hold <= 1, f"{{hold}} must be in [0, 1], not {self.hold}"),
            (self.compensation in COMPENSATIONS, f"{{compensation}} must be one of {COMPENSATIONS}"),
            (0 <= self.seed < MAX_SEED, f"{{seed}} must be in [0, 2**63), not {self.seed}"),
            (self.head in HEADS, f"{{head}} must be one of {HEADS}, not {self.head!r}"),
            (criterion_problem(self.criterion) is None, str(criterion_problem(self.criterion))),
            (self.cost in COSTS, f"{{cost}} must be one of {', '.join(COSTS)}, not {literal(repr(self.cost))}"),
            (set(self.repair) <= set(REPAIRS), f"{{repair}} takes {', '.join(REPAIRS)}, not {literal(repairs)}"),
            (len(set(self.repair)) == len(self.repair), f"{{repair}} names a repair twice: {literal(repairs)}"),
            # > 0: a channel dead on the references would make the system singular.
            (0 < self.ridge < float("inf"), f"{{ridge}} must be > 0 and finite, not {self.ridge}"),
            (2 <= self.head_folds <= 100, f"{{head_folds}} must be in [2, 100], not {self.head_folds}"),
            (self.head_judge in HEAD_JUDGES, f"{{head_judge}} must be one of {HEAD_JUDGES}, not {self.head_judge!r}"),
            (0 < self.target_accuracy <= 1, f"{{target_accuracy}} must be in (0, 1], not {self.target_accuracy}"),
            (
                0 <= self.min_class_accuracy <= 1,
                f"{{min_class_accuracy}} must be in [0, 1], not {self.min_class_accuracy}",
            ),
            (0 < self.holdout < 1, f"{{holdout}} must be in (0, 1), not {self.holdout}"),
            (
                self.target_macs is None or 0 < self.target_macs < 1,
                f"{{target_macs}} is a share of the unpruned MACs in (0, 1), not {self.target_macs}",
            ),
            (
                0 <= self.target_confidence <= 10,
                f"{{target_confidence}} must be in [0, 10] standard errors, not {self.target_confidence}",
            ),
            (
                0 <= self.target_margin <= 10,
                f"{{target_margin}} must be in [0, 10] standard errors, not {self.target_margin}",
            ),
            # Settings of a fitted head would otherwise be silently ignored.
            (
                self.head == "fit" or self.head_judge == DEFAULT_HEAD_JUDGE,
                f"{{head_judge}} {self.head_judge} applies only to a fitted head; add {{head}} fit or leave it out",
            ),
            (
                self.head == "fit" or self.head_folds == DEFAULT_HEAD_FOLDS,
                f"{{head_folds}} {self.head_folds} applies only to a fitted head; add {{head}} fit or leave it out",
            ),
        ]
        for passed, message in checks:
            if not passed:
                raise SettingError(message)
        object.__setattr__(self, "repair", tuple(name for name in REPAIRS if name in self.repair))  # applied order
        if self.compensation == "adaptive" and not self.masked_trials:
            raise SettingError("{compensation} adaptive needs {masked_trials}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; :meth:`from_dict` reads it back (a user's importance as its class's reference)."""
        return dataclasses.asdict(dataclasses.replace(self, criterion=criterion_label(self.criterion)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        values = dict(data)
        values["relevance"] = RelevanceConfig(**values["relevance"])
        values["repair"] = tuple(values.get("repair", ()))  # JSON gives a list; runs from before repairs had none
        values["retraining"] = TrainingConfig(**values["retraining"])
        return cls(**values)
