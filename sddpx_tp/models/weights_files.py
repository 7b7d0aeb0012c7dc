"""Weights files read without running code: a torch state dict (``weights_only``) or safetensors, and a one-line
error, with what to do instead, for every other kind of file someone may hand over as weights."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import torch

from sddpx_tp.errors import ModelSourceError, SettingError, literal
from sddpx_tp.models.checkpoint import FORMAT as PRUNED_FORMAT
from sddpx_tp.models.file_kinds import FileKind, file_kind

__all__ = ["SourceSettingError", "read_weights"]


class SourceSettingError(ModelSourceError, SettingError):
    """A model or weights file that cannot be used, whose advice names settings as ``{field}``."""


# What to do instead, for each kind of file that is not a state_dict (one line each; never weights_only=False).
_NOT_WEIGHTS = {
    FileKind.EMPTY: "it was not saved or downloaded completely",
    FileKind.TRUNCATED: "it was not saved or downloaded completely",
    FileKind.ONNX: "sddpx-tp prunes torch models; give the torch model's torch.save(model.state_dict(), FILE)",
    FileKind.TORCHSCRIPT: "save its weights with torch.save(torch.jit.load(FILE).state_dict(), NEW_FILE)",
    FileKind.SAFETENSORS: "convert it with torch.save(safetensors.torch.load_file(FILE), NEW_FILE)",
    FileKind.ZIP: "expected torch.save(model.state_dict(), FILE)",
    FileKind.UNKNOWN: "expected torch.save(model.state_dict(), FILE)",
}


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``, read without running code; one-line errors for every other kind of file."""
    if not path.is_file():
        raise ModelSourceError(f"weights file {path} does not exist or is not a file")
    kind = file_kind(path)
    if kind is FileKind.SAFETENSORS and importlib.util.find_spec("safetensors") is not None:
        return _read_safetensors(path)
    if kind in _NOT_WEIGHTS:
        raise ModelSourceError(f"weights file {path} is {kind.value}, not a state_dict: {_NOT_WEIGHTS[kind]}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects beyond tensors and containers: a pickled model, say
        raise SourceSettingError(
            f"weights file {literal(path)} holds pickled Python objects (a whole model?), not a plain state_dict, "
            "and loading those runs code: save model.state_dict() instead, or pass the file itself as {model}"
        ) from None
    except Exception as error:  # truncated, or damaged
        raise ModelSourceError(f"weights file {path} is {kind.value} that cannot be read ({type(error).__name__}): "
                               "it is damaged or incomplete") from None  # fmt: skip
    if isinstance(state, dict) and state.get("format") == PRUNED_FORMAT:
        raise ModelSourceError(
            f"weights file {path} is an sddpx-tp pruned model (a run's model.pt), not an unpruned state_dict; "
            "it is read from its run folder"
        )
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelSourceError(f"weights file {path} holds a {type(state).__name__}, not a state_dict of tensors")
    return state


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (the format holds tensors only: reading it runs no code)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:
        reason = type(error).__name__
        raise ModelSourceError(f"weights file {path} is a safetensors file that cannot be read ({reason}): "
                               "it is damaged or incomplete") from None  # fmt: skip
