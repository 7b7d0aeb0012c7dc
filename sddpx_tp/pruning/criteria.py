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

A user's own criterion is any ``torch_pruning.importance.Importance`` (the convention of
torch-pruning's own pruners): an instance, from the Python API, or ``"module:attribute"``
naming one (an instance, or a class built without arguments), which is how the command line
takes it. It is called like ``taylor``: with every parameter's ``.grad`` holding the gradient
of the references' cross-entropy, so gradient-based importances work as they do in
torch-pruning. Only a front end the user typed may name code: a config file may not
(:mod:`sddpx_tp.sweep.config` refuses it), and nothing read back from a run folder imports it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Literal, TypeAlias

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from sddpx_tp.errors import SettingError, literal
from sddpx_tp.metrics import inference_batch, inference_batches
from sddpx_tp.pruning.surgery import GroupScores, PrunableModel

Criterion = Literal["lrp", "random", "magnitude", "bn-scale", "taylor"]
CRITERIA: tuple[Criterion, ...] = ("lrp", "random", "magnitude", "bn-scale", "taylor")
# A built-in's name, "module:attribute" naming a user's importance, or the importance itself (API only).
CriterionChoice: TypeAlias = "Criterion | str | tp.importance.Importance"
LabelledImages = tuple[torch.Tensor, torch.Tensor]
_CODE_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def names_code(criterion: CriterionChoice) -> bool:
    """Whether ``criterion`` is a ``"module:attribute"`` reference to a user's importance."""
    return isinstance(criterion, str) and _CODE_REFERENCE.fullmatch(criterion) is not None


def criterion_problem(criterion: CriterionChoice) -> str | None:
    """Why ``criterion`` is not a criterion's form (nothing is imported), or None."""
    if isinstance(criterion, tp.importance.Importance) or criterion in CRITERIA or names_code(criterion):
        return None
    return (
        f"{{criterion}} must be one of {', '.join(CRITERIA)}, or a torch-pruning importance as module:attribute, "
        f"not {literal(repr(criterion))}"
    )


def criterion_label(criterion: CriterionChoice) -> str:
    """How a report names ``criterion``: a built-in's name, a reference as given, an instance's class."""
    if isinstance(criterion, str):
        return criterion
    kind = type(criterion)
    return f"{kind.__module__}:{kind.__qualname__}"


def user_importance(criterion: CriterionChoice) -> tp.importance.Importance:
    """The user's importance that ``criterion`` is or names (importing its module: the caller named it)."""
    if isinstance(criterion, tp.importance.Importance):
        return criterion
    module_name, _, attribute = str(criterion).partition(":")
    try:
        found: object = importlib.import_module(module_name)
    except Exception as error:  # an ImportError, or whatever the module raised while loading
        raise SettingError(
            f"{{criterion}} {literal(criterion)}: cannot import {module_name} "
            f"({type(error).__name__}: {literal(error)}); put its folder on PYTHONPATH or install it"
        ) from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise SettingError(f"{{criterion}} {criterion}: {module_name} has no attribute {attribute}")
        found = getattr(found, part)
    if isinstance(found, type) and issubclass(found, tp.importance.Importance):
        try:
            found = found()
        except TypeError as error:
            raise SettingError(
                f"{{criterion}} {criterion}: {attribute} cannot be built without arguments ({literal(error)}); "
                "name an instance instead, or pass one through the Python API"
            ) from None
    if not isinstance(found, tp.importance.Importance):
        raise SettingError(
            f"{{criterion}} {criterion} is a {type(found).__name__}, not a torch_pruning.importance.Importance"
        )
    return found


class SeededRandomImportance(tp.importance.Importance):
    """torch-pruning's RandomImportance, drawn from a generator of ours (its own uses the global one)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        return torch.rand(len(group[0].idxs), generator=self.generator)


def channel_scores(
    criterion: CriterionChoice,
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
    elif criterion in CRITERIA:
        scores = model.scored_by(_importance_without_data(criterion, seed, pass_index))
    else:
        importance = user_importance(criterion)
        with _loss_gradients(model.model, references):
            scores = model.scored_by(importance)
    if not scores and model.can_prune():
        raise SettingError(
            f"{{criterion}} {criterion_label(criterion)} scores no prunable layer of this model "
            "(bn-scale needs BatchNorms)"
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
