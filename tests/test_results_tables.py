"""The results pages' tables are what benchmarks/results_tables.py generates from results/*.json: a figure
edited by hand on a page, or a results file changed without regenerating, fails here."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("results_tables", ROOT / "benchmarks" / "results_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_generated_table_on_the_pages_matches_the_results(tables: ModuleType) -> None:
    assert tables.stale_pages(ROOT / "docs", ROOT / "results") == []


def test_every_table_is_shown_on_a_page(tables: ModuleType) -> None:
    shown = {
        match.group("name") for page in tables.pages(ROOT / "docs") for match in tables.BLOCK.finditer(page.read_text())
    }
    assert shown == set(tables.TABLES)


def test_an_edited_results_file_makes_its_page_stale(tables: ModuleType, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results", results, ignore=shutil.ignore_patterns("cache", "*.png"))
    assert tables.stale_pages(ROOT / "docs", results) == []
    edited = results / "repairs_resnet18.json"
    document = json.loads(edited.read_text())
    lstsq = next(run for run in document["runs"] if run["label"] == "dpx r16 + lstsq, ridge 0.1")
    lstsq["auc_lowest_class"] -= 0.05  # one task's figure: the mean moves by 0.01
    edited.write_text(json.dumps(document))
    stale = tables.stale_pages(ROOT / "docs", results)
    assert [path.name for path in stale] == [
        page.name for page in tables.pages(ROOT / "docs") if "<!-- table: repairs_resnet18 -->" in page.read_text()
    ]
    assert stale


def test_a_figure_edited_on_a_page_is_put_back(tables: ModuleType) -> None:
    page = next(path for path in tables.pages(ROOT / "docs") if "<!-- table: repairs_resnet18 -->" in path.read_text())
    text = page.read_text()
    edited = text.replace("| 0.974 |", "| 0.994 |", 1)
    assert edited != text
    assert tables.regenerate(edited, ROOT / "results") == text
