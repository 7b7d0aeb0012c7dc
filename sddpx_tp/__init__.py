"""sddpx-tp: LRP-guided filter pruning (PX, DPX, SD-DPX) for few-class transfer."""

__version__ = "0.1.0"

from sddpx_tp.api import PruneResult, prune
from sddpx_tp.canonizers import UnsupportedArchitectureError
from sddpx_tp.relevance import RelevanceConfig, conv_layers, filter_relevance, layer_relevance

__all__ = [
    "PruneResult",
    "RelevanceConfig",
    "UnsupportedArchitectureError",
    "__version__",
    "conv_layers",
    "filter_relevance",
    "layer_relevance",
    "prune",
]
