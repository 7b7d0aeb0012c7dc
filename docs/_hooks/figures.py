"""MkDocs hook: the figures of `results/` (the benchmarks' plots) become part of the site.

The plots stay where the benchmarks write them (`results/*.png`, `results/study/*.png`); the
results pages link them as `results/<name>.png` relative to the docs root, so no copy can drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "results"


def on_files(files: Files, config: Any) -> Files:
    for figure in sorted(RESULTS.rglob("*.png")):
        relative = figure.relative_to(RESULTS.parent)
        if relative.parts[1] == "cache":  # benchmark caches, not figures
            continue
        files.append(File(relative.as_posix(), str(RESULTS.parent), config["site_dir"], config["use_directory_urls"]))
    return files
