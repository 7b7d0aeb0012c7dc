"""Folders that sddpx-tp writes (a run, the demo's folder): a marker, replacing only what is ours, one writer.

A folder is sddpx-tp's when it holds the marker file ``.sddpx-tp`` naming its kind;
the marker is written when the folder is claimed, before anything else. ``force``
only ever replaces a marked folder of the same kind, and even then removes only the
entries sddpx-tp writes there: a user's own files, or a folder that merely happens
to exist, are never deleted. A lock file held with an OS lock (released by the OS
when the process dies, so it never goes stale) gives a folder one writer at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sddpx_tp.errors import RunFolderError, SettingError, literal
from sddpx_tp.files import atomic_write

MARKER = ".sddpx-tp"
LOCK = ".sddpx-tp.lock"


def _try_lock(handle: IO[bytes]) -> bool:
    """Take an exclusive, non-blocking OS lock on an open file; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def file_locks(paths: list[Path]) -> Iterator[None]:
    """Hold a lock on each file about to be written (``.NAME.lock`` beside it, removed afterwards), so that two
    processes never write the same file at once (two exports to one ``--onnx`` path): raise at once if one is held."""
    with contextlib.ExitStack() as stack:
        for path in paths:
            lock = path.with_name(f".{path.name}.lock")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = stack.enter_context(open(lock, "ab"))
            except OSError as error:
                raise RunFolderError(f"cannot write next to {path}: {error.strerror}") from None
            if not _try_lock(handle):
                raise RunFolderError(f"{path} is being written by another sddpx-tp process; wait for it to finish, "
                                     "or choose another file")  # fmt: skip
            stack.callback(lock.unlink, missing_ok=True)  # before the handle closes: then the lock is released
        yield


@dataclass(frozen=True)
class OwnedFolder:
    """A folder sddpx-tp writes; ``entries`` are the names it writes there (what ``force`` may replace)."""

    path: Path
    kind: str  # "run", "demo": a run folder is never replaced by a demo and vice versa
    entries: tuple[str, ...]

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def is_ours(self) -> bool:
        """Whether the folder carries sddpx-tp's marker for this kind."""
        try:
            return bool(json.loads(self.marker.read_text(encoding="utf-8")).get("kind") == self.kind)
        except (OSError, ValueError, AttributeError):
            return False

    def contents(self) -> list[str]:
        """Names in the folder, without our lock file (which a claim creates before it looks again)."""
        try:
            return [entry.name for entry in self.path.iterdir() if entry.name != LOCK]
        except OSError as error:
            raise RunFolderError(f"cannot list {self.path}: {error.strerror}") from None

    def check_writable(self, force: bool) -> None:
        """Raise, writing nothing, unless the folder can be created, is empty, or is ours and ``force``."""
        for parent in [self.path, *self.path.parents]:
            if parent.exists() and not parent.is_dir():
                where = "is a file" if parent == self.path else f"cannot be made: {literal(parent)} is a file"
                raise SettingError(f"output folder {literal(self.path)} {where}; choose another {{out}}")
            if parent.exists():
                break
        if not self.path.is_dir() or not self.contents():
            return
        if not force:
            raise SettingError(
                f"output folder {literal(self.path)} already exists and is not empty; "
                "pass {force} to replace it, {resume} to continue its run, or choose another {out}"
            )
        if not self.is_ours():
            raise SettingError(
                f"{literal(self.path)} is not a {self.kind} folder made by sddpx-tp (it has no {MARKER} marker), "
                "so {force} will not replace it: choose another {out}, or empty it yourself"
            )

    @contextlib.contextmanager
    def writing(self, force: bool = False, reuse: bool = False) -> Iterator[None]:
        """Claim the folder (create it, take the lock, replace our entries with ``force``), then yield.

        ``reuse``: the folder is ours already and is written on as it is (a resumed run)."""
        if reuse and not self.is_ours():
            raise RunFolderError(f"{self.path} is not a {self.kind} folder made by sddpx-tp")
        if not reuse:
            self.check_writable(force)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"cannot create output folder {self.path}: {error.strerror}") from None
        with self.lock():
            if not reuse:
                self.check_writable(force)  # again, under the lock: another process may have written meanwhile
            try:
                if force:
                    for name in self.entries:
                        self._remove(self.path / name)
                self.mark()
            except OSError as error:
                raise RunFolderError(f"cannot prepare {self.path}: {error.strerror or error}") from None
            yield

    def discard(self, remove_folder: bool) -> None:
        """Undo a claim that produced nothing: remove our entries and marker (and the folder, if we made it)."""
        with contextlib.suppress(OSError):  # best effort: the error that led here is the one to report
            for name in (*self.entries, MARKER, LOCK):  # the lock file too (Linux allows it while held)
                self._remove(self.path / name)
            if remove_folder and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()

    def mark(self) -> None:
        atomic_write(self.marker, lambda temporary: temporary.write_text(json.dumps({"kind": self.kind}) + "\n"))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock: raise at once if another process holds it."""
        try:
            handle = open(self.path / LOCK, "ab")  # noqa: SIM115 (held open for the lock's lifetime)
        except OSError as error:
            raise RunFolderError(f"cannot write to {self.path}: {error.strerror}") from None
        with handle:
            if not _try_lock(handle):
                raise RunFolderError(
                    f"{self.path} is in use by another sddpx-tp process; wait for it to finish or use another folder"
                )
            yield  # closing the file releases the lock

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            os.unlink(path)
