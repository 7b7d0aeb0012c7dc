"""One physical pruning step through torch-pruning's dependency graph.

A *candidate* is one channel of a prunable group (a conv's filters plus everything
coupled to them: BatchNorms, the next convs' input channels, and in a ResNet every
conv on the same residual stream). Candidates are ranked globally by group
relevance; a step removes the lowest ones worth a number of filters, never
emptying a group and never touching the classifier's outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from sddpx_tp.importance import LRPImportance
from sddpx_tp.models import classifier_name


@dataclass(frozen=True)
class Candidate:
    """One channel of one group: removing it removes ``filters`` conv filters."""

    score: float
    root: str  # qualified name of the group's root conv
    channel: int  # index among the root conv's current output channels
    filters: int


class PrunableModel:
    """A model with its dependency graph; removes channels physically.

    ``copy()`` duplicates model and graph together, so a trial step can run on the
    copy without tracing the model again.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, min_channels: int = 1) -> None:
        self.model = model
        self.example_input = example_input[:2]
        self.min_channels = min_channels
        self.ignored = [model.get_submodule(classifier_name(model))]
        was_training = model.training
        model.eval()
        self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=self.example_input)
        model.train(was_training)

    def copy(self) -> PrunableModel:
        return PrunableModel(copy.deepcopy(self.model), self.example_input, self.min_channels)

    def groups(self) -> dict[str, tp.Group]:
        """Every prunable group with full channel indices, by root conv name."""
        names = {module: name for name, module in self.model.named_modules()}
        return {
            names[group[0].dep.target.module]: group
            for group in self.graph.get_all_groups(ignored_layers=self.ignored, root_module_types=[nn.Conv2d])
        }

    def candidates(self, relevance: Mapping[str, torch.Tensor]) -> list[Candidate]:
        """All group channels, lowest relevance first (ties broken by name and index: deterministic)."""
        importance = LRPImportance(self.model, relevance=relevance)
        found: list[Candidate] = []
        for root, group in self.groups().items():
            scores = importance(group)
            if scores is None:
                continue
            filters = sum(
                1
                for item in group
                if isinstance(item.dep.target.module, nn.Conv2d)
                and getattr(item.dep.handler, "__name__", "") == "prune_out_channels"
            )
            found.extend(
                Candidate(score=float(score), root=root, channel=index, filters=filters)
                for index, score in enumerate(scores.tolist())
            )
        found.sort(key=lambda candidate: (candidate.score, candidate.root, candidate.channel))
        return found

    def channels(self, root: str) -> int:
        module = self.model.get_submodule(root)
        assert isinstance(module, nn.Conv2d)
        return module.out_channels

    def select(
        self,
        candidates: Iterable[Candidate],
        filter_budget: int,
        excluded: Collection[tuple[str, int]] = (),
    ) -> list[Candidate]:
        """The lowest candidates worth ``filter_budget`` filters, skipping ``excluded`` ones.

        A group keeps at least ``min_channels`` channels. The last candidate may
        overshoot the budget by its group's width; the filter rate is always
        counted on the model afterwards, never assumed.
        """
        chosen: list[Candidate] = []
        taken: dict[str, int] = {}
        removed_filters = 0
        for candidate in candidates:
            if removed_filters >= filter_budget:
                break
            if (candidate.root, candidate.channel) in excluded:
                continue
            if self.channels(candidate.root) - taken.get(candidate.root, 0) <= self.min_channels:
                continue
            chosen.append(candidate)
            taken[candidate.root] = taken.get(candidate.root, 0) + 1
            removed_filters += candidate.filters
        return chosen

    def remove(self, chosen: Iterable[Candidate]) -> None:
        """Physically remove the chosen channels (groups are disjoint: indices stay valid)."""
        by_root: dict[str, list[int]] = {}
        for candidate in chosen:
            by_root.setdefault(candidate.root, []).append(candidate.channel)
        for root, channels in by_root.items():
            module = self.model.get_submodule(root)
            pruner = self.graph.get_pruner_of_module(module)
            self.graph.get_pruning_group(module, pruner.prune_out_channels, sorted(channels)).prune()
