"""The run report: ``report.json`` (everything), ``report.md`` (a human summary) and the accuracy plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sddpx_tp.environment import environment
from sddpx_tp.files import write_json, write_text
from sddpx_tp.metrics import auc_lowest_class, normalized_auc
from sddpx_tp.pruning.accuracy_target import JUDGES, AccuracyTarget, judge_of, recommended_record, target_lost
from sddpx_tp.pruning.session import StepRecord
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.run.plots import plot_accuracy
from sddpx_tp.text import markdown_text, plot_text


def _aucs(trajectory: list[StepRecord], source: str) -> dict[str, float] | None:
    rates = [record.filter_rate for record in trajectory]
    per_class = [getattr(record, f"{source}_accuracy") for record in trajectory]
    if len(rates) < 2 or any(values is None for values in per_class):
        return None
    mean_accuracy = [sum(values) / len(values) for values in per_class]
    return {"auc": normalized_auc(rates, mean_accuracy), "auc_lowest_class": auc_lowest_class(rates, per_class)}


def recommended_step(trajectory: list[StepRecord], target: AccuracyTarget | None = None) -> dict[str, Any]:
    """The step the run recommends under ``target`` (default: the config's defaults), judged on the held-out
    images, else on held-back references, else on the references (optimistic): see sddpx_tp.pruning.accuracy_target."""
    target = target or AccuracyTarget()
    index = recommended_record(trajectory, target)
    record, judge = trajectory[index], judge_of(trajectory[0])
    return {"step": record.step, "filter_rate": record.filter_rate, "accuracy": getattr(record, f"{judge}_accuracy"),
            "params": record.params, "params_ratio": record.params_ratio, "macs_ratio": record.macs_ratio,
            "judged_on": JUDGES[judge], "mean_kept": target.mean_kept, "class_kept": target.class_kept,
            "confidence": target.confidence, "margin": target.margin, "judged_counts": trajectory[0].judged_counts,
            "stopped_early": index < len(trajectory) - 1,
            "speedup": getattr(record, "speedup", None)}  # fmt: skip


def target_of(settings: dict[str, Any]) -> AccuracyTarget:
    """The accuracy target stored in a run's settings (the defaults for runs from before targets)."""
    config = settings.get("config", {})
    default = AccuracyTarget()
    # Runs from before issue 31 have no target_confidence, and no judged_counts either: their choice is unchanged.
    return AccuracyTarget(config.get("target_accuracy", default.mean_kept),
                          config.get("min_class_accuracy", default.class_kept),
                          config.get("target_confidence", default.confidence),
                          margin=config.get("target_margin", default.margin))  # fmt: skip


def build_report(
    trajectory: list[StepRecord],
    settings: dict[str, Any],
    classes: list[dict[str, Any]],
    notes: list[str],
) -> dict[str, Any]:
    return {
        "settings": settings,
        "classes": classes,
        "environment": environment(),
        "notes": notes,
        "auc_reference": _aucs(trajectory, "reference"),
        "auc_eval": _aucs(trajectory, "eval"),
        "recommended": recommended_step(trajectory, target_of(settings)),
        "ended": ending(trajectory, settings),
        "trajectory": [record.to_dict() for record in trajectory],
    }


def ending(trajectory: list[StepRecord], settings: dict[str, Any]) -> str:
    """What ended the run: its MACs or speed budget, its accuracy target, or its maximum rate (or what it could
    prune)."""
    config, last = settings.get("config", {}), trajectory[-1]
    budget = config.get("target_macs")
    if budget is not None and last.macs_ratio <= budget:
        return "macs budget"
    speedup = config.get("target_speedup")
    if speedup is not None and last.speedup is not None and last.speedup >= speedup:
        return "speed budget"
    if config.get("stop_at_target") and target_lost(trajectory, target_of(settings)):
        return "accuracy target"
    return "max rate"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _layers_section(trajectory: list[dict[str, Any]], source: str) -> list[str]:
    """Progressive retraining: what each layer's pruning cost and what its retraining gave back."""
    pruned = {record["layer"]: record for record in trajectory if record.get("layer") and record["phase"] == "pruning"}
    if not pruned:
        return []
    images = "held-out" if source == "eval" else "reference"
    lines = [f"## Layer by layer ({images} H)", "", "| layer | filter rate | pruned | retrained |", "|---|---|---|---|"]
    retrained = {record["layer"]: record for record in trajectory if record["phase"] == "retrained"}
    for layer, record in pruned.items():
        after = retrained.get(layer)
        lines.append(
            f"| {layer} | {record['filter_rate']:.3f} | {_percent(record[f'{source}_harmonic_mean'])} "
            f"| {_percent(after[f'{source}_harmonic_mean'] if after else None)} |"
        )
    return [*lines, ""]


def render_markdown(report: dict[str, Any], class_labels: list[str], plot_name: str) -> str:
    trajectory = report["trajectory"]
    first, last = trajectory[0], trajectory[-1]
    settings = report["settings"]
    criterion = settings["config"].get("criterion", "lrp")  # reports from before criteria were a setting
    passes = "relevance passes" if criterion == "lrp" else "scoring passes"
    criterion = "LRP relevance" if criterion == "lrp" else criterion
    repairs = settings["config"].get("repair") or []
    repaired = f", repaired by {' + '.join(repairs)}" if repairs else ", no repair"
    lines = [
        f"# sddpx-tp pruning report: {markdown_text(settings['model']['name'])}",
        "",
        f"Method **{settings['config']['method']}** (channels ranked by {criterion}{repaired}), classes: "
        f"{', '.join(class_labels)}, {last['step']} accepted steps in {last['seconds']:.0f} s "
        f"({last['relevance_passes']} {passes}, {last['evaluations']} evaluations).",
        "",
        "| | before | after | ratio |",
        "|---|---|---|---|",
        f"| filters | {first['filters']:,} | {last['filters']:,} | {last['filters'] / first['filters']:.3f} |",
        f"| params | {first['params']:,} | {last['params']:,} | {last['params_ratio']:.3f} |",
        f"| MACs | {first['macs']:,} | {last['macs']:,} | {last['macs_ratio']:.3f} |",
        f"| reference accuracy (H) | {_percent(first['reference_harmonic_mean'])} "
        f"| {_percent(last['reference_harmonic_mean'])} | |",
    ]
    if last.get("speedup") is not None:  # a speed budget measured every step
        lines.append(f"| measured speedup (ONNX Runtime CPU, batch 1) | 1 | {last['speedup']:.2f}x | |")
    if first["eval_harmonic_mean"] is not None:
        lines.append(
            f"| held-out accuracy (H) | {_percent(first['eval_harmonic_mean'])} "
            f"| {_percent(last['eval_harmonic_mean'])} | |"
        )
    source = "eval" if first["eval_accuracy"] is not None else "reference"
    lines += ["", f"Per-class accuracy ({'held-out' if source == 'eval' else 'reference'} images):", ""]
    lines += ["| class | before | after |", "|---|---|---|"]
    for index, label in enumerate(class_labels):
        before, after = first[f"{source}_accuracy"][index], last[f"{source}_accuracy"][index]
        lines.append(f"| {label} | {_percent(before)} | {_percent(after)} |")
    aucs = report["auc_eval"] or report["auc_reference"]
    if aucs:
        lines += [
            "",
            f"AUC over filter rate: {aucs['auc']:.3f}; with the lowest class: {aucs['auc_lowest_class']:.3f}.",
        ]
    lines += _recommended_section(report.get("recommended"), report.get("export"))
    lines += _ending_lines(report.get("ended"), report["settings"].get("config", {}))
    blocks = [record["layer"] for record in trajectory if record.get("phase") == "blocks"]
    if blocks:  # --blocks: depth before width
        lines += ["", f"Residual blocks removed whole before the channels (their shortcuts stay), step by step. "
                  f"Removed whole: {', '.join(blocks)}."]  # fmt: skip
    lines += ["", f"![per-class accuracy against filter rate and against speed]({plot_name})", ""]
    lines += _layers_section(trajectory, source)
    lines += _export_section(report.get("export"))
    lines += _benchmark_section(report.get("benchmark"))
    if report.get("latency_curve"):
        lines += ["## Accuracy and latency against filter rate", "",
                  "![accuracy and ONNX Runtime latency against filter rate](accuracy_latency.png)", ""]  # fmt: skip
    lines += [f"- {note}" for note in report["notes"]]
    lines += [
        "",
        "Rates count every conv's removed output channels against the original model. "
        "MACs are multiply-accumulates for one image.",
        "",
    ]
    return "\n".join(lines)


def _recommended_section(recommended: dict[str, Any] | None, export: dict[str, Any] | None) -> list[str]:
    if not recommended:
        return []  # a report from before recommendations
    optimistic = {"reference images": " (no held-out images: optimistic)",
                  "held-back reference images": " (a few images, chosen by them: somewhat optimistic)"}  # fmt: skip
    exported_step = (export or {}).get("model", {}).get("step")
    exported = (
        "the step `export` writes by default"
        if exported_step is None or exported_step == recommended["step"]
        else f"not the exported step ({exported_step}, chosen with `export --step` or `--rate`)"
    )
    return [
        "",
        f"Recommended: step {recommended['step']}, filter rate {recommended['filter_rate']:.3f} "
        f"(params x{recommended['params_ratio']:.3f}, MACs x{recommended['macs_ratio']:.3f}"
        + (f", measured {recommended['speedup']:.2f}x faster" if recommended.get("speedup") else "")
        + "), per-class accuracy "
        f"{', '.join(_percent(value) for value in recommended['accuracy'])}: the highest rate keeping "
        f"{recommended['mean_kept']:.0%} of the unpruned mean accuracy and {recommended['class_kept']:.0%} of each "
        f"class's, judged on {recommended['judged_on']}{optimistic.get(recommended['judged_on'], '')}"
        f"{_noise_rule(recommended)}. It is {exported}.",
    ]


def _ending_lines(ended: str | None, config: dict[str, Any]) -> list[str]:
    """What ended the run, in words (nothing for reports from before this was recorded)."""
    words = {
        "macs budget": f"its MACs budget was met (at most {config.get('target_macs')} of the unpruned MACs)",
        "speed budget": f"its speed budget was met (measured at least {config.get('target_speedup')}x faster than "
        "the unpruned model: ONNX Runtime CPU, batch 1; each step's `speedup` in report.json)",
        "accuracy target": "it lost the accuracy target (a class collapsed, or several steps in a row fell short)",
        "max rate": "it reached its maximum rate, or nothing more could be pruned",
    }
    return ["", f"The run ended because {words[ended]}."] if ended in words else []


def _noise_rule(recommended: dict[str, Any]) -> str:
    """How the choice treated the judging images' noise, in words (nothing for runs from before the rule)."""
    counts, confidence = recommended.get("judged_counts"), recommended.get("confidence")
    if not counts or not confidence:
        return ", before the first step that misses it"
    images = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    margin = recommended.get("margin") or 0
    return (
        f", against {confidence:g} standard errors of the noise of {images} images a class (a step short "
        "of it, within noise or clearly, does not end the search when later steps meet it again; a class "
        f"collapse, half its own accuracy, does), and meeting it by {margin:g} standard errors"
    )


def _export_section(export: dict[str, Any] | None) -> list[str]:
    if not export:
        return []
    lines = ["## ONNX export", "", "| file | size | params | MACs | parity: max abs diff | top-1 agreement |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for facts in export.values():
        macs = f"{facts['macs']:,}" if facts.get("macs") else "n/a"
        parity = facts.get("parity")  # int8 has none: its agreement is with the fp32 model, below
        lines.append(
            f"| {Path(facts['path']).name} | {facts['file_bytes'] / 1e6:.2f} MB | {facts['params']:,} | {macs} "
            + (f"| {parity['max_abs_diff']:.2g} | {parity['top1_agreement']:.3f} |" if parity else "| n/a | n/a |")
        )
    return [*lines, "", *_quantized_lines(export.get("int8"), "int8"), *_quantized_lines(export.get("fp16"), "fp16")]


def _quantized_lines(facts: dict[str, Any] | None, kind: str) -> list[str]:
    """The int8 (or fp16) model against the pruned fp32 one: size, agreement, per-class accuracy."""
    if not facts:
        return []
    calibrated = kind == "int8"
    optimistic = " (the calibration set: optimistic)" if calibrated else ""
    names = {"evaluation": "held-out images", "reference": "reference images" + optimistic}
    how = f", calibrated on {facts['calibration_images']} reference images" if calibrated else ""
    lines = [
        f"{kind.upper()} ({facts['quantization']}{how}): "
        f"{facts['size_ratio']:.1f}x smaller than the pruned fp32 file, top-1 agreement with it "
        f"{facts['top1_agreement_with_fp32']:.3f}. Per-class accuracy, fp32 -> {kind}:",
        "",
    ]
    for role, accuracy in facts["accuracy"].items():
        pairs = zip(accuracy["fp32"], accuracy[kind], strict=True)
        shown = ", ".join(f"{_percent(fp32)} -> {_percent(value)}" for fp32, value in pairs)
        lines.append(f"- {names[role]}: {shown}")
    limit = facts["max_accuracy_drop"]
    lines += ["", f"Mean drop {facts['accuracy_drop']:+.3f} on {names[facts['judged_on']]}"
              + ("." if limit is None else f" (allowed: {limit:g})."), ""]  # fmt: skip
    return lines


def _benchmark_section(benchmark: dict[str, Any] | None) -> list[str]:
    if not benchmark:
        return []
    from sddpx_tp.export.bench import markdown_table, memory_table

    machine = benchmark["environment"]
    memory = memory_table(benchmark.get("memory") or [])
    return [
        "## Latency (median of interleaved runs)",
        "",
        f"onnxruntime {machine['onnxruntime']}, torch {machine['torch']}, {machine['cpu']}.",
        "",
        markdown_table(benchmark["latency"], benchmark["speedups"]),
        "",
        *([memory, ""] if memory else []),
        *_ship_lines(benchmark.get("ship")),
    ]


_FILES = {"pruned": "model.onnx (pruned, fp32)", "int8": "model.int8.onnx (pruned, int8)"}


def _ship_lines(ship: dict[str, Any] | None) -> list[str]:
    """Which file to ship, in words: the faster of the pruned files that keep the accuracy."""
    if not ship:
        return []
    over = []
    if "speedup_over_baseline" in ship:
        over.append(f"{ship['speedup_over_baseline']:.2f}x faster than the unpruned fp32 model")
    if "speedup_over_baseline_int8" in ship:
        over.append(f"{ship['speedup_over_baseline_int8']:.2f}x faster than the unpruned model quantized to int8, "
                    "what a user gets without pruning")  # fmt: skip
    else:
        over.append("not compared with the unpruned model in int8 (export with --quantize int8 to do so)")
    return [f"Ship {_FILES.get(ship['model'], ship['model'])}: at batch 1 and {ship['threads']} thread(s), "
            f"{ship['p50_ms']:.2f} ms, " + "; ".join(over) + ".", ""]  # fmt: skip


def refresh_run_report(run: RunDirectory) -> None:
    """Fold the run's export, benchmark and latency-curve files into report.json and report.md."""
    report = run.report()
    for key, path in (("export", run.export_json), ("benchmark", run.bench_json),
                      ("latency_curve", run.latency_curve_json)):  # fmt: skip
        if path.is_file():
            report[key] = json.loads(path.read_text())
    write_json(run.report_json, report)
    labels = [markdown_text(entry["label"]) for entry in report["classes"]]
    write_text(run.report_md, render_markdown(report, labels, run.accuracy_plot.name))


def write_report(
    run: RunDirectory,
    trajectory: list[StepRecord],
    settings: dict[str, Any],
    classes: list[dict[str, Any]],
    notes: list[str],
) -> dict[str, Any]:
    report = build_report(trajectory, settings, classes, notes)
    labels = [str(entry["label"]) for entry in classes]
    try:
        plot_accuracy(trajectory, [plot_text(label) for label in labels], run.accuracy_plot)
    except Exception as error:  # a picture must never lose the pruning that came before it
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        report["notes"].append(f"The accuracy plot could not be drawn ({reason}); the figures above are complete.")
    write_json(run.report_json, report)
    write_text(run.report_md, render_markdown(report, [markdown_text(label) for label in labels],
                                              run.accuracy_plot.name))  # fmt: skip
    return report
