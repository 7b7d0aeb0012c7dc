"""Writing files so that no reader ever sees half of one: a temporary name, then an atomic rename.

Every file sddpx-tp writes (run folders, sweeps, exports, caches) goes through :func:`atomic_write`,
so an interrupted or failed write leaves the previous file, or none, never a truncated one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def publish(temporary: Path | str, path: Path) -> None:
    """Move a finished temporary file into place, with the permissions a plain ``open`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates files readable by their owner only
    os.replace(temporary, path)


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(temporary_path)`` then move the result into place: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        publish(temporary, path)
    except RuntimeError as error:  # torch's writer says "basic_ios::clear: iostream error" for a full disk
        Path(temporary).unlink(missing_ok=True)
        full = shutil.disk_usage(path.parent).free < 64 * 2**20
        raise OSError(errno.ENOSPC if full else errno.EIO, f"{str(error).splitlines()[0][:120]}", str(path)) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# The errors of the file system a person can act on, each said in one line by :func:`file_system_problem`.
_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space and run it again (a pruning run continues with --resume)",
    errno.EDQUOT: "the disk quota is used up: free some space and run it again",
    errno.EROFS: "the file system is read-only: choose a writable place",
    errno.EACCES: "permission denied: choose a place you may write, or change its permissions",
    errno.EPERM: "permission denied: choose a place you may write, or change its permissions",
    errno.ELOOP: "it is a symbolic link that leads back to itself (a loop): give the real path",
}


def file_system_problem(error: BaseException) -> str | None:
    """One line for a file-system error a person can act on (a full disk, a read-only or forbidden place, a
    symbolic link loop), naming the path; None for anything else."""
    if isinstance(error, RuntimeError) and str(error).startswith("Symlink loop from "):  # Path.resolve, Python 3.11
        return f"{str(error)[len('Symlink loop from ') :].strip(chr(39))}: {_ADVICE[errno.ELOOP]}"
    if isinstance(error, OSError) and error.errno in _ADVICE:
        where = error.filename if error.filename is not None else "a file"
        return f"cannot use {where}: {_ADVICE[error.errno]}"
    return None


def write_json(path: Path, document: Any) -> None:
    """``document`` as indented JSON, atomically."""
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(document, indent=2) + "\n"))


def write_text(path: Path, text: str) -> None:
    """``text``, atomically."""
    atomic_write(path, lambda temporary: temporary.write_text(text))


def default_cache_dir() -> Path:
    """Where sddpx-tp caches source models, torchvision's Fashion-MNIST and latency tables: ``$SDDPX_CACHE`` or
    ~/.cache/sddpx-tp."""
    return Path(os.environ.get("SDDPX_CACHE", Path.home() / ".cache" / "sddpx-tp"))
