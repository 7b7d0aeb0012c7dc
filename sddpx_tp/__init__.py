"""sddpx-tp: LRP-guided filter pruning (PX, DPX, SD-DPX) for few-class transfer.

The public names are imported on first use (PEP 562), so that importing the package, as the
command line does before it knows its verb, does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sddpx_tp.api import PruneResult, prune
    from sddpx_tp.errors import UnsupportedArchitectureError
    from sddpx_tp.lrp.relevance import RelevanceConfig, conv_layers, filter_relevance, layer_relevance
    from sddpx_tp.pruning.config import PruneConfig
    from sddpx_tp.pruning.method_registry import available_methods, register_method
    from sddpx_tp.pruning.training import TrainingConfig

_PUBLIC = {
    "PruneConfig": "sddpx_tp.pruning.config",
    "PruneResult": "sddpx_tp.api",
    "RelevanceConfig": "sddpx_tp.lrp.relevance",
    "TrainingConfig": "sddpx_tp.pruning.training",
    "UnsupportedArchitectureError": "sddpx_tp.errors",
    "available_methods": "sddpx_tp.pruning.method_registry",
    "conv_layers": "sddpx_tp.lrp.relevance",
    "filter_relevance": "sddpx_tp.lrp.relevance",
    "layer_relevance": "sddpx_tp.lrp.relevance",
    "prune": "sddpx_tp.api",
    "register_method": "sddpx_tp.pruning.method_registry",
}

__all__ = [
    "PruneConfig",
    "PruneResult",
    "RelevanceConfig",
    "TrainingConfig",
    "UnsupportedArchitectureError",
    "__version__",
    "available_methods",
    "conv_layers",
    "filter_relevance",
    "layer_relevance",
    "prune",
    "register_method",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'sddpx_tp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})  # the names resolved on first use, too
