"""LRP relevance as a torch-pruning importance criterion.

``LRPImportance`` scores a torch-pruning group (channels that must go together,
e.g. ResNet's residual stream) as the sum of the LRP relevance of every conv filter
in it. torch-pruning calls importances under ``no_grad``, so relevance is computed
up front and looked up; when the model has been pruned since, the relevance is
recomputed on the next call (if references were given) so iterative pruning with
torch-pruning's own ``BasePruner`` stays correct.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn

from sddpx_tp.lrp.relevance import References, RelevanceConfig, filter_relevance


class StaleRelevanceError(RuntimeError):
    """Raised when cached relevance no longer matches the model and cannot be recomputed."""


class LRPImportance(tp.importance.Importance):
    """Group importance = sum of its member convs' per-filter LRP relevance.

    Use with torch-pruning::

        importance = LRPImportance(model, references=(images, labels))
        pruner = tp.pruner.BasePruner(model, example_inputs, importance, global_pruning=True,
                                      pruning_ratio=0.3, ignored_layers=[model.fc])
        pruner.step()
    """

    def __init__(
        self,
        model: nn.Module,
        references: References | None = None,
        config: RelevanceConfig | None = None,
        relevance: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if references is None and relevance is None:
            raise ValueError("give reference images (to compute relevance) or a precomputed relevance mapping")
        self.model = model
        self.references = references
        # Default to per-layer normalised relevance: raw LRP magnitudes differ by orders of
        # magnitude between layers, and global ranking on them empties whole layers.
        self.config = config or RelevanceConfig(normalize=True)
        self.relevance_passes = 0
        self.relevance: dict[str, torch.Tensor] = dict(relevance) if relevance is not None else {}
        if relevance is None:
            self.refresh()

    def refresh(self) -> None:
        """Recompute relevance on the model as it is now."""
        if self.references is None:
            raise StaleRelevanceError("relevance is stale and no reference images were given to recompute it")
        with torch.enable_grad():
            self.relevance = filter_relevance(self.model, self.references, self.config)
        self.relevance_passes += 1

    def _is_stale(self) -> bool:
        return any(
            name in self.relevance and len(self.relevance[name]) != module.out_channels
            for name, module in self.model.named_modules()
            if isinstance(module, nn.Conv2d)
        )

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        if self._is_stale():
            self.refresh()
        names = {module: name for name, module in self.model.named_modules()}
        scores: torch.Tensor | None = None
        for item in group:
            dep, idxs = item.dep, item.idxs
            module = dep.target.module
            if not (isinstance(module, nn.Conv2d) and _prunes_out_channels(dep.handler)):
                continue  # only conv filters carry relevance; BN, input channels follow them
            name = names.get(module)
            if name is None or name not in self.relevance:
                continue
            root_idxs = torch.as_tensor(item.root_idxs, dtype=torch.long)
            member = self.relevance[name][torch.as_tensor(idxs, dtype=torch.long)].to(torch.float32).cpu()
            if scores is None:
                scores = torch.zeros(len(group[0].idxs), dtype=torch.float32)
            scores.scatter_add_(0, root_idxs, member)
        return scores


# The handlers a dependency graph uses to remove output channels: its registered per-layer-type
# pruners' (what ``DependencyGraph.is_out_channel_pruning_fn`` checks; an importance sees no graph).
_OUT_CHANNEL_HANDLERS = {pruner.prune_out_channels for pruner in tp.pruner.function.PrunerBox.values() if pruner}


def _prunes_out_channels(handler: object) -> bool:
    return handler in _OUT_CHANNEL_HANDLERS
