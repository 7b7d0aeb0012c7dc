"""A sweep's cells: every model x class subset x combination of grid values, each an ordinary run's settings.

The order is the config's (models, then subsets, then the grid axes in file order, the first
axis slowest), so the same config always gives the same cells in the same order. A cell's id
names its model, classes and grid values (``fashion__T-shirt-top+Shirt__dpx__repair-none``):
readable, stable and safe as a folder name. Building a cell runs PruneConfig's own checks,
so a value out of range or a contradiction in any cell is found before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
import re
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sddpx_tp.errors import SettingError, literal
from sddpx_tp.lrp.relevance import RelevanceConfig
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.method_registry import check_config
from sddpx_tp.pruning.training import TrainingConfig
from sddpx_tp.run.settings import ImageFolders, RunSettings
from sddpx_tp.sweep.config import FashionData, SweepConfig
from sddpx_tp.sweep.reader import ConfigError

MAX_ID_LENGTH = 120  # folder names stay well below the 255 bytes file systems allow
# A sweep makes at most this many cells unless asked for more: checking 10^5 cells takes minutes before
# the first runs, and running them days. A mistyped grid is refused at once, not after the planning.
MAX_CELLS = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


class GridTooLarge(SettingError, ConfigError):
    """A grid with more cells than the sweep was allowed (``max_cells``): refused before any is made."""


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: its id (and folder name), what it varies, and the run's settings."""

    id: str
    model: str
    classes: tuple[str, ...]
    grid: dict[str, Any]  # "method" first, then the other grid axes: the values this cell runs with
    settings: RunSettings


def data_folders(config: SweepConfig, data_root: Path) -> tuple[str, str | None, str | None]:
    """References, evaluation folder and labels file of the sweep (Fashion-MNIST: written under ``data_root``)."""
    if isinstance(config.data, FashionData):
        return str(data_root / "refs"), str(data_root / "eval"), str(data_root / "labels.txt")
    return config.data.references, config.data.evaluation, config.data.labels


def shown_value(value: Any) -> str:
    """A grid value as cell ids and tables show it: lists joined by '+', an empty list as 'none'."""
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value)) or "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)


def cell_id(model: str, classes: tuple[str, ...], grid: dict[str, Any]) -> str:
    parts = [_safe(model), _safe("+".join(classes))]
    for axis, value in grid.items():
        shown = _safe(shown_value(value))
        parts.append(shown if axis == "method" else f"{_safe(axis.rpartition('.')[2])}-{shown}")
    text = "__".join(parts)
    if len(text) > MAX_ID_LENGTH:  # many classes: the class part becomes a count and a digest of the names
        digest = hashlib.sha256("+".join(classes).encode()).hexdigest()[:8]
        parts[1] = f"{len(classes)}classes-{digest}"
        text = "__".join(parts)[:MAX_ID_LENGTH]
    return text


def prune_config(config: SweepConfig, combination: dict[str, Any]) -> PruneConfig:
    """The PruneConfig of one grid combination: the preset, then [prune], then the combination."""
    fields = copy.deepcopy(config.prune)
    for axis, value in combination.items():
        outer, _, inner = axis.partition(".")
        if inner:
            fields.setdefault(outer, {})[inner] = value
        else:
            fields[axis] = value
    defaults = PruneConfig.recommended()
    if "relevance" in fields:
        fields["relevance"] = RelevanceConfig(**{**dataclasses.asdict(defaults.relevance), **fields["relevance"]})
    if "retraining" in fields:
        fields["retraining"] = TrainingConfig(**{**dataclasses.asdict(defaults.retraining), **fields["retraining"]})
    if "repair" in fields:
        fields["repair"] = tuple(fields["repair"])
    preset = PruneConfig.paper if config.preset == "paper" else PruneConfig.recommended
    return preset(**fields)


def _where(config: SweepConfig, field: str) -> str:
    """The config key that set a PruneConfig field, for an error message."""
    for axis in config.grid:
        if axis.rpartition(".")[2] == field:
            return f"grid.{axis}"
    nested = [f"prune.{outer}.{field}" for outer in ("relevance", "retraining") if field in config.prune.get(outer, {})]
    return f"prune.{field}" if field in config.prune else nested[0] if nested else f"prune.{field}"


def combinations(config: SweepConfig) -> list[dict[str, Any]]:
    """Every combination of grid values, method first (from the grid, [prune] or the preset)."""
    axes = list(config.grid)
    rows = [dict(zip(axes, values, strict=True)) for values in itertools.product(*config.grid.values())]
    if "method" in config.grid:
        return [{"method": row["method"], **{axis: row[axis] for axis in axes if axis != "method"}} for row in rows]
    method = config.prune.get("method", PruneConfig.recommended().method)
    return [{"method": method, **row} for row in rows]


def cell_count(config: SweepConfig) -> int:
    """How many cells ``config`` makes (models x class subsets x grid values), without making them."""
    return len(config.models) * len(config.subsets) * math.prod(len(values) for values in config.grid.values())


def check_cell_count(config: SweepConfig, max_cells: int = MAX_CELLS) -> int:
    """The cell count, or :class:`ConfigError` when it is above ``max_cells``."""
    count = cell_count(config)
    if count > max_cells:
        factors = [f"{len(config.models)} models", f"{len(config.subsets)} class subsets",
                   *(f"{len(values)} {axis}" for axis, values in config.grid.items())]  # fmt: skip
        raise GridTooLarge(
            f"sweep config {literal(config.path)}: {count:,} cells ({literal(' x '.join(factors))}), above the "
            f"{max_cells:,} a sweep runs unless asked; narrow the grid, or allow more with {{max_cells}} {count}"
        )
    return count


def cells(config: SweepConfig, out: Path, max_cells: int = MAX_CELLS, progress: bool = False) -> list[Cell]:
    """Every cell of the sweep whose folder is ``out``; raises :class:`ConfigError` if any cell is invalid or
    there are more than ``max_cells``. ``progress``: a bar on stderr while the cells are checked."""
    count = check_cell_count(config, max_cells)
    references, evaluation, labels = data_folders(config, out / "data")
    per_class = None if isinstance(config.data, FashionData) else config.data.per_class
    strict = not isinstance(config.data, FashionData) and config.data.strict
    prune_configs = []
    grid = combinations(config)
    checking = tqdm(grid, desc=f"checking {count:,} cells", unit="setting", file=sys.stderr,
                    disable=not progress or count < 200, leave=False)  # fmt: skip
    for combination in checking:
        grid_only = {axis: value for axis, value in combination.items() if axis in config.grid}
        try:
            prune_config_ = prune_config(config, grid_only)
            check_config(prune_config_, has_training=False)
        except SettingError as error:
            # Name the combination only when a grid value is to blame (not a scalar of [prune]).
            named = {name for _, name, _, _ in string.Formatter().parse(error.template) if name}
            values = ", ".join(f"{axis}={shown_value(value)}" for axis, value in grid_only.items())
            blamed = any(axis.rpartition(".")[2] in named for axis in grid_only)
            message = error.render(lambda field: _where(config, field))
            raise ConfigError(
                f"sweep config {config.path}: {message}" + (f" (in cells {values})" if blamed else "")
            ) from None
        except (TypeError, ValueError) as error:  # RelevanceConfig's own checks
            raise ConfigError(f"sweep config {config.path}: {str(error).splitlines()[0]}") from None
        prune_configs.append((combination, prune_config_))
    made: list[Cell] = []
    for model in config.models:
        for subset in config.subsets:
            images = ImageFolders(
                references=references,
                evaluation=evaluation,
                class_folders=subset,
                per_class=per_class,
                strict=strict,
                labels=labels,
            )
            for combination, prune_config_ in prune_configs:
                settings = RunSettings(
                    model=model.source,
                    images=images,
                    config=prune_config_,
                    preprocessing=model.preprocessing,
                    keep_models=config.keep_models,
                )
                made.append(Cell(cell_id(model.label, subset, combination), model.label, subset, combination, settings))
    ids = [cell.id for cell in made]
    repeated = next((name for name in ids if ids.count(name) > 1), None)
    if repeated is not None:
        raise ConfigError(f"sweep config {config.path}: two cells have the id {repeated!r}; rename a model or a class")
    return made
