"""A name is data (issue 34, item 3): class names drawn into report.md and plots show as written, inject
nothing, and a plot that fails never loses the pruning before it."""

from __future__ import annotations

import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import markdown
import matplotlib.pyplot as plt
import pytest
from click.testing import CliRunner
from helpers import fashion_folders, prune_args

from sddpx_tp.cli import main
from sddpx_tp.run import report as report_module
from sddpx_tp.text import markdown_text, plot_text

HOSTILE = ["a|b", "![x](x.png)", "<img src=x onerror=alert(1)>", "line\nbreak", "$\\undefinedcmd{$", "*bold* `c`"]


class _Table(HTMLParser):
    """The cells of every row, and every tag seen (python-markdown's HTML, parsed by the standard library)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: set[str] = set()
        self.images: list[str | None] = []  # the src of every img
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "img":
            self.images.append(dict(attrs).get("src"))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _rendered(text: str) -> _Table:
    table = _Table()
    table.feed(markdown.markdown(text, extensions=["tables"]))
    return table


@pytest.mark.parametrize("name", HOSTILE)
def test_a_name_in_a_markdown_table_is_one_literal_cell(name: str) -> None:
    table = _rendered(f"| class | before |\n|---|---|\n| {markdown_text(name)} | 90.0 % |\n")
    assert table.rows[1] == [" ".join(name.split("\n")), "90.0 %"]
    assert table.tags <= {"table", "thead", "tbody", "tr", "th", "td"}  # no img, em, code, a: no markup


def test_a_name_in_a_plot_is_drawn_as_written() -> None:
    figure, axis = plt.subplots()
    for name in HOSTILE:
        axis.plot([0, 1], [0, 1], label=plot_text(name))
    axis.legend()
    figure.savefig(io.BytesIO(), format="png")  # mathtext would raise on the unescaped name
    assert [text.get_text() for text in axis.get_legend().get_texts()][-2] == r"\$\undefinedcmd{\$"
    plt.close(figure)


def _hostile_folders(tmp_path: Path) -> dict[str, Path]:
    data = fashion_folders(tmp_path / "data", {0: 8, 6: 8}, {0: 4, 6: 4})
    for old, new in (("0", "$\\undefinedcmd{$"), ("6", "a|b ![x](x.png) <img src=x onerror=alert(1)>")):
        shutil.move(data["refs"] / old, data["refs"] / new)
    return data


def test_a_run_with_hostile_class_names_finishes_and_its_report_injects_nothing(tmp_path: Path) -> None:
    data = _hostile_folders(tmp_path)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [*prune_args(data, run), "--head", "fit", "--max-rate", "0.2"])
    assert result.exit_code == 0, result.stderr
    assert (run / "model.pt").is_file() and (run / "accuracy.png").is_file()
    table = _rendered((run / "report.md").read_text())
    assert table.images == ["accuracy.png"] and "a" not in table.tags  # the report's own plot, nothing else
    cells = [row[0] for row in table.rows]
    assert "$\\undefinedcmd{$" in cells and "a|b ![x](x.png) <img src=x onerror=alert(1)>" in cells


def test_a_plot_that_fails_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no display, no fonts, no luck")

    monkeypatch.setattr(report_module, "plot_accuracy", broken)
    data = fashion_folders(tmp_path / "data", {0: 8, 6: 8}, {0: 4, 6: 4})
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [*prune_args(data, run), "--max-rate", "0.2"])
    assert result.exit_code == 0, result.stderr
    assert (run / "model.pt").is_file()
    notes = json.loads((run / "report.json").read_text())["notes"]
    assert any("could not be drawn (no display, no fonts, no luck)" in note for note in notes)
