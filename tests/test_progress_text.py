"""The progress bar says the filter rate, not its share of the way (issue 34: "filter rate: 50%" at rate 0.05)."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from helpers import prune_args

from sddpx_tp.cli import main


def test_the_progress_bar_reads_the_filter_rate_against_the_maximum(data: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, prune_args(data, tmp_path / "run", "--max-rate", "0.2"))
    assert result.exit_code == 0, result.stderr
    shown = [int(rate) for rate in re.findall(r"filter rate (\d+) % of 20 %", result.stderr)]
    assert shown and max(shown) >= 10 and all(0 <= rate <= 25 for rate in shown)
    assert "filter rate:" not in result.stderr
