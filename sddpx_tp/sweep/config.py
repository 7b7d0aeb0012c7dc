"""A sweep's config file (TOML): read, type-checked and validated whole before anything runs.

Sections (``examples/sweep-smoke.toml`` and ``examples/study.toml`` use them all)::

    [data]       references/evaluation folders (paths relative to the config file), or
                 fashion_mnist = { references_per_class, held_out_per_class, seed }
    [classes]    subsets = [["0", "6"], ...]  or  draw = { count, size, seed }
    [models.X]   name/weights/num_classes/random_init/input_size/resize_size/mean/std, or fashion_mnist = "fast"
    [prune]      preset ("recommended" or "paper") and any PruneConfig field, applied to every cell
    [grid]       any PruneConfig field given as a list of values: the cells cross them all
    [run]        threads (torch threads per cell), keep_models

Errors are one-line :class:`ConfigError` naming the file and the key (``prune.max_rate``);
they never name command-line flags. Values are type-checked here; their ranges and combinations are
PruneConfig's own checks, run on every cell by :mod:`sddpx_tp.sweep.grid`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sddpx_tp.data.fashion import CLASS_NAMES
from sddpx_tp.lrp.relevance import RelevanceConfig
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.criteria import names_code
from sddpx_tp.pruning.training import TrainingConfig
from sddpx_tp.sweep.model_entries import SweepModel, model_entries
from sddpx_tp.sweep.reader import ConfigError, ConfigReader, shown

SECTIONS = ("data", "classes", "models", "prune", "grid", "run")
PRESETS = ("recommended", "paper")
# Folder names of the Fashion-MNIST classes: "T-shirt/top" cannot be a folder, and a space is awkward in a
# cell id; the labels file keeps the real names, which the folder names match ("_" reads as a space).
FASHION_FOLDERS = tuple(name.replace("/", "-").replace(" ", "_") for name in CLASS_NAMES)


@dataclass(frozen=True)
class FashionData:
    """Fashion-MNIST written as class folders into the sweep folder: references from the training split,
    held-out images from the test split (None: all 1000 of each class)."""

    references_per_class: int = 30
    held_out_per_class: int | None = 200
    seed: int = 0


@dataclass(frozen=True)
class FolderData:
    """The user's own image folders (``<folder>/<class>/<images>``), as absolute paths."""

    references: str
    evaluation: str | None = None
    labels: str | None = None
    per_class: int | None = None
    strict: bool = False


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep, validated; :func:`sddpx_tp.sweep.grid.cells` expands it into cells."""

    path: Path
    data: FashionData | FolderData
    subsets: tuple[tuple[str, ...], ...]
    models: tuple[SweepModel, ...]
    preset: str
    prune: dict[str, Any]  # PruneConfig fields (nested ones as dicts), the same in every cell
    grid: dict[str, list[Any]]  # axis name ("method", "relevance.composite") -> its values, in file order
    threads: int | None = None  # torch threads per cell; None: the backend's share of the cores
    keep_models: bool = False
    class_folders: tuple[str, ...] = field(default=())  # every class folder of the references, in draw order

    def canonical(self) -> dict[str, Any]:
        """What decides the cells' results, as plain JSON: a sweep folder holds it, and a rerun must match it."""
        return _plain(
            {
                "data": {"kind": type(self.data).__name__, **asdict(self.data)},
                "subsets": self.subsets,
                "models": {
                    model.label: {
                        "source": asdict(model.source),
                        "preprocessing": asdict(model.preprocessing),
                        "training": model.training,
                    }
                    for model in self.models
                },
                "preset": self.preset,
                "prune": self.prune,
                "grid": self.grid,
                "threads": self.threads,
                "keep_models": self.keep_models,
            }
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def read_config(path: Path | str, trusted_models: Collection[Path] = ()) -> SweepConfig:
    """Read and validate the sweep config at ``path``; raises :class:`ConfigError` (one line).

    A model file the config names as ``name`` is a pickled model, which loading runs as code: it is
    refused unless it is one of ``trusted_models`` (named on the command line, ``--trust-model``)."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read sweep config {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"sweep config {path} is not valid TOML: {str(error).splitlines()[0]}") from None
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise ConfigError(f"sweep config {path} nests arrays or tables too deeply to read; a sweep config "
                          "needs at most a few levels") from None  # fmt: skip
    reader = ConfigReader(path)
    reader.only(document, SECTIONS, "")
    for required in ("data", "classes", "models"):
        if required not in document:
            raise reader.fail("", f"has no [{required}] section")
    data = _data(reader, reader.table(document["data"], "data"))
    class_folders = _class_folders(reader, data)
    subsets = _subsets(reader, reader.table(document["classes"], "classes"), class_folders)
    if isinstance(data, FolderData) and data.evaluation is not None:
        lacking = sorted({name for subset in subsets for name in subset} - set(_folders_of(data.evaluation)))
        if lacking:
            raise reader.fail("data.evaluation", f"has no folder for class {lacking[0]!r}, which a subset uses")
    trusted = {Path(model).expanduser().resolve() for model in trusted_models}
    models = model_entries(reader, reader.table(document["models"], "models"), trusted)
    prune = dict(reader.table(document.get("prune", {}), "prune"))
    preset = reader.string(prune.pop("preset", "recommended"), "prune.preset")
    if preset not in PRESETS:
        raise reader.fail("prune.preset", f"must be one of {', '.join(PRESETS)}, not {preset!r}")
    run = reader.table(document.get("run", {}), "run")
    reader.only(run, ("threads", "keep_models"), "run")
    threads = None if "threads" not in run else reader.integer(run["threads"], "run.threads", low=1)
    options = {name: _option(reader, name, value, f"prune.{name}") for name, value in prune.items()}
    grid = _grid(reader, reader.table(document.get("grid", {}), "grid"), options)
    return SweepConfig(
        path=path.resolve(),
        data=data,
        subsets=subsets,
        models=models,
        preset=preset,
        prune=options,
        grid=grid,
        threads=threads,
        keep_models=reader.boolean(run.get("keep_models", False), "run.keep_models"),
        class_folders=class_folders,
    )


def _data(reader: ConfigReader, table: dict[str, Any]) -> FashionData | FolderData:
    if "fashion_mnist" in table:
        reader.only(table, ("fashion_mnist",), "data")
        fashion = reader.table(table["fashion_mnist"], "data.fashion_mnist")
        reader.only(fashion, ("references_per_class", "held_out_per_class", "seed"), "data.fashion_mnist")
        held_out = fashion.get("held_out_per_class", FashionData.held_out_per_class)
        return FashionData(
            references_per_class=reader.integer(
                fashion.get("references_per_class", 30), "data.fashion_mnist.references_per_class", low=1
            ),
            held_out_per_class=None
            if held_out == "all"
            else reader.integer(held_out, "data.fashion_mnist.held_out_per_class", low=1),
            seed=reader.integer(fashion.get("seed", 0), "data.fashion_mnist.seed"),
        )
    reader.only(table, ("references", "evaluation", "labels", "per_class", "strict", "fashion_mnist"), "data")
    if "references" not in table:
        raise reader.fail("data", "needs references (a folder of class folders) or fashion_mnist")
    data = FolderData(
        references=reader.file(table["references"], "data.references", folder=True),
        evaluation=None if "evaluation" not in table else reader.file(table["evaluation"], "data.evaluation", True),
        labels=None if "labels" not in table else reader.file(table["labels"], "data.labels"),
        per_class=None if "per_class" not in table else reader.integer(table["per_class"], "data.per_class", low=1),
        strict=reader.boolean(table.get("strict", False), "data.strict"),
    )
    if data.evaluation is not None and Path(data.evaluation) == Path(data.references):
        raise reader.fail("data.evaluation", "is the references folder: held-out images must be other images")
    return data


def _folders_of(folder: str) -> list[str]:
    return sorted(entry.name for entry in Path(folder).iterdir() if entry.is_dir() and not entry.name.startswith("."))


def _class_folders(reader: ConfigReader, data: FashionData | FolderData) -> tuple[str, ...]:
    """The class folders subsets are drawn from: Fashion-MNIST's in label order, else the references' sorted."""
    if isinstance(data, FashionData):
        return FASHION_FOLDERS
    folders = _folders_of(data.references)
    if len(folders) < 2:
        raise reader.fail("data.references", f"{data.references} needs at least two class folders")
    return tuple(folders)


def _subsets(reader: ConfigReader, table: dict[str, Any], folders: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    reader.only(table, ("subsets", "draw"), "classes")
    if ("subsets" in table) == ("draw" in table):
        raise reader.fail("classes", "needs exactly one of subsets (lists of class folders) or draw")
    if "draw" in table:
        draw = reader.table(table["draw"], "classes.draw")
        reader.only(draw, ("count", "size", "seed"), "classes.draw")
        count = reader.integer(draw.get("count"), "classes.draw.count", low=1)
        size = reader.integer(draw.get("size", 2), "classes.draw.size", low=2)
        seed = reader.integer(draw.get("seed", 0), "classes.draw.seed")
        if size > len(folders):
            raise reader.fail("classes.draw.size", f"is {size}, but there are only {len(folders)} class folders")
        return draw_subsets(folders, count, size, seed, lambda problem: reader.fail("classes.draw", problem))
    given = table["subsets"]
    if not isinstance(given, list) or not given:
        raise reader.fail("classes.subsets", "must be a non-empty list of lists of class folder names")
    subsets: list[tuple[str, ...]] = []
    for index, subset in enumerate(given):
        key = f"classes.subsets[{index}]"
        if not isinstance(subset, list) or len(subset) < 2:
            raise reader.fail(key, f"must list at least two class folders, not {shown(subset)}")
        names = tuple(reader.string(name, key) for name in subset)
        unknown = [name for name in names if name not in folders]
        if unknown:
            raise reader.fail(key, f"names {unknown[0]!r}, which is not a class folder ({', '.join(folders)})")
        if len(set(names)) != len(names) or names in subsets:
            raise reader.fail(key, "repeats a class folder or a whole subset")
        subsets.append(names)
    return tuple(subsets)


def draw_subsets(folders: tuple[str, ...], count: int, size: int, seed: int, fail: Any) -> tuple[tuple[str, ...], ...]:
    """``count`` distinct subsets of ``size`` class folders: subset i is the first ``size`` of a permutation drawn
    with seed ``seed + i`` (skipping repeats), in folder order. On Fashion-MNIST, seed 1000 + s draws the classes
    of task seed s of benchmarks/fashion_methods.py."""
    subsets: list[tuple[str, ...]] = []
    offset = 0
    while len(subsets) < count:
        if offset >= 100 * count:
            raise fail(f"cannot draw {count} different subsets of {size} from {len(folders)} class folders")
        generator = torch.Generator().manual_seed(seed + offset)
        picked = sorted(torch.randperm(len(folders), generator=generator)[:size].tolist())
        subset = tuple(folders[index] for index in picked)
        if subset not in subsets:
            subsets.append(subset)
        offset += 1
    return tuple(subsets)


# The records whose fields a sweep may set: PruneConfig's, and those of its two nested records.
_NESTED: dict[str, type[Any]] = {"relevance": RelevanceConfig, "retraining": TrainingConfig}


def _annotations(record: type[Any]) -> dict[str, str]:
    if record is PruneConfig:  # a sweep names PruneConfig's settings by their flat names, as the command line does
        return PruneConfig.flat_annotations()
    return {item.name: str(item.type) for item in dataclasses.fields(record)}


def _option(reader: ConfigReader, name: str, value: Any, key: str, record: type[Any] = PruneConfig) -> Any:
    """A PruneConfig field's value, type-checked against its annotation (the range checks are PruneConfig's)."""
    annotations = _annotations(record)
    if name not in annotations:
        raise reader.fail(key, f"is not a setting of {record.__name__}; use one of {', '.join(annotations)}")
    if record is PruneConfig and name in _NESTED:
        table = reader.table(value, key)
        return {inner: _option(reader, inner, item, f"{key}.{inner}", _NESTED[name]) for inner, item in table.items()}
    kind = annotations[name].replace(" | None", "")
    if isinstance(value, list) and not kind.startswith("tuple["):
        raise reader.fail(key, "must be one value, not a list (to sweep over values, list them in [grid])")
    if kind == "bool":
        return reader.boolean(value, key)
    if kind == "int":
        return reader.integer(value, key, low=None)
    if kind == "float":
        return reader.number(value, key)
    if kind.startswith("tuple["):  # repair: "none", "lstsq,bn", or a list of names
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, list):
            raise reader.fail(key, f"must be a list of names or one comma-separated string, not {shown(value)}")
        names = [reader.string(item, key).strip() for item in names]
        return [] if names == ["none"] else names
    text = reader.string(value, key)  # str and the Literal aliases (method names, compensation, ...)
    if record is PruneConfig and name == "criterion" and names_code(text):
        # A config file someone hands you must not make sddpx-tp import code (docs/cli.md, bad input).
        raise reader.fail(key, f"names Python code ({text}); a config file may not: use a built-in criterion "
                          "here, or sddpx-tp prune --criterion, or the Python API")  # fmt: skip
    return text


def _grid(reader: ConfigReader, table: dict[str, Any], options: dict[str, Any]) -> dict[str, list[Any]]:
    """Axis name ("method", "relevance.composite") -> its values, in the file's order."""
    axes: dict[str, Any] = {}
    for name, value in table.items():
        if name in _NESTED and isinstance(value, dict):  # [grid] relevance.composite = [...]
            axes.update({f"{name}.{inner}": item for inner, item in value.items()})
        else:
            axes[name] = value
    grid: dict[str, list[Any]] = {}
    for axis, values in axes.items():
        key = f"grid.{axis}"
        outer, _, inner = axis.partition(".")
        if outer in options and (not inner or inner in options[outer]):
            raise reader.fail(key, "is also set in [prune]: give it in one place")
        if not isinstance(values, list) or not values:
            raise reader.fail(key, f"must be a non-empty list of values to sweep over, not {shown(values)}")
        checked = [
            _option(reader, inner, value, key, _NESTED[outer])
            if inner and outer in _NESTED
            else _option(reader, axis, value, key)
            for value in values
        ]
        if any(checked.count(value) > 1 for value in checked):
            raise reader.fail(key, "lists a value twice")
        grid[axis] = checked
    return grid
