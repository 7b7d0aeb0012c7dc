"""The kinds of table ``benchmarks/results_tables.py`` writes: how each benchmark's results file becomes a table.

:class:`Table` reads the files whose ``runs`` each carry a ``label`` and a ``seed``
(``fashion_ablation.py``, ``fashion_methods.py``, ``transfer.py``), one :class:`Column` per figure.
:class:`SecondsBySeed` turns ``transfer.py``'s runs round: one column per task seed. The others read
one benchmark's own format: :class:`Deploy` (``deploy.py``), :class:`ThreadProfile`
(``thread_profile.py``), :class:`ExportSpeed` (``export_speed.py``) and :class:`Retraining`
(``fashion_retraining.py``). Every figure is recomputed from the records, never copied.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

Run = dict[str, Any]
Runs = list[Run]
Cell = Callable[[Runs, Runs], str]  # (this row's runs, every run in its file) -> the cell
Value = Callable[[Run], float]  # one run's figure


class Renders(Protocol):
    """A kind of table: its markdown, from the results directory."""

    def render(self, results: Path) -> str: ...


def markdown(headings: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def load(results: Path, source: str) -> Any:
    """``source`` (``results/...``, relative to the repository) read from the results directory ``results``."""
    return json.loads((results / Path(source).relative_to("results")).read_text())


# A run's figures.


def key(name: str) -> Value:
    return lambda run: run[name]


def without_held_out(run: Run) -> float:
    """``transfer.py``'s wall seconds less the held-out evaluation: the method's own time."""
    return float(run["seconds"] - run["time_split"]["held_out"])


def split(part: str) -> Value:
    """One part of ``transfer.py``'s time split: relevance, references, held_out or rest."""
    return lambda run: run["time_split"][part]


# A cell from a row's runs.


def mean(value: Value, digits: int) -> Cell:
    return lambda runs, _: f"{statistics.fmean(value(run) for run in runs):.{digits}f}"


def median(value: Value, digits: int) -> Cell:
    return lambda runs, _: f"{statistics.median(value(run) for run in runs):.{digits}f}"


def per_task(value: Value, digits: int, every_task: bool = False) -> Cell:
    """Each task's figure in the order of the seeds; with ``every_task``, one figure when all are equal."""

    def cell(runs: Runs, _: Runs) -> str:
        figures = [f"{value(run):.{digits}f}" for run in sorted(runs, key=lambda run: run["seed"])]
        return f"{figures[0]} on every task" if every_task and len(set(figures)) == 1 else ", ".join(figures)

    return cell


def spread(value: Value) -> Cell:
    """The lowest and the highest figure over the tasks, whole numbers (one figure when they are equal)."""

    def cell(runs: Runs, _: Runs) -> str:
        low, high = (f"{figure(value(run) for run in runs):.0f}" for figure in (min, max))
        return low if low == high else f"{low}-{high}"

    return cell


def tasks(runs: Runs, _: Runs) -> str:
    return str(len(runs))


def vs_dpx(runs: Runs, every: Runs) -> str:
    """The median over tasks of this row's method seconds over DPX's on the same task, in the same file."""
    dpx = {run["seed"]: run["method_seconds"] for run in every if run["label"] == "dpx"}
    ratios = [run["method_seconds"] / dpx[run["seed"]] for run in runs if run["seed"] in dpx]
    return f"{statistics.median(ratios):.2f}x" if ratios else "-"


@dataclass(frozen=True)
class Column:
    heading: str
    value: Cell


class Row(NamedTuple):
    label: str  # the runs' label in the file
    words: str  # the row's first cell on the page
    source: str | None = None  # another results file than the table's
    blank: tuple[str, ...] = ()  # headings of the columns this row leaves at "-"


# The columns several tables share.
# fashion_ablation.py's runs: mean AUCs, median kept-to, mean method seconds, median ratio to DPX.
AUC = Column("AUC", mean(key("auc"), 3))
AUC_LOWEST = Column("AUC lowest class", mean(key("auc_lowest_class"), 3))
KEPT = Column("kept to (median)", median(key("highest_rate_kept"), 2))
SECONDS = Column("s", mean(key("method_seconds"), 1))
VS_DPX = Column("vs DPX", vs_dpx)
PASSES = Column("passes", mean(key("relevance_passes"), 0))
EVALUATIONS = Column("evaluations", mean(key("evaluations"), 0))
ABLATION = (AUC, AUC_LOWEST, KEPT, SECONDS, VS_DPX, PASSES, EVALUATIONS)

# fashion_methods.py's runs (the study): wall seconds with the held-out evaluation, no kept-to.
TASKS = Column("tasks", tasks)
RELEVANCE_PASSES = Column("relevance passes", mean(key("relevance_passes"), 0))
METHODS = (AUC, AUC_LOWEST, Column("s", mean(key("seconds"), 0)), RELEVANCE_PASSES, EVALUATIONS)
STUDY = (TASKS, AUC, AUC_LOWEST, Column("s/task", mean(key("seconds"), 0)), RELEVANCE_PASSES, EVALUATIONS)

# transfer.py's runs: times without the held-out evaluation.
LOWEST_PER_TASK = Column("lowest class per task", per_task(key("auc_lowest_class"), 3))
KEPT_SEEDS = Column("kept to (seeds 5 to 9)", per_task(key("highest_rate_kept"), 2))
KEPT_PER_TASK = Column("kept to (per task)", per_task(key("highest_rate_kept"), 2))
MEDIAN_SECONDS = Column("s without held-out (median)", median(without_held_out, 0))
SECONDS_PER_TASK = Column("s without held-out (5 to 9)", per_task(without_held_out, 0))
RELEVANCE_MEDIAN = Column("relevance", median(split("relevance"), 0))
REFERENCE_SCORING_MEDIAN = Column("reference scoring", median(split("references"), 0))
REST_MEDIAN = Column("rest", median(split("rest"), 0))


@dataclass(frozen=True)
class Table:
    """Rows of runs picked by label, a column per figure over a row's runs (one per task)."""

    source: str  # a results file, relative to the repository
    corner: str  # the first heading: what the rows are
    rows: tuple[tuple[str, str] | Row, ...]  # (label in the file, words on the page), or a Row
    columns: tuple[Column, ...] = ABLATION

    def render(self, results: Path) -> str:
        documents: dict[str, Runs] = {}
        headings = [column.heading for column in self.columns]
        body = []
        for row in (Row(*row) for row in self.rows):
            source = row.source or self.source
            if source not in documents:
                documents[source] = load(results, source)["runs"]
            every = documents[source]
            runs = [run for run in every if run["label"] == row.label]
            if not runs:
                raise ValueError(f"{source} has no runs labelled {row.label!r}")
            if unknown := set(row.blank) - set(headings):
                raise ValueError(f"row {row.words!r} leaves out columns the table lacks: {unknown}")
            cells = ["-" if column.heading in row.blank else column.value(runs, every) for column in self.columns]
            body.append([row.words, *cells])
        return markdown([self.corner, *headings], body)


@dataclass(frozen=True)
class SecondsBySeed:
    """``transfer.py``'s seconds without the held-out evaluation, one column per task seed, and one ratio."""

    corner: str
    rows: tuple[tuple[str, str, str], ...]  # (results file, label in it, words on the page)
    ratio: tuple[str, str, str, str]  # (results file, numerator's label, denominator's label, words)
    seeds: tuple[int, ...] = (5, 6, 7, 8, 9)

    def render(self, results: Path) -> str:
        def seconds(source: str, label: str) -> list[float]:
            by_seed = {run["seed"]: run for run in load(results, source)["runs"] if run["label"] == label}
            return [without_held_out(by_seed[seed]) for seed in self.seeds]

        body = [[words, *(f"{figure:.0f}" for figure in seconds(source, label))] for source, label, words in self.rows]
        source, numerator, denominator, words = self.ratio
        pairs = zip(seconds(source, numerator), seconds(source, denominator), strict=True)
        body.append([words, *(f"{top / bottom:.2f}" for top, bottom in pairs)])
        return markdown([self.corner, *(f"seed {seed}" for seed in self.seeds)], body)


@dataclass(frozen=True)
class Deploy:
    """``deploy.py``: accuracy over the tasks at each rate, fp32 and int8; size and latency of seed 5's models."""

    source: str
    corner: str
    labels: tuple[str, ...] = ("unpruned", "0.3", "0.5", "0.7")

    def render(self, results: Path) -> str:
        document = load(results, self.source)
        speed = document["speed"]
        latency = {(row["model"], row["threads"], row["batch"]): row["p50_ms"] for row in speed["latency"]}
        size = {name: facts["file_bytes"] for name, facts in speed["files"].items()}
        macs = speed["macs_224"]
        base, quantized = "unpruned fp32", "unpruned int8"  # quantized: what a user gets without pruning
        body = []
        for label in self.labels:
            entries = [rate for run in document["runs"] for rate in run["rates"] if rate["label"] == label]
            for kind in ("fp32", "int8"):
                name = f"{label} {kind}"
                accuracy = [rate["held_out_accuracy"][kind] for rate in entries]
                one, many = latency[(name, 1, 1)], latency[(name, 2, 32)]
                body.append([
                    name,
                    f"{statistics.fmean(rate['filter_rate'] for rate in entries):.2f}",
                    f"{macs['unpruned'] / macs[label]:.2f}x",
                    f"{statistics.fmean(map(statistics.fmean, accuracy)):.3f} / "
                    f"{statistics.fmean(map(min, accuracy)):.3f}",
                    f"{size[name] / 1e6:.1f}",
                    f"{size[base] / size[name]:.1f}x",
                    f"{one:.2f}",
                    f"{latency[(base, 1, 1)] / one:.1f}x",
                    f"{latency[(quantized, 1, 1)] / one:.2f}x",
                    f"{many:.1f}",
                    f"{latency[(base, 2, 32)] / many:.1f}x",
                ])  # fmt: skip
        headings = [self.corner, "filter rate", "MACs reduction at 224 px", "held-out accuracy (mean / lowest class)",
                    "size MB", "x smaller", "batch 1, 1 thread: ms", "x faster", "x faster than unpruned int8",
                    "batch 32, 2 threads: ms", "x faster"]  # fmt: skip
        return markdown(headings, body)


@dataclass(frozen=True)
class ThreadProfile:
    """``thread_profile.py``: the unpruned and the pruned model's latency under each ONNX Runtime setting."""

    source: str
    corner: str
    rows: tuple[tuple[tuple[int, bool, str], str], ...]  # ((threads, spinning, optimisation), words)

    def render(self, results: Path) -> str:
        document = load(results, self.source)
        macs_reduction = document["macs"]["unpruned"] / document["macs"]["pruned"]
        settings = {(row["threads"], row["spinning"], row["optimisation"]): row for row in document["rows"]}
        body = []
        for setting, words in self.rows:
            unpruned, pruned = (settings[setting]["latency_ms"][model] for model in ("unpruned", "pruned"))
            speedup = unpruned / pruned
            realised = speedup / macs_reduction
            body.append([words, f"{unpruned:.0f}", f"{pruned:.0f}", f"{speedup:.2f}x", f"{realised:.2f}"])
        headings = [self.corner, "unpruned ms", "pruned ms", "speedup", "realised (speedup / MACs reduction)"]
        return markdown(headings, body)


@dataclass(frozen=True)
class ExportSpeed:
    """``export_speed.py``: each pruned model's speedup over the unpruned export (and over its MACs reduction)."""

    source: str
    settings: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (32, 1), (32, 2))  # (batch, threads)

    def render(self, results: Path) -> str:
        document = load(results, self.source)
        latency = {(row["model"], row["batch"], row["threads"]): row["p50_ms"] for row in document["latency"]}
        macs = {model: facts["macs"] for model, facts in document["models"].items()}
        body = []
        for model in document["filter_rates"]:  # rate{rate}_round{round_to}, in the order they ran
            round_to = int(model.rpartition("_round")[2])
            words = "irregular widths" if round_to == 1 else f"round_to {round_to}"
            reduction = macs["baseline"] / macs[model]
            cells = [f"{document['filter_rates'][model]:.2f}", f"{reduction:.2f}x"]
            for setting in self.settings:
                speedup = latency[("baseline", *setting)] / latency[(model, *setting)]
                cells.append(f"{speedup:.2f}x ({speedup / reduction:.2f})")
            body.append([words, *cells])
        settings = [f"batch {batch}, {threads} thread{'s' * (threads > 1)}" for batch, threads in self.settings]
        return markdown(["model", "filter rate", "MACs reduction", *settings], body)


@dataclass(frozen=True)
class Retraining:
    """``fashion_retraining.py``: per method and training images, the figures at each target rate over the tasks."""

    source: str
    rows: tuple[tuple[int, str, str], ...]  # (training images per class, method in the file, words on the page)
    rates: tuple[float, ...] = (0.5, 0.7, 0.9)

    def render(self, results: Path) -> str:
        runs = load(results, self.source)["runs"]
        body = []
        for images, method, words in self.rows:
            at_rate = [
                [row for run in runs if run["training_per_class"] == images for row in run["rows"]
                 if row["method"] == method and row["target_rate"] == rate]
                for rate in self.rates
            ]  # fmt: skip
            if not all(at_rate):
                raise ValueError(f"{self.source} lacks {method!r} with {images} images per class at some rate")
            cells = [
                " / ".join(f"{statistics.fmean(row['filter_rate'] for row in rows):.2f}" for rows in at_rate),
                " / ".join(
                    f"{statistics.fmean(statistics.fmean(row['accuracy']) for row in rows):.3f}" for rows in at_rate
                ),
                " / ".join(f"{statistics.fmean(min(row['accuracy']) for row in rows):.3f}" for rows in at_rate),
                " / ".join(f"{statistics.median(row['seconds'] for row in rows):.0f}" for rows in at_rate),
            ]
            body.append([str(images), words, *cells])
        headings = ["training images per class", "method", "filter rate", "held-out accuracy", "lowest class", "s"]
        return markdown(headings, body)


@dataclass(frozen=True)
class StepRules:
    """``step_rule_report.py``: each rule's choice checked on unseen images, on the tuning and reported seeds."""

    tuning: str  # the report of seeds 0-4
    reported: str  # the report of seeds 5-9
    corner: str

    def render(self, results: Path) -> str:
        tuning, reported = (load(results, source)["rules"] for source in (self.tuning, self.reported))
        body = []
        for rule, row in reported.items():
            tuned = tuning[rule]
            body.append([
                rule,
                f"{tuned['keeps_target']}/{tuned['tasks']}",
                f"{tuned['macs_ratio_median']:.3f}",
                f"{row['keeps_target']}/{row['tasks']}",
                f"{row['keeps_floor']}/{row['tasks']}",
                f"{row['filter_rate_median']:.2f}",
                f"{row['macs_ratio_median']:.3f}",
            ])  # fmt: skip
        headings = [self.corner, "seeds 0-4: keeps the target", "MACs x", "seeds 5-9: keeps the target",
                    "no class below 0.85", "filter rate", "MACs x"]  # fmt: skip
        return markdown(headings, body)


@dataclass(frozen=True)
class CostComparison:
    """``step_rule.py``'s runs by method: the step the default rule hands out, kept on unseen images, and its MACs."""

    source: str
    corner: str
    rows: tuple[tuple[str, str], ...]  # (method in the file, words on the page)
    rule: str = "1.645 forgiven, met by 0.5"  # the default rule's name in step_rule_report.py

    def render(self, results: Path) -> str:
        from step_rule_report import evaluate  # a sibling script: imported when this table is drawn

        runs = load(results, self.source)["runs"]
        body = []
        for method, words in self.rows:
            cells = [words]
            for seeds in ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)):
                chosen = [run for run in runs if run["method"] == method and run["seed"] in seeds]
                row = evaluate(chosen)[self.rule]
                per_task = " ".join(f"{task['macs_ratio']:.2f}" for task in row["per_task"])
                cells += [f"{row['keeps_target']}/{row['tasks']}", f"{row['macs_ratio_median']:.3f}", per_task]
            body.append(cells)
        headings = [self.corner, "seeds 0-4: keeps the target", "MACs x (median)", "per task",
                    "seeds 5-9: keeps the target", "MACs x (median)", "per task"]  # fmt: skip
        return markdown(headings, body)
