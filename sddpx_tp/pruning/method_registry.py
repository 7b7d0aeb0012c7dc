"""The method registry: each pruning method is a function registered under its name.

A method module declares what it needs and does::

    @register_method("my-method", evaluates_trials=True)
    def my_method(session: PruningSession, config: PruneConfig) -> None:
        ...  # remove channels from session.current, then session.accept(...)

``needs_training``: the method cannot run without training images (progressive
retraining). ``retrains``: it trains as it goes, so fine-tuning afterwards is
refused. ``evaluates_trials``: it evaluates candidate steps on the references
before accepting one, so adaptive compensation (both variants evaluated) is
possible; ``compensation="auto"`` then means adaptive, otherwise none.

The built-in methods are registered when their modules are first needed; a new
method is one new module that registers itself on import. :func:`check_config`
holds every rule that ties settings to the method, in one place.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sddpx_tp.errors import SettingError
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.criteria import names_code, user_importance
from sddpx_tp.pruning.session import PruningSession

MethodFunction = Callable[[PruningSession, PruneConfig], None]
Compensation = Literal["adaptive", "always", "never"]

# Modules that register the built-in methods (imported on first lookup, so that this
# module depends on none of them and they may all depend on it).
_BUILTIN_MODULES = ("sddpx_tp.pruning.methods", "sddpx_tp.pruning.progressive")


@dataclass(frozen=True)
class Method:
    name: str
    run: MethodFunction
    needs_training: bool = False
    retrains: bool = False
    evaluates_trials: bool = False


_REGISTRY: dict[str, Method] = {}


def register_method(
    name: str, *, needs_training: bool = False, retrains: bool = False, evaluates_trials: bool = False
) -> Callable[[MethodFunction], MethodFunction]:
    """Register the decorated function as method ``name`` (a second registration replaces the first)."""

    def register(function: MethodFunction) -> MethodFunction:
        if function.__module__ in _BUILTIN_MODULES and name in _REGISTRY:
            # The built-ins load on first lookup, which may come after a user replaced one of them:
            # the user's registration stays.
            return function
        _REGISTRY[name] = Method(name, function, needs_training, retrains, evaluates_trials)
        return function

    return register


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_methods() -> list[str]:
    """Registered method names: the built-in ones in the papers' order, then any others."""
    _load_builtins()
    builtin = ("px", "dpx", "sd-dpx", "progressive")
    return sorted(_REGISTRY, key=lambda name: builtin.index(name) if name in builtin else len(builtin))


def get_method(name: str) -> Method:
    _load_builtins()
    if name not in _REGISTRY:
        raise SettingError(f"{{method}} must be one of {', '.join(_REGISTRY)}, not {name!r}")
    return _REGISTRY[name]


def compensation_for(config: PruneConfig) -> Compensation:
    """What ``config.repair.compensation`` means for its method (``auto`` resolved)."""
    if config.repair.compensation != "auto":
        return config.repair.compensation
    if "lstsq" in config.repair.methods:
        return "never"  # the reconstruction fits each consumer's intercept: it does what compensation does
    return "adaptive" if get_method(config.method).evaluates_trials and config.search.masked_trials else "never"


def check_config(config: PruneConfig, has_training: bool) -> Method:
    """Refuse settings that contradict the method or the data; returns the method.

    ``has_training``: training images are given (or, in a front end, a folder of them).
    """
    method = get_method(config.method)
    if names_code(config.criterion):
        user_importance(config.criterion)  # an unimportable criterion is refused before anything runs
    finetunes = config.retraining.finetune_epochs > 0
    if method.retrains and finetunes:
        raise SettingError(
            f"{{finetune_epochs}} is for methods that do not retrain (px, dpx, sd-dpx); "
            f"{method.name} retrains as it goes"
        )
    if not has_training and (method.needs_training or finetunes):
        wants = f"{{method}} {method.name}" if method.needs_training else "{finetune_epochs}"
        raise SettingError(f"{wants} needs {{training}}: training images of the same classes as the references")
    if has_training and not (method.needs_training or finetunes):
        raise SettingError(
            "{training} images are used by methods that retrain or by {finetune_epochs}; "
            "add one of them or leave the training images out"
        )
    if config.target.stop and method.retrains:
        raise SettingError(
            f"{{stop_at_target}} is for methods that do not retrain (px, dpx, sd-dpx): {method.name} loses accuracy "
            "when it prunes a layer and regains it when it retrains, so a step that misses the target is no end"
        )
    if config.blocks and method.retrains:
        raise SettingError(f"{{blocks}} is for px, dpx and sd-dpx; {method.name} prunes and retrains by layers")
    if config.target.speedup is not None and method.retrains:
        raise SettingError(f"{{target_speedup}} is for px, dpx and sd-dpx; {method.name} prunes and retrains by layers")
    if config.target.macs is not None and method.retrains:
        raise SettingError(f"{{target_macs}} is for px, dpx and sd-dpx; {method.name} prunes and retrains by layers")
    if config.cost != "filters" and method.retrains:
        raise SettingError(f"{{cost}} {config.cost} is for px, dpx and sd-dpx; {method.name} prunes by filters")
    if config.repair.compensation == "adaptive" and not method.evaluates_trials:
        raise SettingError(
            f"{{compensation}} adaptive needs a method that evaluates its trials (sd-dpx); {method.name} evaluates "
            "none: choose always or never"
        )
    return method
