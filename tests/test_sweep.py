"""`sddpx-tp sweep`: a grid of real runs on Fashion-MNIST images, locally and on Ray, resumed, refused, failing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import fashion_folders

from sddpx_tp.cli import main

CELLS = ("resnet18__0+6__px", "resnet18__0+6__dpx", "resnet18__6+7__px", "resnet18__6+7__dpx")
# What a cell's result is made of: equal on every backend (the times are not).
RESULT_FIELDS = ("cell", "status", "auc", "auc_lowest_class", "kept_to", "final_rate", "relevance_passes",
                 "evaluations")  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """As conftest's `data`, with a third class, pullovers (7)."""
    return fashion_folders(tmp_path_factory.mktemp("data"), {0: 8, 6: 8, 7: 8}, {0: 16, 6: 16, 7: 16})


def _config(folders: dict[str, Path], **sections: str) -> str:
    """A tiny sweep: resnet18 at 32 px, 2 class subsets x px/dpx, to filter rate 0.3 in steps of 0.1."""
    parts = {
        "data": f'references = "{folders["refs"]}"\nevaluation = "{folders["eval"]}"',
        "classes": 'subsets = [["0", "6"], ["6", "7"]]',
        "models.resnet18": f'name = "resnet18"\nweights = "{folders["weights"]}"\nnum_classes = 10\n'
        "input_size = 32\nresize_size = 32\nmean = 0.286\nstd = [0.353, 0.353, 0.353]",
        "prune": 'max_rate = 0.3\nstep = 0.1\nrepair = "none"',
        "grid": 'method = ["px", "dpx"]',
        "run": "threads = 1",
    }
    parts.update(sections)
    return "\n".join(f"[{name}]\n{body}\n" for name, body in parts.items() if body)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _sweep(config: Path, out: Path, *extra: str) -> Any:
    return CliRunner().invoke(main, ["sweep", str(config), "--out", str(out), "--json", *extra])


@pytest.fixture(scope="module")
def local_sweep(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("local")
    config = _write(root / "sweep.toml", _config(data))
    result = _sweep(config, root / "out", "--workers", "2")
    assert result.exit_code == 0, result.stderr
    # What will run, said before it runs (issue 34: a big sweep said nothing for minutes).
    assert "sweep: 4 cells; 4 to run on 2 local worker processes, 1 torch thread a cell" in result.stderr
    return {"config": config, "out": root / "out", "table": json.loads(result.stdout)}


def _trajectories(out: Path) -> dict[str, list[Any]]:
    trajectories = {}
    for cell in CELLS:
        records = json.loads((out / "cells" / cell / "report.json").read_text())["trajectory"]
        trajectories[cell] = [(r["filter_rate"], r["reference_accuracy"], r["eval_accuracy"]) for r in records]
    return trajectories


def test_local_and_ray_sweeps_give_the_same_table(
    local_sweep: dict[str, Any], data: dict[str, Path], tmp_path: Path
) -> None:
    table = local_sweep["table"]
    assert [row["cell"] for row in table["cells"]] == list(CELLS)  # the config's order, readable ids
    assert table["counts"]["done"] == 4 and all(row["status"] == "done" for row in table["cells"])
    for row in table["cells"]:
        assert row["auc_on"] == "held-out" and 0 <= row["auc"] <= 1 and 0 <= row["auc_lowest_class"] <= row["auc"]
        assert row["final_rate"] == pytest.approx(0.3, abs=0.05) and 0 <= row["kept_to"] <= row["final_rate"]
        assert row["threads"] == 1 and row["relevance_passes"] >= 1
    summary = {entry["method"]: entry for entry in table["summary"]}
    assert set(summary) == {"px", "dpx"} and all(entry["done"] == 2 for entry in summary.values())
    aucs = [row["auc"] for row in table["cells"] if row["method"] == "dpx"]
    assert summary["dpx"]["auc"]["mean"] == pytest.approx(sum(aucs) / 2)
    assert summary["dpx"]["auc"]["min"] == min(aucs) and summary["dpx"]["auc"]["max"] == max(aucs)
    out = local_sweep["out"]
    for name in ("results.json", "results.csv", "results.md", "accuracy.png", "auc.png", "sweep.json"):
        assert (out / name).is_file(), name
    assert len((out / "results.csv").read_text().splitlines()) == 5
    assert json.loads((out / "results.json").read_text()) == table

    pytest.importorskip("ray")  # installed with the [ray] extra, as `make install` does
    ray_out = tmp_path / "ray"
    result = _sweep(local_sweep["config"], ray_out, "--backend", "ray", "--cpus-per-cell", "1")
    assert result.exit_code == 0, result.stderr
    on_ray = json.loads(result.stdout)
    assert [{key: row[key] for key in RESULT_FIELDS} for row in on_ray["cells"]] == [
        {key: row[key] for key in RESULT_FIELDS} for row in table["cells"]
    ]
    assert _trajectories(ray_out) == _trajectories(out)


def test_a_rerun_skips_finished_cells(local_sweep: dict[str, Any]) -> None:
    out = local_sweep["out"]
    reports = {cell: (out / "cells" / cell / "report.json").stat().st_mtime_ns for cell in CELLS}
    result = _sweep(local_sweep["config"], out)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["done"] == 4
    assert {cell: (out / "cells" / cell / "report.json").stat().st_mtime_ns for cell in CELLS} == reports


def test_sigint_then_rerun_runs_only_the_missing_cells(data: dict[str, Path], tmp_path: Path) -> None:
    config = _write(tmp_path / "sweep.toml", _config(data, prune='max_rate = 0.4\nstep = 0.1\nrepair = "none"'))
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "sddpx-tp"), "sweep", str(config), "--out", str(out), "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    first, second = (out / "cells" / cell for cell in CELLS[:2])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        state = second / "state.json"
        if (first / "model.pt").is_file() and state.is_file() and json.loads(state.read_text())["step"] >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the sweep ended before it could be interrupted"
    process.send_signal(signal.SIGINT)  # to the sweep's process only: it stops its workers
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 130, stderr.decode()
    assert "again" in stderr.decode().splitlines()[-1]
    assert not (second / "model.pt").exists() and not (out / "cells" / CELLS[2]).exists()
    finished = (first / "report.json").stat().st_mtime_ns
    interrupted = json.loads((second / "state.json").read_text())["trajectory"]
    assert json.loads((out / "results.json").read_text())["counts"] == {
        "done": 1, "failed": 0, "interrupted": 1, "pending": 2
    }  # fmt: skip

    result = _sweep(config, out, "--workers", "2")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["done"] == 4
    assert (first / "report.json").stat().st_mtime_ns == finished  # not run again
    resumed = json.loads((second / "report.json").read_text())["trajectory"]
    assert resumed[: len(interrupted)] == interrupted  # continued from its checkpoint, not started over
    assert [record["step"] for record in resumed] == list(range(len(resumed)))


def _one_line_error(result: Any, *words: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sddpx-tp: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


BAD_CONFIGS = {
    "not TOML": ({"run": "threads = = 1"}, ["not valid TOML"]),
    "unknown section": ({"runs": "threads = 1"}, ["runs", "not a known key"]),
    "unknown prune option": ({"prune": "max_ratio = 0.3"}, ["prune.max_ratio", "not a setting"]),
    "wrong type": ({"prune": 'max_rate = "high"'}, ["prune.max_rate", "must be a number"]),
    "out of range": ({"prune": "max_rate = 1.5"}, ["prune.max_rate must be in (0, 1)"]),
    "bad grid value": ({"grid": 'method = ["px", "nope"]'}, ["grid.method", "nope"]),
    "list outside the grid": ({"prune": 'method = ["px"]'}, ["prune.method", "[grid]"]),
    "in grid and prune": ({"prune": 'method = "px"'}, ["grid.method", "[prune]"]),
    "missing folder": ({"data": 'references = "/nonexistent/refs"'}, ["data.references", "/nonexistent/refs"]),
    "unknown class": ({"classes": 'subsets = [["0", "9"]]'}, ["classes.subsets[0]", "'9'"]),
    "too many draws": ({"classes": "draw = { count = 4, size = 2, seed = 0 }"}, ["cannot draw 4"]),
    "bad threads": ({"run": "threads = 0"}, ["run.threads must be >= 1"]),
    "bad model option": ({"models.resnet18": 'name = "resnet18"\ninput_size = 4'}, ["models.resnet18.input_size"]),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_configs_are_one_line_errors_that_write_nothing(case: str, data: dict[str, Path], tmp_path: Path) -> None:
    sections, words = BAD_CONFIGS[case]
    config = _write(tmp_path / "sweep.toml", _config(data, **sections))
    _one_line_error(_sweep(config, tmp_path / "out"), *words)
    assert not (tmp_path / "out").exists()


def test_bad_invocations_are_one_line_errors(
    local_sweep: dict[str, Any], data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(tmp_path / "sweep.toml", _config(data))
    _one_line_error(_sweep(tmp_path / "missing.toml", tmp_path / "out"), "cannot read sweep config")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _one_line_error(_sweep(config, foreign), "not a sweep folder made by sddpx-tp", "--out")
    assert sorted(path.name for path in foreign.iterdir()) == ["notes.txt"]
    changed = _write(tmp_path / "changed.toml", _config(data, prune='max_rate = 0.2\nstep = 0.1\nrepair = "none"'))
    _one_line_error(_sweep(changed, local_sweep["out"]), "another config", "prune.max_rate")
    _one_line_error(_sweep(config, tmp_path / "out", "--ray-address", "auto"), "--backend ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    _one_line_error(_sweep(config, tmp_path / "out", "--backend", "ray"), "pip install 'sddpx-tp[ray]'")
    assert not (tmp_path / "out").exists()


def test_a_failing_cell_is_reported_and_the_others_finish(data: dict[str, Path], tmp_path: Path) -> None:
    # The second model's weights do not fit a 7-way head: only its cell can find out, when it loads them.
    broken = f'name = "resnet18"\nweights = "{data["weights"]}"\nnum_classes = 7\ninput_size = 32\nresize_size = 32'
    config = _write(
        tmp_path / "sweep.toml",
        _config(data, **{"classes": 'subsets = [["0", "6"]]', "models.broken": broken, "grid": 'method = ["dpx"]'}),
    )
    result = _sweep(config, tmp_path / "out", "--workers", "2")
    assert result.exit_code == 1, result.stderr
    failures = [line for line in result.stderr.splitlines() if "failed" in line]
    assert len(failures) == 1 and "cell broken__0+6__dpx failed: " in failures[0]
    rows = {row["cell"]: row for row in json.loads(result.stdout)["cells"]}
    assert rows["resnet18__0+6__dpx"]["status"] == "done"
    assert rows["broken__0+6__dpx"]["status"] == "failed" and "7" in rows["broken__0+6__dpx"]["reason"]
    assert "failed: " in (tmp_path / "out" / "results.md").read_text()
