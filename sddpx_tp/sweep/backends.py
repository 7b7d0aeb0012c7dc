"""Where a sweep's cells run: a local pool of worker processes, or a Ray cluster.

Both run :func:`sddpx_tp.sweep.cells.run_cell` on the same tasks (thread count included),
so they give the same results for the same cells. A backend hands each outcome to a
callback as soon as it arrives; on KeyboardInterrupt it asks the running cells to stop
after their last accepted step, collects what they report, and raises KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures import wait as wait_for
from typing import Any, Protocol

from sddpx_tp.errors import SettingError
from sddpx_tp.sweep.cells import CellOutcome, CellTask, one_line, run_cell, run_cell_in_worker, start_worker

OnOutcome = Callable[[CellOutcome], None]
STOP_WAIT_SECONDS = 120  # how long an interrupt waits for running cells to reach their checkpoint


class Backend(Protocol):
    def threads_per_cell(self) -> int:
        """Torch threads a cell gets unless the config fixes them."""
        ...

    def device(self) -> str: ...

    def describe(self) -> str:
        """Where the cells run, for a person: "2 local worker processes"."""
        ...

    def run(self, tasks: Sequence[CellTask], on_outcome: OnOutcome) -> None: ...


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LocalBackend:
    """A pool of ``workers`` processes (started with "spawn": no forked torch state), one cell each at a time."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise SettingError(f"{{workers}} must be >= 1, not {workers}")
        self.workers = workers

    def threads_per_cell(self) -> int:
        return max(1, cpu_count() // self.workers)  # workers do not fight over the cores

    def device(self) -> str:
        return "cpu"

    def describe(self) -> str:
        return f"{self.workers} local worker process{'es' if self.workers != 1 else ''}"

    def run(self, tasks: Sequence[CellTask], on_outcome: OnOutcome) -> None:
        if not tasks:
            return
        context = multiprocessing.get_context("spawn")
        stopping = context.Event()
        workers = min(self.workers, len(tasks))
        with ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker, initargs=(stopping,)) as pool:
            futures = {pool.submit(run_cell_in_worker, task): task for task in tasks}
            try:
                for future in as_completed(futures):
                    on_outcome(_outcome_of(future, futures[future]))
            except KeyboardInterrupt:
                stopping.set()  # before the signal: a worker between two cells then starts none
                self._stop(pool, futures, on_outcome)
                raise

    @staticmethod
    def _stop(pool: ProcessPoolExecutor, futures: dict[Future[CellOutcome], CellTask], on_outcome: OnOutcome) -> None:
        """Forward the interrupt to the workers (they left the terminal's process group) and collect what the
        running cells report; a second interrupt ends the workers at once."""
        for future in futures:
            future.cancel()
        workers = multiprocessing.active_children()
        for worker in workers:
            with contextlib.suppress(OSError, TypeError):
                os.kill(worker.pid, signal.SIGINT)  # type: ignore[arg-type]
        running = [future for future in futures if not future.cancelled()]
        try:
            finished, unfinished = wait_for(running, timeout=STOP_WAIT_SECONDS)
        except KeyboardInterrupt:
            finished, unfinished = set(), set(running)
        for future in finished:
            with contextlib.suppress(Exception):
                on_outcome(_outcome_of(future, futures[future]))
        if unfinished:  # a cell that does not stop (or a second Ctrl-C): end its worker now
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()
        pool.shutdown(wait=True, cancel_futures=True)  # idle workers exit; their queues are released cleanly


def _outcome_of(future: Future[CellOutcome], task: CellTask) -> CellOutcome:
    try:
        return future.result()
    except Exception as error:  # the worker itself died (killed, out of memory): that cell failed
        return CellOutcome(task.cell_id, "failed", f"its worker stopped: {one_line(error)}", threads=task.threads)


RAY_MISSING = "{backend} ray needs Ray, which is not installed: pip install 'sddpx-tp[ray]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SettingError(RAY_MISSING) from None
    return ray


class RayBackend:
    """Cells as Ray tasks on a cluster (``address`` "auto" or host:port) or on a local Ray started here (None).

    On a cluster, the sweep folder (and the image folders and model files) must be at the same path on every node,
    a shared file system: each cell writes its run folder where it runs."""

    def __init__(self, address: str | None = None, cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0) -> None:
        if not cpus_per_cell > 0:
            raise SettingError(f"{{cpus_per_cell}} must be > 0, not {cpus_per_cell}")
        if not gpus_per_cell >= 0:
            raise SettingError(f"{{gpus_per_cell}} must be >= 0, not {gpus_per_cell}")
        import_ray()  # before anything runs: a missing extra is a one-line error, not a failure halfway
        self.address, self.cpus_per_cell, self.gpus_per_cell = address, cpus_per_cell, gpus_per_cell

    def threads_per_cell(self) -> int:
        return max(1, int(self.cpus_per_cell))

    def device(self) -> str:
        return "cuda" if self.gpus_per_cell > 0 else "cpu"

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
        return f"{where}, {self.cpus_per_cell:g} CPUs a cell"

    def run(self, tasks: Sequence[CellTask], on_outcome: OnOutcome) -> None:
        if not tasks:
            return
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(
                address=self.address,
                num_cpus=None if self.address else cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        try:
            remote = ray.remote(num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell, max_retries=0)(run_cell)
            pending = {remote.remote(task): task for task in tasks}
            try:
                while pending:
                    finished, _ = ray.wait(list(pending), num_returns=1)
                    on_outcome(_ray_outcome(ray, finished[0], pending.pop(finished[0])))
            except KeyboardInterrupt:
                for reference in pending:
                    ray.cancel(reference)  # a running cell gets KeyboardInterrupt: it stops after its last step
                with contextlib.suppress(KeyboardInterrupt):
                    stopped, _ = ray.wait(list(pending), num_returns=len(pending), timeout=STOP_WAIT_SECONDS)
                    for reference in stopped:
                        on_outcome(_ray_outcome(ray, reference, pending[reference]))
                raise
        finally:
            if started_here:
                ray.shutdown()


def _ray_outcome(ray: Any, reference: Any, task: CellTask) -> CellOutcome:
    try:
        outcome: CellOutcome = ray.get(reference)
        return outcome
    except ray.exceptions.TaskCancelledError:
        return CellOutcome(task.cell_id, "interrupted", threads=task.threads)
    except ray.exceptions.RayError as error:  # a worker or node died: that cell failed
        return CellOutcome(task.cell_id, "failed", f"its Ray task failed: {one_line(error)}", threads=task.threads)
