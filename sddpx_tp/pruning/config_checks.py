"""The range checks of a :class:`~sddpx_tp.pruning.config.PruneConfig`, on its settings by flat name.

Each failure is a :class:`~sddpx_tp.errors.SettingError` naming the settings as ``{field}``
placeholders, which the command line renders as its options and a sweep config as its keys.
"""

from __future__ import annotations

from typing import Any

from sddpx_tp.errors import SettingError, literal
from sddpx_tp.pruning.config_groups import (
    COMPENSATIONS,
    COSTS,
    DEFAULT_HEAD_FOLDS,
    DEFAULT_HEAD_JUDGE,
    DEFAULT_MIN_STEP,
    HEAD_JUDGES,
    HEADS,
)
from sddpx_tp.pruning.criteria import criterion_problem
from sddpx_tp.pruning.repairs import REPAIRS

MAX_SEED = 2**63  # torch generators take 64-bit seeds; a larger one would fail mid-run


def check(settings: dict[str, Any]) -> None:
    """Raises :class:`SettingError` for the first setting out of range."""
    s = settings
    repairs = ",".join(map(str, s["repair"]))
    smallest_step = s["min_step"] if s["min_step"] is not None else min(DEFAULT_MIN_STEP, s["step"])
    checks = [
        (0 < s["max_rate"] < 1, f"{{max_rate}} must be in (0, 1), not {s['max_rate']}"),
        (0 < s["step"] <= s["max_rate"], f"{{step}} must be in (0, max_rate], not {s['step']}"),
        (s["max_excluded"] >= 0, f"{{max_excluded}} must be >= 0, not {s['max_excluded']}"),
        (0 < smallest_step <= s["step"], f"{{min_step}} must be in (0, step], not {s['min_step']}"),
        (s["min_channels"] >= 1, f"{{min_channels}} must be >= 1, not {s['min_channels']}"),
        (0 < s["block_floor"] <= 1, f"{{block_floor}} must be in (0, 1], not {s['block_floor']}"),
        (s["round_to"] >= 1, f"{{round_to}} must be >= 1, not {s['round_to']}"),
        (0 <= s["class_floor"] <= 1, f"{{class_floor}} must be in [0, 1], not {s['class_floor']}"),
        (s["patience"] >= 0, f"{{patience}} must be >= 0, not {s['patience']}"),
        (s["hold"] is None or 0 <= s["hold"] <= 1, f"{{hold}} must be in [0, 1], not {s['hold']}"),
        (s["compensation"] in COMPENSATIONS, f"{{compensation}} must be one of {COMPENSATIONS}"),
        (0 <= s["seed"] < MAX_SEED, f"{{seed}} must be in [0, 2**63), not {s['seed']}"),
        (s["head"] in HEADS, f"{{head}} must be one of {HEADS}, not {s['head']!r}"),
        (criterion_problem(s["criterion"]) is None, str(criterion_problem(s["criterion"]))),
        (s["cost"] in COSTS, f"{{cost}} must be one of {', '.join(COSTS)}, not {literal(repr(s['cost']))}"),
        (set(s["repair"]) <= set(REPAIRS), f"{{repair}} takes {', '.join(REPAIRS)}, not {literal(repairs)}"),
        (len(set(s["repair"])) == len(s["repair"]), f"{{repair}} names a repair twice: {literal(repairs)}"),
        # > 0: a channel dead on the references would make the system singular.
        (0 < s["ridge"] < float("inf"), f"{{ridge}} must be > 0 and finite, not {s['ridge']}"),
        (2 <= s["head_folds"] <= 100, f"{{head_folds}} must be in [2, 100], not {s['head_folds']}"),
        (s["head_judge"] in HEAD_JUDGES, f"{{head_judge}} must be one of {HEAD_JUDGES}, not {s['head_judge']!r}"),
        (0 < s["target_accuracy"] <= 1, f"{{target_accuracy}} must be in (0, 1], not {s['target_accuracy']}"),
        (
            0 <= s["min_class_accuracy"] <= 1,
            f"{{min_class_accuracy}} must be in [0, 1], not {s['min_class_accuracy']}",
        ),
        (0 < s["holdout"] < 1, f"{{holdout}} must be in (0, 1), not {s['holdout']}"),
        (
            s["target_macs"] is None or 0 < s["target_macs"] < 1,
            f"{{target_macs}} is a share of the unpruned MACs in (0, 1), not {s['target_macs']}",
        ),
        (
            s["target_speedup"] is None or 1 < s["target_speedup"] <= 1000,
            f"{{target_speedup}} is how many times faster than the unpruned model, in (1, 1000], "
            f"not {s['target_speedup']}",
        ),
        (
            0 <= s["target_confidence"] <= 10,
            f"{{target_confidence}} must be in [0, 10] standard errors, not {s['target_confidence']}",
        ),
        (
            0 <= s["target_margin"] <= 10,
            f"{{target_margin}} must be in [0, 10] standard errors, not {s['target_margin']}",
        ),
        # Settings of a fitted head would otherwise be silently ignored.
        (
            s["head"] == "fit" or s["head_judge"] == DEFAULT_HEAD_JUDGE,
            f"{{head_judge}} {s['head_judge']} applies only to a fitted head; add {{head}} fit or leave it out",
        ),
        (
            s["head"] == "fit" or s["head_folds"] == DEFAULT_HEAD_FOLDS,
            f"{{head_folds}} {s['head_folds']} applies only to a fitted head; add {{head}} fit or leave it out",
        ),
        (
            s["compensation"] != "adaptive" or s["masked_trials"],
            "{compensation} adaptive needs {masked_trials}",
        ),
    ]
    for passed, message in checks:
        if not passed:
            raise SettingError(message)
