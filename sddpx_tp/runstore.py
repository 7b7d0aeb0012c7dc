"""The run directory: checkpoints while pruning, the results when done, resume after an interruption.

Layout of ``RUN/``::

    state.json              settings, trajectory and schedule state after the last accepted step
    checkpoints/last.pt     that step's model (safe format)
    steps/step-NNN.pt       every accepted model, with --keep-models
    model.pt                the final pruned model (safe format: tensors and widths only)
    model_full.pt           the same as one pickled file (convenience; loading it runs code)
    report.json report.md accuracy.png prune.log

Every file is written to a temporary name and moved into place, so an interrupted
run never leaves a half-written file; ``state.json`` is written after the
checkpoint it names.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sddpx_tp.api import ResumePoint
from sddpx_tp.checkpoint import atomic_write, load_pruned, save_pruned
from sddpx_tp.errors import UserError
from sddpx_tp.models import restrict_to_classes
from sddpx_tp.references import load_image_folder, read_labels_file
from sddpx_tp.registry import ModelSpec, available_models, create_model
from sddpx_tp.trajectory import PruningSession, StepRecord

STATE = "state.json"


def write_json(path: Path, document: Any) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(document, indent=2) + "\n"))


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def state_path(self) -> Path:
        return self.path / STATE

    def prepare(self, force: bool, resume: bool) -> None:
        """Refuse to clobber an existing run unless ``force``; check a run to ``resume`` exists."""
        if resume:
            if force:
                raise UserError("--force and --resume contradict each other: choose one")
            if not self.state_path.is_file():
                raise UserError(f"nothing to resume in {self.path}: it holds no {STATE} (start without --resume)")
            return
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"output path {self.path} is a file, not a folder")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not force:
                raise UserError(
                    f"output folder {self.path} already exists and is not empty; "
                    "pass --force to replace it, --resume to continue its run, or choose another --out"
                )
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def stored_settings(self) -> dict[str, Any]:
        return dict(json.loads(self.state_path.read_text())["settings"])

    def checkpoint(self, session: PruningSession, settings: dict[str, Any], keep_models: bool) -> None:
        """Save the accepted model, then the state that points to it."""
        step = session.trajectory[-1].step
        save_pruned(session.current.model, self.path / "checkpoints" / "last.pt", {"step": step})
        if keep_models:
            save_pruned(session.current.model, self.path / "steps" / f"step-{step:03d}.pt", {"step": step})
        write_json(
            self.state_path,
            {
                "settings": settings,
                "step": step,
                "trajectory": [record.to_dict() for record in session.trajectory],
                "schedule_state": session.schedule_state,
            },
        )

    def resume_point(self, architecture: nn.Module) -> ResumePoint:
        """The last accepted model, loaded into ``architecture`` (fresh and class-restricted)."""
        state = json.loads(self.state_path.read_text())
        model = load_pruned(self.path / "checkpoints" / "last.pt", architecture)
        return ResumePoint(
            model=model,
            trajectory=[StepRecord.from_dict(record) for record in state["trajectory"]],
            schedule_state=state["schedule_state"],
        )

    def step_models(self) -> list[Path]:
        return sorted((self.path / "steps").glob("step-*.pt"))


def finished_settings(run: Path) -> dict[str, Any]:
    """The settings of a finished run (one with a pruned model)."""
    state = run / STATE
    if not state.is_file():
        raise UserError(f"{run} is not an sddpx-tp run folder (no {STATE}); pass a folder made by 'sddpx-tp prune'")
    if not (run / "model.pt").is_file():
        raise UserError(
            f"run {run} has no pruned model yet (interrupted?): finish it with 'sddpx-tp prune ... --resume'"
        )
    return dict(json.loads(state.read_text())["settings"])


def fresh_architecture(settings: dict[str, Any]) -> nn.Module:
    """An unpruned instance of the run's architecture, to load pruned weights into."""
    if settings["model"] in available_models():
        return create_model(settings["model"], num_classes=settings["num_classes"], random_init=True)[0]
    return create_model(settings["model"])[0]  # the user's model file


def pruned_model(run: Path, settings: dict[str, Any], path: Path | None = None) -> nn.Module:
    """The run's pruned model (or a kept step model at ``path``), rebuilt from the safe format."""
    architecture = restrict_to_classes(fresh_architecture(settings), settings["classes"])
    return load_pruned(path or run / "model.pt", architecture)


def baseline_model(settings: dict[str, Any]) -> nn.Module:
    """The run's unpruned model, restricted to the same classes: the fair comparison."""
    weights = None if settings["weights"] is None else Path(settings["weights"])
    original, _ = create_model(settings["model"], weights, settings["num_classes"], settings["random_init"])
    return restrict_to_classes(original, settings["classes"])


def run_spec(settings: dict[str, Any]) -> ModelSpec:
    """The preprocessing the run used."""
    spec = ModelSpec(settings["model"])
    if settings["model"] in available_models():
        spec = create_model(settings["model"], num_classes=settings["num_classes"], random_init=True)[1]
    if settings.get("labels"):
        spec = replace(spec, class_names=read_labels_file(Path(settings["labels"])))
    size = settings["input"]
    return replace(
        spec, input_size=size["size"], resize_size=size["resize"], mean=tuple(size["mean"]), std=tuple(size["std"])
    )


def reference_images(settings: dict[str, Any]) -> torch.Tensor:
    """The run's reference images, preprocessed as during pruning (random ones if the folder is gone)."""
    spec = run_spec(settings)
    refs = Path(settings["refs_dir"])
    if refs.is_dir():
        chosen, per_class = settings["class_folders"], settings["per_class"]
        outputs = settings.get("num_classes") or 1000
        return load_image_folder(refs, spec, outputs, chosen=chosen, per_class=per_class, seed=settings["seed"]).images
    # A library warning; the CLI prints warnings as one "sddpx-tp: warning: ..." line.
    warnings.warn(f"reference folder {refs} is gone; using random inputs", stacklevel=2)
    return torch.randn(16, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))
