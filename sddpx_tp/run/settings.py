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

from sddpx_tp.data.references import DEFAULT_MAX_PIXELS
from sddpx_tp.errors import SettingError, StaleRunError
from sddpx_tp.pruning.config import PruneConfig

SCHEMA = 3  # 1 (unversioned): the command line's raw option dict; 2: no image fingerprints, no max_pixels
MAX_OUTPUTS = 100_000  # more outputs than any classifier has: a typo, which would allocate gigabytes
MAX_INPUT_SIZE = 4096  # pixels per side of the model input


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a registry name or a model file, and its weights."""

    name: str
    weights: str | None = None  # a state_dict file
    num_classes: int | None = None  # outputs of a checkpoint that is not 1000-way
    random_init: bool = False

    def __post_init__(self) -> None:
        if self.num_classes is not None and not 2 <= self.num_classes <= MAX_OUTPUTS:
            raise SettingError(f"{{num_classes}} must be in [2, {MAX_OUTPUTS}], not {self.num_classes}")


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
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images (as stored, or after the resize) are refused

    def __post_init__(self) -> None:
        if self.per_class is not None and self.per_class < 1:
            raise SettingError(f"{{per_class}} must be >= 1, not {self.per_class}")
        if self.max_pixels < 1:
            raise SettingError(f"{{max_pixels}} must be >= 1, not {self.max_pixels}")


@dataclass(frozen=True)
class Preprocessing:
    """Overrides of the model's own preprocessing (None: the model's)."""

    input_size: int | None = None
    resize_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("input_size", "resize_size"):
            size = getattr(self, name)
            if size is not None and not 8 <= size <= MAX_INPUT_SIZE:
                raise SettingError(f"{{{name}}} must be in [8, {MAX_INPUT_SIZE}] pixels, not {size}")
        if self.input_size and self.resize_size and self.resize_size < self.input_size:
            raise SettingError(
                f"{{resize_size}} {self.resize_size} is smaller than {{input_size}} {self.input_size}: "
                "the crop would pad the image with black; give a resize size >= the input size"
            )
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
    # Content fingerprints of the image folders read (sddpx_tp.data.fingerprints): a resume checks them.
    reference_fingerprint: str = ""
    evaluation_fingerprint: str | None = None
    training_fingerprint: str | None = None


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
        record = dataclasses.asdict(dataclasses.replace(self, config=PruneConfig()))
        record["config"] = self.config.to_dict()  # by flat name, as the command line and earlier runs name them
        return {"schema": SCHEMA, **_plain(record)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RunSettings:
        """Read a stored record; ``where`` names the file in error messages."""
        schema = data.get("schema", 1) if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise StaleRunError(
                f"{where} was written with settings schema {schema}, and this sddpx-tp reads schema {SCHEMA}: "
                "prune again to make a new run with this version"
            )
        try:
            resolved = data["resolved"]
            keep_models = data["keep_models"]
            if not isinstance(keep_models, bool):
                raise TypeError("keep_models is not true or false")
            return cls(
                model=_typed(ModelSource, data["model"]),
                images=_typed(ImageFolders, data["images"]),
                config=PruneConfig.from_dict(data["config"]),
                preprocessing=_typed(Preprocessing, data["preprocessing"]),
                keep_models=keep_models,
                resolved=None if resolved is None else _typed(ResolvedInput, resolved),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            detail = error.render(str) if isinstance(error, SettingError) else str(error).splitlines()[0][:200]
            raise StaleRunError(f"{where} holds settings this sddpx-tp cannot read ({detail})") from None

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


# The field types of these records, as their annotations spell them, and the JSON values each accepts.
_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _accepts(annotation: str, value: Any) -> bool:
    options = [option.strip() for option in annotation.split("|")]
    if value is None:
        return "None" in options
    for option in options:
        if option.startswith("tuple[") and isinstance(value, list):
            item = option[len("tuple[") : -len(", ...]")]
            return all(_accepts(item, element) for element in value)
        allowed = _SCALARS.get(option, ())
        if isinstance(value, allowed) and (option == "bool" or not isinstance(value, bool)):
            return True
    return False


def _typed(cls: type[Any], values: Any) -> Any:
    """A record of ``cls`` from stored JSON, each field checked against its annotation (lists become tuples)."""
    if not isinstance(values, dict):
        raise TypeError(f"{cls.__name__} is not a JSON object")
    fields = {item.name: item for item in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TypeError(f"{cls.__name__} has unknown fields {unknown}")
    for name, value in values.items():
        if not _accepts(str(fields[name].type), value):
            raise TypeError(f"{cls.__name__}.{name} is {value!r}, not {fields[name].type}")
    return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()})


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
