"""timm's CNNs by name (``timm:NAME``), their layers rewritten as the plain torch layers they compute.

timm (an optional extra: ``pip install 'sddpx-tp[timm]'``) fuses layers that torchvision keeps apart:
``BatchNormAct2d`` is a BatchNorm, an optional dropout and an activation in one module, and its
squeeze-excitation gates (``SqueezeExcite`` in EfficientNet and MobileNetV3, ``SEModule`` in RegNet and
SE-ResNet) are their own classes. Relevance needs the BatchNorm apart, to fold it into the conv that feeds
it, and the gates recognised, to hold them constant. So a timm model is rewritten once, right after its
weights are loaded, into the same arithmetic in plain layers: ``BatchNormAct2d`` becomes
``nn.Sequential(BatchNorm2d, activation)`` and each gate torchvision's ``SqueezeExcitation`` holding the
same convs. Outputs are unchanged (tests compare them); a pruned model keeps the rewritten layers, and
its state dict names them so (``bn1.0.weight``, ``se.fc1.weight``). Everything else is left as timm built
it, and the traced-graph record (:mod:`sddpx_tp.lrp.traced_graph`) decides whether relevance can pass
every operation, refusing by name what it cannot (``tf_`` models' same-padding convs, for one).

Weights come from a file (``--weights``: a timm state dict, read without running code) or from timm's
local cache (the Hugging Face hub cache, where ``timm.create_model(NAME, pretrained=True)`` put them);
nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from sddpx_tp.errors import SettingError, literal

TIMM_PREFIX = "timm:"
__all__ = ["TIMM_PREFIX", "is_timm_name", "plain_layers", "timm_available", "timm_model"]


def is_timm_name(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def timm_available() -> bool:
    return importlib.util.find_spec("timm") is not None


def _split_norm_act(module: nn.BatchNorm2d) -> nn.Module:
    """timm's BatchNormAct2d (a BatchNorm2d subclass that also applies its ``drop`` and ``act``) as plain layers."""
    like = next(module.buffers(), None)  # the dtype and device the copy keeps (none without statistics)
    batch_norm = nn.BatchNorm2d(
        module.num_features,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
        device=None if like is None else like.device,
        dtype=None if like is None else like.dtype,
    )
    own = {name: value for name, value in module.state_dict().items() if "." not in name}  # not drop's or act's
    batch_norm.load_state_dict(own, strict=True)
    after: list[nn.Module] = [getattr(module, "drop"), getattr(module, "act")]  # noqa: B009  (not typed on BatchNorm2d)
    parts = [batch_norm, *(part for part in after if not isinstance(part, nn.Identity))]
    return nn.Sequential(*parts).train(module.training)


def _torchvision_gate(squeeze: nn.Conv2d, activation: nn.Module, excite: nn.Conv2d, gate: nn.Module
                      ) -> SqueezeExcitation:  # fmt: skip
    """torchvision's gate (mean over the image, squeeze conv, activation, excite conv, gate, times x) holding
    timm's layers: the same arithmetic as timm's ``x * gate(excite(act(squeeze(x.mean((2, 3))))))``."""
    replacement = SqueezeExcitation(squeeze.in_channels, squeeze.out_channels)
    replacement.fc1, replacement.activation, replacement.fc2 = squeeze, activation, excite
    replacement.scale_activation = gate
    return replacement


def _plain_linear(module: nn.Linear) -> nn.Linear:
    plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                      device=module.weight.device, dtype=module.weight.dtype)  # fmt: skip
    plain.load_state_dict(module.state_dict())
    return plain


@functools.cache
def _timm_types() -> tuple[dict[type, type[nn.Module]], type, type, type, type]:
    """timm's classes this module rewrites, imported once (timm is optional: only when a timm model is built)."""
    from timm.layers import activations
    from timm.layers.linear import Linear
    from timm.layers.norm_act import BatchNormAct2d
    from timm.layers.squeeze_excite import SEModule
    from timm.models._efficientnet_blocks import SqueezeExcite

    # timm's own element-wise activations (its choice where torch's are not scriptable): torch's, same arithmetic.
    same_as_torch: dict[type, type[nn.Module]] = {
        activations.Sigmoid: nn.Sigmoid, activations.HardSigmoid: nn.Hardsigmoid, activations.Swish: nn.SiLU,
        activations.HardSwish: nn.Hardswish, activations.GELU: nn.GELU, activations.Tanh: nn.Tanh,
    }  # fmt: skip
    return same_as_torch, Linear, BatchNormAct2d, SqueezeExcite, SEModule


def _replacement(module: nn.Module) -> nn.Module | None:
    """The plain layers ``module`` computes, or None where it is left as it is."""
    same_as_torch, linear, norm_act, squeeze_excite, se_module = _timm_types()
    kind = type(module)
    if kind in same_as_torch:
        return same_as_torch[kind]()
    if kind is linear:  # F.linear inside, so fx would trace into it: torch's nn.Linear is a leaf
        return _plain_linear(module)  # type: ignore[arg-type]
    if kind is norm_act:
        return _split_norm_act(module)  # type: ignore[arg-type]
    if kind is squeeze_excite:
        return _torchvision_gate(module.conv_reduce, module.act1, module.conv_expand, module.gate)  # type: ignore[arg-type]
    if kind is se_module and not module.add_maxpool and isinstance(module.bn, nn.Identity):
        return _torchvision_gate(module.fc1, module.act, module.fc2, module.gate)  # type: ignore[arg-type]
    return None


def plain_layers(model: nn.Module) -> nn.Module:
    """Rewrite ``model``'s fused timm layers in place as the plain torch layers they compute; returns it."""
    for child_name, child in list(model.named_children()):
        replacement = _replacement(child)
        if replacement is not None:
            setattr(model, child_name, replacement)
        plain_layers(replacement or child)  # a new gate holds timm's activations: rewrite them too
    return model


def _cached_weights(config: dict[str, Any], name: str) -> Path:
    """The file of ``name``'s pretrained weights in the local Hugging Face cache, or a SettingError."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = config.get("hf_hub_id")
    named = config.get("hf_hub_filename")
    for filename in [named] if named else ["model.safetensors", "pytorch_model.bin"]:
        found = try_to_load_from_cache(hub_id, filename) if hub_id else None
        if isinstance(found, str):
            return Path(found)
    raise SettingError(
        f"timm:{literal(name)}'s weights are not in the local cache (nothing is downloaded): pass a state dict with "
        "{weights}, or {random_init} for an untrained model"
    )


def timm_model(
    name: str, weights: Path | None, num_classes: int | None, random_init: bool, load: Callable[[nn.Module, Path], None]
) -> tuple[nn.Module, dict[str, Any]]:
    """The timm model ``timm:NAME`` with its weights, rewritten by :func:`plain_layers`, and timm's pretrained
    config (input size, mean, std, crop fraction). ``load(model, path)`` loads a state dict safely."""
    if not timm_available():
        raise SettingError("{model} timm:NAME needs timm, an optional extra: pip install 'sddpx-tp[timm]'")
    import timm

    bare = name.removeprefix(TIMM_PREFIX)
    if not bare or not timm.is_model(bare):
        close = timm.list_models(f"*{bare.split('_')[0]}*")[:5] if bare else []
        hint = f" (close: {', '.join(close)})" if close else ""
        raise SettingError(f"timm has no model {literal(repr(bare))}{literal(hint)}: choose another {{model}}")
    options: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    try:
        model = timm.create_model(bare, pretrained=False, **options)
    except (RuntimeError, ValueError, KeyError) as error:  # an unknown pretrained tag, a bad option
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SettingError(f"timm cannot build {literal(bare)}: {literal(reason)}; check {{model}}") from None
    config = dict(getattr(model, "pretrained_cfg", {}) or {})
    pretrained_classes = config.get("num_classes", 1000)
    if weights is None and not random_init and num_classes not in (None, pretrained_classes):
        raise SettingError(
            f"timm:{literal(bare)}'s pretrained weights are {pretrained_classes}-way: drop {{num_classes}} "
            "or pass {weights}"
        )
    if weights is not None:
        load(model, weights)
    elif not random_init:
        load(model, _cached_weights(config, bare))
    return plain_layers(model.eval()), config
