"""One physical pruning step through torch-pruning's dependency graph.

A *candidate* is one channel of a prunable group (a conv's filters plus everything
coupled to them: BatchNorms, the next convs' input channels, and in a ResNet every
conv on the same residual stream). Candidates are ranked globally by group
relevance; a step removes the lowest ones worth a number of filters, never
emptying a group and never touching the classifier's outputs.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch_pruning as tp
from torch import nn

from sddpx_tp.lrp.architectures import family_of
from sddpx_tp.lrp.importance import LRPImportance
from sddpx_tp.models.classifier import classifier_name
from sddpx_tp.pruning.compensation import InputMeans, compensate
from sddpx_tp.pruning.repairs import StepRepair

Cost = Literal["filters", "macs", "latency"]  # what a step's share is of, and what candidates are ranked per unit of


@dataclass(frozen=True)
class GroupScores:
    """Relevance of each current channel of one group."""

    root: str  # qualified name of the group's root conv
    scores: list[float]
    filters_per_channel: int  # convs whose filters go with each channel


@dataclass(frozen=True)
class Candidate:
    """Channels of one group that go together: one channel, or a bundle that keeps widths aligned."""

    score: float  # mean relevance of its channels
    root: str
    channels: tuple[int, ...]  # indices among the root conv's current output channels
    filters: int  # conv filters removed with it
    # What it removes in the run's cost unit when that is not filters: MACs, or nanoseconds of predicted latency.
    cost: float | None = None


class PrunableModel:
    """A model with its dependency graph; removes channels physically.

    ``copy()`` gives an independent model for a trial step (torch-pruning's graph
    cannot be deep-copied, so the copy traces its own). With ``round_to`` N, every
    group keeps a multiple of N channels: candidates are bundles of N channels, so
    steps count and decide in aligned units.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, min_channels: int = 1, round_to: int = 1) -> None:
        self.model = model
        self.example_input = example_input[:2]
        self.min_channels = min_channels
        self.round_to = round_to
        # The classifier's outputs are the classes; a gate's squeeze channels carry no relevance (the gate is a
        # constant weight to LRP, sddpx_tp.lrp.architectures), so neither is pruned.
        squeezes = [model.get_submodule(squeeze) for squeeze, _ in family_of(model).gates(model)]
        self.ignored = [model.get_submodule(classifier_name(model)), *squeezes]
        # Each conv's and linear layer's current output channels, as indices in the unpruned model
        # (what a reconstruction targets; torch-pruning keeps layer names, not channel indices).
        layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.origins: dict[str, list[int]] = {name: list(range(m.weight.shape[0])) for name, m in layers}
        was_training = model.training
        model.eval()
        self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=self.example_input)
        model.train(was_training)

    def copy(self) -> PrunableModel:
        duplicate = PrunableModel(copy.deepcopy(self.model), self.example_input, self.min_channels, self.round_to)
        duplicate.origins = {name: list(kept) for name, kept in self.origins.items()}
        return duplicate

    def groups(self) -> dict[str, tp.Group]:
        """Every prunable group with full channel indices, by root conv name."""
        names = {module: name for name, module in self.model.named_modules()}
        return {
            names[group[0].dep.target.module]: group
            for group in self.graph.get_all_groups(ignored_layers=self.ignored, root_module_types=[nn.Conv2d])
        }

    def _has_grouped_convs(self) -> bool:
        return any(isinstance(module, nn.Conv2d) and 1 < module.groups < module.in_channels
                   for module in self.model.modules())  # fmt: skip

    def channel_groups(self) -> dict[str, int]:
        """Per group (by root), how many channel groups its channels fall into: a grouped convolution (ResNeXt's
        3x3, neither plain nor depthwise) among its members splits them into ``groups`` equal blocks, and a
        removal must take the same offsets from every block (torch-pruning keeps the blocks equal no other way)."""
        found = {}
        for root, group in self.groups().items():
            counts = [int(item.dep.target.module.groups) for item in group
                      if isinstance(item.dep.target.module, nn.Conv2d)
                      and 1 < item.dep.target.module.groups < item.dep.target.module.in_channels]  # fmt: skip
            found[root] = max(counts, default=1)
        return found

    def can_prune(self) -> bool:
        """Whether any group can lose a bundle of channels without falling below its floor."""
        floor = max(self.min_channels, self.round_to)
        for group in self.groups().values():
            width = int(group[0].dep.target.module.out_channels)
            if width - (width % self.round_to or self.round_to) >= floor:
                return True
        return False

    def widest(self) -> int:
        """Channels of the widest prunable group."""
        return max((int(group[0].dep.target.module.out_channels) for group in self.groups().values()), default=0)

    def consumers(self, root: str) -> list[str]:
        """Names of the layers that read the channels of ``root``'s group (convs, the classifier);
        empty when ``root`` no longer leads a prunable group."""
        group = self.groups().get(root)
        if group is None:
            return []
        names = {module: name for name, module in self.model.named_modules()}
        return sorted(
            {
                names[item.dep.target.module]
                for item in group
                if self.graph.is_in_channel_pruning_fn(item.dep.handler) and item.dep.target.module in names
            }
        )

    def group_scores(self, relevance: Mapping[str, torch.Tensor]) -> dict[str, GroupScores]:
        """Each group's per-channel relevance (sum over its member convs' filters)."""
        return self.scored_by(LRPImportance(self.model, relevance=relevance))

    def scored_by(self, importance: tp.importance.Importance) -> dict[str, GroupScores]:
        """Each group's per-channel scores from a torch-pruning importance (groups it cannot score are left out)."""
        found = {}
        for root, group in self.groups().items():
            scores = importance(group)
            if scores is None:
                continue
            # A group whose raw scores are all zero (dead for taylor or bn-scale) is 0/0 after
            # torch-pruning's mean normalisation: nothing in it matters, so it ranks lowest.
            scores = torch.nan_to_num(scores, nan=0.0)
            filters = sum(
                1
                for item in group
                if isinstance(item.dep.target.module, nn.Conv2d)
                and self.graph.is_out_channel_pruning_fn(item.dep.handler)
            )
            found[root] = GroupScores(root, scores.tolist(), filters)
        return found

    def candidates(
        self,
        group_scores: Mapping[str, GroupScores],
        excluded: Collection[tuple[str, int]] = (),
        cost_per_channel: Mapping[str, float] | None = None,
    ) -> list[Candidate]:
        """Bundles of channels, lowest mean relevance first; ``excluded`` channels are never offered.

        Within a group, channels are taken lowest first; the first bundle brings the
        width to a multiple of ``round_to`` and each later one removes ``round_to``
        more, down to the floor a group keeps. Means of successive bundles of a group
        never decrease, so the global order takes each group's bundles in turn.
        With ``cost_per_channel`` (by root: :func:`sddpx_tp.pruning.costs.channel_macs` or
        :func:`~sddpx_tp.pruning.costs.channel_latency`) the order is by relevance per unit of cost
        instead, and each candidate carries the cost it removes: a cheap channel must be that much less
        relevant to go before a costly one.
        """
        floor = max(self.min_channels, self.round_to)
        blocks = self.channel_groups() if self._has_grouped_convs() else {}  # one graph walk, only when needed
        found = []
        for root, group in group_scores.items():
            count = blocks.get(root, 1)  # channel groups: a unit is one offset in each of them
            span = len(group.scores) // count
            # A unit's score is the mean over its channels; units are offsets within the blocks.
            scores = [sum(group.scores[offset + block * span] for block in range(count)) / count
                      for offset in range(span)]  # fmt: skip
            unit_excluded = {offset for offset in range(span)
                             if any((root, offset + block * span) in excluded for block in range(count))}  # fmt: skip
            order = sorted(range(span), key=lambda index: (index in unit_excluded, scores[index], index))
            # Units per bundle so that the width stays a multiple of round_to: round_to / gcd(round_to, count).
            step = self.round_to // math.gcd(self.round_to, count)
            position, bundle_index = 0, 0
            size = span % step or step
            while (span - position - size) * count >= floor and span - position - size >= 1:
                units = order[position : position + size]
                if any(unit in unit_excluded for unit in units):
                    break
                channels = tuple(unit + block * span for unit in units for block in range(count))
                mean = sum(scores[unit] for unit in units) / size
                cost = None if cost_per_channel is None else cost_per_channel[root] * len(channels)
                # At least one unit (a MAC, a nanosecond): a channel that costs nothing measurable goes last.
                key = mean if cost_per_channel is None else mean / max(cost_per_channel[root], 1)
                filters = group.filters_per_channel * len(channels)
                found.append((key, root, bundle_index, Candidate(mean, root, channels, filters, cost)))
                position, bundle_index, size = position + size, bundle_index + 1, step
        found.sort(key=lambda entry: (entry[0], entry[1], entry[2]))
        return [candidate for *_, candidate in found]

    @staticmethod
    def select(
        candidates: Iterable[Candidate], budget: float, unit: Cost = "filters", cap: float | None = None
    ) -> list[Candidate]:
        """The lowest candidates worth ``budget`` filters (or their cost, in ``unit`` "macs" or "latency").

        The last one may overshoot the budget by its size, but never ``cap`` (what ``max_rate`` still allows):
        a candidate that would pass it is passed over for a smaller one after it. The filter rate and the
        MACs are always counted on the model afterwards, never assumed.
        """
        chosen: list[Candidate] = []
        removed = 0.0
        for candidate in candidates:
            if removed >= budget:
                break
            size = candidate.filters if unit == "filters" else (candidate.cost or 0)
            if cap is not None and removed + size > cap:
                continue
            chosen.append(candidate)
            removed += size
        return chosen

    def _plan(self, chosen: Iterable[Candidate]) -> tuple[list[tp.Group], dict[str, list[int]]]:
        """torch-pruning groups that remove ``chosen``, and each consumer layer's input channels they take."""
        by_root: dict[str, list[int]] = {}
        for candidate in chosen:
            by_root.setdefault(candidate.root, []).extend(candidate.channels)
        names = {module: name for name, module in self.model.named_modules()}
        groups = []
        removed_inputs: dict[str, list[int]] = {}
        for root, channels in by_root.items():
            module = self.model.get_submodule(root)
            pruner = self.graph.get_pruner_of_module(module)
            group = self.graph.get_pruning_group(module, pruner.prune_out_channels, sorted(channels))
            groups.append(group)
            for item in group:
                consumer = item.dep.target.module
                if consumer in names and self.graph.is_in_channel_pruning_fn(item.dep.handler):
                    removed_inputs.setdefault(names[consumer], []).extend(int(index) for index in item.idxs)
        return groups, removed_inputs

    def remove(
        self, chosen: Iterable[Candidate], input_means: InputMeans | None = None, repair: StepRepair | None = None
    ) -> None:
        """Physically remove the chosen channels (groups are disjoint: indices stay valid).

        With ``input_means`` (see :mod:`sddpx_tp.pruning.compensation`), the layers that consumed
        the removed channels first absorb their mean contribution; ``repair`` (see
        :mod:`sddpx_tp.pruning.repairs`) then refits them, and recalibrates after the removal.
        """
        groups, removed_inputs = self._plan(chosen)
        if input_means is not None:
            compensate(self.model, removed_inputs, input_means)
        if repair is not None:
            repair.before_removal(self.model, removed_inputs)
        names = {module: name for name, module in self.model.named_modules()}
        for planned in groups:
            # Removing one group renumbers the channels of any concatenation (DenseNet, GoogLeNet) that another
            # group's consumers read: each group is asked of torch-pruning again just before its removal, with
            # the same channels of its own root (no other group touches them).
            root = planned[0].dep.target.module
            channels = sorted(int(index) for index in planned[0].idxs)
            group = self.graph.get_pruning_group(root, planned[0].dep.handler, channels)
            for item in group:
                name = names.get(item.dep.target.module)
                if name in self.origins and self.graph.is_out_channel_pruning_fn(item.dep.handler):
                    gone = set(int(index) for index in item.idxs)
                    self.origins[name] = [kept for index, kept in enumerate(self.origins[name]) if index not in gone]
            group.prune()
        if repair is not None:
            repair.after_removal(self.model)

    @contextmanager
    def masked(
        self, chosen: Iterable[Candidate], input_means: InputMeans | None = None, repair: StepRepair | None = None
    ) -> Iterator[nn.Module]:
        """The model as if ``chosen`` were removed, without copying it; restored exactly on exit.

        Every removed channel ends in consumers (full convs, the classifier) that read it
        through their input weights; zeroing those weight columns gives the outputs of
        the physically pruned model (same sums, fewer zero terms) at the cost of one
        in-place edit, where a pruned copy costs a deep copy and a new dependency graph.
        Grouped convs are skipped: their inputs are their own (also removed) outputs.
        A ``repair`` is applied to the masked model as to the removal; it may change any
        weight or statistic, so then everything is saved and restored.
        """
        _, removed_inputs = self._plan(chosen)
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []  # (tensor, its original values)
        with torch.no_grad():
            if repair is not None:
                everything = itertools.chain(self.model.parameters(), self.model.buffers())
                saved += [(tensor, tensor.clone()) for tensor in everything]
            for module in self.model.modules():
                if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
                    saved.append((module.running_mean, module.running_mean.clone()))  # compensation may move it
            masked_columns: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
            for name, channels in removed_inputs.items():
                consumer = self.model.get_submodule(name)
                if not isinstance(consumer, (nn.Conv2d, nn.Linear)):
                    continue
                groups = getattr(consumer, "groups", 1)
                if groups > 1 and groups == consumer.in_channels:  # depthwise: its outputs go with its inputs
                    continue
                if isinstance(consumer.bias, torch.Tensor):
                    saved.append((consumer.bias, consumer.bias.clone()))
                if groups > 1:  # a grouped conv reads input channel i as column i % width of block i // width
                    masked_columns += _grouped_columns(consumer, sorted(set(channels)))  # type: ignore[arg-type]
                    continue
                weight = consumer.weight
                index = torch.as_tensor(sorted(set(channels)), dtype=torch.long, device=weight.device)
                masked_columns.append((weight, index, weight[:, index].clone()))
            if input_means is not None:
                compensate(self.model, removed_inputs, input_means)  # before zeroing: it reads those weights
            if repair is not None:
                repair.before_removal(self.model, removed_inputs)
            for weight, index, _ in masked_columns:
                weight[_cells(index)] = 0
            if repair is not None:
                repair.after_removal(self.model)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for weight, index, columns in masked_columns:
                    weight[_cells(index)] = columns
                for tensor, values in saved:
                    tensor.copy_(values)


def _grouped_columns(conv: nn.Conv2d, channels: list[int]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(weight, index, saved values) that zero input ``channels`` of a grouped conv: channel ``i`` is column
    ``i % in_width`` of the filters of block ``i // in_width``."""
    in_width, out_width = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    rows: list[int] = []
    columns: list[int] = []
    for channel in channels:
        block, column = divmod(channel, in_width)
        rows += range(block * out_width, (block + 1) * out_width)
        columns += [column] * out_width
    index = torch.tensor([rows, columns], dtype=torch.long, device=conv.weight.device)
    return [(conv.weight, index, conv.weight[index[0], index[1]].clone())]


def _cells(index: torch.Tensor) -> tuple[torch.Tensor, ...] | tuple[slice, torch.Tensor]:
    """What ``index`` addresses in a weight: whole input columns (a 1-d index) or (row, column) cells (2 rows)."""
    return (index[0], index[1]) if index.ndim == 2 else (slice(None), index)
