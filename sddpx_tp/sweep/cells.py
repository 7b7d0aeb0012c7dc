"""Running one cell of a sweep, wherever it runs: a local worker process or a Ray worker.

A cell is an ordinary run folder made by :func:`sddpx_tp.run.workflow.prune_run`. Its task carries
everything that decides its result, the torch thread count included, so that the same
cell gives the same numbers on any backend. Finished cells are skipped, interrupted ones
resume from their last accepted step, and a failure becomes an outcome (never an
exception), so that one bad cell does not stop the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from sddpx_tp.errors import Interrupted, UserError
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.run.settings import RunSettings
from sddpx_tp.run.workflow import prune_run

Status = Literal["done", "failed", "interrupted"]


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable: it crosses process and machine boundaries)."""

    cell_id: str
    settings: RunSettings
    folder: str  # the cell's run folder (on a cluster: a path every node sees)
    threads: int  # torch CPU threads: part of the cell, since the thread count can change the last bits
    device: str = "cpu"


@dataclass(frozen=True)
class CellOutcome:
    cell_id: str
    status: Status
    reason: str | None = None  # why it failed, one line
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of this attempt (the run's own time is in its report)
    threads: int = 0


def is_finished(folder: str) -> bool:
    """A run folder holding its pruned model (written last) is finished."""
    return RunDirectory(folder).model.is_file()


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return (text if isinstance(error, UserError) else f"{type(error).__name__}: {text}".rstrip(": "))[:500]


def run_cell(task: CellTask) -> CellOutcome:
    """Run (or resume, or skip) one cell; every failure is returned as a ``failed`` outcome."""
    started = time.monotonic()
    messages: list[str] = []

    def outcome(status: Status, reason: str | None = None) -> CellOutcome:
        return CellOutcome(task.cell_id, status, reason, messages, time.monotonic() - started, task.threads)

    if is_finished(task.folder):
        return outcome("done")
    torch.set_num_threads(task.threads)
    run = RunDirectory(task.folder)
    resume = run.has_checkpoint()
    # A folder of ours without a checkpoint (a start that stopped before its first step): start it over.
    force = not resume and run.path.is_dir() and run.folder.is_ours()
    try:
        prune_run(
            task.settings,
            run.path,
            force=force,
            resume=resume,
            device=task.device,
            progress=False,
            warn=messages.append,
        )
    except (Interrupted, KeyboardInterrupt):
        return outcome("interrupted")
    except Exception as error:  # any failure of this cell is its own, reported with the others' results
        return outcome("failed", one_line(error))
    return outcome("done")


# In a local worker process: the parent's "the sweep is stopping" event, set by start_worker.
_stopping: Any = None


def start_worker(stopping: Any) -> None:
    """A local worker's initializer. SIGINT is the parent's to forward (a worker waiting for work ignores it),
    and the worker leaves the terminal's process group, so that Ctrl-C reaches it only that way, once.
    ``stopping`` (a multiprocessing Event) tells it not to start the cells already queued to it."""
    global _stopping
    _stopping = stopping
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):  # not on Windows
        os.setpgrp()


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt while a cell runs (the run then stops after its last accepted step)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_cell_in_worker(task: CellTask) -> CellOutcome:
    """:func:`run_cell` in a local worker process, which listens to SIGINT only while the cell runs."""
    try:
        with _interruptible():
            # Checked after SIGINT is listened to: the parent sets the event, then signals, so no stop is missed.
            if _stopping is not None and _stopping.is_set():
                return CellOutcome(task.cell_id, "interrupted", threads=task.threads)
            return run_cell(task)
    except KeyboardInterrupt:  # the signal came just before or after the run: it is checkpointed or finished
        return CellOutcome(task.cell_id, "done" if is_finished(task.folder) else "interrupted", threads=task.threads)
