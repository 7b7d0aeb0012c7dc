"""PruneConfig's groups: every flat name reaches one setting, and stored configs (old and new) read back."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from sddpx_tp.errors import SettingError
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.config_groups import HeadSettings, RepairSettings, SearchSettings, TargetSettings

RESULTS = Path(__file__).parent.parent / "results"

# A value other than the default for every flat name, and where it must land (written out by hand).
CHANGES: dict[str, tuple[Any, str]] = {
    "method": ("dpx", "method"),
    "max_rate": (0.7, "max_rate"),
    "step": (0.1, "step"),
    "min_channels": (2, "min_channels"),
    "round_to": (8, "round_to"),
    "seed": (3, "seed"),
    "criterion": ("magnitude", "criterion"),
    "cost": ("macs", "cost"),
    "holdout": (0.25, "held_back"),
    "hold": (0.05, "progressive_max_drop"),
    "blocks": (True, "blocks"),
    "block_floor": (0.9, "block_floor"),
    "order_change": (False, "search.order_change"),
    "rate_change": (False, "search.rate_change"),
    "max_excluded": (4, "search.max_excluded"),
    "min_step": (0.02, "search.min_step"),
    "patience": (5, "search.patience"),
    "masked_trials": (False, "search.masked_trials"),
    "class_floor": (0.5, "search.class_floor"),
    "head": ("fit", "head.mode"),
    "head_folds": (3, "head.folds"),
    "refit_head": (False, "head.refit"),
    "head_judge": ("held-back", "head.judge"),
    "repair": (("bn",), "repair.methods"),
    "ridge": (0.5, "repair.ridge"),
    "compensation": ("always", "repair.compensation"),
    "target_accuracy": (0.9, "target.mean_accuracy"),
    "min_class_accuracy": (0.8, "target.class_accuracy"),
    "target_confidence": (1.0, "target.confidence"),
    "target_margin": (0.0, "target.margin"),
    "stop_at_target": (True, "target.stop"),
    "target_macs": (0.3, "target.macs"),
    "target_speedup": (2.0, "target.speedup"),
}


def _at(config: PruneConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_every_flat_name_lands_in_its_group_and_round_trips() -> None:
    flat = set(PruneConfig.recommended().to_dict()) - {"relevance", "retraining"}
    assert flat == set(CHANGES), "a setting without a flat name, or a flat name this test does not know"
    for name, (value, path) in CHANGES.items():
        default = PruneConfig.recommended()
        changes = {name: value, "head": "fit"} if name in ("head_folds", "head_judge") else {name: value}
        config = PruneConfig.recommended(**changes)
        assert _at(config, path) == value != _at(default, path), name
        assert config.to_dict()[name] == (list(value) if isinstance(value, tuple) else value)
        assert PruneConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_config_stored_before_the_groups_reads_back() -> None:
    # Written by an earlier sddpx-tp (flat, without cost, the step rule's settings or the MACs budget).
    stored = json.loads((RESULTS / "transfer_hard_pair.json").read_text())["runs"][0]["config"]
    assert "cost" not in stored and "stop_at_target" in stored
    config = PruneConfig.from_dict(stored)
    assert config.head == HeadSettings(mode="fit", folds=5, refit=True, judge="cross-fit")
    assert config.repair == RepairSettings(methods=("lstsq",), ridge=0.1, compensation="auto")
    assert config.target.stop is False and config.target.mean_accuracy == 0.95 and config.cost == "filters"
    assert config.held_back == pytest.approx(1 / 3)


def test_the_grouped_form_and_whole_groups_are_accepted() -> None:
    grouped = PruneConfig.from_dict({
        "relevance": {}, "retraining": {}, "head": {"mode": "fit", "folds": 4}, "target": {"macs": 0.5},
    })  # fmt: skip
    assert (grouped.head.mode, grouped.head.folds, grouped.target.macs) == ("fit", 4, 0.5)
    search = SearchSettings(patience=7)
    assert PruneConfig.recommended(search=search).search.patience == 7
    target = dataclasses.replace(TargetSettings(), stop=True)
    assert PruneConfig.paper(target=target).target.stop and PruneConfig.paper().repair.methods == ()


def test_a_group_given_a_flat_value_directly_is_refused_with_the_way_to_do_it() -> None:
    with pytest.raises(TypeError, match=r"recommended\(head=...\)"):
        PruneConfig(head="fit")  # type: ignore[arg-type]


def test_range_checks_still_name_the_flat_setting() -> None:
    with pytest.raises(SettingError) as caught:
        PruneConfig.recommended(head_folds=3)  # without head fit
    assert caught.value.render(lambda name: f"--{name}").startswith("--head_folds 3 applies only to a fitted head")
    with pytest.raises(SettingError, match="ridge"):
        PruneConfig.recommended(ridge=0)
