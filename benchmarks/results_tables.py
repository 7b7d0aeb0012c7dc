"""The results pages' tables, generated from ``results/*.json``: the one place a figure is copied.

    python benchmarks/results_tables.py --write    # regenerate every marked table in docs/
    python benchmarks/results_tables.py --check    # exit 1 when a page differs from its results (the test's check)

A page marks a generated table with two HTML comments (invisible in the rendered page)::

    <!-- table: repairs_resnet18 -->

    ...the table, written by this script...

    <!-- end table -->

Each entry of :data:`results_catalogue.TABLES` names its results file(s), the rows to show (each a label in the file and
the words the page uses for it) and the columns. Most are a :class:`~results_kinds.Table` over files
of runs with a ``label`` and a ``seed`` each (``fashion_ablation.py``, ``fashion_methods.py``,
``transfer.py``); ``results_kinds.py`` holds it and the kinds for the other benchmarks' formats. The
figures are recomputed from the records (means and medians over the tasks, per-task figures in the
order of the seeds, ratios), never copied.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the test loads this file by its path
from results_catalogue import TABLES

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.DOTALL)


def regenerate(page: str, results: Path) -> str:
    """``page`` with every marked table regenerated from the results files in ``results``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise ValueError(f"no table called {name!r}; known: {', '.join(TABLES)}")
        # Blank lines around the table: Markdown reads a comment line touching a table as raw HTML.
        return match.group(1) + "\n" + TABLES[name].render(results) + "\n" + match.group(4)

    return BLOCK.sub(replace, page)


def pages(docs: Path) -> list[Path]:
    return sorted(path for path in docs.rglob("*.md") if BLOCK.search(path.read_text()))


def stale_pages(docs: Path, results: Path) -> list[Path]:
    """The pages whose marked tables differ from what ``results`` generates."""
    return [path for path in pages(docs) if regenerate(path.read_text(), results) != path.read_text()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate the marked tables in place")
    action.add_argument("--check", action="store_true", help="exit 1 if a page differs from its results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    if args.check:
        stale = stale_pages(args.docs, args.results)
        for path in stale:
            print(f"{path}: tables differ from {args.results}; run python benchmarks/results_tables.py --write")
        sys.exit(1 if stale else 0)
    for path in pages(args.docs):
        text = path.read_text()
        updated = regenerate(text, args.results)
        if updated != text:
            path.write_text(updated)
            print(f"rewrote {path}")


if __name__ == "__main__":
    main()
