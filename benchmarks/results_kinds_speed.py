"""The generated tables of issue 31's speed benchmarks, each rendered by its own script's ``table``:
``ship_speed.py`` (what the tool ships against the unpruned model in int8) and ``blocks.py`` (depth before width).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import blocks
import ship_speed
from results_kinds import Renders, load


@dataclass(frozen=True)
class ShipSpeed:
    """``ship_speed.py``: per task, the file to ship, its speed and size against unpruned fp32 and int8."""

    source: str

    def render(self, results: Path) -> str:
        return ship_speed.table(load(results, self.source)) + "\n"


@dataclass(frozen=True)
class BlocksComparison:
    """``blocks.py``: per variant, the target kept on the check images and the measured speedup."""

    source: str

    def render(self, results: Path) -> str:
        return blocks.table(load(results, self.source)) + "\n"


@dataclass(frozen=True)
class LatencyPrediction:
    """``blocks.py --variants costs``: how well the latency table predicts each measured step (issue 31's 15 %)."""

    source: str

    def render(self, results: Path) -> str:
        return blocks.prediction_table(load(results, self.source)) + "\n"


SPEED_TABLES: dict[str, Renders] = {
    # ship-speed.md
    "ship_speed_lite0": ShipSpeed("results/ship_speed_lite0.json"),
    "ship_speed_lite0_blocks": ShipSpeed("results/ship_speed_lite0_blocks.json"),
    "ship_speed_lite0_latency": ShipSpeed("results/ship_speed_lite0_latency.json"),
    "ship_speed_lite0_tune": ShipSpeed("results/ship_speed_lite0_tune.json"),
    "ship_speed_lite0_latency_tune": ShipSpeed("results/ship_speed_lite0_latency_tune.json"),
    "blocks_resnet18": BlocksComparison("results/blocks_resnet18.json"),
    "cost_variants_resnet18": BlocksComparison("results/cost_resnet18.json"),
    "latency_prediction_resnet18": LatencyPrediction("results/cost_resnet18.json"),
    "ship_speed_lite0_cap_tune": ShipSpeed("results/ship_speed_lite0_cap_tune.json"),
    "ship_speed_lite0_cap": ShipSpeed("results/ship_speed_lite0_cap.json"),
    "cost_variants_mobilenet_v2_tune": BlocksComparison("results/cost_mobilenet_v2_tune.json"),
    "cost_variants_mobilenet_v2": BlocksComparison("results/cost_mobilenet_v2.json"),
    "ship_mobilenet_v2": BlocksComparison("results/ship_mobilenet_v2.json"),
    "ship_mobilenet_v2_tune": BlocksComparison("results/ship_mobilenet_v2_tune.json"),
    "ship_resnet18": BlocksComparison("results/ship_resnet18.json"),
    "ship_speed_lite0_recoveries": ShipSpeed("results/ship_speed_lite0_recoveries.json"),
}
