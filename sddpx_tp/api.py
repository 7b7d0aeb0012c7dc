"""``prune(...)``: the one call users make."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sddpx_tp.errors import SettingError
from sddpx_tp.export.latency_table import LatencyTable
from sddpx_tp.files import default_cache_dir
from sddpx_tp.models.classifier import check_finite, restrict_to_classes
from sddpx_tp.pruning.accuracy_target import hold_back
from sddpx_tp.pruning.block_phase import remove_blocks
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.head import (
    CrossFittedJudge,
    HeadFit,
    HeldBackJudge,
    fit_head,
    pooled_features,
    refit_head,
    with_head,
)
from sddpx_tp.pruning.method_registry import Method, check_config
from sddpx_tp.pruning.progressive import finetune
from sddpx_tp.pruning.session import Judgement, LabelledImages, PruningSession, StepRecord
from sddpx_tp.pruning.surgery import PrunableModel


@dataclass
class ResumePoint:
    """Where an interrupted run stopped: its last accepted model (restricted, pruned) and records."""

    model: nn.Module
    trajectory: list[StepRecord]
    schedule_state: dict[str, Any]


@dataclass
class PruneResult:
    """The pruned model (restricted to the chosen classes), its trajectory and the config that made it."""

    model: nn.Module
    trajectory: list[StepRecord]
    config: PruneConfig
    classes: list[int]
    models: list[nn.Module] = field(default_factory=list)  # one per step, if asked for
    head: HeadFit | None = None  # with config.head "fit": the head fitted on the unpruned backbone

    def summary(self) -> dict[str, Any]:
        first, last = self.trajectory[0], self.trajectory[-1]
        return {
            "classes": self.classes,
            "method": self.config.method,
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


def _refitting(config: PruneConfig, references: LabelledImages, classes: int, head: HeadFit | None,
               judge: CrossFittedJudge | HeldBackJudge | None
               ) -> Callable[[nn.Module], Judgement | None] | None:  # fmt: skip
    """With a fitted head and ``refit_head``: refit it on each accepted model's backbone, at the chosen strength.

    A cross-fitted judge reads the same features of the same references as the refit, so the refit
    returns them too: one forward pass over the references per accepted step instead of two."""
    if head is None or not config.head.refit:
        return None
    strength = head.strength

    def refit(model: nn.Module) -> Judgement | None:
        features = refit_head(model, references, classes, strength)
        return judge.of_features(features) if isinstance(judge, CrossFittedJudge) else None

    return refit


def _prunable(model: nn.Module, images: torch.Tensor, config: PruneConfig) -> PrunableModel:
    return PrunableModel(model, images, min_channels=config.min_channels, round_to=config.round_to)


def check_prunable(model: nn.Module, images: torch.Tensor, config: PruneConfig) -> PrunableModel:
    """Raise a one-line error unless ``model`` is finite on ``images`` and ``config`` leaves something to prune.

    (Cheap enough to call before anything is written: the dependency graph is built once.)"""
    check_finite(model, images)
    prunable = _prunable(model, images, config)
    if not prunable.can_prune():
        raise SettingError(
            f"{{round_to}} {config.round_to} leaves nothing to prune: the widest prunable layer has "
            f"{prunable.widest()} channels and keeps at least {{round_to}} (and {{min_channels}}) of them; "
            "use a smaller {round_to}"
        )
    return prunable


@dataclass
class PreparedRun:
    """Everything :func:`prepare` checked and built: a run that can start. The prune-into-a-folder workflow
    prepares before it writes anything (so bad input writes nothing) and runs after; nothing is checked twice."""

    config: PruneConfig
    classes: list[int]
    method: Method
    unpruned: nn.Module  # restricted to the classes, or with the fitted head; on the run's device
    prunable: PrunableModel  # the unpruned model's dependency graph: checked to leave something to prune
    references: LabelledImages  # labels as class positions; without the held-back share
    evaluation: LabelledImages | None
    training: LabelledImages | None
    held_back: LabelledImages | None  # references held back to judge the target (stop_at_target, no evaluation)
    head: HeadFit | None
    judge: CrossFittedJudge | HeldBackJudge | None  # how the references judge a model with a fitted head
    # The global random state as preparing left it: a run restores it, so that what a caller does between
    # prepare and run (a resumed run builds an architecture, which draws random weights) changes nothing.
    random_state: torch.Tensor = field(default_factory=torch.get_rng_state)


def prepare(
    model: nn.Module,
    references: LabelledImages,
    classes: Sequence[int],
    config: PruneConfig | None = None,
    *,
    evaluation: LabelledImages | None = None,
    training: LabelledImages | None = None,
    device: str | torch.device = "cpu",
) -> PreparedRun:
    """Check ``config`` against the method and the data, map labels to class positions, hold back what judges
    the target, fit the head (``config.head.mode == "fit"``) and check the model leaves something to prune.
    Arguments as :func:`prune`'s; raises one-line errors (:class:`SettingError`, ``ValueError``)."""
    config = config or PruneConfig.recommended()
    method = check_config(config, has_training=training is not None)
    torch.manual_seed(config.seed)
    device = torch.device(device)
    references = _on_device(_to_class_positions(references, classes, "reference"), device)
    if evaluation is not None:
        evaluation = _on_device(_to_class_positions(evaluation, classes, "evaluation"), device)
    if training is not None:
        training = _on_device(_to_class_positions(training, classes, "training"), device)
    held_back = None
    if config.target.stop and evaluation is None:  # judge the target on references the run never uses
        try:
            references, held_back = hold_back(references, config.held_back, config.seed)
        except ValueError as error:
            raise SettingError(f"{{stop_at_target}} without evaluation images: {error}") from None
    head: HeadFit | None = None
    judge: CrossFittedJudge | HeldBackJudge | None = None
    if config.head.mode == "fit":  # a new head for the reference classes, judged on images it was not fitted on
        judged = None
        if config.head.judge == "held-back":  # out of the fit, the relevance and the repairs: they only judge
            try:
                references, judged = hold_back(references, config.held_back, config.seed)
            except ValueError as error:
                raise SettingError(f"{{head_judge}} held-back: {error}") from None
        head = fit_head(pooled_features(model.eval(), references[0]), references[1], len(classes),
                        config.head.folds, config.seed)  # fmt: skip
        if judged is None:
            judge = CrossFittedJudge(references, len(classes), head.strength, config.head.folds, config.seed)
        else:
            judge = HeldBackJudge(judged, len(classes))
        unpruned = with_head(model, head.head)
    else:
        unpruned = restrict_to_classes(model, classes)
    unpruned = unpruned.to(device).eval()
    prunable = check_prunable(unpruned, references[0], config)
    return PreparedRun(config, list(classes), method, unpruned, prunable, references, evaluation, training,
                       held_back, head, judge)  # fmt: skip


def run_prepared(
    prepared: PreparedRun,
    *,
    progress: bool = True,
    keep_models: bool = False,
    on_accept: Callable[[PruningSession], None] | None = None,
    resume: ResumePoint | None = None,
    speed_probe: Callable[[nn.Module], float] | None = None,
    latency_table: LatencyTable | None = None,
) -> PruneResult:
    """Prune what :func:`prepare` made ready; arguments as :func:`prune`'s."""
    config, references = prepared.config, prepared.references
    torch.set_rng_state(prepared.random_state)
    if resume is None:
        start = prepared.prunable
    else:  # a resumed run was checked when it started (and may have pruned everything it could since)
        device = next(prepared.unpruned.parameters()).device
        start = _prunable(resume.model.to(device).eval(), references[0], config)
    probe = None
    if config.target.speedup is not None and speed_probe is None:  # measured on this machine, at torch's threads
        from sddpx_tp.export.latency import SpeedProbe  # onnxruntime: loaded only for a speed budget

        probe = SpeedProbe(prepared.unpruned, references[0][:1], threads=torch.get_num_threads())
        speed_probe = probe
    if config.cost == "latency" and latency_table is None:  # measured once per machine and cached
        from sddpx_tp.export.layer_latency import measure_latency_table

        latency_table = measure_latency_table(
            prepared.unpruned, references[0][:1], torch.get_num_threads(),
            cache_folder=default_cache_dir() / "latency", progress=progress,
        )  # fmt: skip
    session = PruningSession(
        start,
        references,
        len(prepared.classes),
        config,
        evaluation=prepared.evaluation,
        keep_models=keep_models,
        progress=progress,
        on_accept=on_accept,
        resume=None if resume is None else (resume.trajectory, resume.schedule_state),
        training=prepared.training,
        reference_judge=prepared.judge,
        on_before_accept=_refitting(config, references, len(prepared.classes), prepared.head, prepared.judge),
        # Repairs target the unpruned model; the session's own model is pruned in place, so a copy.
        original_model=copy.deepcopy(prepared.unpruned) if config.repair.methods else None,
        held_back=prepared.held_back,
        speed_probe=speed_probe,
        latency_table=latency_table,
    )
    try:
        if config.blocks:  # depth before width (refused for the methods that retrain)
            remove_blocks(session, config)
        prepared.method.run(session, config)
        if config.retraining.finetune_epochs > 0 and session.trajectory[-1].phase != "finetuned":
            finetune(session, seed=config.seed)
    finally:
        session.close()
        if probe is not None:
            probe.close()
    return PruneResult(
        model=session.current.model,
        trajectory=session.trajectory,
        config=config,
        classes=list(prepared.classes),
        models=session.models,
        head=prepared.head,
    )


def prune(
    model: nn.Module,
    references: LabelledImages,
    classes: Sequence[int],
    config: PruneConfig | None = None,
    *,
    evaluation: LabelledImages | None = None,
    training: LabelledImages | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    keep_models: bool = False,
    on_accept: Callable[[PruningSession], None] | None = None,
    resume: ResumePoint | None = None,
    speed_probe: Callable[[nn.Module], float] | None = None,
    latency_table: LatencyTable | None = None,
) -> PruneResult:
    """Prune ``model`` for ``classes`` using reference images (without fine-tuning, unless asked).

    ``references``, ``evaluation`` and ``training`` are ``(images, labels)`` with
    labels given as the model's output indices (e.g. ImageNet class indices).
    ``config`` holds every setting; the default is :meth:`PruneConfig.recommended`
    (what ``sddpx-tp prune`` runs), :meth:`PruneConfig.paper` gives the papers'
    semantics. ``evaluation`` is measured at every accepted step and never guides the
    method. ``training`` is for the methods that retrain: ``method="progressive"``,
    or ``config.retraining.finetune_epochs`` > 0 after the others.
    With ``config.target.stop`` the run ends once 3 accepted steps in a row fall short of
    ``config.accuracy_target`` or a class collapses, judged on ``evaluation``, or without it on
    ``config.held_back`` of each class's references, held back from everything else (recorded as
    ``holdout_accuracy``).
    With ``config.target.speedup`` the run ends at the first accepted step measured at least that many
    times faster than the unpruned model, by ``speed_probe`` (a model in, its speedup out: e.g. a
    measurement on the device you deploy to); by default ONNX Runtime on this CPU at batch 1 and
    torch's thread count (:class:`sddpx_tp.export.latency.SpeedProbe`). With ``config.cost`` "latency" a step
    removes a share of the latency predicted by ``latency_table`` (per-layer latencies on the device you
    deploy to); by default one measured on ONNX Runtime on this CPU at torch's thread count, cached in
    ``$SDDPX_CACHE/latency`` (:func:`sddpx_tp.export.layer_latency.measure_latency_table`).

    The input model is not modified. ``on_accept`` is called after every accepted
    step (e.g. to checkpoint); ``resume`` continues an interrupted run. The same as
    :func:`run_prepared` of :func:`prepare`.
    """
    prepared = prepare(model, references, classes, config, evaluation=evaluation, training=training, device=device)
    return run_prepared(prepared, progress=progress, keep_models=keep_models, on_accept=on_accept, resume=resume,
                        speed_probe=speed_probe, latency_table=latency_table)  # fmt: skip
