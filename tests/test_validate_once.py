"""`sddpx-tp prune` validates once: the method's rules and the check that the model leaves something to prune
(a dependency-graph trace) run a single time per run, wherever each function was imported."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from click.testing import CliRunner
from helpers import prune_args

from sddpx_tp.api import check_prunable
from sddpx_tp.cli import main
from sddpx_tp.pruning.method_registry import check_config

WATCHED = {check_config.__code__: "check_config", check_prunable.__code__: "check_prunable"}


def test_a_run_checks_its_settings_and_its_model_once(data: dict[str, Path], tmp_path: Path) -> None:
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, argument: Any) -> None:
        # Code objects, not names: a call counts however the caller imported the function.
        if event == "call" and frame.f_code in WATCHED:
            calls[WATCHED[frame.f_code]] += 1

    sys.setprofile(profile)
    try:
        result = CliRunner().invoke(main, prune_args(data, tmp_path / "run", "--eval", str(data["eval"])))
    finally:
        sys.setprofile(None)
    assert result.exit_code == 0, result.stderr
    assert calls == Counter({"check_config": 1, "check_prunable": 1})
