"""Writing files so that no reader ever sees half of one: a temporary name, then an atomic rename.

Every file sddpx-tp writes (run folders, sweeps, exports, caches) goes through :func:`atomic_write`,
so an interrupted or failed write leaves the previous file, or none, never a truncated one.
"""

from __future__ import annotations

import json
import os
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
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, document: Any) -> None:
    """``document`` as indented JSON, atomically."""
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(document, indent=2) + "\n"))


def write_text(path: Path, text: str) -> None:
    """``text``, atomically."""
    atomic_write(path, lambda temporary: temporary.write_text(text))
