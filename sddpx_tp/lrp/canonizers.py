"""The canonizers zennit lacks, and the checks that refuse what no canonizer makes correct.

LRP is only correct on a *canonical* graph: BatchNorm folded into the conv before it,
and every residual addition done by a module (zennit's ``Sum``) so that a rule can
split relevance between the branches. A bare ``x + f(x)`` passes the whole relevance
to both branches and doubles it at every block. Which family gets which of these
pieces is recorded in :mod:`sddpx_tp.lrp.architectures`; a model it does not recognise
is refused with :class:`UnsupportedArchitectureError`, never guessed at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
from torchvision.ops.misc import SqueezeExcitation
from zennit.canonizers import AttributeCanonizer, Canonizer, NamedMergeBatchNorm, SequentialMergeBatchNorm
from zennit.layer import Sum

# Defined with the other deliberate errors; still importable from here, as before.
from sddpx_tp.errors import UnsupportedArchitectureError

__all__ = [
    "ConstantGate",
    "UnsupportedArchitectureError",
    "check_leaves",
    "efficientnet_lite_canonizers",
    "efficientnet_types",
    "gated_mobile_canonizers",
    "make_exact_identity",
    "mobilenet_v2_canonizers",
    "refuse_foreign_inverted_residuals",
    "refuse_squeeze_excitation",
    "squeeze_excitation_convs",
]


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


def _residual_block_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """torchvision's MobileNetV3 and EfficientNet blocks: ``block(x)`` (stochastic depth, an identity in eval
    mode, on it) plus ``x`` through a ``Sum`` module."""
    result = self.block(x)
    if not self.use_res_connect:
        return result
    depth = getattr(self, "stochastic_depth", None)
    return self.canonizer_sum(torch.stack([x, result if depth is None else depth(result)], dim=-1))


class ConstantGate(nn.Module):
    """``x * scale`` with ``scale`` a constant: a gate's product as a module, so that each engine passes the
    relevance of its output to ``x`` whole (zennit's Pass rule, registered for it by the zennit engine; the
    fast engine's relevance is activation times gradient, and ``d(scale * x)/dx`` is ``scale``)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.scale is not None, "set by the gate's forward just before the call"
        return x * self.scale


def _gated_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """A squeeze-excitation gate ``x * g(x)`` with ``g`` a constant weight (signal-take-all): all relevance
    passes to ``x``, none to the gate's own layers."""
    self.canonizer_gate.scale = self._scale(x).detach()
    return self.canonizer_gate(x)


def _attribute_canonizer(block_type: type, attributes: Callable[[nn.Module], dict[str, Any]]) -> Canonizer:
    def attribute_map(name: str, module: nn.Module) -> dict[str, Any] | None:
        return attributes(module) if type(module) is block_type else None

    return AttributeCanonizer(attribute_map)


def mobilenet_v2_canonizers(model: nn.Module) -> list[Canonizer]:
    """torchvision's MobileNetV2: folded BatchNorms, a ``Sum`` module per residual, a pooling module."""
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


def squeeze_excitation_convs(model: nn.Module) -> list[tuple[str, str]]:
    """(squeeze conv, excite conv) of every torchvision squeeze-excitation gate, by qualified name."""
    return [(f"{name}.fc1", f"{name}.fc2") for name, module in model.named_modules()
            if isinstance(module, SqueezeExcitation)]  # fmt: skip


class ExactSequentialMergeBatchNorm(SequentialMergeBatchNorm):
    """zennit's merge, with the emptied BatchNorm an exact identity: zennit sets its variance to 1, which leaves
    a scale of ``1 / sqrt(1 + eps)``: 0.9995 a layer at MobileNetV3's ``eps`` of 0.001, 2 % over the net."""

    @staticmethod
    def merge_batch_norm(modules: list[nn.Module], batch_norm: nn.BatchNorm2d) -> None:
        SequentialMergeBatchNorm.merge_batch_norm(modules, batch_norm)
        make_exact_identity(batch_norm)


def make_exact_identity(batch_norm: nn.BatchNorm2d) -> None:
    """After zennit's merge (mean 0, weight 1, bias 0, variance 1): a variance of ``1 - eps`` so that the
    emptied BatchNorm divides by exactly 1."""
    assert batch_norm.running_var is not None
    batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 1 - batch_norm.eps)


def gated_mobile_canonizers(model: nn.Module) -> list[Canonizer]:
    """torchvision's MobileNetV3 (and its other gated mobile blocks): folded BatchNorms, a ``Sum`` module per
    residual, squeeze-excitation gates as constant weights."""
    blocks = {type(module) for module in model.modules() if hasattr(module, "use_res_connect")}

    def residual(module: nn.Module) -> dict[str, Any]:
        return {"forward": _residual_block_forward.__get__(module), "canonizer_sum": Sum()}

    return [
        ExactSequentialMergeBatchNorm(),
        *(_attribute_canonizer(block, residual) for block in blocks),
        _attribute_canonizer(
            SqueezeExcitation,
            lambda gate: {"forward": _gated_forward.__get__(gate), "canonizer_gate": ConstantGate()},
        ),
    ]


def efficientnet_types() -> tuple[type, type, type] | None:
    """EfficientNet, its MBConvBlock and its padding Identity; None without ``efficientnet_lite_pytorch``."""
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
        if not hasattr(block, "_depthwise_conv"):  # a block removed whole (--blocks): its shortcut, nothing to fold
            continue
        if hasattr(block, "_expand_conv"):
            pairs.append(([prefix + "_expand_conv"], prefix + "_bn0"))
        pairs.append(([prefix + "_depthwise_conv"], prefix + "_bn1"))
        pairs.append(([prefix + "_project_conv"], prefix + "_bn2"))
    return pairs


def efficientnet_lite_canonizers(model: nn.Module) -> list[Canonizer]:
    """EfficientNet-Lite: BatchNorms folded by name, a ``Sum`` module per residual."""
    types = efficientnet_types()
    assert types is not None, "only called for a model of efficientnet_lite_pytorch, which is then importable"
    return [
        NamedMergeBatchNorm(_efficientnet_bn_pairs(model)),
        _attribute_canonizer(
            types[1],
            lambda block: {"forward": _efficientnet_block_forward.__get__(block), "canonizer_sum": Sum()},
        ),
    ]


def refuse_squeeze_excitation(model: nn.Module) -> None:
    """EfficientNet's squeeze-excitation gates multiply two activations: no LRP rule splits that."""
    if any(getattr(block, "has_se", False) for block in model._blocks):  # type: ignore[union-attr]
        raise UnsupportedArchitectureError(
            "EfficientNet with squeeze-excitation gates is not supported (only the Lite variants)"
        )


def refuse_foreign_inverted_residuals(model: nn.Module) -> None:
    """MobileNetV2 blocks are only canonized inside torchvision's MobileNetV2, whose forward we replace."""
    if any(isinstance(module, InvertedResidual) for module in model.modules()):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} uses MobileNetV2 blocks outside torchvision's MobileNetV2; not supported"
        )


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
    nn.Sequential,  # a leaf only when empty: the identity (ShuffleNetV2's unused branch)
)


def check_leaves(model: nn.Module, extra_types: tuple[type, ...] = ()) -> None:
    """Refuse a model with a leaf layer that has no LRP rule (``extra_types`` are allowed too)."""
    allowed = _ALLOWED_LEAF_TYPES + extra_types
    for name, module in model.named_modules():
        if next(module.children(), None) is None and not isinstance(module, allowed):
            raise UnsupportedArchitectureError(
                f"no LRP rule for layer {name!r} of type {type(module).__name__}; "
                "supported layers: Conv2d, Linear, BatchNorm, ReLU/ReLU6, pooling, Dropout"
            )
