"""The ``[models.NAME]`` tables of a sweep config: a registry model, a model file, or the Fashion-MNIST ResNet-18.

A model file named as ``name`` is a pickled model, which loading runs as code: a config someone hands
you must never make sddpx-tp do that, so it is refused unless the command line trusts that file
(``sddpx-tp sweep --trust-model FILE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sddpx_tp.data.fashion import default_cache_dir
from sddpx_tp.errors import SettingError, UserError
from sddpx_tp.run.settings import ModelSource, Preprocessing
from sddpx_tp.sweep.reader import ConfigReader

# The Fashion-MNIST ResNet-18 (32 px): "fast" is the demo's --fast model (1 epoch on 2048 images, well under a
# minute on 2 cores), "full" the benchmarks' (3 epochs on all 60,000, about 6 minutes). Cached, shared with the demo.
FASHION_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "fast": ("fashion_resnet18_fast.pt", {"epochs": 1, "limit": 2048}),
    "full": ("fashion_resnet18_32px.pt", {}),
}
FASHION_PREPROCESSING = Preprocessing(32, 32, (0.286,) * 3, (0.353,) * 3)


@dataclass(frozen=True)
class SweepModel:
    """One model of the grid; ``label`` names it in cell ids; ``training``: how to train it (Fashion-MNIST)."""

    label: str
    source: ModelSource
    preprocessing: Preprocessing
    training: dict[str, Any] | None = None


_MODEL_KEYS = ("name", "weights", "num_classes", "random_init", "input_size", "resize_size", "mean", "std")


def model_entries(reader: ConfigReader, table: dict[str, Any], trusted: set[Path]) -> tuple[SweepModel, ...]:
    """The models of a sweep config's ``[models]`` table; ``trusted``: the model files it may unpickle."""
    if not table:
        raise reader.fail("models", "names no model; add a [models.NAME] table")
    models = []
    for label, entry in table.items():
        key = f"models.{label}"
        if not label.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise reader.fail(key, "has a name that is not letters, digits, '-', '_' or '.' (it names cell folders)")
        entry = reader.table(entry, key)
        if "fashion_mnist" in entry:
            reader.only(entry, ("fashion_mnist",), key)
            variant = reader.string(entry["fashion_mnist"], f"{key}.fashion_mnist")
            if variant not in FASHION_MODELS:
                raise reader.fail(
                    f"{key}.fashion_mnist", f"must be one of {', '.join(FASHION_MODELS)}, not {variant!r}"
                )
            file_name, training = FASHION_MODELS[variant]
            source = ModelSource("resnet18", str(default_cache_dir() / file_name), num_classes=10)
            models.append(SweepModel(label, source, FASHION_PREPROCESSING, training))
            continue
        reader.only(entry, _MODEL_KEYS, key)
        models.append(SweepModel(label, *_model_source(reader, entry, key, trusted)))
    return tuple(models)


def _model_source(
    reader: ConfigReader, entry: dict[str, Any], key: str, trusted: set[Path]
) -> tuple[ModelSource, Preprocessing]:
    name = reader.string(entry.get("name"), f"{key}.name")
    if Path(name).suffix:  # a model file, not a registry name
        name = reader.file(name, f"{key}.name")
        if Path(name) not in trusted:  # a file someone hands you must never make the tool run its code
            raise reader.fail(f"{key}.name", f"names the model file {name}, which loading unpickles (it runs the "
                              f"file's code); if you trust it, add --trust-model {name} to sddpx-tp sweep")  # fmt: skip

    def optional_integer(field_name: str, low: int) -> int | None:
        return None if field_name not in entry else reader.integer(entry[field_name], f"{key}.{field_name}", low)

    def channels(field_name: str) -> tuple[float, ...] | None:
        if field_name not in entry:
            return None
        given = entry[field_name]
        values = [
            reader.number(value, f"{key}.{field_name}") for value in (given if isinstance(given, list) else [given])
        ]
        if len(values) not in (1, 3):
            raise reader.fail(f"{key}.{field_name}", f"needs one value or three, not {len(values)}")
        return tuple(values * 3 if len(values) == 1 else values)

    try:
        source = ModelSource(
            name=name,
            weights=None if "weights" not in entry else reader.file(entry["weights"], f"{key}.weights"),
            num_classes=optional_integer("num_classes", 0),
            random_init=reader.boolean(entry.get("random_init", False), f"{key}.random_init"),
        )
        preprocessing = Preprocessing(
            optional_integer("input_size", 0), optional_integer("resize_size", 0), channels("mean"), channels("std")
        )
    except UserError as error:  # a SettingError names its field as {field}: here, the model's key
        message = error.render(lambda name: f"{key}.{name}") if isinstance(error, SettingError) else str(error)
        raise reader.fail("", message) from None
    if source.weights is not None and source.random_init:
        raise reader.fail(f"{key}.random_init", "contradicts weights: choose one")
    return source, preprocessing
