"""The benchmarks' resumable JSON results: read what is done, write after every run (atomically)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sddpx_tp.environment import environment
from sddpx_tp.files import atomic_write


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def write_results(path: Path, document: dict[str, Any], **settings: Any) -> None:
    """Stamp the facts that make a figure reproducible, then replace ``path`` atomically.

    The document's ``environment`` is this writer's: commit, library versions, CPU, threads, time,
    and ``settings`` (the benchmark's own, e.g. its architecture). Every run without a stamp of its
    own gets this one: runs are written as they finish, so it records what produced each of them,
    even in a file that a later commit resumed.
    """
    stamp = {**environment(), **settings}
    document["environment"] = stamp
    for run in document.get("runs", []):
        if isinstance(run, dict):
            run.setdefault("environment", stamp)
    atomic_write(path, lambda target: target.write_text(json.dumps(document, indent=1)))
