"""``sddpx-tp prune``: a model and a folder of reference images in, a run directory out."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click
import torch
from zennit.composites import COMPOSITES

from sddpx_tp.api import PruneResult, prune
from sddpx_tp.checkpoint import save_full_model, save_pruned
from sddpx_tp.cli import Interrupted
from sddpx_tp.errors import UserError
from sddpx_tp.models import restrict_to_classes
from sddpx_tp.references import ImageSet, load_image_folder, read_labels_file
from sddpx_tp.registry import ModelSpec, available_models, create_model
from sddpx_tp.relevance import RelevanceConfig
from sddpx_tp.report import write_report
from sddpx_tp.runstore import RunDirectory, fresh_architecture
from sddpx_tp.schedules import METHODS, ScheduleConfig
from sddpx_tp.training import OPTIMIZERS, TrainingConfig
from sddpx_tp.trajectory import PruningSession

# Settings that may differ between a run and its --resume without changing its result.
_RUNTIME_ONLY = {"resume", "force", "as_json", "threads", "device", "out"}


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"{name} must be one number or three comma-separated numbers, not {text!r}") from None
    if len(values) not in (1, 3):
        raise UserError(f"{name} needs one value or one per channel (3), got {len(values)}")
    return values * 3 if len(values) == 1 else values


def _spec_with_overrides(spec: ModelSpec, options: dict[str, Any]) -> ModelSpec:
    changes: dict[str, Any] = {}
    if options["input_size"]:
        changes["input_size"] = options["input_size"]
        changes["resize_size"] = options["resize_size"] or round(options["input_size"] * 256 / 224)
    elif options["resize_size"]:
        changes["resize_size"] = options["resize_size"]
    for key in ("mean", "std"):
        values = _floats(options[key], f"--{key}")
        if values is not None:
            changes[key] = values
    if any(value <= 0 for value in changes.get("std", ())):
        raise UserError("--std values must be positive")
    if options["labels"]:
        changes["class_names"] = read_labels_file(options["labels"])
    return replace(spec, **changes)


def _schedule_config(options: dict[str, Any]) -> ScheduleConfig:
    try:
        return ScheduleConfig(
            method=options["method"],
            max_rate=options["max_rate"],
            step=options["step"],
            order_change=options["order_change"],
            rate_change=options["rate_change"],
            max_excluded=options["k"],
            min_step=min(options["min_step"], options["step"]),
            round_to=options["round_to"],
            compensate=options["compensate"] == "always",
            adaptive_compensation=options["compensate"] == "adaptive" and options["method"] == "sd-dpx",
            class_floor=options["class_floor"],
            patience=options["patience"],
            hold=options["hold"],
            relevance=RelevanceConfig(
                composite=options["composite"],
                aggregation=options["aggregation"],
                normalize=options["normalize"],
                start=options["start"],
                chunk_size=options["chunk_size"],
            ),
        )
    except ValueError as error:
        # ScheduleConfig's messages start with the field's name: name the option instead.
        field, _, rest = str(error).partition(" ")
        option = "--k" if field == "max_excluded" else "--" + field.replace("_", "-")
        raise UserError(f"{option} {rest}") from None


def _training_config(options: dict[str, Any]) -> TrainingConfig | None:
    """Retraining settings, checked against the method before anything is read."""
    retrains = options["method"] == "progressive" or options["finetune_epochs"] > 0
    if options["train_dir"] is None:
        if retrains:
            raise UserError(
                f"{'--method progressive' if options['method'] == 'progressive' else '--finetune-epochs'} needs "
                "--train DIR: a folder of training images with one subfolder per class, like --refs"
            )
        return None
    if not retrains:
        raise UserError("--train is used by --method progressive or --finetune-epochs N; add one of them")
    if options["method"] == "progressive" and options["finetune_epochs"] > 0:
        raise UserError("--finetune-epochs is for px/dpx/sd-dpx; progressive retraining retrains as it goes")
    try:
        return TrainingConfig(
            epochs=options["epochs"],
            finetune_epochs=options["finetune_epochs"],
            lr=options["lr"],
            batch_size=options["batch_size"],
            optimizer=options["optimizer"],
        )
    except ValueError as error:
        raise UserError(f"--{error}".replace("_", "-")) from None


def _check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")


def _class_table(images: ImageSet, spec: ModelSpec) -> list[dict[str, Any]]:
    names = spec.class_names
    return [
        {
            "folder": folder,
            "output_index": index,
            "name": names[index] if names and index < len(names) else None,
            "label": folder
            if not names or names[index].lower() == folder.replace("_", " ").lower()
            else f"{names[index]} ({folder})",
            "references": int((images.labels == index).sum()),
        }
        for folder, index in zip(images.folders, images.classes, strict=True)
    ]


@click.command("prune")
@click.option("--model", "model_name", required=True, help=f"one of {', '.join(available_models())}, or a model file")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="state_dict file for --model")
@click.option("--num-classes", type=click.IntRange(min=2), help="outputs of a checkpoint that is not 1000-way")
@click.option("--random-init", is_flag=True, help="no weights: structure-only experiments")
@click.option("--refs", "refs_dir", required=True, type=click.Path(path_type=Path), help="ImageFolder: refs/<class>/*")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="class names file")
@click.option("--classes", "class_folders", help="comma-separated class folders to use (default: all)")
@click.option("--per-class", type=click.IntRange(min=1), help="at most this many reference images per class")
@click.option("--eval", "eval_dir", type=click.Path(path_type=Path), help="held-out images, same layout")
@click.option("--input-size", type=click.IntRange(min=8), help="crop size (default: the model's)")
@click.option("--resize-size", type=click.IntRange(min=8), help="resize before the crop")
@click.option("--mean", help="normalisation mean: one value or three")
@click.option("--std", help="normalisation std: one value or three")
@click.option("--out", type=click.Path(path_type=Path), default=Path("sddpx-run"), help="run directory")
@click.option("--force", is_flag=True, help="replace an existing run directory")
@click.option("--resume", is_flag=True, help="continue the interrupted run in --out")
@click.option("--method", type=click.Choice(METHODS), default="sd-dpx")
@click.option("--max-rate", type=float, default=0.9, help="stop at this filter rate, in (0, 1)")
@click.option("--step", type=float, default=0.05, help="filters removed per step, fraction of the original")
@click.option("--k", type=int, default=10, help="SD-DPX: candidates a step may skip (change of order)")
@click.option("--min-step", type=float, default=0.0125, help="SD-DPX: smallest step (change of rate)")
@click.option(
    "--round-to", type=click.IntRange(min=1), default=16, help="keep conv widths multiples of N (1: the papers)"
)
@click.option(
    "--compensate",
    type=click.Choice(["adaptive", "always", "never"]),
    default="adaptive",
    help="fold removed channels' mean into their consumers; adaptive: SD-DPX tries each step both ways "
    "(PX/DPX: no compensation)",
)
@click.option("--class-floor", type=float, default=0.0, help="SD-DPX: each class keeps this share of its accuracy")
@click.option("--patience", type=click.IntRange(min=0), default=2, help="SD-DPX: fruitless skips before halving")
@click.option("--train", "train_dir", type=click.Path(path_type=Path), help="training images, like --refs")
@click.option("--epochs", type=click.IntRange(min=1), default=1, help="progressive: epochs per layer")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=0, help="px/dpx/sd-dpx: fine-tune afterwards")
@click.option("--lr", type=float, default=3e-4, help="retraining learning rate")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="retraining batch size")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", help="retraining optimizer")
@click.option("--hold", type=float, help="progressive: stop a layer short when reference H falls by more than this")
@click.option("--order-change/--no-order-change", default=True, help="SD-DPX ablation switch")
@click.option("--rate-change/--no-rate-change", default=True, help="SD-DPX ablation switch")
@click.option("--composite", type=click.Choice(sorted(COMPOSITES)), default="epsilon_plus_flat")
@click.option("--aggregation", type=click.Choice(["dpx", "px"]), default="dpx")
@click.option("--normalize/--no-normalize", default=True, help="per-layer L1 normalisation of relevance")
@click.option("--start", type=click.Choice(["one_hot", "one_hot_logit"]), default="one_hot")
@click.option("--chunk-size", type=click.IntRange(min=1), default=16, help="images per relevance pass")
@click.option("--seed", type=int, default=0)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (default: torch's)")
@click.option("--strict", is_flag=True, help="unreadable images are errors instead of skipped")
@click.option("--keep-models", is_flag=True, help="also save every accepted step's model in RUN/steps/")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document with the summary on stdout")
def prune_command(**options: Any) -> None:
    """Prune a pretrained model for the classes of a reference folder (without fine-tuning unless --train)."""
    if options["threads"]:
        torch.set_num_threads(options["threads"])
    _check_device(options["device"])
    config = _schedule_config(options)
    training_config = _training_config(options)
    if options["weights"] is not None and not options["weights"].is_file():
        raise UserError(f"weights file {options['weights']} does not exist")

    # Everything is validated before the run directory is touched: bad input writes nothing.
    model, spec = create_model(
        options["model_name"], options["weights"], options["num_classes"], options["random_init"]
    )
    spec = _spec_with_overrides(spec, options)
    outputs = _count_outputs(model, spec)
    chosen = [name.strip() for name in options["class_folders"].split(",")] if options["class_folders"] else None
    read = {"spec": spec, "num_outputs": outputs, "seed": options["seed"], "strict": options["strict"]}
    references = load_image_folder(options["refs_dir"], chosen=chosen, per_class=options["per_class"], **read)
    evaluation = None
    if options["eval_dir"] is not None:
        evaluation = load_image_folder(options["eval_dir"], chosen=references.folders, role="evaluation", **read)
    training = None
    if options["train_dir"] is not None:
        training = load_image_folder(options["train_dir"], chosen=references.folders, role="training", **read)
    for image_set in (references, evaluation, training):
        for path, _ in [] if image_set is None else image_set.skipped:
            click.echo(f"sddpx-tp: warning: skipped unreadable image {path}", err=True)

    run = RunDirectory(options["out"])
    run.prepare(force=options["force"], resume=options["resume"])
    settings = _settings(options, spec, references)
    resume_point = None
    if options["resume"]:
        stored = run.stored_settings()
        changed = sorted(key for key in settings if key not in _RUNTIME_ONLY and stored.get(key) != settings[key])
        if changed:
            raise UserError(
                f"--resume needs the same settings as the interrupted run; these differ: {', '.join(changed)}"
            )
        resume_point = run.resume_point(restrict_to_classes(fresh_architecture(settings), references.classes))

    log = _open_log(run.path / "prune.log")

    def checkpoint(session: PruningSession) -> None:
        run.checkpoint(session, settings, options["keep_models"])
        record = session.trajectory[-1]
        log.info(
            "step %d: filter rate %.3f, reference H %.3f",
            record.step,
            record.filter_rate,
            record.reference_harmonic_mean,
        )

    try:
        result = prune(
            model,
            (references.images, references.labels),
            references.classes,
            method=config.method,
            max_rate=config.max_rate,
            evaluation=None if evaluation is None else (evaluation.images, evaluation.labels),
            progress=True,
            seed=options["seed"],
            relevance=config.relevance,
            device=options["device"],
            on_accept=checkpoint,
            resume=resume_point,
            training=None if training is None else (training.images, training.labels),
            training_config=training_config,
            **{key: value for key, value in asdict(config).items() if key not in ("method", "max_rate", "relevance")},
        )
    except KeyboardInterrupt:
        log.info("interrupted")
        raise Interrupted(
            f"the run in {run.path} stopped after its last accepted step; continue it with --resume"
        ) from None
    summary = _finish(run, result, settings, references, evaluation, spec)
    log.info("done: %s", json.dumps(summary))
    if options["as_json"]:
        click.echo(json.dumps(summary))
    else:
        _print_summary(summary)


def _count_outputs(model: torch.nn.Module, spec: ModelSpec) -> int:
    with torch.no_grad():
        return int(model.eval()(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape[1])


def _settings(options: dict[str, Any], spec: ModelSpec, references: ImageSet) -> dict[str, Any]:
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in options.items()}
    settings["model"] = options["model_name"]
    settings["classes"] = references.classes
    settings["class_folders"] = references.folders
    settings["input"] = {"size": spec.input_size, "resize": spec.resize_size, "mean": spec.mean, "std": spec.std}
    return json.loads(json.dumps(settings))  # plain JSON types, as stored in state.json


def _open_log(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"sddpx_tp.run.{path.parent}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return logger


def _finish(
    run: RunDirectory,
    result: PruneResult,
    settings: dict[str, Any],
    references: ImageSet,
    evaluation: ImageSet | None,
    spec: ModelSpec,
) -> dict[str, Any]:
    metadata = {
        "model": settings["model"],
        "num_classes": settings["num_classes"],
        "classes": references.classes,
        "input": settings["input"],
        "class_folders": references.folders,
    }
    save_pruned(result.model, run.path / "model.pt", metadata)
    save_full_model(result.model, run.path / "model_full.pt")
    notes = []
    if evaluation is None:
        notes.append(
            "No --eval folder: accuracies are on the reference images that guided the pruning, "
            "so they are optimistic. Pass --eval DIR with held-out images for an honest figure."
        )
    if references.skipped:
        notes.append(
            f"{len(references.skipped)} unreadable reference images were skipped: "
            + ", ".join(str(path) for path, _ in references.skipped[:5])
        )
    report = write_report(run.path, result.trajectory, settings, _class_table(references, spec), notes)
    summary = result.summary()
    summary.update(
        {
            "run": str(run.path),
            "model_file": str(run.path / "model.pt"),
            "auc_eval": report["auc_eval"],
            "auc_reference": report["auc_reference"],
            "class_folders": references.folders,
        }
    )
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    before, after = summary["reference_harmonic_mean"]
    click.echo(
        f"pruned {summary['method']} to filter rate {summary['filter_rate']:.3f} in {summary['seconds']:.0f} s: "
        f"params x{summary['params_ratio']:.3f}, MACs x{summary['macs_ratio']:.3f}"
    )
    click.echo(f"reference accuracy (harmonic mean) {before:.3f} -> {after:.3f}")
    if summary["eval_harmonic_mean"][0] is not None:
        eval_before, eval_after = summary["eval_harmonic_mean"]
        click.echo(f"held-out accuracy (harmonic mean) {eval_before:.3f} -> {eval_after:.3f}")
    click.echo(f"model: {summary['model_file']}; report: {summary['run']}/report.md")
