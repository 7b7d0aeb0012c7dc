"""``PruneConfig``: every setting of a pruning run in one frozen, validated record, grouped.

The record has the run's shape at its top (method, rates, step, criterion, cost, seed, the
relevance and the retraining) and four groups: :class:`SearchSettings` (how SD-DPX searches),
:class:`HeadSettings` (the classifier head), :class:`RepairSettings` (what repairs the
consumers of a removal) and :class:`TargetSettings` (the accuracy a recommended step keeps,
and the budgets that end a run).

Every setting also has a *flat name*, the vocabulary of the command line, of sweep configs and
of ``report.json``/``state.json`` (``head_folds`` is ``head.folds``; :data:`FLAT_NAMES`).
:meth:`PruneConfig.recommended`, :meth:`PruneConfig.paper` and :meth:`PruneConfig.replace`
take flat names; :meth:`PruneConfig.to_dict` writes them and :meth:`PruneConfig.from_dict`
reads them (and the grouped form). Two presets:

* :meth:`PruneConfig.recommended` (the default of ``prune`` and of ``sddpx-tp prune``):
  SD-DPX with aligned bundles of 16 channels, least-squares repair of the consumers
  (``lstsq``, which makes compensation unnecessary) and patience 2, chosen by measurement
  (docs/results/beyond-the-paper.md and repairs.md).
* :meth:`PruneConfig.paper`: the papers' semantics (single filters, fixed weights: no
  compensation and no repair, no patience). Its trials are masked, which changes the cost, not the result.

Range checks live in :mod:`sddpx_tp.pruning.config_checks`; the rules that depend on the method
live with the method registry, :func:`sddpx_tp.pruning.method_registry.check_config`. Errors
name the settings by their flat names as ``{field}`` placeholders (:class:`~sddpx_tp.errors.SettingError`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sddpx_tp.lrp.relevance import RelevanceConfig
from sddpx_tp.pruning.accuracy_target import AccuracyTarget
from sddpx_tp.pruning.config_checks import check
from sddpx_tp.pruning.config_groups import (
    COSTS,
    HeadSettings,
    RepairSettings,
    SearchSettings,
    TargetSettings,
)
from sddpx_tp.pruning.criteria import CriterionChoice, criterion_label
from sddpx_tp.pruning.surgery import Cost
from sddpx_tp.pruning.training import TrainingConfig

__all__ = ["COSTS", "FLAT_NAMES", "HeadSettings", "PruneConfig", "RepairSettings", "SearchSettings", "TargetSettings"]

_GROUPS: dict[str, type[Any]] = {
    "search": SearchSettings,
    "head": HeadSettings,
    "repair": RepairSettings,
    "target": TargetSettings,
}
# Flat name -> (group, field) for the settings that live in a group; every other flat name is a top field.
FLAT_NAMES: dict[str, tuple[str, str]] = {
    **{name: ("search", name) for name in (item.name for item in dataclasses.fields(SearchSettings))},
    "head": ("head", "mode"),
    "head_folds": ("head", "folds"),
    "refit_head": ("head", "refit"),
    "head_judge": ("head", "judge"),
    "repair": ("repair", "methods"),
    "ridge": ("repair", "ridge"),
    "compensation": ("repair", "compensation"),
    "target_accuracy": ("target", "mean_accuracy"),
    "min_class_accuracy": ("target", "class_accuracy"),
    "target_confidence": ("target", "confidence"),
    "target_margin": ("target", "margin"),
    "stop_at_target": ("target", "stop"),
    "target_macs": ("target", "macs"),
    "target_speedup": ("target", "speedup"),
}
# Top fields whose flat name (the command line's) differs from the field's.
_TOP_ALIASES = {"hold": "progressive_max_drop", "holdout": "held_back"}


@dataclass(frozen=True)
class PruneConfig:
    """Settings of a pruning run. Rates and steps are fractions of the original filters (or MACs, with cost).

    Build one with :meth:`recommended` or :meth:`paper`, which take flat names (``head="fit"``).
    """

    method: str = "sd-dpx"
    # A cap, not a target: the accuracy rule picks the step. At 0.9 the cap, not accuracy, stopped most measured
    # tasks; 0.97 kept the target on every tuning task (seeds 0-4) of ResNet-18 and EfficientNet-Lite0 and sped
    # them up (docs/results/ship-speed.md). The papers' presets keep 0.9.
    max_rate: float = 0.97
    step: float = 0.05  # p in the papers
    min_channels: int = 1  # a group never falls below this many channels
    round_to: int = 16  # keep every group's width a multiple of this (SIMD-friendly widths)
    seed: int = 0
    # What ranks the channels: LRP relevance, a baseline, or a user's torch-pruning Importance (an instance, or
    # "module:attribute" naming one; sddpx_tp.pruning.criteria).
    criterion: CriterionChoice = "lrp"
    # What a step's share (and max_rate) is of, and what candidates are ranked per unit of: "filters" (the papers),
    # or "macs" at the references' input size, relevance per MAC (sddpx_tp.pruning.costs; issue 31).
    cost: Cost = "filters"
    # The share of each class's references held back from relevance, trials, repairs and the head's fit, to
    # judge on images the run never used: the target (with target.stop and no evaluation images), or the trials
    # (with head.judge "held-back"). Flat name "holdout".
    held_back: float = 1 / 3
    # Progressive: stop a layer short when the reference accuracy falls more than this. Flat name "hold".
    progressive_max_drop: float | None = None
    # Depth before width: first remove whole residual blocks, while the references keep block_floor of the
    # unpruned harmonic mean H (sddpx_tp.pruning.block_phase; issue 31). Off by default until measured.
    blocks: bool = False
    block_floor: float = 0.99
    search: SearchSettings = field(default_factory=SearchSettings)
    head: HeadSettings = field(default_factory=HeadSettings)
    repair: RepairSettings = field(default_factory=RepairSettings)
    target: TargetSettings = field(default_factory=TargetSettings)
    relevance: RelevanceConfig = field(default_factory=lambda: RelevanceConfig(normalize=True))
    retraining: TrainingConfig = field(default_factory=TrainingConfig)  # with training images only

    @classmethod
    def recommended(cls, **changes: Any) -> PruneConfig:
        """What ``sddpx-tp prune`` runs by default; ``changes`` by flat name (``head="fit"``) or whole group."""
        return cls().replace(**changes)

    @classmethod
    def paper(cls, **changes: Any) -> PruneConfig:
        """The papers' semantics: filter rate to 0.9, single filters, fixed weights (no compensation, no repair), no
        patience."""
        return cls().replace(
            **{"max_rate": 0.9, "round_to": 1, "compensation": "never", "patience": 0, "repair": (), **changes}
        )

    def replace(self, **changes: Any) -> PruneConfig:
        """A copy with ``changes``: flat names, top fields, or whole groups (a group record or a dict of its fields)."""
        top: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            if name in FLAT_NAMES and not (name in _GROUPS and isinstance(value, _GROUPS[name] | dict)):
                group, inner = FLAT_NAMES[name]
                grouped.setdefault(group, {})[inner] = value
            elif name in _GROUPS and isinstance(value, dict):
                grouped.setdefault(name, {}).update(value)
            else:
                top[_TOP_ALIASES.get(name, name)] = value
        for group, values in grouped.items():
            base = top.pop(group, getattr(self, group))
            top[group] = dataclasses.replace(base, **values)
        return dataclasses.replace(self, **top)

    @property
    def accuracy_target(self) -> AccuracyTarget:
        target = self.target
        return AccuracyTarget(target.mean_accuracy, target.class_accuracy, target.confidence, margin=target.margin)

    @property
    def smallest_step(self) -> float:
        return self.search.smallest_step(self.step)

    def __post_init__(self) -> None:
        for group, kind in _GROUPS.items():
            if not isinstance(getattr(self, group), kind):
                raise TypeError(f"PruneConfig.{group} is a {kind.__name__}; to set one of its settings by its "
                                f"flat name use PruneConfig.recommended({group}=...) or .replace()")  # fmt: skip
        check(self.flat())

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name (the command line's vocabulary); relevance and retraining as records."""
        values = {_flat_top(item.name): getattr(self, item.name) for item in dataclasses.fields(self)}
        for group in _GROUPS:
            del values[group]
        values.update({name: getattr(getattr(self, group), inner) for name, (group, inner) in FLAT_NAMES.items()})
        return values

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, by flat name (a user's importance as its class's reference); :meth:`from_dict` reads it."""
        values = self.flat()
        values["criterion"] = criterion_label(self.criterion)
        values["relevance"] = dataclasses.asdict(self.relevance)
        values["retraining"] = dataclasses.asdict(self.retraining)
        values["repair"] = list(values["repair"])
        return values

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        """Reads :meth:`to_dict`'s flat form (runs from before the groups included) or the grouped form."""
        values = dict(data)
        values["relevance"] = RelevanceConfig(**values["relevance"])
        values["retraining"] = TrainingConfig(**values["retraining"])
        if isinstance(values.get("repair"), list):  # JSON gives a list; runs from before repairs had none
            values["repair"] = tuple(values["repair"])
        return cls().replace(**values)

    @staticmethod
    def flat_annotations() -> dict[str, str]:
        """Flat name -> its field's annotation as text (what a sweep config may set, and how it is typed)."""
        tops = {_flat_top(item.name): str(item.type) for item in dataclasses.fields(PruneConfig)}
        annotations = {name: kind for name, kind in tops.items() if name not in _GROUPS}
        for name, (group, inner) in FLAT_NAMES.items():
            annotations[name] = {item.name: str(item.type) for item in dataclasses.fields(_GROUPS[group])}[inner]
        return annotations


def _flat_top(name: str) -> str:
    return {field_name: flat for flat, field_name in _TOP_ALIASES.items()}.get(name, name)
