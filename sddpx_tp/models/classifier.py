"""Model plumbing: find the classifier, restrict a model's head to the chosen classes, check it is finite."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sddpx_tp.errors import ModelSourceError
from sddpx_tp.lrp.architectures import family_of


def classifier_name(model: nn.Module) -> str:
    """Qualified name of the class head, as ``model``'s family record finds it (by default the last Linear).

    Only the family is looked up, not its support checks: a model relevance cannot
    run on may still be restricted and pruned by other criteria.
    """
    return family_of(model).classifier(model)


def restrict_to_classes(model: nn.Module, classes: Sequence[int]) -> nn.Module:
    """A copy of ``model`` whose head outputs only ``classes``, in that order.

    The head's rows are sliced, so logits of the chosen classes are unchanged and
    the prediction becomes the argmax over those classes only.
    """
    if len(classes) < 2:
        raise ValueError("choose at least two classes")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes repeat: {list(classes)}")
    head = model.get_submodule(classifier_name(model))
    assert isinstance(head, nn.Linear)
    if min(classes) < 0 or max(classes) >= head.out_features:
        raise ValueError(f"class indices must be in 0..{head.out_features - 1}, got {list(classes)}")
    rows = torch.as_tensor(list(classes), dtype=torch.long).to(head.weight.device)
    return replace_classifier(model, head.weight[rows], None if head.bias is None else head.bias[rows])


def replace_classifier(model: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A copy of ``model`` whose classifier is a new ``nn.Linear`` holding ``weight`` ([outputs, inputs]) and
    ``bias``, on the old classifier's device and dtype."""
    restricted = copy.deepcopy(model)
    name = classifier_name(restricted)
    head = restricted.get_submodule(name)
    assert isinstance(head, nn.Linear)
    if weight.shape[1] != head.in_features:
        raise ValueError(f"a head for {weight.shape[1]} features cannot read the model's {head.in_features}")
    replacement = nn.Linear(head.in_features, weight.shape[0], bias=bias is not None)
    replacement = replacement.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        replacement.weight.copy_(weight)
        if bias is not None:
            replacement.bias.copy_(bias)
    parent_name, _, attribute = name.rpartition(".")
    parent = restricted.get_submodule(parent_name) if parent_name else restricted
    setattr(parent, attribute, replacement)
    return restricted


def check_finite(model: nn.Module, images: torch.Tensor, what: str = "the model") -> None:
    """Raise :class:`ModelSourceError` if ``model`` has non-finite weights or gives non-finite outputs on
    ``images`` (a few are enough): a broken model would otherwise prune, export and pass parity as NaN."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelSourceError(f"{what} has {bad} non-finite values (NaN or inf) in {name}: its weights are broken")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outputs = model(images[:8])
    model.train(was_training)
    if not bool(torch.isfinite(outputs).all()):
        raise ModelSourceError(f"{what} gives non-finite outputs (NaN or inf) on the images: it cannot be pruned")
