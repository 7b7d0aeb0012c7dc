"""Which channels a step removes first: LRP relevance, or one of the baselines a reviewer asks for.

Every criterion scores each channel of every prunable group (higher: keep longer), and the
schedules rank candidates on those scores the same way whichever criterion produced them:

* ``lrp`` (the default): the sum of the LRP relevance of the group's conv filters on the
  references (:mod:`sddpx_tp.lrp.importance`). One relevance pass.
* ``random``: uniform scores from a generator seeded by the run's seed and the number of
  scoring passes so far, so a run (and a resumed run) is reproducible.
* ``magnitude``, ``bn-scale``, ``taylor``: torch-pruning's own importances (group L2 norm
  of the weights, |BatchNorm scale|, and |weight x gradient| of the cross-entropy on the
  references), with torch-pruning's default mean normalisation per group, so that groups
  are comparable in the global ranking.

Only ``lrp`` and ``taylor`` look at the references; ``magnitude`` and ``bn-scale`` look at
the weights alone, which is what makes them the data-free baselines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from sddpx_tp.errors import SettingError
from sddpx_tp.metrics import inference_batch, inference_batches
from sddpx_tp.pruning.surgery import GroupScores, PrunableModel

Criterion = Literal["lrp", "random", "magnitude", "bn-scale", "taylor"]
CRITERIA: tuple[Criterion, ...] = ("lrp", "random", "magnitude", "bn-scale", "taylor")
LabelledImages = tuple[torch.Tensor, torch.Tensor]


class SeededRandomImportance(tp.importance.Importance):
    """torch-pruning's RandomImportance, drawn from a generator of ours (its own uses the global one)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        return torch.rand(len(group[0].idxs), generator=self.generator)


def channel_scores(
    criterion: Criterion,
    model: PrunableModel,
    references: LabelledImages,
    relevance: Callable[[], Mapping[str, torch.Tensor]],
    seed: int,
    pass_index: int,
) -> dict[str, GroupScores]:
    """Each group's per-channel scores under ``criterion``; ``relevance`` runs an LRP pass (``lrp`` only)."""
    if criterion == "lrp":
        scores = model.group_scores(relevance())
    elif criterion == "taylor":
        with _loss_gradients(model.model, references):
            scores = model.scored_by(tp.importance.GroupTaylorImportance())
    else:
        scores = model.scored_by(_importance_without_data(criterion, seed, pass_index))
    if not scores and model.can_prune():
        raise SettingError(
            f"{{criterion}} {criterion} scores no prunable layer of this model (bn-scale needs BatchNorms)"
        )
    return scores


def _importance_without_data(criterion: Criterion, seed: int, pass_index: int) -> tp.importance.Importance:
    if criterion == "random":
        # A fresh stream per pass: a different draw at every step, the same draw on a rerun.
        return SeededRandomImportance(torch.Generator().manual_seed((seed * 1_000_003 + pass_index) % 2**63))
    if criterion == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "bn-scale":
        return tp.importance.BNScaleImportance()
    raise ValueError(f"unknown criterion {criterion!r}; choose one of {CRITERIA}")


@contextmanager
def _loss_gradients(model: nn.Module, references: LabelledImages) -> Iterator[None]:
    """Every parameter's gradient of the mean cross-entropy on the references, for the duration.

    Labels are positions among the model's outputs. Gradients and ``requires_grad`` flags are
    restored afterwards, so no later step sees these gradients (a frozen head stays frozen).
    """
    parameters = list(model.parameters())
    flags, grads = [p.requires_grad for p in parameters], [p.grad for p in parameters]
    was_training = model.training
    try:
        model.eval()
        for parameter in parameters:
            parameter.requires_grad_(True)
            parameter.grad = None
        images, labels = references
        count = len(labels)
        device = parameters[0].device
        with torch.enable_grad():
            start = 0
            for batch in inference_batches(images, inference_batch(images), device):
                # Summed per batch and divided once: the same gradient as one batch of everything.
                logits = model(batch)
                loss = F.cross_entropy(logits, labels[start : start + len(batch)].to(logits.device), reduction="sum")
                (loss / count).backward()
                start += len(batch)
        yield
    finally:
        for parameter, flag, grad in zip(parameters, flags, grads, strict=True):
            parameter.grad = grad
            parameter.requires_grad_(flag)
        model.train(was_training)
