"""Step rules judged on images nobody used: which step each rule recommends, and whether it truly kept the target.

    python benchmarks/step_rule_report.py results/step_rule_tune.json --seeds 0 1 2 3 4
    python benchmarks/step_rule_report.py results/step_rule.json --seeds 5 6 7 8 9 --out results/step_rule_report.json
    python benchmarks/step_rule_report.py results/step_rule_mobilenet_v2.json --methods default --seeds 0 1 2 3 4

Reads benchmarks/step_rule.py's runs. Each rule chooses a step from the *judging* images (200 a
class); the chosen step is then checked on the 800 *check* images a class that nothing saw:
it truly keeps the target when, on them, its mean accuracy is >= 95 % of the unpruned model's
and every class >= 90 % of its own (the target, point estimates on 800 images), and it keeps the
floor when no class is below 85 % of its own (the issue's goal: >= 95 % of tasks and never a class
below 0.85). Per rule: how often each holds, and the MACs and filter rate it hands out (median,
and per task). Rules: the first miss (the rule before issue 31), the noise-aware rule of
:class:`sddpx_tp.pruning.accuracy_target.AccuracyTarget` at several confidences and margins (the highest
step that meets the target up to a class collapse), the same with the first clear miss ending the search
(the noise-aware rule until the recoveries were measured), and the step the
check images themselves would choose (what 800 images a class say: the reference, not a rule).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sddpx_tp.pruning.accuracy_target import AccuracyTarget

CONFIDENCES = (0.0, 1.0, 1.282, 1.645, 2.0, 2.326)
MARGINS = (0.25, 0.5, 1.0)
FLOOR = 0.85  # the "no class below 0.85 of its own"
Rule = Callable[[dict[str, Any]], int]


def judging_counts(run: dict[str, Any]) -> list[int]:
    labels = run["judging_labels"]
    return [labels.count(position) for position in range(len(run["classes"]))]


def noise_aware(confidence: float, margin: float = 0.0) -> Rule:
    target = AccuracyTarget(confidence=confidence, margin=margin)

    def choose(run: dict[str, Any]) -> int:
        steps = run["steps"]
        rates = [step["filter_rate"] for step in steps]
        return target.recommended_index(rates, [step["judging_accuracy"] for step in steps], judging_counts(run))

    return choose


def first_clear_miss(confidence: float = 1.645, margin: float = 0.5) -> Rule:
    """The noise-aware rule as it was until the recoveries were measured: the first clear miss ends the search."""
    target = AccuracyTarget(confidence=confidence, margin=margin)

    def choose(run: dict[str, Any]) -> int:
        steps = run["steps"]
        verdicts = target.verdicts([step["judging_accuracy"] for step in steps], judging_counts(run))
        kept = 0
        for index in sorted(range(len(steps)), key=lambda index: steps[index]["filter_rate"]):
            if verdicts[index] == "clearly misses":
                break
            kept = index if verdicts[index] == "meets" else kept
        return kept

    return choose


def keeps(step: dict[str, Any], start: dict[str, Any], mean_kept: float, class_kept: float) -> bool:
    accuracy, first = step["check_accuracy"], start["check_accuracy"]
    mean_ok = statistics.fmean(accuracy) >= mean_kept * statistics.fmean(first)
    return mean_ok and all(value >= class_kept * own for value, own in zip(accuracy, first, strict=True))


def oracle(run: dict[str, Any]) -> int:
    """The step the check images themselves would recommend (the first miss on 800 images a class, where
    noise is small): not a rule any run can use, the reference the rules are measured against. Like the
    rules, it never recommends a step past a loss the model later recovers from."""
    steps = run["steps"]
    rates = [step["filter_rate"] for step in steps]
    return AccuracyTarget(confidence=0.0).recommended_index(rates, [step["check_accuracy"] for step in steps])


def rules() -> dict[str, Rule]:
    found: dict[str, Rule] = {"first miss (before issue 31)": noise_aware(0.0)}
    found.update({f"dips within {z:g} standard errors forgiven": noise_aware(z) for z in CONFIDENCES[1:]})
    found.update({f"1.645 forgiven, met by {margin:g}": noise_aware(1.645, margin) for margin in MARGINS})
    found["1.645 forgiven, met by 0.5, the first clear miss ends the search (before recoveries)"] = first_clear_miss()
    found["the check images' own choice (not a rule)"] = oracle
    return found


def evaluate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, choose in rules().items():
        tasks = []
        for run in runs:
            steps = run["steps"]
            index = choose(run)
            step = steps[index]
            tasks.append(
                {
                    "seed": run["seed"],
                    "method": run["method"],
                    "step": index,
                    "filter_rate": step["filter_rate"],
                    "macs_ratio": step["macs_ratio"],
                    "keeps_target": keeps(step, steps[0], 0.95, 0.9),
                    "keeps_floor": keeps(step, steps[0], 0.0, FLOOR),
                    "lowest_class_share": min(
                        value / own
                        for value, own in zip(step["check_accuracy"], steps[0]["check_accuracy"], strict=True)
                    ),
                }
            )
        summary[name] = {
            "tasks": len(tasks),
            "keeps_target": sum(task["keeps_target"] for task in tasks),
            "keeps_floor": sum(task["keeps_floor"] for task in tasks),
            "macs_ratio_median": statistics.median(task["macs_ratio"] for task in tasks),
            "filter_rate_median": statistics.median(task["filter_rate"] for task in tasks),
            "per_task": tasks,
        }
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| rule | truly keeps the target (check images) | no class below 0.85 | filter rate (median) "
        "| MACs x (median) | MACs x per task |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        per_task = " ".join(f"{task['macs_ratio']:.2f}" for task in row["per_task"])
        lines.append(
            f"| {name} | {row['keeps_target']}/{row['tasks']} | {row['keeps_floor']}/{row['tasks']} "
            f"| {row['filter_rate_median']:.2f} | {row['macs_ratio_median']:.3f} | {per_task} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--methods", nargs="+", default=["default", "dpx"], help="the runs' methods to judge")
    parser.add_argument("--out", type=Path, help="also write the summary as JSON")
    args = parser.parse_args()
    runs = [
        run
        for run in json.loads(args.results.read_text())["runs"]
        if run["seed"] in args.seeds and run["method"] in args.methods
    ]
    runs.sort(key=lambda run: (run["method"], run["seed"]))
    summary = evaluate(runs)
    print("tasks (method, seed):", ", ".join(f"{run['method']} {run['seed']}" for run in runs))
    print(markdown(summary))
    if args.out is not None:
        args.out.write_text(json.dumps({"seeds": args.seeds, "source": str(args.results), "rules": summary}, indent=1))


if __name__ == "__main__":
    main()
