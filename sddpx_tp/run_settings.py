"""What a run folder was made from: a typed, versioned record stored in ``state.json`` and ``report.json``.

The record is independent of any front end's option names, so renaming a command-line
flag never breaks an old run. It has a schema version; a run written with another
schema is refused with one line (:class:`~sddpx_tp.errors.StaleRunError`), never
half-read.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from sddpx_tp.config import PruneConfig
from sddpx_tp.errors import SettingError, StaleRunError

SCHEMA = 2  # 1 (unversioned): the command line's raw option dict


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a registry name or a model file, and its weights."""

    name: str
    weights: str | None = None  # a state_dict file
    num_classes: int | None = None  # outputs of a checkpoint that is not 1000-way
    random_init: bool = False


@dataclass(frozen=True)
class ImageFolders:
    """The folders of images (``<folder>/<class>/<image files>``) and how they are read."""

    references: str
    evaluation: str | None = None
    training: str | None = None
    class_folders: tuple[str, ...] | None = None  # the reference class folders to use (None: all)
    per_class: int | None = None  # at most this many reference images per class
    strict: bool = False  # unreadable images are errors instead of skipped
    labels: str | None = None  # a class names file, one name per output


@dataclass(frozen=True)
class Preprocessing:
    """Overrides of the model's own preprocessing (None: the model's)."""

    input_size: int | None = None
    resize_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != 3:
                raise SettingError(f"{{{name}}} needs one value per channel (3), got {len(values)}")
            if values is not None and not all(math.isfinite(value) for value in values):
                raise SettingError(f"{{{name}}} values must be finite numbers")
        if self.std is not None and any(value <= 0 for value in self.std):
            raise SettingError("{std} values must be positive")


@dataclass(frozen=True)
class ResolvedInput:
    """The preprocessing the run actually used, and the classes it kept (filled in when it starts)."""

    input_size: int
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[int, ...]  # model output indices, in the order of ``class_folders``
    class_folders: tuple[str, ...]


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides a run's result. Runtime choices (device, threads, progress) are not here."""

    model: ModelSource
    images: ImageFolders
    config: PruneConfig = field(default_factory=PruneConfig.recommended)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    keep_models: bool = False  # also save every accepted step's model
    resolved: ResolvedInput | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **_plain(dataclasses.asdict(self))}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> RunSettings:
        """Read a stored record; ``where`` names the file in error messages."""
        schema = data.get("schema", 1) if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise StaleRunError(
                f"{where} was written with settings schema {schema}, and this sddpx-tp reads schema {SCHEMA}: "
                "prune again to make a new run with this version"
            )
        try:
            preprocessing = {key: _tuple(value) for key, value in data["preprocessing"].items()}
            images = {key: _tuple(value) for key, value in data["images"].items()}
            resolved = data["resolved"]
            return cls(
                model=ModelSource(**data["model"]),
                images=ImageFolders(**images),
                config=PruneConfig.from_dict(data["config"]),
                preprocessing=Preprocessing(**preprocessing),
                keep_models=bool(data["keep_models"]),
                resolved=None if resolved is None else ResolvedInput(**{k: _tuple(v) for k, v in resolved.items()}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise StaleRunError(f"{where} holds settings this sddpx-tp cannot read ({error})") from None

    def differences(self, other: RunSettings) -> list[str]:
        """Names of the settings (leaf fields) that differ between two runs, ``resolved`` included."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return sorted(
            {key.rsplit(".", 1)[-1] for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key)}
        )


def _plain(value: Any) -> Any:
    """Tuples as lists, as JSON stores them, so that a stored record compares equal to a new one."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
