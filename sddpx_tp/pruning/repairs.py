"""Repairs without training: what a step does to the layers its removal damages (issue 15).

A step's repair is chosen once per step and applied to every trial of it (masked, in
place) and to the accepted removal, so a trial shows what the repaired model will do:

* ``lstsq``: least-squares reconstruction of every dense consumer of the removed channels
  towards the unpruned model's outputs (:mod:`sddpx_tp.pruning.reconstruction`), intercept included.
* ``bn``: BatchNorm recalibration (EagleEye's adaptive BN): every BatchNorm's running
  statistics become the batch statistics of the references on the pruned model.
* ``bias``: the classifier's per-class bias is shifted so that the mean logit of each class
  on the references is the unpruned model's again (with a fitted head that is refit after
  each step, and whose trials are judged by cross-fitted heads, it changes nothing).

With ``lstsq`` and ``bn`` together, recalibration re-estimates the BatchNorms after the
refit convs, replacing the intercept the reconstruction folded into their running means.

They apply in that order: reconstruction before the channels go (it reads the kept
columns), recalibration and the bias after (they need the pruned model's forward).
These repairs change weights, which the papers avoid on purpose: the default is none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sddpx_tp.models.classifier import classifier_name
from sddpx_tp.pruning.reconstruction import DEFAULT_RIDGE, Reconstruction

RepairName = Literal["lstsq", "bn", "bias"]
REPAIRS: tuple[RepairName, ...] = ("lstsq", "bn", "bias")


@torch.no_grad()
def recalibrate_batch_norms(model: nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running mean and variance to the statistics of ``images`` on ``model``.

    One forward of all images as one batch, BatchNorms in training mode: each normalises
    with, and records, the statistics of exactly its own input (later layers see earlier
    layers already recalibrated). The variance stored is the biased one, the one the batch
    was normalised with, so that evaluation mode reproduces that forward.
    """
    batch_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    saved = [(m.momentum, m.training) for m in batch_norms]
    recorded: dict[nn.Module, torch.Tensor] = {}

    def record_biased_variance(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].transpose(0, 1).flatten(1)
        recorded[module] = x.var(dim=1, unbiased=False)

    handles = [m.register_forward_pre_hook(record_biased_variance) for m in batch_norms]
    try:
        model.eval()
        for module in batch_norms:
            module.reset_running_stats()
            module.momentum = 1.0  # the running statistics become this batch's
            module.train()
        device = next(model.parameters()).device
        model(images.to(device))
        for module in batch_norms:
            if module.running_var is not None and module in recorded:
                module.running_var.copy_(recorded[module])
    finally:
        for handle in handles:
            handle.remove()
        for module, (momentum, training) in zip(batch_norms, saved, strict=True):
            module.momentum = momentum
            module.train(training)
        model.train(was_training)


@torch.no_grad()
def mean_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(images.to(next(model.parameters()).device)).double().mean(0)
    finally:
        model.train(was_training)


@torch.no_grad()
def correct_classifier_bias(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> bool:
    """Shift the classifier's bias so the mean logits on ``images`` are ``target``; False if it has none."""
    classifier = model.get_submodule(classifier_name(model))
    bias = getattr(classifier, "bias", None)
    if not isinstance(bias, torch.Tensor):
        return False
    bias.add_((target - mean_logits(model, images)).to(bias))
    return True


@dataclass
class StepRepair:
    """The repair of one step, with what it gathered on the model before the step."""

    images: torch.Tensor
    reconstruction: Reconstruction | None = None
    recalibrate: bool = False
    bias_target: torch.Tensor | None = None  # the unpruned model's mean logits on the references

    def before_removal(self, model: nn.Module, removed_inputs: Mapping[str, list[int]]) -> None:
        if self.reconstruction is not None:
            self.reconstruction.apply(model, removed_inputs)

    def after_removal(self, model: nn.Module) -> None:
        if self.recalibrate:
            recalibrate_batch_norms(model, self.images)
        if self.bias_target is not None:
            correct_classifier_bias(model, self.images, self.bias_target)


def step_repair(
    repairs: Sequence[RepairName],
    model: nn.Module,
    original: nn.Module,
    origins: Mapping[str, list[int]],
    images: torch.Tensor,
    ridge: float = DEFAULT_RIDGE,
) -> StepRepair | None:
    """The repair of the next step of ``model`` (None without repairs); ``original`` is the unpruned model."""
    if not repairs:
        return None
    return StepRepair(
        images,
        reconstruction=Reconstruction(model, original, origins, images, ridge) if "lstsq" in repairs else None,
        recalibrate="bn" in repairs,
        bias_target=mean_logits(original, images) if "bias" in repairs else None,
    )
