"""The prune workflow on folders: images and a model in, a run folder out; resume it; report it.

``prune_run(settings, out)`` is what ``sddpx-tp prune`` does, callable from Python:
everything is read and validated before the run folder is touched (bad input writes
nothing), every accepted step is checkpointed, an interrupt raises
:class:`~sddpx_tp.errors.Interrupted` and ``resume=True`` finishes the run with the
same final model as an uninterrupted one. Export and benchmark of a run are in
:mod:`sddpx_tp.run.export`.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sddpx_tp.api import PreparedRun, PruneResult, ResumePoint, prepare, run_prepared
from sddpx_tp.data.fingerprints import file_digest, folder_fingerprint
from sddpx_tp.data.references import ImageSet, check_labels, load_image_folder, printable
from sddpx_tp.errors import Interrupted, SettingError, UserError, literal
from sddpx_tp.metrics import output_accuracy
from sddpx_tp.models.checkpoint import save_full_model, save_pruned
from sddpx_tp.models.registry import ModelSpec
from sddpx_tp.pruning.head import save_head
from sddpx_tp.pruning.session import PruningSession
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.run.rebuild import count_outputs, resolve, restricted_architecture, source_model, with_overrides
from sddpx_tp.run.report import write_report
from sddpx_tp.run.settings import RunSettings
from sddpx_tp.text import markdown_text


@dataclass
class RunInputs:
    """What a run reads before it writes anything."""

    model: torch.nn.Module
    spec: ModelSpec
    references: ImageSet
    evaluation: ImageSet | None
    training: ImageSet | None
    fingerprints: dict[str, str | None] = field(default_factory=dict)  # by role: see sddpx_tp.data.fingerprints
    notes: list[str] = field(default_factory=list)  # for the report: skipped images, overlaps


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise SettingError("{device} cuda was asked for but no CUDA device is available; use cpu")


def read_inputs(settings: RunSettings, warn: Callable[[str], None] | None = None) -> RunInputs:
    """Build the model and read every image folder; unreadable images are skipped, each with a warning
    (``warn(message)``, or a Python warning). The pruning settings are checked once, by
    :func:`~sddpx_tp.api.prepare`, with the images and the model."""
    model, spec = source_model(settings.model, settings.config.seed)
    spec = with_overrides(spec, settings.preprocessing, settings.images.labels)
    folders = settings.images
    outputs, seed = count_outputs(model, spec), settings.config.seed
    if folders.labels and spec.class_names is not None:
        check_labels(spec.class_names, outputs, Path(folders.labels))

    def read(folder: str, role: str, chosen: list[str] | None, per_class: int | None = None) -> ImageSet:
        return load_image_folder(Path(folder), spec, outputs, chosen=chosen, per_class=per_class, seed=seed,
                                 strict=folders.strict, role=role, max_pixels=folders.max_pixels,
                                 folder_labels=settings.config.head.mode == "fit")  # fmt: skip

    references = read(folders.references, "reference", list(folders.class_folders or []) or None, folders.per_class)
    if settings.config.head.mode == "fit":  # checked here, where the classes have their folders' names
        for folder, label in zip(references.folders, references.classes, strict=True):
            count = int((references.labels == label).sum())
            if count < 2:
                raise SettingError(
                    f"{{head}} fit needs at least 2 reference images of every class to fit and check the head; "
                    f"the class folder {literal(repr(folder))} has {count}: add images, or leave out {{head}} fit"
                )
    evaluation = None if folders.evaluation is None else read(folders.evaluation, "evaluation", references.folders)
    training = None if folders.training is None else read(folders.training, "training", references.folders)
    inputs = RunInputs(model, spec, references, evaluation, training)
    digests = {}
    for role, image_set in (("reference", references), ("evaluation", evaluation), ("training", training)):
        if image_set is None:
            inputs.fingerprints[role] = None
            continue
        digests[role] = [file_digest(path) for path in image_set.files]
        skipped = [path for path, _ in image_set.skipped]
        inputs.fingerprints[role] = folder_fingerprint(image_set.files, digests[role], skipped)
        for path, reason in image_set.skipped:
            message = f"skipped unreadable {role} image {printable(path)}: {reason}"
            warn(message) if warn is not None else warnings.warn(message, stacklevel=2)
        if image_set.ignored:  # photos in a format not read (HEIC from a phone): said, not passed over
            kinds = ", ".join(sorted({path.suffix for path in image_set.ignored}))
            message = (f"{len(image_set.ignored)} {role} files ({kinds}) were not read: sddpx-tp reads JPEG, PNG, "
                       f"BMP, GIF, TIFF, WebP and PPM/PGM; convert them to use them ({printable(image_set.ignored[0])}"
                       f"{', ...' if len(image_set.ignored) > 1 else ''})")  # fmt: skip
            warn(message) if warn is not None else warnings.warn(message, stacklevel=2)
            inputs.notes.append(message)
        if image_set.skipped:
            inputs.notes.append(
                f"{len(image_set.skipped)} unreadable {role} images were skipped: "
                + ", ".join(printable(path) for path, _ in image_set.skipped[:5])
            )
    if evaluation is not None:
        shared = len(set(digests["evaluation"]) & set(digests["reference"]))
        if shared:
            message = (
                f"{shared} of the {len(evaluation.files)} held-out images are also reference images: "
                "the held-out accuracy is optimistic"
            )
            warn(message) if warn is not None else warnings.warn(message, stacklevel=2)
            inputs.notes.append(message + ".")
    return inputs


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

    Everything is validated before the folder is touched; ``force`` replaces only a run
    folder's own files; a run that fails before its first accepted step leaves nothing
    behind. ``warn`` receives each warning as it happens (default: Python warnings)."""
    check_device(device)
    run = RunDirectory(out)
    run.check_writable(force=force, resume=resume)
    check_folders(settings, run.path)
    inputs = read_inputs(settings, warn)
    settings = resolve(settings, inputs.spec, inputs.references, inputs.fingerprints)
    # Every check of the pruning itself, done once, before the folder is touched; the run then uses what it built.
    prepared = prepare(
        inputs.model,
        (inputs.references.images, inputs.references.labels),
        inputs.references.classes,
        settings.config,
        evaluation=_labelled(inputs.evaluation),
        training=_labelled(inputs.training),
        device=device,
    )
    existed = run.path.is_dir()
    with run.writing(force=force, resume=resume):
        try:
            resume_point = _resume_point(run, settings) if resume and run.has_checkpoint() else None
            return _prune_into(run, settings, inputs, prepared, resume_point, progress)
        except UserError:
            if not run.has_checkpoint():  # nothing accepted yet: leave the folder as it was found
                run.folder.discard(remove_folder=not existed)
            raise


def _prune_into(run: RunDirectory, settings: RunSettings, inputs: RunInputs, prepared: PreparedRun,
                resume_point: ResumePoint | None, progress: bool) -> dict[str, Any]:  # fmt: skip
    log = _open_log(run.log)

    def checkpoint(session: PruningSession) -> None:
        run.save_checkpoint(session, settings)
        record = session.trajectory[-1]
        log.info("step %d: filter rate %.3f, reference H %.3f", record.step, record.filter_rate,
                 record.reference_harmonic_mean)  # fmt: skip

    try:
        result = run_prepared(prepared, progress=progress, on_accept=checkpoint, resume=resume_point)
        summary = _finish(run, result, settings, inputs)
        log.info("done: %s", json.dumps(summary))
        return summary
    except KeyboardInterrupt:
        log.info("interrupted")
        raise Interrupted(run.path) from None
    finally:
        _close_log(log)


def check_folders(settings: RunSettings, out: Path) -> None:
    """The run folder may not lie inside an image folder, and held-out images are not the references."""
    folders = settings.images
    named = {"references": folders.references, "evaluation": folders.evaluation, "training": folders.training}
    target = out.resolve()
    for name, folder in named.items():
        if folder is not None and (target == Path(folder).resolve() or Path(folder).resolve() in target.parents):
            raise SettingError(
                f"{{out}} {literal(out)} lies inside the {{{name}}} folder {literal(folder)}: its files would be "
                "read as images there; choose an output folder outside it"
            )
    source = settings.model
    files = {"model": source.name if Path(source.name).is_file() else None, "weights": source.weights,
             "labels": folders.labels}  # fmt: skip
    for name, file in files.items():
        if file is not None and target in Path(file).resolve().parents:
            raise SettingError(
                f"the {{{name}}} file {literal(file)} lies inside the output folder {literal(out)}, which a run "
                "replaces; move it out, or choose another {out}"
            )
    if folders.evaluation is not None and Path(folders.evaluation).resolve() == Path(folders.references).resolve():
        raise SettingError(
            "{evaluation} is the same folder as {references}: held-out accuracy must come from images the "
            "pruning never saw; give another folder, or leave out {evaluation}"
        )


def _resume_point(run: RunDirectory, settings: RunSettings) -> ResumePoint:
    stored = run.settings()
    changed = [name for name in stored.differences(settings) if not name.endswith("_fingerprint")]
    if changed:
        raise SettingError(
            f"resuming needs the same settings as the interrupted run; these differ: {literal(', '.join(changed))}"
        )
    for role in ("reference", "evaluation", "training"):
        before = None if stored.resolved is None else getattr(stored.resolved, f"{role}_fingerprint")
        now = None if settings.resolved is None else getattr(settings.resolved, f"{role}_fingerprint")
        if before != now:
            raise SettingError(
                f"the {role} images changed since the run started (their content fingerprint differs): "
                "restore them to resume, or start a new run with {force}"
            )
    saved = run.checkpoint()
    return ResumePoint(
        model=run.load_checkpoint_model(restricted_architecture(settings)),
        trajectory=saved.trajectory,
        schedule_state=saved.schedule_state,
    )


def _open_log(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"sddpx_tp.run.workflow.{path.parent}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    _close_log(logger)
    handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return logger


def _close_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def class_table(images: ImageSet, spec: ModelSpec, new_head: bool = False) -> list[dict[str, Any]]:
    """One row per class: its folder, output index, name and number of references."""
    if new_head:  # the user's own classes: no output of the model stands for them
        return [{"folder": folder, "output_index": None, "name": folder, "label": folder,
                 "references": int((images.labels == index).sum())}
                for folder, index in zip(images.folders, images.classes, strict=True)]  # fmt: skip
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


def _among_chosen_note(inputs: RunInputs) -> str:
    """The model's own head, cut to the chosen classes: say that accuracy is among them, and what the unpruned
    model scores over all its outputs on the same images (a tabby folder can be 100 % among two classes and
    0 % "tabby" among 1,000)."""
    judged, which = (
        (inputs.evaluation, "held-out") if inputs.evaluation is not None else (inputs.references, "reference")
    )
    outputs = count_outputs(inputs.model, inputs.spec)
    full = output_accuracy(inputs.model, judged.images, judged.labels, judged.classes)
    per_class = ", ".join(f"{markdown_text(folder)} {accuracy:.1%}" for folder, accuracy in zip(judged.folders, full,
                                                                                              strict=True))  # fmt: skip
    return (
        f"Accuracies are among the {len(judged.classes)} chosen classes only: the pruned model keeps their "
        f"outputs (of the model's {outputs}), so every image is called one of them. Over all {outputs} outputs "
        f"the unpruned model calls the {which} images right: {per_class}."
    )


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
    notes = list(inputs.notes)
    if inputs.evaluation is None:
        notes.append(
            "No held-out images: accuracies are on the reference images that guided the pruning, "
            "so they are optimistic. Give a folder of held-out images for an honest figure."
        )
    if result.head is not None:
        fit = result.head
        save_head(run.head, fit)
        notes.append(
            f"Head: a new linear head (multinomial logistic regression) fitted on the frozen backbone's pooled "
            f"features of the references, L2 strength {fit.strength:g} chosen by {fit.folds}-fold cross-validation "
            f"(cross-validated accuracy {', '.join(f'{value:.3f}' for value in fit.cross_validated_accuracy)}). "
            + (
                "Reference accuracies are cross-fitted: each reference is predicted by a head fitted without it."
                if settings.config.head.judge == "cross-fit"
                else f"Reference accuracies are the model's own, on {settings.config.held_back:.0%} of each class's "
                "references, held back from the head's fit and refits, the relevance and the repairs."
            )
        )
    elif count_outputs(inputs.model, inputs.spec) > len(inputs.references.classes):
        notes.append(_among_chosen_note(inputs))
    classes = class_table(inputs.references, inputs.spec, new_head=result.head is not None)
    report = write_report(run, result.trajectory, settings.to_dict(), classes, notes)
    # The pruned model last: its presence is what makes the run finished (export, bench and report need it).
    save_full_model(result.model, run.model_full)
    save_pruned(result.model, run.model, metadata)
    run.drop_recommended_copy()
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
