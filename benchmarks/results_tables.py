"""The results pages' tables, generated from ``results/*.json``: the one place a figure is copied.

    python benchmarks/results_tables.py --write    # regenerate every marked table in docs/
    python benchmarks/results_tables.py --check    # exit 1 when a page differs from its results (the test's check)

A page marks a generated table with two HTML comments (invisible in the rendered page)::

    <!-- table: repairs_resnet18 -->

    ...the table, written by this script...

    <!-- end table -->

Each table is a :class:`Table`: a results file of ``benchmarks/fashion_ablation.py``'s format
(``runs`` with a ``label`` and a ``seed`` each) and the rows to show, each a label in that file
and the words the page uses for it. The figures are recomputed from the runs (mean AUCs, median
kept-to, mean method seconds, median ratio to DPX on the same task), never copied.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.DOTALL)

Runs = list[dict[str, Any]]


@dataclass(frozen=True)
class Column:
    heading: str
    value: Callable[[Runs, Runs], str]  # (this row's runs, every run in the file) -> the cell


def _mean(key: str, digits: int) -> Callable[[Runs, Runs], str]:
    return lambda runs, _: f"{statistics.fmean(run[key] for run in runs):.{digits}f}"


def _median_kept(runs: Runs, _: Runs) -> str:
    return f"{statistics.median(run['highest_rate_kept'] for run in runs):.2f}"


def _vs_dpx(runs: Runs, every: Runs) -> str:
    """The median over tasks of this row's method seconds over DPX's on the same task, in the same file."""
    dpx = {run["seed"]: run["method_seconds"] for run in every if run["label"] == "dpx"}
    ratios = [run["method_seconds"] / dpx[run["seed"]] for run in runs if run["seed"] in dpx]
    return f"{statistics.median(ratios):.2f}x" if ratios else "-"


AUC = Column("AUC", _mean("auc", 3))
AUC_LOWEST = Column("AUC lowest class", _mean("auc_lowest_class", 3))
KEPT = Column("kept to (median)", _median_kept)
SECONDS = Column("s", _mean("method_seconds", 1))
VS_DPX = Column("vs DPX", _vs_dpx)
PASSES = Column("passes", _mean("relevance_passes", 0))
EVALUATIONS = Column("evaluations", _mean("evaluations", 0))
ABLATION = (AUC, AUC_LOWEST, KEPT, SECONDS, VS_DPX, PASSES, EVALUATIONS)


@dataclass(frozen=True)
class Table:
    source: str  # a results file, relative to the repository
    corner: str  # the first heading: what the rows are
    rows: tuple[tuple[str, str], ...]  # (label in the file, words on the page)
    columns: tuple[Column, ...] = ABLATION

    def render(self, results: Path) -> str:
        document = json.loads((results / Path(self.source).name).read_text())
        every: Runs = document["runs"]
        lines = [
            "| " + " | ".join([self.corner, *(column.heading for column in self.columns)]) + " |",
            "|" + "---|" * (len(self.columns) + 1),
        ]
        for label, words in self.rows:
            runs = [run for run in every if run["label"] == label]
            if not runs:
                raise ValueError(f"{self.source} has no runs labelled {label!r}")
            cells = [column.value(runs, every) for column in self.columns]
            lines.append("| " + " | ".join([words, *cells]) + " |")
        return "\n".join(lines) + "\n"


TABLES: dict[str, Table] = {
    "ablation_resnet18": Table(
        "results/ablation_resnet18.json",
        "ResNet-18, task seeds 5-9",
        (
            ("dpx", "dpx"),
            ("dpx + round_to 16", "dpx, round_to 16"),
            ("sd-dpx (paper)", "sd-dpx as in the paper (K=10, single filters, trials on copies)"),
            ("sd-dpx + masked trials", "+ masked trials (same trajectory, no copies)"),
            ("sd-dpx + masked + patience 2", "+ masked trials + patience 2"),
            ("sd-dpx + compensation", "+ compensation (always)"),
            ("sd-dpx + class floor 0.9", "+ class floor 0.9"),
            ("sd-dpx + round_to 16", "+ round_to 16"),
            ("sd-dpx default (masked, round_to 16)", "masked trials + round_to 16"),
            ("sd-dpx + all", "+ compensation, class floor 0.9, patience 2 (all of the above)"),
            ("sd-dpx default + adaptive compensation", "masked trials + round_to 16 + adaptive compensation"),
            ("sd-dpx default + adaptive compensation + patience 2", "+ patience 2 (the CLI default before lstsq)"),
        ),
    ),
    "ablation_mobilenet_v2": Table(
        "results/ablation_mobilenet_v2.json",
        "MobileNetV2, task seeds 5-9",
        (
            ("dpx", "dpx"),
            ("sd-dpx (paper)", "sd-dpx as in the paper"),
            ("sd-dpx default (masked, round_to 16)", "masked trials + round_to 16"),
            ("sd-dpx + all", "+ compensation (always), class floor 0.9, patience 2"),
            ("sd-dpx default + adaptive compensation", "masked trials + round_to 16 + adaptive compensation"),
            ("sd-dpx default + adaptive compensation + patience 2", "+ patience 2 (the CLI default before lstsq)"),
        ),
    ),
    "ablation_mobilenet_v2_options": Table(
        "results/ablation_mobilenet_v2_options.json",
        "MobileNetV2, each option alone (separate run, alone on the machine, 2 threads)",
        (
            ("dpx", "dpx"),
            ("sd-dpx (paper)", "sd-dpx as in the paper"),
            ("sd-dpx + masked trials", "+ masked trials"),
            ("sd-dpx + masked + patience 2", "+ masked trials + patience 2"),
            ("sd-dpx + compensation", "+ compensation (always)"),
            ("sd-dpx + class floor 0.9", "+ class floor 0.9"),
            ("sd-dpx + round_to 16", "+ round_to 16"),
        ),
    ),
    "repairs_resnet18": Table(
        "results/repairs_resnet18.json",
        "ResNet-18, task seeds 5-9",
        (
            ("dpx", "dpx"),
            ("dpx r16", "dpx, round_to 16"),
            ("dpx r16 + lstsq", "dpx, round_to 16, `--repair lstsq --ridge 1e-3`"),
            ("dpx r16 + lstsq, ridge 0.1", "dpx, round_to 16, `--repair lstsq` (ridge 0.1)"),
            ("dpx r16 + bn", "dpx, round_to 16, `--repair bn`"),
            ("dpx r16, criterion random", "dpx, round_to 16, `--criterion random`"),
            ("dpx r16, criterion magnitude", "dpx, round_to 16, `--criterion magnitude`"),
            ("sd-dpx default", "sd-dpx, the earlier default (`--repair none`, adaptive compensation)"),
            ("sd-dpx default + lstsq", "sd-dpx, earlier default with `--repair lstsq --ridge 1e-3`"),
            ("sd-dpx, new default (lstsq, ridge 0.1)", "**sd-dpx, the CLI default** (`lstsq`, ridge 0.1)"),
        ),
    ),
    "criteria_resnet18": Table(
        "results/criteria_resnet18.json",
        "ResNet-18 (retrained), task seeds 5-9",
        (
            ("dpx", "dpx (LRP)"),
            ("dpx r16", "dpx, round_to 16 (LRP)"),
            ("dpx r16, criterion bn-scale", "dpx, round_to 16, `--criterion bn-scale`"),
            ("dpx r16, criterion taylor", "dpx, round_to 16, `--criterion taylor`"),
            ("dpx r16 + lstsq, ridge 0.1", "dpx, round_to 16, `--repair lstsq` (LRP)"),
            ("dpx r16 + lstsq, ridge 0.1, criterion taylor", "dpx, round_to 16, `--repair lstsq --criterion taylor`"),
        ),
        (AUC, AUC_LOWEST, KEPT, SECONDS, VS_DPX),
    ),
    "repairs_mobilenet_v2": Table(
        "results/repairs_mobilenet_v2.json",
        "MobileNetV2, task seeds 5-9",
        (
            ("dpx", "dpx"),
            ("dpx r16", "dpx, round_to 16"),
            ("dpx r16 + lstsq, ridge 0.1", "dpx, round_to 16, `--repair lstsq`"),
            ("dpx r16, criterion random", "dpx, round_to 16, `--criterion random`"),
            ("dpx r16, criterion magnitude", "dpx, round_to 16, `--criterion magnitude`"),
            ("dpx r16 + lstsq, ridge 0.1, criterion random", "dpx, round_to 16, `--repair lstsq --criterion random`"),
            ("sd-dpx default", "sd-dpx, the earlier default (`--repair none`, adaptive compensation)"),
            ("sd-dpx, new default (lstsq, ridge 0.1)", "**sd-dpx, the CLI default** (`lstsq`, ridge 0.1)"),
        ),
        (AUC, AUC_LOWEST, KEPT, SECONDS, VS_DPX),
    ),
    "floor_plan": Table(
        "results/floor_plan_after.json",
        "ResNet-18, task seeds 5-9, after the move into subpackages",
        (("dpx", "dpx"), ("sd-dpx, new default (lstsq, ridge 0.1)", "sd-dpx, the CLI default")),
        (AUC, AUC_LOWEST, KEPT, PASSES, EVALUATIONS),
    ),
}


def regenerate(page: str, results: Path) -> str:
    """``page`` with every marked table regenerated from the results files in ``results``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise ValueError(f"no table called {name!r}; known: {', '.join(TABLES)}")
        # Blank lines around the table: Markdown reads a comment line touching a table as raw HTML.
        return match.group(1) + "\n" + TABLES[name].render(results) + "\n" + match.group(4)

    return BLOCK.sub(replace, page)


def pages(docs: Path) -> list[Path]:
    return sorted(path for path in docs.rglob("*.md") if BLOCK.search(path.read_text()))


def stale_pages(docs: Path, results: Path) -> list[Path]:
    """The pages whose marked tables differ from what ``results`` generates."""
    return [path for path in pages(docs) if regenerate(path.read_text(), results) != path.read_text()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate the marked tables in place")
    action.add_argument("--check", action="store_true", help="exit 1 if a page differs from its results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    if args.check:
        stale = stale_pages(args.docs, args.results)
        for path in stale:
            print(f"{path}: tables differ from {args.results}; run python benchmarks/results_tables.py --write")
        sys.exit(1 if stale else 0)
    for path in pages(args.docs):
        text = path.read_text()
        updated = regenerate(text, args.results)
        if updated != text:
            path.write_text(updated)
            print(f"rewrote {path}")


if __name__ == "__main__":
    main()
