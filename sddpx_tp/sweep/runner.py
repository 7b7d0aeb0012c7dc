"""A sweep: every cell of a config run into one folder, resumably, on a backend; then one results table.

Layout of ``DIR/``::

    .sddpx-tp           the marker: a sweep folder made by sddpx-tp (kind "sweep")
    sweep.json          the config's canonical form and the cell ids: a rerun must match it
    data/               Fashion-MNIST class folders and labels, when the config asks for them (written once)
    cells/<cell id>/    one ordinary run folder per cell (sddpx_tp.run.workflow)
    cells.json          the last outcome of every cell that ran here (failures with their reason)
    results.json results.csv results.md accuracy.png auc.png     the table (sddpx_tp.sweep.results)

Rerunning a sweep into its own folder continues it: finished cells are skipped,
interrupted ones resume, failed ones are tried again. A folder that is not a sweep
folder, or one made from another config, is refused before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from sddpx_tp.data.fashion import CLASS_NAMES, DatasetMissingError, cached_source_model, class_subset, load_split
from sddpx_tp.errors import Interrupted, SettingError, UserError, literal
from sddpx_tp.files import write_json
from sddpx_tp.run.owned_folder import MARKER, OwnedFolder
from sddpx_tp.sweep.backends import Backend
from sddpx_tp.sweep.cells import CellOutcome, CellTask, is_finished
from sddpx_tp.sweep.config import FASHION_FOLDERS, FashionData, FolderData, SweepConfig
from sddpx_tp.sweep.grid import MAX_CELLS, Cell, cells
from sddpx_tp.sweep.results import RESULT_FILES, write_results

FORMAT = "sddpx-tp/sweep/1"
SWEEP_ENTRIES = ("sweep.json", "cells.json", "data", "cells", *RESULT_FILES)
CONTINUE_HINT = "run the same sweep command again to continue it"


class SweepFolder:
    """The sweep's output folder: every file name of a sweep is here."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.owned = OwnedFolder(self.path, "sweep", SWEEP_ENTRIES)
        self.plan = self.path / "sweep.json"
        self.outcomes = self.path / "cells.json"
        self.data = self.path / "data"

    def cell(self, cell_id: str) -> Path:
        return self.path / "cells" / cell_id

    def stored_config(self) -> dict[str, Any] | None:
        try:
            document = json.loads(self.plan.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return document.get("config") if isinstance(document, dict) else None

    def read_outcomes(self) -> dict[str, dict[str, Any]]:
        try:
            document = json.loads(self.outcomes.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def check(self, config: SweepConfig) -> None:
        """Raise, writing nothing, unless the sweep can start or continue here."""
        path = self.path
        for parent in [path, *path.parents]:
            if parent.exists() and not parent.is_dir():
                raise SettingError(
                    f"{literal(parent)} is a file, so the sweep folder cannot be made; choose another {{out}}"
                )
            if parent.exists():
                break
        if isinstance(config.data, FolderData):
            for folder in (config.data.references, config.data.evaluation):
                if folder is not None and (path.resolve() == Path(folder) or Path(folder) in path.resolve().parents):
                    raise SettingError(
                        f"the sweep folder {literal(path)} lies inside the image folder "
                        f"{literal(folder)}; choose another {{out}}"
                    )
        if not path.is_dir() or not self.owned.contents():
            return
        if not self.owned.is_ours():
            raise SettingError(
                f"{literal(path)} is not empty and is not a sweep folder made by sddpx-tp (it has no {MARKER} marker "
                "of a sweep): choose another {out}"
            )
        stored = self.stored_config()
        if stored is not None and stored != config.canonical():
            changed = ", ".join(_differences(stored, config.canonical())[:6])
            raise SettingError(
                f"{literal(path)} holds a sweep made from another config (these differ: {literal(changed)}): "
                "rerun it with its own config to continue it, or choose another {out} for this one"
            )


def _differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted names of the leaves that differ between two canonical configs."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            name
            for key in sorted(before.keys() | after.keys())
            for name in _differences(before.get(key), after.get(key), f"{prefix}{key}.")
        ]
    return [] if before == after else [prefix.rstrip(".")]


def run_sweep(
    config: SweepConfig,
    out: Path | str,
    backend: Backend,
    *,
    progress: bool = True,
    notify: Callable[[str], None] | None = None,
    max_cells: int = MAX_CELLS,
) -> dict[str, Any]:
    """Run every cell of ``config`` not yet finished in the sweep folder ``out``; returns the results table.

    ``notify`` receives one line per event worth a user's eye (a failed cell, a cell's warning; default:
    stderr, above the progress bar). Raises :class:`~sddpx_tp.errors.Interrupted` on SIGINT, after the
    running cells reached their last accepted step: a rerun continues the sweep. A grid of more than ``max_cells``
    cells is refused before anything is made (:class:`~sddpx_tp.sweep.grid.GridTooLarge`)."""
    say = notify or (lambda line: tqdm.write(line, file=sys.stderr))
    folder = SweepFolder(out)
    folder.check(config)
    planned = cells(config, folder.path, max_cells, progress)
    fashion = _read_fashion() if isinstance(config.data, FashionData) and not _data_written(folder) else None
    threads = config.threads or backend.threads_per_cell()
    with folder.owned.writing(reuse=folder.owned.is_ours()):
        folder.check(config)  # again, under the lock
        if folder.stored_config() is None:
            write_json(
                folder.plan, {"format": FORMAT, "config": config.canonical(), "cells": [cell.id for cell in planned]}
            )
        if fashion is not None:
            assert isinstance(config.data, FashionData)
            _write_fashion(config.data, fashion, folder)
        _prepare_models(config, progress, say)
        outcomes = folder.read_outcomes()
        tasks = [
            CellTask(cell.id, cell.settings, str(folder.cell(cell.id)), threads, backend.device())
            for cell in planned
            if not is_finished(str(folder.cell(cell.id)))
        ]
        if progress and tasks:  # what will happen, before it does: the bar's time left comes with the first cells
            finished = len(planned) - len(tasks)
            say(f"sweep: {len(planned)} cells{f' ({finished} finished before)' if finished else ''}; {len(tasks)} to "
                f"run on {backend.describe()}, {threads} torch thread{'s' if threads != 1 else ''} a cell")  # fmt: skip
        bar = tqdm(
            total=len(planned),
            initial=len(planned) - len(tasks),
            desc="sweep",
            unit="cell",
            file=sys.stderr,
            disable=not progress,
            dynamic_ncols=True,
        )

        def record(outcome: CellOutcome) -> None:
            outcomes[outcome.cell_id] = {
                "status": outcome.status,
                "reason": outcome.reason,
                "threads": outcome.threads,
                "seconds": outcome.seconds,
                "warnings": outcome.warnings,
            }
            write_json(folder.outcomes, outcomes)
            for warning in outcome.warnings:
                say(f"sddpx-tp: warning: cell {outcome.cell_id}: {warning}")
            if outcome.status == "failed":
                say(f"sddpx-tp: cell {outcome.cell_id} failed: {outcome.reason}")
            if outcome.status != "interrupted":
                bar.update(1)

        try:
            backend.run(tasks, record)
        except KeyboardInterrupt:
            bar.close()
            write_results(folder.path, planned, folder.read_outcomes(), _cell_folders(folder, planned))
            raise Interrupted(folder.path, hint=CONTINUE_HINT) from None
        bar.close()
        return write_results(folder.path, planned, outcomes, _cell_folders(folder, planned))


def _cell_folders(folder: SweepFolder, planned: list[Cell]) -> dict[str, Path]:
    return {cell.id: folder.cell(cell.id) for cell in planned}


def _data_written(folder: SweepFolder) -> bool:
    return (folder.data / "labels.txt").is_file()  # written last


FashionSplits = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _read_fashion() -> FashionSplits:
    try:  # offline: Debian's package or torchvision's copy in the cache, never a download mid-sweep
        return load_split("train"), load_split("test")
    except DatasetMissingError as error:
        raise UserError(str(error)) from None


def _write_fashion(data: FashionData, splits: FashionSplits, folder: SweepFolder) -> None:
    """Write the class folders once: into a temporary folder, moved into place when whole."""
    partial = folder.path / ".data.partial"
    shutil.rmtree(partial, ignore_errors=True)  # an earlier, interrupted write of ours
    (train_images, train_labels), (test_images, test_labels) = splits
    every_class = list(range(len(CLASS_NAMES)))
    references = class_subset(train_images, train_labels, every_class, data.references_per_class, data.seed)
    held_out = class_subset(test_images, test_labels, every_class, data.held_out_per_class, data.seed)
    for name, (images, labels) in (("refs", references), ("eval", held_out)):
        for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            class_folder = partial / name / FASHION_FOLDERS[label]
            class_folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.numpy()).save(class_folder / f"{index:05d}.png")
    # The names the folders stand for (a folder's "_" reads as a space), one per output of a 10-class model.
    (partial / "labels.txt").write_text("\n".join(name.replace("/", "-") for name in CLASS_NAMES) + "\n")
    if folder.data.exists():
        shutil.rmtree(folder.data)  # ours and incomplete (no labels.txt): _data_written said so
    os.replace(partial, folder.data)


def _prepare_models(config: SweepConfig, progress: bool, say: Callable[[str], None]) -> None:
    """Train the Fashion-MNIST source models the config names, once (cached), before any cell needs them."""
    for model in config.models:
        if model.training is None or model.source.weights is None:
            continue
        cache = Path(model.source.weights)
        if not cache.exists():
            say(f"sddpx-tp: training the Fashion-MNIST source model {model.label!r} once (cached at {cache})")
        try:
            cached_source_model(cache, progress=progress, **model.training)
        except DatasetMissingError as error:
            raise UserError(str(error)) from None
