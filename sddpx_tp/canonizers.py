"""Which zennit canonizers an architecture needs, and the residual canonizers zennit lacks.

LRP is only correct on a *canonical* graph: BatchNorm folded into the conv before it,
and every residual addition done by a module (zennit's ``Sum``) so that a rule can
split relevance between the branches. A bare ``x + f(x)`` passes the whole relevance
to both branches and doubles it at every block. An architecture this module does not
recognise is refused with :class:`UnsupportedArchitectureError`, never guessed at.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.canonizers import AttributeCanonizer, Canonizer, NamedMergeBatchNorm, SequentialMergeBatchNorm
from zennit.layer import Sum
from zennit.torchvision import ResNetCanonizer


class UnsupportedArchitectureError(ValueError):
    """Raised when relevance cannot be propagated correctly through a model."""


def _mobilenet_v2_block_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if not self.use_res_connect:
        return self.conv(x)
    return self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))


def _mobilenet_v2_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    # torchvision pools with a functional call; a module lets the Norm rule see it.
    x = self.canonizer_pool(self.features(x))
    return self.classifier(torch.flatten(x, 1))


def _efficientnet_block_forward(self: Any, inputs: torch.Tensor, drop_connect_rate: Any = None) -> torch.Tensor:
    x = inputs
    if self._block_args.expand_ratio != 1:
        x = self._swish(self._bn0(self._expand_conv(inputs)))
    x = self._swish(self._bn1(self._depthwise_conv(x)))
    if self.has_se:
        raise UnsupportedArchitectureError("EfficientNet blocks with squeeze-excitation are not supported")
    x = self._bn2(self._project_conv(x))
    block = self._block_args
    if self.id_skip and block.stride == 1 and block.input_filters == block.output_filters:
        x = self.canonizer_sum(torch.stack([x, inputs], dim=-1))
    return x


def _attribute_canonizer(block_type: type, attributes: Callable[[nn.Module], dict[str, Any]]) -> Canonizer:
    def attribute_map(name: str, module: nn.Module) -> dict[str, Any] | None:
        return attributes(module) if type(module) is block_type else None

    return AttributeCanonizer(attribute_map)


def _efficientnet_types() -> tuple[type, type, type] | None:
    try:
        from efficientnet_lite_pytorch.model import EfficientNet, MBConvBlock
        from efficientnet_lite_pytorch.utils import Identity
    except ImportError:
        return None
    return EfficientNet, MBConvBlock, Identity


def _efficientnet_bn_pairs(model: nn.Module) -> list[tuple[list[str], str]]:
    """Conv/BN pairs of an EfficientNet-Lite, by name.

    Its convs pad through a child module, so they are not leaves and zennit's
    sequential search cannot see that a BatchNorm follows them.
    """
    pairs = [(["_conv_stem"], "_bn0"), (["_conv_head"], "_bn1")]
    blocks: nn.ModuleList = model._blocks  # type: ignore[assignment]
    for index, block in enumerate(blocks):
        prefix = f"_blocks.{index}."
        if hasattr(block, "_expand_conv"):
            pairs.append(([prefix + "_expand_conv"], prefix + "_bn0"))
        pairs.append(([prefix + "_depthwise_conv"], prefix + "_bn1"))
        pairs.append(([prefix + "_project_conv"], prefix + "_bn2"))
    return pairs


# Functions and methods that a plain feed-forward graph may contain between modules.
_SHAPE_ONLY_OPS = {torch.flatten, torch.reshape, operator.getitem, getattr}
_SHAPE_ONLY_METHODS = {"view", "reshape", "flatten", "size", "contiguous"}
_ALLOWED_LEAF_TYPES: tuple[type, ...] = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Flatten,
    nn.Identity,
    nn.ZeroPad2d,
)


def _check_leaves(model: nn.Module, extra_types: tuple[type, ...] = ()) -> None:
    allowed = _ALLOWED_LEAF_TYPES + extra_types
    for name, module in model.named_modules():
        if next(module.children(), None) is None and not isinstance(module, allowed):
            raise UnsupportedArchitectureError(
                f"no LRP rule for layer {name!r} of type {type(module).__name__}; "
                "supported layers: Conv2d, Linear, BatchNorm, ReLU/ReLU6, pooling, Dropout"
            )


def _check_plain_feed_forward(model: nn.Module) -> None:
    """Refuse graphs with residual adds, products or concatenations we have no canonizer for."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:
        raise UnsupportedArchitectureError(
            f"cannot trace {type(model).__name__} to check it for residual connections ({error}); "
            "supported: torchvision ResNet, VGG, MobileNetV2, EfficientNet-Lite, and plain conv nets"
        ) from None
    for node in graph.nodes:
        if node.op == "call_function" and node.target not in _SHAPE_ONLY_OPS:
            raise UnsupportedArchitectureError(
                f"{type(model).__name__} computes {getattr(node.target, '__name__', node.target)} "
                f"between tensors at {node.name!r}; relevance through it would be wrong. "
                "Supported: torchvision ResNet, VGG, MobileNetV2, EfficientNet-Lite, and plain conv nets"
            )
        if node.op == "call_method" and node.target not in _SHAPE_ONLY_METHODS:
            raise UnsupportedArchitectureError(
                f"{type(model).__name__} calls tensor method {node.target!r} at {node.name!r}; "
                "relevance through it would be wrong"
            )


def canonizers_for(model: nn.Module) -> list[Canonizer]:
    """The zennit canonizers that make ``model`` canonical for LRP.

    Raises :class:`UnsupportedArchitectureError` for a model whose relevance would be
    silently wrong (unknown residual blocks, gating products, unknown layers).
    """
    modules = list(model.modules())
    if any(isinstance(module, (BasicBlock, Bottleneck)) for module in modules):
        _check_leaves(model)
        return [ResNetCanonizer()]
    if isinstance(model, MobileNetV2):
        _check_leaves(model)
        return [
            SequentialMergeBatchNorm(),
            _attribute_canonizer(
                InvertedResidual,
                lambda block: {"forward": _mobilenet_v2_block_forward.__get__(block), "canonizer_sum": Sum()},
            ),
            _attribute_canonizer(
                MobileNetV2,
                lambda net: {
                    "forward": _mobilenet_v2_forward.__get__(net),
                    "canonizer_pool": nn.AdaptiveAvgPool2d(1),
                },
            ),
        ]
    efficientnet = _efficientnet_types()
    if efficientnet is not None and isinstance(model, efficientnet[0]):
        if any(getattr(block, "has_se", False) for block in model._blocks):  # type: ignore[union-attr]
            raise UnsupportedArchitectureError(
                "EfficientNet with squeeze-excitation gates is not supported (only the Lite variants)"
            )
        _check_leaves(model, extra_types=(efficientnet[2],))  # its own Identity pads nothing
        return [
            NamedMergeBatchNorm(_efficientnet_bn_pairs(model)),
            _attribute_canonizer(
                efficientnet[1],
                lambda block: {"forward": _efficientnet_block_forward.__get__(block), "canonizer_sum": Sum()},
            ),
        ]
    if any(isinstance(module, InvertedResidual) for module in modules):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} uses MobileNetV2 blocks outside torchvision's MobileNetV2; not supported"
        )
    _check_leaves(model)
    _check_plain_feed_forward(model)
    return [SequentialMergeBatchNorm()]
