"""What a layer costs in time: a per-layer latency table, and what one channel of each group costs in it.

The table (issue 31, part 2, the *latency* unit) holds, for every conv and linear layer of the
unpruned model (by qualified name), its latency on the deployment runtime measured at a grid of
channel counts: input channels x output channels for a dense conv, the channel count for a
depthwise conv (whose input, output and groups shrink together), the input features for a linear
layer. Between grid points the latency is interpolated bilinearly (piecewise, as NetAdapt's
lookup tables are used): a model's predicted latency is the sum over the layers its forward runs.
A grouped conv that is not depthwise (ResNeXt) is timed at its full width only and scaled by its
MACs, the one place the table falls back to counting.

The table is pure data: :mod:`sddpx_tp.export.layer_latency` measures one (ONNX Runtime) and caches
it. Here it is read: :func:`predicted_seconds` for a whole model, :func:`channel_latency` for one
channel of each prunable group, as :func:`sddpx_tp.pruning.costs.channel_macs` counts MACs.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

GRID_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)  # of the unpruned width, where a layer is timed


@dataclass(frozen=True)
class LayerShape:
    """A conv or linear layer as the runtime sees it (batch 1)."""

    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    input_size: tuple[int, int] = (1, 1)  # H, W of the input; (1, 1) for a linear layer

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def grouped(self) -> bool:
        """Grouped but not depthwise: timed at full width only (see the module's note)."""
        return self.kind == "conv" and self.groups > 1 and not self.depthwise

    def with_channels(self, in_channels: int, out_channels: int) -> LayerShape:
        groups = in_channels if self.depthwise else self.groups
        return LayerShape(self.kind, in_channels, out_channels, self.kernel, self.stride, self.padding,
                          self.dilation, groups, self.input_size)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerShape:
        def pair(key: str) -> tuple[int, int]:
            return int(data[key][0]), int(data[key][1])

        return cls(str(data["kind"]), int(data["in_channels"]), int(data["out_channels"]), pair("kernel"),
                   pair("stride"), pair("padding"), pair("dilation"), int(data["groups"]),
                   pair("input_size"))  # fmt: skip


def grid_counts(width: int) -> list[int]:
    """Channel counts a layer of ``width`` channels is timed at (GRID_FRACTIONS of it, at least 1)."""
    return sorted({max(1, round(fraction * width)) for fraction in GRID_FRACTIONS})


@dataclass
class LayerGrid:
    """One layer's measured latencies: ``seconds[i][j]`` at ``in_counts[i]`` and ``out_counts[j]`` channels."""

    shape: LayerShape  # at the unpruned widths
    in_counts: list[int]
    out_counts: list[int]
    seconds: list[list[float]]

    def latency(self, in_channels: int, out_channels: int) -> float:
        """Interpolated seconds at these widths (bilinear within a cell; the nearest cell's plane outside)."""
        if self.shape.grouped:  # timed at full width only: scaled by MACs
            full = self.shape.in_channels * self.shape.out_channels
            return self.seconds[0][0] * in_channels * out_channels / full
        i, x = _cell(self.in_counts, in_channels)
        j, y = _cell(self.out_counts, out_channels)
        s = self.seconds
        i1, j1 = min(i + 1, len(self.in_counts) - 1), min(j + 1, len(self.out_counts) - 1)  # a one-point axis
        value = _lerp(_lerp(s[i][j], s[i][j1], y), _lerp(s[i1][j], s[i1][j1], y), x)
        return max(value, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape.to_dict(), "in_counts": self.in_counts, "out_counts": self.out_counts,
                "seconds": self.seconds}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerGrid:
        return cls(LayerShape.from_dict(data["shape"]), list(data["in_counts"]), list(data["out_counts"]),
                   [list(row) for row in data["seconds"]])  # fmt: skip


def _cell(counts: list[int], value: int) -> tuple[int, float]:
    """The grid cell ``value`` falls in (its lower index) and where in it (0..1; beyond when outside)."""
    if len(counts) == 1:
        return 0, 0.0
    index = min(max(bisect.bisect_right(counts, value) - 1, 0), len(counts) - 2)
    low, high = counts[index], counts[index + 1]
    return index, (value - low) / (high - low)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


@dataclass
class LatencyTable:
    """Measured per-layer latencies of one architecture at one input size, on one runtime and thread count."""

    layers: dict[str, LayerGrid]
    runtime: str  # e.g. "onnxruntime 1.23.2 CPUExecutionProvider, 1 thread"
    measuring_seconds: float = 0.0  # what measuring it cost (0 when read from a cache)

    def layer_seconds(self, name: str, shape: LayerShape) -> float:
        grid = self.layers.get(name)
        if grid is None:
            raise KeyError(f"the latency table has no layer {name!r}: it was measured on another architecture")
        if shape.kind == "linear" or shape.depthwise:  # one axis: input features, or the depthwise channels
            return grid.latency(shape.in_channels, grid.out_counts[0])
        return grid.latency(shape.in_channels, shape.out_channels)

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "layers": {name: grid.to_dict() for name, grid in self.layers.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        layers = {name: LayerGrid.from_dict(grid) for name, grid in data["layers"].items()}
        return cls(layers, str(data["runtime"]))


def layer_shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, LayerShape]:
    """Every conv and linear layer the forward runs (a removed block's are not run), by qualified name."""
    names = {module: name for name, module in model.named_modules()}
    shapes: dict[str, LayerShape] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            size = (int(inputs[0].shape[-2]), int(inputs[0].shape[-1]))
            static = getattr(module, "static_padding", None)  # TF-style "same" convs pad first (EfficientNet-Lite)
            if isinstance(static, nn.ZeroPad2d):
                left, right, top, bottom = static.padding
                size = (size[0] + top + bottom, size[1] + left + right)
            if isinstance(module.padding, str):  # "same" (stride 1) or "valid"
                same = module.padding == "same"
                pairs = zip(module.dilation, module.kernel_size, strict=True)
                padding = tuple(d * (k - 1) // 2 if same else 0 for d, k in pairs)
            else:
                padding = module.padding
            shapes[names[module]] = LayerShape("conv", module.in_channels, module.out_channels,
                                               _pair(module.kernel_size), _pair(module.stride), _pair(padding),
                                               _pair(module.dilation), module.groups, size)  # fmt: skip
        else:
            assert isinstance(module, nn.Linear)
            shapes[names[module]] = LayerShape("linear", module.in_features, module.out_features)

    forward_with_layer_hook(model, example_input, record)
    return shapes


LayerHook = Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]


def forward_with_layer_hook(model: nn.Module, example_input: torch.Tensor, hook: LayerHook) -> None:
    """One eval-mode forward of one input with ``hook`` on every conv and linear layer (the mode comes back)."""
    layers = [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    handles = [layer.register_forward_hook(hook) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input[:1])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def predicted_seconds(table: LatencyTable, model: nn.Module, example_input: torch.Tensor) -> float:
    """The table's latency of ``model``: the sum over the conv and linear layers its forward runs."""
    return sum(table.layer_seconds(name, shape) for name, shape in layer_shapes(model, example_input).items())
