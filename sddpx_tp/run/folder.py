"""The run folder: every file name of a run, checkpoints while pruning, resume after an interruption.

Layout of ``RUN/``::

    state.json              settings, trajectory and schedule state after the last accepted step
    checkpoints/last.pt     that step's model (safe format)
    steps/step-NNN.pt       every accepted model, with keep_models
    recommended.pt          the recommended step's model (the accuracy target's), kept as the run goes;
                            deleted at the end if that is the last step (model.pt holds it)
    model.pt                the final pruned model (safe format: tensors and widths only)
    model_full.pt           the same as one pickled file (convenience; loading it runs code)
    report.json report.md accuracy.png prune.log
    model.onnx baseline.onnx export.json     after export
    model.int8.onnx baseline.int8.onnx        after export, quantized to int8 (pruned, and unpruned to compare)
    model.fp16.onnx                           after export, converted to float16
    bench.json                                after bench
    latency_curve.json accuracy_latency.png   after the latency curve

Every file is written to a temporary name and moved into place, so an interrupted
run never leaves a half-written file; ``state.json`` is written after the
checkpoint it names.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sddpx_tp.errors import RunFolderError, SettingError, literal
from sddpx_tp.files import write_json
from sddpx_tp.models.checkpoint import checkpoint_metadata, load_pruned, save_pruned
from sddpx_tp.pruning.accuracy_target import recommended_record
from sddpx_tp.pruning.session import PruningSession, StepRecord
from sddpx_tp.run.owned_folder import MARKER, OwnedFolder
from sddpx_tp.run.settings import RunSettings

_ENTRIES: list[str] = []  # every top-level name a run writes: what --force may replace (filled by _entry)


def _entry(*parts: str) -> property:
    """A run file's path property; its top-level name joins the run's entries."""
    if parts[0] not in _ENTRIES:
        _ENTRIES.append(parts[0])
    return property(lambda self: self.path.joinpath(*parts))


@dataclass
class Checkpoint:
    """Where an interrupted run stopped: its records and schedule state (its model: ``last_checkpoint``)."""

    trajectory: list[StepRecord]
    schedule_state: dict[str, Any]


class RunDirectory:
    """One run folder. Every file name of a run is a property here and nowhere else."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    state = _entry("state.json")
    last_checkpoint = _entry("checkpoints", "last.pt")
    steps_folder = _entry("steps")
    model = _entry("model.pt")
    recommended_model = _entry("recommended.pt")
    model_full = _entry("model_full.pt")
    head = _entry("head.pt")  # with a fitted head: the head of the unpruned model (the baseline's)
    report_json = _entry("report.json")
    report_md = _entry("report.md")
    accuracy_plot = _entry("accuracy.png")
    log = _entry("prune.log")
    onnx = _entry("model.onnx")
    int8_onnx = _entry("model.int8.onnx")
    baseline_int8_onnx = _entry("baseline.int8.onnx")
    fp16_onnx = _entry("model.fp16.onnx")
    baseline_onnx = _entry("baseline.onnx")
    export_json = _entry("export.json")
    bench_json = _entry("bench.json")
    latency_curve_json = _entry("latency_curve.json")
    latency_plot = _entry("accuracy_latency.png")

    def step_model(self, step: int) -> Path:
        return self.steps_folder / f"step-{step:03d}.pt"

    def step_models(self) -> dict[int, Path]:
        """Kept step models by step number."""
        return {int(path.stem.split("-")[1]): path for path in sorted(self.steps_folder.glob("step-*.pt"))}

    def model_of_step(self, step: int) -> Path | None:
        """The file holding step ``step``'s model, if the run kept it: the last step's, a kept step's
        (``keep_models``) or the recommended one's; None otherwise."""
        trajectory = self.trajectory()
        if self.model.is_file() and step == trajectory[-1]["step"]:
            return self.model
        if self.step_model(step).is_file():
            return self.step_model(step)
        if self.recommended_model.is_file() and checkpoint_metadata(self.recommended_model).get("step") == step:
            return self.recommended_model
        return None

    def drop_recommended_copy(self) -> None:
        """Delete recommended.pt when it holds the last step, which model.pt now holds too (a second copy
        of the same weights; ``model_of_step`` finds that step in model.pt)."""
        if not (self.model.is_file() and self.recommended_model.is_file()):
            return
        if checkpoint_metadata(self.recommended_model).get("step") == self.trajectory()[-1]["step"]:
            self.recommended_model.unlink()

    @property
    def folder(self) -> OwnedFolder:
        """The folder as sddpx-tp owns it: its marker, lock and the entries ``force`` may replace."""
        return OwnedFolder(self.path, "run", tuple(_ENTRIES))

    def check_writable(self, force: bool, resume: bool) -> None:
        """Raise, writing nothing, unless a run can start (or, with ``resume``, continue) here."""
        if resume:
            if force:
                raise SettingError("{force} and {resume} contradict each other: choose one")
            if not self.folder.is_ours():
                if self.state.is_file():
                    raise RunFolderError(self._older_run("it cannot be resumed; prune again into a new folder"))
                raise SettingError(
                    f"nothing to resume in {literal(self.path)}: it is not a run folder made by sddpx-tp "
                    "(start without {resume})"
                )
            return
        if force and self.path.is_dir() and self.state.is_file() and not self.folder.is_ours():
            raise RunFolderError(self._older_run("only marked run folders are replaced; delete it yourself"))
        self.folder.check_writable(force)

    def _older_run(self, consequence: str) -> str:
        return f"{self.path} holds a run made by an older sddpx-tp (without the {MARKER} marker): {consequence}"

    @contextlib.contextmanager
    def writing(self, force: bool = False, resume: bool = False) -> Iterator[None]:
        """Hold the run folder for writing: created (or, with ``force``, our files in it replaced), locked."""
        self.check_writable(force, resume)
        with self.folder.writing(force, reuse=resume):
            yield

    def has_checkpoint(self) -> bool:
        return self.state.is_file()

    def _read_state(self) -> dict[str, Any]:
        return _read_object(self.state, "a run state")

    def settings(self) -> RunSettings:
        """The settings of the run in this folder (any run, finished or not), validated."""
        if not self.state.is_file():
            raise RunFolderError(
                f"{self.path} is not an sddpx-tp run folder (no {self.state.name}); pass a folder made by pruning"
            )
        return RunSettings.from_dict(self._read_state().get("settings"), str(self.state))

    def finished_settings(self) -> RunSettings:
        """The settings of a finished run (one with a pruned model)."""
        if self.state.is_file() and not self.model.is_file():
            raise SettingError(
                f"run {literal(self.path)} has no pruned model yet (interrupted?): finish it with {{resume}}"
            )
        return self.settings()

    def save_checkpoint(self, session: PruningSession, settings: RunSettings) -> None:
        """Save the accepted model, then the state that points to it (an interrupt waits until both are saved:
        between the two, the checkpoint would be a step ahead of the state)."""
        with interrupts_deferred():
            self._save_checkpoint(session, settings)

    def _save_checkpoint(self, session: PruningSession, settings: RunSettings) -> None:
        step = session.trajectory[-1].step
        save_pruned(session.current.model, self.last_checkpoint, {"step": step})
        if settings.keep_models:
            save_pruned(session.current.model, self.step_model(step), {"step": step})
        elif recommended_record(session.trajectory, settings.config.accuracy_target) == len(session.trajectory) - 1:
            # The step export writes by default, kept (so far the recommended one) even without keep_models.
            save_pruned(session.current.model, self.recommended_model, {"step": step})
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
        try:
            return Checkpoint(
                trajectory=[StepRecord.from_dict(record) for record in state["trajectory"]],
                schedule_state=dict(state["schedule_state"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise RunFolderError(f"{self.state} is damaged ({_reason(error)}): the run cannot resume") from None

    def trajectory(self) -> list[dict[str, Any]]:
        trajectory = self._read_state().get("trajectory")
        if not isinstance(trajectory, list):
            raise RunFolderError(f"{self.state} has no trajectory: the run cannot be used")
        return trajectory

    def load_checkpoint_model(self, architecture: nn.Module) -> nn.Module:
        """The model of the last accepted step; refused unless it is whole and the step ``state.json`` names."""
        expected = self._read_state().get("step")
        try:
            step = checkpoint_metadata(self.last_checkpoint).get("step")
            model = load_pruned(self.last_checkpoint, architecture)
        except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError) as error:
            raise RunFolderError(
                f"the checkpoint {self.last_checkpoint} is missing or damaged ({_reason(error)}): "
                "the run cannot resume; start it again"
            ) from None
        if step != expected:
            raise RunFolderError(
                f"the checkpoint {self.last_checkpoint} is of step {step}, but {self.state.name} is at step "
                f"{expected}: the run cannot resume; start it again"
            )
        return model

    def report(self) -> dict[str, Any]:
        return _read_object(self.report_json, "a run report")


def _read_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from one of the run's files, or a one-line RunFolderError."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunFolderError(f"cannot read {path} ({_reason(error)}): the run cannot be used") from None
    if not isinstance(document, dict):
        raise RunFolderError(f"{path} is not {what} (a JSON object): the run cannot be used")
    return document


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT until the block is done, then raise it as KeyboardInterrupt (only the main thread can)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _reason(error: BaseException) -> str:
    """The first line of an error's text, for a one-line message."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
