"""``prune(...)``: the one call users make."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sddpx_tp.models import restrict_to_classes
from sddpx_tp.progressive import finetune
from sddpx_tp.relevance import RelevanceConfig
from sddpx_tp.schedules import Method, ScheduleConfig, run_schedule
from sddpx_tp.surgery import PrunableModel
from sddpx_tp.training import TrainingConfig
from sddpx_tp.trajectory import LabelledImages, PruningSession, StepRecord


@dataclass
class ResumePoint:
    """Where an interrupted run stopped: its last accepted model (restricted, pruned) and records."""

    model: nn.Module
    trajectory: list[StepRecord]
    schedule_state: dict[str, Any]


@dataclass
class PruneResult:
    """The pruned model (restricted to the chosen classes), its trajectory and the settings."""

    model: nn.Module
    trajectory: list[StepRecord]
    settings: dict[str, Any]
    classes: list[int]
    models: list[nn.Module] = field(default_factory=list)  # one per step, if asked for

    def summary(self) -> dict[str, Any]:
        first, last = self.trajectory[0], self.trajectory[-1]
        return {
            "classes": self.classes,
            "method": self.settings["method"],
            "steps": len(self.trajectory) - 1,
            "filter_rate": last.filter_rate,
            "params_ratio": last.params_ratio,
            "macs_ratio": last.macs_ratio,
            "reference_harmonic_mean": [first.reference_harmonic_mean, last.reference_harmonic_mean],
            "eval_harmonic_mean": [first.eval_harmonic_mean, last.eval_harmonic_mean],
            "seconds": last.seconds,
            "relevance_passes": last.relevance_passes,
            "evaluations": last.evaluations,
        }


def _to_class_positions(images_and_labels: LabelledImages, classes: Sequence[int], role: str) -> LabelledImages:
    """Map labels given as model output indices to positions among ``classes``."""
    images, labels = images_and_labels
    position = {int(cls): index for index, cls in enumerate(classes)}
    unknown = sorted({int(label) for label in labels.tolist()} - set(position))
    if unknown:
        raise ValueError(f"{role} labels {unknown} are not among the chosen classes {list(classes)}")
    mapped = torch.tensor([position[int(label)] for label in labels.tolist()], dtype=torch.long)
    missing = [classes[index] for index in range(len(classes)) if not bool((mapped == index).any())]
    if missing:
        raise ValueError(f"{role} images have no image of class {missing}")
    return images, mapped


def _on_device(images_and_labels: LabelledImages, device: torch.device) -> LabelledImages:
    # Images go to the model's device; labels stay on the CPU, where accuracy is counted.
    return images_and_labels[0].to(device), images_and_labels[1]


def prune(
    model: nn.Module,
    references: LabelledImages,
    classes: Sequence[int],
    method: Method = "sd-dpx",
    max_rate: float = 0.9,
    evaluation: LabelledImages | None = None,
    keep_models: bool = False,
    progress: bool = True,
    seed: int = 0,
    relevance: RelevanceConfig | None = None,
    device: str | torch.device = "cpu",
    on_accept: Callable[[PruningSession], None] | None = None,
    resume: ResumePoint | None = None,
    training: LabelledImages | None = None,
    training_config: TrainingConfig | None = None,
    **schedule_options: Any,
) -> PruneResult:
    """Prune ``model`` for ``classes`` using reference images (without fine-tuning, unless asked).

    ``references`` and ``evaluation`` are ``(images, labels)`` with labels given as
    the model's output indices (e.g. ImageNet class indices). ``schedule_options``
    are the other fields of :class:`ScheduleConfig` (``step``, ``max_excluded``,
    ``min_step``, ``order_change``, ``rate_change``, ``min_channels``, ``round_to``,
    ``compensate``, ``class_floor``, ``patience``, ``masked_trials``, ``hold``).
    The input model is not modified. ``on_accept`` is called after every accepted
    step (e.g. to checkpoint); ``resume`` continues an interrupted run.

    ``training`` (same form as ``references``) is for the methods that retrain:
    ``method="progressive"`` and ``training_config.finetune_epochs`` > 0 after the
    others; ``training_config`` holds epochs, learning rate, batch size, optimizer.
    """
    training_config = training_config or TrainingConfig()
    if training is None and (method == "progressive" or training_config.finetune_epochs > 0):
        raise ValueError("progressive retraining and fine-tuning need training images (training=...)")
    if method == "progressive" and training_config.finetune_epochs > 0:
        raise ValueError("finetune_epochs is for px/dpx/sd-dpx: progressive retraining retrains as it goes")
    config = ScheduleConfig(
        method=method,
        max_rate=max_rate,
        relevance=relevance or RelevanceConfig(normalize=True),
        **schedule_options,
    )
    torch.manual_seed(seed)
    device = torch.device(device)
    references = _on_device(_to_class_positions(references, classes, "reference"), device)
    if evaluation is not None:
        evaluation = _on_device(_to_class_positions(evaluation, classes, "evaluation"), device)
    if training is not None:
        training = _on_device(_to_class_positions(training, classes, "training"), device)
    start = restrict_to_classes(model, classes) if resume is None else resume.model
    start = start.to(device).eval()
    session = PruningSession(
        PrunableModel(start, references[0], min_channels=config.min_channels, round_to=config.round_to),
        references,
        classes=len(classes),
        relevance_config=config.relevance,
        evaluation=evaluation,
        keep_models=keep_models,
        progress=progress,
        max_rate=max_rate,
        on_accept=on_accept,
        resume=None if resume is None else (resume.trajectory, resume.schedule_state),
        training=training,
        training_config=training_config,
    )
    try:
        run_schedule(session, config)
        if training_config.finetune_epochs > 0 and session.trajectory[-1].phase != "finetuned":
            finetune(session, seed=seed)
    finally:
        session.close()
    settings = dataclasses.asdict(config)
    settings["seed"] = seed
    if training is not None:
        settings["training"] = dataclasses.asdict(training_config)
    return PruneResult(
        model=session.current.model,
        trajectory=session.trajectory,
        settings=settings,
        classes=list(classes),
        models=session.models,
    )
