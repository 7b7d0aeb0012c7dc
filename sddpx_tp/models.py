"""Model plumbing: find the classifier, restrict a model's head to the chosen classes."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sddpx_tp.architectures import family_of


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
    restricted = copy.deepcopy(model)
    name = classifier_name(restricted)
    head = restricted.get_submodule(name)
    assert isinstance(head, nn.Linear)
    if min(classes) < 0 or max(classes) >= head.out_features:
        raise ValueError(f"class indices must be in 0..{head.out_features - 1}, got {list(classes)}")
    rows = torch.as_tensor(list(classes), dtype=torch.long)
    sliced = nn.Linear(head.in_features, len(classes), bias=head.bias is not None)
    sliced = sliced.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        sliced.weight.copy_(head.weight[rows])
        if head.bias is not None:
            sliced.bias.copy_(head.bias[rows])
    parent_name, _, attribute = name.rpartition(".")
    parent = restricted.get_submodule(parent_name) if parent_name else restricted
    setattr(parent, attribute, sliced)
    return restricted
