"""Save and load pruned models.

The safe format holds only tensors, numbers and strings (``torch.load(...,
weights_only=True)`` reads it; nothing is unpickled as code): the state_dict plus
the pruned width of every layer and the residual blocks removed whole. Loading resizes a freshly built unpruned
architecture to those widths and loads the weights strictly, so the rebuilt model
computes exactly what the saved one did. The convenience format is
``torch.save(model)``: one file, but loading it unpickles code.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sddpx_tp.files import atomic_write
from sddpx_tp.models.blocks import removable_blocks, skip_block, skipped_blocks

FORMAT = "sddpx-tp/pruned-model/1"

# The attributes that record a layer's width; torch-pruning updates them when it prunes.
# Facts about layer types, whatever the architecture family: looked up only through
# _width_attributes, first match by isinstance, as architectures.family_of does for records.
_WIDTH_ATTRIBUTES: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (nn.Conv2d, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.BatchNorm2d, ("num_features",)),
    (nn.BatchNorm1d, ("num_features",)),
)


def _width_attributes(module: nn.Module) -> tuple[str, ...]:
    """The attributes that hold ``module``'s width (none for a layer whose shape pruning cannot change)."""
    return next((attributes for layer_type, attributes in _WIDTH_ATTRIBUTES if isinstance(module, layer_type)), ())


def _widths(model: nn.Module) -> dict[str, dict[str, int]]:
    widths = {}
    for name, module in model.named_modules():
        attributes = _width_attributes(module)
        if attributes:
            widths[name] = {attribute: int(getattr(module, attribute)) for attribute in attributes}
    return widths


def save_pruned(model: nn.Module, path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Write the safe format: state_dict, layer widths and (JSON-like) metadata."""
    payload = {
        "format": FORMAT,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "widths": _widths(model),
        "skipped_blocks": skipped_blocks(model),  # removed whole: rebuilt as their shortcuts
        "metadata": metadata or {},
    }
    atomic_write(Path(path), lambda temporary: torch.save(payload, temporary))


def _read(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except Exception as error:  # truncated, not a torch file, or objects outside the safe format
        raise ValueError(f"{path} is not a readable sddpx-tp pruned model file ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an sddpx-tp pruned model file")
    return payload


def checkpoint_metadata(path: Path) -> dict[str, Any]:
    """The metadata saved with a pruned model (``ValueError`` if the file is not one, or damaged)."""
    metadata = _read(path).get("metadata")
    return dict(metadata) if isinstance(metadata, dict) else {}


def load_pruned(path: Path, architecture: nn.Module) -> nn.Module:
    """Resize ``architecture`` (a fresh, unpruned instance) to the saved widths and load the weights."""
    payload = _read(path)
    known = {block.name for block in removable_blocks(architecture)}
    for name in payload.get("skipped_blocks", []):  # files from before blocks were removed have none
        if name not in known:
            raise ValueError(f"{path} removed a block {name!r} that the given architecture cannot remove")
        skip_block(architecture, name)
    modules = dict(architecture.named_modules())
    for name, attributes in payload["widths"].items():
        if name not in modules:
            raise ValueError(f"{path} has a layer {name!r} that the given architecture lacks")
        for attribute, value in attributes.items():
            setattr(modules[name], attribute, value)
    for key, tensor in payload["state_dict"].items():
        owner_name, _, attribute = key.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None:
            raise ValueError(f"{path} has weights {key!r} that the given architecture lacks")
        # Replace with an empty tensor of the saved shape; load_state_dict then fills it.
        if attribute in owner._parameters:
            owner._parameters[attribute] = nn.Parameter(
                torch.empty_like(tensor), requires_grad=tensor.is_floating_point()
            )
        elif attribute in owner._buffers:
            owner._buffers[attribute] = torch.empty_like(tensor)
    # The modules' state-dict versions (MNASNet refuses weights without one) are the fresh instance's own: the
    # file was saved from the same architecture, and a plain dict of tensors keeps no metadata.
    state = OrderedDict(payload["state_dict"])
    state._metadata = getattr(architecture.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    architecture.load_state_dict(state, strict=True)
    return architecture.eval()


def save_full_model(model: nn.Module, path: Path) -> None:
    """The convenience format: one pickled file (loading it runs code; use only your own files)."""
    atomic_write(Path(path), lambda temporary: torch.save(model, temporary))
