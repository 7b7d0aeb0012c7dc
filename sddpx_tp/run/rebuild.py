"""The models and images of a run, rebuilt from its settings alone.

A run folder stores weights in the safe format (tensors and widths, no code); the
architecture they load into is rebuilt from :class:`RunSettings`' model source.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from sddpx_tp.data.references import ImageSet, load_image_folder, read_labels_file
from sddpx_tp.errors import RunFolderError, SettingError, literal
from sddpx_tp.models.checkpoint import load_pruned
from sddpx_tp.models.classifier import classifier_name, replace_classifier, restrict_to_classes
from sddpx_tp.models.registry import ModelSpec, create_model, is_model_name
from sddpx_tp.pruning.head import load_head, with_head
from sddpx_tp.run.settings import ModelSource, Preprocessing, ResolvedInput, RunSettings


def source_model(source: ModelSource, seed: int = 0) -> tuple[nn.Module, ModelSpec]:
    """The unpruned model as the run started from it, and its preprocessing. Random weights (``random_init``)
    are drawn from ``seed`` (the run's), so that export rebuilds the very network the run pruned."""
    weights = None if source.weights is None else Path(source.weights)
    if not source.random_init:
        return create_model(source.name, weights, source.num_classes, source.random_init)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        return create_model(source.name, weights, source.num_classes, source.random_init)


def confirm_model_file(settings: RunSettings, named: Path | str | None, run: Path) -> None:
    """Refuse to rebuild a run's model from a model file unless the user named that file again.

    A model file is a pickle: loading it runs code. A run folder's settings say which
    file the run came from, and anyone can edit them, so a command that reads a run
    (export, bench, report) unpickles only a file its own caller names (``named``)."""
    source = settings.model.name
    if is_model_name(source):
        return
    if named is None or Path(named).resolve() != Path(source).resolve():
        raise SettingError(
            f"run {literal(run)} was pruned from the model file {literal(source)}; rebuilding it means unpickling "
            f"that file, which runs its code: if you trust it, name it with {{model}} {literal(source)}"
        )


def fresh_architecture(source: ModelSource) -> nn.Module:
    """An unpruned instance of the run's architecture (no weights needed), to load pruned weights into."""
    if is_model_name(source.name):
        return create_model(source.name, num_classes=source.num_classes, random_init=True)[0]
    return create_model(source.name)[0]  # the user's model file


def with_overrides(spec: ModelSpec, preprocessing: Preprocessing, labels: str | None) -> ModelSpec:
    """``spec`` with the run's preprocessing overrides and class names file applied."""
    changes: dict[str, object] = {}
    if preprocessing.input_size:
        changes["input_size"] = preprocessing.input_size
        changes["resize_size"] = preprocessing.resize_size or round(preprocessing.input_size * 256 / 224)
    elif preprocessing.resize_size:
        if preprocessing.resize_size < spec.input_size:  # the same check as for both given (settings.Preprocessing)
            raise SettingError(
                f"{{resize_size}} {preprocessing.resize_size} is smaller than the model's input size "
                f"{spec.input_size}: the crop would pad the image with black; give {{input_size}} too, or a resize "
                f"size >= {spec.input_size}"
            )
        changes["resize_size"] = preprocessing.resize_size
    if preprocessing.mean is not None:
        changes["mean"] = preprocessing.mean
    if preprocessing.std is not None:
        changes["std"] = preprocessing.std
    if labels:
        changes["class_names"] = read_labels_file(Path(labels))
    return replace(spec, **changes)  # type: ignore[arg-type]


def count_outputs(model: nn.Module, spec: ModelSpec) -> int:
    with torch.no_grad():
        return int(model.eval()(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape[1])


def run_spec(settings: RunSettings) -> ModelSpec:
    """The preprocessing the run used (as resolved when it started)."""
    assert settings.resolved is not None, "a run's settings are resolved before anything is stored"
    source = settings.model
    spec = ModelSpec(source.name)
    if is_model_name(source.name):
        spec = create_model(source.name, num_classes=source.num_classes, random_init=True)[1]
    if settings.images.labels:
        spec = replace(spec, class_names=read_labels_file(Path(settings.images.labels)))
    used = settings.resolved
    return replace(spec, input_size=used.input_size, resize_size=used.resize_size, mean=used.mean, std=used.std)


def resolve(
    settings: RunSettings, spec: ModelSpec, references: ImageSet, fingerprints: Mapping[str, str | None]
) -> RunSettings:
    """``settings`` with what was decided when the run started: preprocessing used, classes kept, and
    the image folders' fingerprints (by role: ``reference``, ``evaluation``, ``training``)."""
    used = ResolvedInput(
        input_size=spec.input_size,
        resize_size=spec.resize_size,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        classes=tuple(references.classes),
        class_folders=tuple(references.folders),
        reference_fingerprint=fingerprints.get("reference") or "",
        evaluation_fingerprint=fingerprints.get("evaluation"),
        training_fingerprint=fingerprints.get("training"),
    )
    return replace(settings, resolved=used)


def _classes(settings: RunSettings) -> list[int]:
    assert settings.resolved is not None
    return list(settings.resolved.classes)


def pruned_model(settings: RunSettings, path: Path) -> nn.Module:
    """A pruned model of the run (the final one or a kept step), rebuilt from the safe format at ``path``."""
    return load_pruned(path, restricted_architecture(settings))


def restricted_architecture(settings: RunSettings) -> nn.Module:
    """The unpruned architecture restricted to the run's classes (or with a head for them): what a
    checkpoint loads into."""
    architecture = fresh_architecture(settings.model)
    if settings.config.head.mode == "fit":
        classifier = architecture.get_submodule(classifier_name(architecture))
        assert isinstance(classifier, nn.Linear)
        classes = len(_classes(settings))
        return replace_classifier(architecture, torch.zeros(classes, classifier.in_features), torch.zeros(classes))
    return restrict_to_classes(architecture, _classes(settings))


def baseline_model(settings: RunSettings, head: Path | None = None) -> nn.Module:
    """The run's unpruned model, restricted to the same classes (or with the head fitted for them, read
    from ``head``): the fair comparison."""
    model = source_model(settings.model, settings.config.seed)[0]
    if settings.config.head.mode == "fit":
        if head is None or not head.is_file():
            raise RunFolderError(f"the run's fitted head {head} is missing: the unpruned model cannot be rebuilt")
        return with_head(model, load_head(head))
    return restrict_to_classes(model, _classes(settings))


def _read_folder(settings: RunSettings, folder: Path, per_class: int | None) -> ImageSet:
    assert settings.resolved is not None
    return load_image_folder(
        folder,
        run_spec(settings),
        settings.model.num_classes or 1000,
        chosen=list(settings.resolved.class_folders),
        per_class=per_class,
        seed=settings.config.seed,
        strict=settings.images.strict,
        max_pixels=settings.images.max_pixels,
        folder_labels=settings.config.head.mode == "fit",
    )


def reference_images(settings: RunSettings) -> torch.Tensor:
    """The run's reference images, preprocessed as during pruning (random ones if the folder is gone)."""
    folder = Path(settings.images.references)
    if folder.is_dir():
        return _read_folder(settings, folder, settings.images.per_class).images
    # A library warning; the CLI prints warnings as one "sddpx-tp: warning: ..." line.
    warnings.warn(f"reference folder {folder} is gone; using random inputs", stacklevel=2)
    size = run_spec(settings).input_size
    return torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(0))


def labelled_images(settings: RunSettings, role: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The run's ``"reference"`` or ``"evaluation"`` images with labels as positions among the run's
    classes (what the pruned model's outputs index); None when the run had no such folder or it is gone."""
    if role not in ("reference", "evaluation"):
        raise ValueError(f"role must be 'reference' or 'evaluation', not {role!r}")
    name = settings.images.references if role == "reference" else settings.images.evaluation
    if name is None or not Path(name).is_dir():
        return None
    image_set = _read_folder(settings, Path(name), settings.images.per_class if role == "reference" else None)
    # The pruned model's outputs follow the run's resolved class order, whatever order the folder lists.
    position = {output: index for index, output in enumerate(_classes(settings))}
    return image_set.images, torch.tensor([position[int(label)] for label in image_set.labels.tolist()])
