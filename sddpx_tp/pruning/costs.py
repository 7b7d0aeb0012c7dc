"""What a channel costs: the multiply-accumulates that go with one channel of each prunable group.

Removing a channel of a group removes, in every member layer, the work that channel feeds or is
fed by: a conv's filter (``H_out * W_out * k * k * C_in / groups`` MACs), a dense conv's input
slice (``H_out * W_out * k * k * C_out``), a linear layer's input features. A depthwise conv's input
and output channel are one channel, counted once. Costs are at the model's current widths and at
the input size of ``example_input``, counted as :func:`sddpx_tp.metrics.count_macs` counts (convs
and matmuls; BatchNorm and activations are free), which a test holds them to by removing channels
physically. This is the *macs* unit of issue 31's cost-aware pruning; :func:`channel_latency` is the
*latency* unit, the same walk over each group's layers priced by a measured latency table
(:mod:`sddpx_tp.export.latency_table`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from sddpx_tp.export.latency_table import LatencyTable, LayerShape, forward_with_layer_hook, layer_shapes
from sddpx_tp.pruning.surgery import PrunableModel


def output_positions(model: nn.Module, example_input: torch.Tensor) -> dict[nn.Module, int]:
    """Spatial positions (``H * W``; 1 for a linear layer) of every conv's and linear layer's output."""
    positions: dict[nn.Module, int] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        positions[module] = int(output[0, 0].numel()) if isinstance(module, nn.Conv2d) else 1

    forward_with_layer_hook(model, example_input, record)
    return positions


Member = tuple[nn.Module, bool, int]  # a layer of a group, whether it loses output channels, channels each


def _members(prunable: PrunableModel) -> Iterator[tuple[str, list[Member]]]:
    """Each group's root and, per member layer, whether the group removes its outputs (else its inputs) and how
    many of its channels go with one channel of the group (a linear layer after a flatten: H * W features)."""
    graph = prunable.graph
    for root, group in prunable.groups().items():
        channels = len(group[0].idxs)
        members = []
        for item in group:
            handler = item.dep.handler
            outputs = graph.is_out_channel_pruning_fn(handler)
            if outputs or graph.is_in_channel_pruning_fn(handler):
                members.append((item.dep.target.module, outputs, len(item.idxs) // channels))
        yield root, members


def channel_macs(prunable: PrunableModel) -> dict[str, int]:
    """By root conv name, the MACs that one channel of its group costs at the current widths."""
    positions = output_positions(prunable.model, prunable.example_input)
    costs: dict[str, int] = {}
    for root, members in _members(prunable):
        cost = 0
        for module, outputs, per_channel in members:
            if isinstance(module, nn.Conv2d) and module in positions:
                kernel = module.kernel_size[0] * module.kernel_size[1] * positions[module]
                if outputs:
                    cost += per_channel * kernel * module.in_channels // module.groups
                elif module.groups < module.in_channels or module.groups == 1:  # a depthwise one counts as outputs
                    cost += per_channel * kernel * module.out_channels // module.groups
            elif isinstance(module, nn.Linear) and not outputs:
                cost += per_channel * module.out_features
        costs[root] = cost
    return costs


def channel_latency(prunable: PrunableModel, table: LatencyTable) -> dict[str, float]:
    """By root conv name, the nanoseconds that one channel of its group costs in ``table`` at the current widths:
    each member layer's latency now less its latency one channel narrower (a depthwise conv counted once)."""
    shapes = layer_shapes(prunable.model, prunable.example_input)
    names = {module: name for name, module in prunable.model.named_modules()}
    costs: dict[str, float] = {}
    for root, members in _members(prunable):
        cost = 0.0
        for module, outputs, per_channel in members:
            name = names.get(module)
            shape = shapes.get(name) if name is not None else None
            if name is None or shape is None:  # not run (a removed block's layer) or not a conv or linear layer
                continue
            narrower: LayerShape | None = None
            if shape.kind == "conv" and outputs:
                fewer_inputs = shape.in_channels - per_channel if shape.depthwise else shape.in_channels
                narrower = shape.with_channels(fewer_inputs, shape.out_channels - per_channel)
            elif not outputs and (shape.kind == "linear" or not shape.depthwise):
                narrower = shape.with_channels(shape.in_channels - per_channel, shape.out_channels)
            if narrower is not None:
                cost += table.layer_seconds(name, shape) - table.layer_seconds(name, narrower)
        costs[root] = cost * 1e9
    return costs
