"""The prune workflow on folders: images and a model in, a run folder out; resume it; report it.

``prune_run(settings, out)`` is what ``sddpx-tp prune`` does, callable from Python:
everything is read and validated before the run folder is touched (bad input writes
nothing), every accepted step is checkpointed, an interrupt raises
:class:`~sddpx_tp.errors.Interrupted` and ``resume=True`` finishes the run with the
same final model as an uninterrupted one. Export and benchmark of a run are in
:mod:`sddpx_tp.run_export`.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sddpx_tp.api import PruneResult, ResumePoint, prune
from sddpx_tp.checkpoint import save_full_model, save_pruned
from sddpx_tp.errors import Interrupted, SettingError
from sddpx_tp.methods import check_config
from sddpx_tp.references import ImageSet, load_image_folder
from sddpx_tp.registry import ModelSpec
from sddpx_tp.report import write_report
from sddpx_tp.run_directory import RunDirectory
from sddpx_tp.run_models import count_outputs, resolve, restricted_architecture, source_model, with_overrides
from sddpx_tp.run_settings import RunSettings
from sddpx_tp.trajectory import PruningSession


@dataclass
class RunInputs:
    """What a run reads before it writes anything."""

    model: torch.nn.Module
    spec: ModelSpec
    references: ImageSet
    evaluation: ImageSet | None
    training: ImageSet | None


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise SettingError("{device} cuda was asked for but no CUDA device is available; use cpu")


def read_inputs(settings: RunSettings, warn: Callable[[str], None] | None = None) -> RunInputs:
    """Build the model and read every image folder; unreadable images are skipped, each with a warning
    (``warn(message)``, or a Python warning)."""
    check_config(settings.config, has_training=settings.images.training is not None)
    model, spec = source_model(settings.model)
    spec = with_overrides(spec, settings.preprocessing, settings.images.labels)
    folders = settings.images
    outputs, seed = count_outputs(model, spec), settings.config.seed

    def read(folder: str, role: str, chosen: list[str] | None, per_class: int | None = None) -> ImageSet:
        return load_image_folder(Path(folder), spec, outputs, chosen=chosen, per_class=per_class, seed=seed,
                                 strict=folders.strict, role=role)  # fmt: skip

    references = read(folders.references, "reference", list(folders.class_folders or []) or None, folders.per_class)
    evaluation = None if folders.evaluation is None else read(folders.evaluation, "evaluation", references.folders)
    training = None if folders.training is None else read(folders.training, "training", references.folders)
    for image_set in (references, evaluation, training):
        for path, _ in [] if image_set is None else image_set.skipped:
            if warn is None:
                warnings.warn(f"skipped unreadable image {path}", stacklevel=2)
            else:
                warn(f"skipped unreadable image {path}")
    return RunInputs(model, spec, references, evaluation, training)


def _labelled(images: ImageSet | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    return None if images is None else (images.images, images.labels)


def prune_run(
    settings: RunSettings,
    out: Path | str,
    *,
    force: bool = False,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Prune as ``settings`` say into the run folder ``out``; returns the run's summary.

    ``warn`` receives each warning as it happens (default: Python warnings)."""
    check_device(device)
    inputs = read_inputs(settings, warn)
    run = RunDirectory(out)
    run.prepare(force=force, resume=resume)
    settings = resolve(settings, inputs.spec, inputs.references)
    resume_point = _resume_point(run, settings) if resume else None
    log = _open_log(run.log)

    def checkpoint(session: PruningSession) -> None:
        run.save_checkpoint(session, settings)
        record = session.trajectory[-1]
        log.info("step %d: filter rate %.3f, reference H %.3f", record.step, record.filter_rate,
                 record.reference_harmonic_mean)  # fmt: skip

    try:
        result = prune(
            inputs.model,
            (inputs.references.images, inputs.references.labels),
            inputs.references.classes,
            settings.config,
            evaluation=_labelled(inputs.evaluation),
            training=_labelled(inputs.training),
            device=device,
            progress=progress,
            on_accept=checkpoint,
            resume=resume_point,
        )
    except KeyboardInterrupt:
        log.info("interrupted")
        raise Interrupted(run.path) from None
    summary = _finish(run, result, settings, inputs)
    log.info("done: %s", json.dumps(summary))
    return summary


def _resume_point(run: RunDirectory, settings: RunSettings) -> ResumePoint:
    changed = run.settings().differences(settings)
    if changed:
        raise SettingError(
            f"resuming needs the same settings as the interrupted run; these differ: {', '.join(changed)}"
        )
    saved = run.checkpoint()
    return ResumePoint(
        model=run.load_checkpoint_model(restricted_architecture(settings)),
        trajectory=saved.trajectory,
        schedule_state=saved.schedule_state,
    )


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


def class_table(images: ImageSet, spec: ModelSpec) -> list[dict[str, Any]]:
    """One row per class: its folder, output index, name and number of references."""
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


def _finish(run: RunDirectory, result: PruneResult, settings: RunSettings, inputs: RunInputs) -> dict[str, Any]:
    assert settings.resolved is not None
    metadata = {
        "model": settings.model.name,
        "num_classes": settings.model.num_classes,
        "classes": list(settings.resolved.classes),
        "class_folders": list(settings.resolved.class_folders),
        "input": {"size": inputs.spec.input_size, "resize": inputs.spec.resize_size, "mean": list(inputs.spec.mean),
                  "std": list(inputs.spec.std)},
    }  # fmt: skip
    save_pruned(result.model, run.model, metadata)
    save_full_model(result.model, run.model_full)
    notes = []
    if inputs.evaluation is None:
        notes.append(
            "No held-out images: accuracies are on the reference images that guided the pruning, "
            "so they are optimistic. Give a folder of held-out images for an honest figure."
        )
    if inputs.references.skipped:
        notes.append(
            f"{len(inputs.references.skipped)} unreadable reference images were skipped: "
            + ", ".join(str(path) for path, _ in inputs.references.skipped[:5])
        )
    report = write_report(run, result.trajectory, settings.to_dict(), class_table(inputs.references, inputs.spec),
                          notes)  # fmt: skip
    summary = result.summary()
    summary.update(
        {
            "run": str(run.path),
            "model_file": str(run.model),
            "auc_eval": report["auc_eval"],
            "auc_reference": report["auc_reference"],
            "class_folders": inputs.references.folders,
        }
    )
    return summary
