"""LRPImportance: group scores from relevance and use inside torch-pruning's own pruner."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from helpers import calibrate_batch_norms
from torchvision import models

from sddpx_tp import RelevanceConfig, filter_relevance
from sddpx_tp.lrp.importance import LRPImportance, StaleRelevanceError


def _resnet18_and_references() -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    model = calibrate_batch_norms(models.resnet18(num_classes=10))
    return model, (torch.randn(6, 3, 64, 64), torch.randint(0, 10, (6,)))


def test_residual_group_sums_all_coupled_convs() -> None:
    model, references = _resnet18_and_references()
    importance = LRPImportance(model, references, RelevanceConfig())
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=references[0][:2])
    group = graph.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=list(range(64)))
    by_hand = sum(importance.relevance[name] for name in ("conv1", "layer1.0.conv2", "layer1.1.conv2"))
    torch.testing.assert_close(importance(group), by_hand)


def test_plain_group_is_its_conv() -> None:
    model, references = _resnet18_and_references()
    relevance = filter_relevance(model, references)
    importance = LRPImportance(model, relevance=relevance)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=references[0][:2])
    group = graph.get_pruning_group(model.layer2[0].conv1, tp.prune_conv_out_channels, idxs=list(range(128)))
    torch.testing.assert_close(importance(group), relevance["layer2.0.conv1"])


def test_global_pruning_with_torch_pruning_base_pruner() -> None:
    model, references = _resnet18_and_references()
    params_before = sum(parameter.numel() for parameter in model.parameters())
    importance = LRPImportance(model, references)
    pruner = tp.pruner.BasePruner(
        model,
        references[0][:2],
        importance,
        global_pruning=True,
        pruning_ratio=0.3,
        ignored_layers=[model.fc],
    )
    pruner.step()
    params_after = sum(parameter.numel() for parameter in model.parameters())
    assert params_after <= 0.75 * params_before
    assert model(references[0]).shape == (6, 10)


def test_iterative_pruning_refreshes_stale_relevance() -> None:
    model, references = _resnet18_and_references()
    importance = LRPImportance(model, references)
    pruner = tp.pruner.BasePruner(
        model, references[0][:2], importance, pruning_ratio=0.4, iterative_steps=2, ignored_layers=[model.fc]
    )
    for _ in range(2):
        pruner.step()
    assert importance.relevance_passes == 2  # once up front, once after the first step
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=references[0][:2])
    group = graph.get_pruning_group(model.layer2[0].conv1, tp.prune_conv_out_channels, idxs=[0, 1])
    importance(group)  # the second step pruned again: this call must see fresh relevance
    assert importance.relevance_passes == 3
    assert all(len(scores) == model.get_submodule(name).out_channels for name, scores in importance.relevance.items())


def test_stale_relevance_without_references_is_an_error() -> None:
    model, references = _resnet18_and_references()
    importance = LRPImportance(model, relevance=filter_relevance(model, references))
    pruner = tp.pruner.BasePruner(
        model, references[0][:2], importance, pruning_ratio=0.2, iterative_steps=2, ignored_layers=[model.fc]
    )
    pruner.step()
    with pytest.raises(StaleRelevanceError):
        pruner.step()
