"""sddpx-tp: LRP-guided filter pruning (PX, DPX, SD-DPX) for few-class transfer."""

__version__ = "0.1.0"

from sddpx_tp.api import PruneResult, prune
from sddpx_tp.config import PruneConfig
from sddpx_tp.errors import UnsupportedArchitectureError
from sddpx_tp.methods import available_methods, register_method
from sddpx_tp.relevance import RelevanceConfig, conv_layers, filter_relevance, layer_relevance
from sddpx_tp.training import TrainingConfig

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
