"""One record per architecture family that relevance can be propagated through correctly.

In the spirit of timm's pretrained configs and zennit's torchvision canonizers, an
:class:`ArchitectureSupport` says everything sddpx-tp needs to know about a family:
how to recognise a model of it, which canonizers make it canonical for LRP, which
extra leaf layers it may contain, how its inputs are preprocessed, where its
classifier head is, and which torchvision builders make it. A new family is one new
record in :func:`families`; nothing else dispatches on model types.

:func:`support_for` runs a family's checks once (leaf layers, and for plain nets an
fx trace); :meth:`ArchitectureSupport.canonizers` then only builds canonizers, so a
relevance pass over many batches checks the model once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torchvision import models as tv
from torchvision.models.efficientnet import EfficientNet
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.mobilenetv3 import MobileNetV3
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import StochasticDepth
from zennit.canonizers import Canonizer
from zennit.torchvision import ResNetCanonizer

from sddpx_tp.errors import UnsupportedArchitectureError
from sddpx_tp.lrp.canonizers import (
    check_leaves,
    efficientnet_lite_canonizers,
    efficientnet_types,
    gated_mobile_canonizers,
    mobilenet_v2_canonizers,
    refuse_foreign_inverted_residuals,
    refuse_squeeze_excitation,
    squeeze_excitation_convs,
)
from sddpx_tp.lrp.traced_graph import canonical_graph, traced_graph_canonizers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-Lite models normalise with (x - 127) / 128.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


@dataclass(frozen=True)
class Preprocessing:
    """A family's input defaults: normalisation, crop size, resize before the crop."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: int = 224
    resize_size: int = 256


IMAGENET_PREPROCESSING = Preprocessing()


def last_linear(model: nn.Module) -> str:
    """Qualified name of the last ``nn.Linear`` in module order: the class head of most classifiers."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head to restrict to chosen classes")
    return names[-1]


def _nothing_to_refuse(model: nn.Module) -> None:
    return None


@dataclass(frozen=True)
class ArchitectureSupport:
    """What one architecture family needs for correct LRP, and how to feed and restrict it."""

    family: str
    matches: Callable[[nn.Module], bool]  # cheap: types only, no checks
    canonizers: Callable[[nn.Module], list[Canonizer]]  # builds them, checks nothing (see check)
    extra_leaf_types: tuple[type, ...] = ()  # leaf layers allowed besides the ones with LRP rules
    # Structural refusals the leaf check cannot see (gating products, blocks out of place); run first.
    refuse: Callable[[nn.Module], None] = _nothing_to_refuse
    # Families without a hand-written record are traced: every operation between modules must have a rule.
    traced: bool = False
    preprocessing: Preprocessing = IMAGENET_PREPROCESSING
    classifier: Callable[[nn.Module], str] = last_linear  # qualified name of the class head
    torchvision_modules: tuple[str, ...] = ()  # modules of the torchvision builders that make this family
    # (squeeze conv, excite conv) of each gate x * g(x): relevance treats g as a constant weight, so the gate's
    # convs get none and are not ranked; the squeeze channels are not pruned (the excite conv's outputs go with
    # the channels it gates).
    gates: Callable[[nn.Module], list[tuple[str, str]]] = lambda model: []

    def check(self, model: nn.Module) -> None:
        """Raise :class:`UnsupportedArchitectureError` if relevance through ``model`` would be wrong."""
        self.refuse(model)
        check_leaves(model, self.extra_leaf_types)
        if self.traced:
            canonical_graph(model)


def _has_resnet_blocks(model: nn.Module) -> bool:
    return any(isinstance(module, (BasicBlock, Bottleneck)) for module in model.modules())


RESNET = ArchitectureSupport(
    family="resnet",  # resnet*, wide_resnet*, resnext*: BasicBlock / Bottleneck
    matches=_has_resnet_blocks,
    canonizers=lambda model: [ResNetCanonizer()],
    torchvision_modules=("torchvision.models.resnet",),
)
MOBILENET_V2 = ArchitectureSupport(
    family="mobilenet_v2",
    matches=lambda model: isinstance(model, MobileNetV2),
    canonizers=mobilenet_v2_canonizers,
    torchvision_modules=("torchvision.models.mobilenetv2",),
)
MOBILENET_V3 = ArchitectureSupport(
    family="mobilenet_v3",  # squeeze-excitation gates, hardswish
    matches=lambda model: isinstance(model, MobileNetV3),
    canonizers=gated_mobile_canonizers,
    extra_leaf_types=(nn.Hardswish, nn.Hardsigmoid),
    gates=squeeze_excitation_convs,
    torchvision_modules=("torchvision.models.mobilenetv3",),
)
EFFICIENTNET = ArchitectureSupport(
    family="efficientnet",  # torchvision's B0-B7 and V2: squeeze-excitation gates, SiLU, stochastic depth
    matches=lambda model: isinstance(model, EfficientNet),
    canonizers=gated_mobile_canonizers,
    extra_leaf_types=(nn.SiLU, nn.Sigmoid, StochasticDepth),  # the sigmoid only inside gates
    gates=squeeze_excitation_convs,
    torchvision_modules=("torchvision.models.efficientnet",),
)


def _refuse_convolution_heads(model: nn.Module) -> None:
    if not any(isinstance(module, nn.Linear) for module in model.modules()):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no nn.Linear class head (its classes come from a conv, as in SqueezeNet): "
            "restricting it to chosen classes is not supported yet"
        )


def _refuse_traced_graph_problems(model: nn.Module) -> None:
    refuse_foreign_inverted_residuals(model)
    _refuse_convolution_heads(model)


TRACED_GRAPH = ArchitectureSupport(
    # VGG, AlexNet, DenseNet, GoogLeNet, Inception v3, MNASNet, RegNet, plain conv nets: anything whose traced graph has
    # a rule for every operation between modules (concatenations, residual sums, pooling; lrp.traced_graph).
    family="traced graph",
    matches=lambda model: True,
    canonizers=traced_graph_canonizers,
    # Element-wise activations pass relevance unchanged, as ReLU6 does (zennit's Pass rule): the sigmoids of gates
    # (held constant), and the SiLU, hardswish and GELU of timm's and other mobile nets.
    extra_leaf_types=(nn.Sigmoid, nn.Hardsigmoid, nn.SiLU, nn.Hardswish, nn.GELU),
    refuse=_refuse_traced_graph_problems,
    traced=True,
    torchvision_modules=tuple(
        f"torchvision.models.{module}"
        for module in ("vgg", "alexnet", "densenet", "googlenet", "inception", "mnasnet", "regnet")
    ),
    gates=squeeze_excitation_convs,
)


def _efficientnet_lite() -> ArchitectureSupport | None:
    types = efficientnet_types()
    if types is None:  # the optional package is not installed: no such models can exist
        return None
    network, _, padding = types
    return ArchitectureSupport(
        family="efficientnet_lite",
        matches=lambda model: isinstance(model, network),
        canonizers=efficientnet_lite_canonizers,
        extra_leaf_types=(padding,),  # its own Identity pads nothing
        refuse=refuse_squeeze_excitation,
        preprocessing=Preprocessing(mean=LITE_MEAN, std=LITE_STD),
    )


@functools.cache
def families() -> tuple[ArchitectureSupport, ...]:
    """Every record, in the order they are tried; the traced-graph one matches anything, so comes last."""
    lite = _efficientnet_lite()
    lite_records = [lite] if lite is not None else []
    return (RESNET, MOBILENET_V2, MOBILENET_V3, EFFICIENTNET, *lite_records, TRACED_GRAPH)


def family_of(model: nn.Module) -> ArchitectureSupport:
    """The record that recognises ``model``, without checking that it is supported (see :func:`support_for`)."""
    return next(support for support in families() if support.matches(model))


def support_for(model: nn.Module) -> ArchitectureSupport:
    """The record for ``model``, after its checks (leaf layers; an fx trace for plain nets) passed.

    Raises :class:`~sddpx_tp.errors.UnsupportedArchitectureError` for a model whose
    relevance would be silently wrong (gating products outside known gates, channel
    shuffles, unknown layers) or whose channels cannot be removed (grouped convolutions).
    """
    support = family_of(model)
    support.check(model)
    return support


def canonizers_for(model: nn.Module) -> list[Canonizer]:
    """The zennit canonizers that make ``model`` canonical for LRP, after checking it is supported."""
    return support_for(model).canonizers(model)


def torchvision_family(name: str) -> ArchitectureSupport | None:
    """The record for torchvision model ``name``, known from its builder's module (nothing is built)."""
    module = tv.get_model_builder(name).__module__
    return next((support for support in families() if module in support.torchvision_modules), None)
