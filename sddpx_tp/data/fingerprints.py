"""Content fingerprints of image folders: a resumed run checks it reads the images it started with.

A folder's fingerprint is a SHA-256 over each image's class folder, file name and
content (in reading order) and the names of the files that were skipped; file
times are left out, so copying a folder keeps its fingerprint and replacing an
image, even by one of the same size, changes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _name(path: Path) -> bytes:
    # Class folder and file name; surrogate-escaped bytes of non-UTF-8 names hash as the bytes they are.
    return f"{path.parent.name}/{path.name}".encode("utf-8", "surrogateescape")


def folder_fingerprint(files: Sequence[Path], digests: Sequence[str], skipped: Iterable[Path] = ()) -> str:
    """One fingerprint for a folder's images (``digests``: :func:`file_digest` of each of ``files``)."""
    total = hashlib.sha256()
    for path, digest in zip(files, digests, strict=True):
        total.update(_name(path) + b"\0" + digest.encode() + b"\n")
    for path in skipped:
        total.update(b"skipped\0" + _name(path) + b"\n")
    return total.hexdigest()
