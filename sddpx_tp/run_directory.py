"""The run folder: every file name of a run, checkpoints while pruning, resume after an interruption.

Layout of ``RUN/``::

    state.json              settings, trajectory and schedule state after the last accepted step
    checkpoints/last.pt     that step's model (safe format)
    steps/step-NNN.pt       every accepted model, with keep_models
    model.pt                the final pruned model (safe format: tensors and widths only)
    model_full.pt           the same as one pickled file (convenience; loading it runs code)
    report.json report.md accuracy.png prune.log
    model.onnx baseline.onnx export.json     after export
    bench.json                                after bench
    latency_curve.json accuracy_latency.png   after the latency curve

Every file is written to a temporary name and moved into place, so an interrupted
run never leaves a half-written file; ``state.json`` is written after the
checkpoint it names.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sddpx_tp.checkpoint import atomic_write, load_pruned, save_pruned
from sddpx_tp.errors import RunFolderError, SettingError, literal
from sddpx_tp.run_settings import RunSettings
from sddpx_tp.trajectory import PruningSession, StepRecord


def write_json(path: Path, document: Any) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(document, indent=2) + "\n"))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text))


@dataclass
class Checkpoint:
    """Where an interrupted run stopped: its records and schedule state (its model: ``last_checkpoint``)."""

    trajectory: list[StepRecord]
    schedule_state: dict[str, Any]


class RunDirectory:
    """One run folder. Every file name of a run is a property here and nowhere else."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    state = property(lambda self: self.path / "state.json")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.pt")
    steps_folder = property(lambda self: self.path / "steps")
    model = property(lambda self: self.path / "model.pt")
    model_full = property(lambda self: self.path / "model_full.pt")
    report_json = property(lambda self: self.path / "report.json")
    report_md = property(lambda self: self.path / "report.md")
    accuracy_plot = property(lambda self: self.path / "accuracy.png")
    log = property(lambda self: self.path / "prune.log")
    onnx = property(lambda self: self.path / "model.onnx")
    baseline_onnx = property(lambda self: self.path / "baseline.onnx")
    export_json = property(lambda self: self.path / "export.json")
    bench_json = property(lambda self: self.path / "bench.json")
    latency_curve_json = property(lambda self: self.path / "latency_curve.json")
    latency_plot = property(lambda self: self.path / "accuracy_latency.png")

    def step_model(self, step: int) -> Path:
        return self.steps_folder / f"step-{step:03d}.pt"

    def step_models(self) -> dict[int, Path]:
        """Kept step models by step number."""
        return {int(path.stem.split("-")[1]): path for path in sorted(self.steps_folder.glob("step-*.pt"))}

    def prepare(self, force: bool, resume: bool) -> None:
        """Refuse to clobber an existing run unless ``force``; check a run to ``resume`` exists."""
        if resume:
            if force:
                raise SettingError("{force} and {resume} contradict each other: choose one")
            if not self.state.is_file():
                raise SettingError(
                    f"nothing to resume in {literal(self.path)}: it holds no {self.state.name} "
                    "(start without {resume})"
                )
            return
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"output path {self.path} is a file, not a folder")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not force:
                raise SettingError(
                    f"output folder {literal(self.path)} already exists and is not empty; "
                    "pass {force} to replace it, {resume} to continue its run, or choose another {out}"
                )
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state.read_text()))
        except (OSError, ValueError) as error:
            raise RunFolderError(f"cannot read {self.state}: {error}") from None

    def settings(self) -> RunSettings:
        """The settings of the run in this folder (any run, finished or not)."""
        if not self.state.is_file():
            raise RunFolderError(
                f"{self.path} is not an sddpx-tp run folder (no {self.state.name}); pass a folder made by pruning"
            )
        return RunSettings.from_dict(self._read_state().get("settings", {}), str(self.state))

    def finished_settings(self) -> RunSettings:
        """The settings of a finished run (one with a pruned model)."""
        if self.state.is_file() and not self.model.is_file():
            raise SettingError(
                f"run {literal(self.path)} has no pruned model yet (interrupted?): finish it with {{resume}}"
            )
        return self.settings()

    def save_checkpoint(self, session: PruningSession, settings: RunSettings) -> None:
        """Save the accepted model, then the state that points to it."""
        step = session.trajectory[-1].step
        save_pruned(session.current.model, self.last_checkpoint, {"step": step})
        if settings.keep_models:
            save_pruned(session.current.model, self.step_model(step), {"step": step})
        write_json(
            self.state,
            {
                "settings": settings.to_dict(),
                "step": step,
                "trajectory": [record.to_dict() for record in session.trajectory],
                "schedule_state": session.schedule_state,
            },
        )

    def checkpoint(self) -> Checkpoint:
        state = self._read_state()
        return Checkpoint(
            trajectory=[StepRecord.from_dict(record) for record in state["trajectory"]],
            schedule_state=state["schedule_state"],
        )

    def trajectory(self) -> list[dict[str, Any]]:
        return list(self._read_state()["trajectory"])

    def load_checkpoint_model(self, architecture: nn.Module) -> nn.Module:
        return load_pruned(self.last_checkpoint, architecture)

    def report(self) -> dict[str, Any]:
        return dict(json.loads(self.report_json.read_text()))
