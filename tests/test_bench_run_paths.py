"""`bench RUN` finds the files `export RUN --onnx elsewhere.onnx` wrote (issue 34: it said the run had no
model.onnx)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sddpx_tp.cli import main


def test_bench_times_the_files_the_last_export_wrote_wherever_they_are(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "pruned.onnx"
    exported = CliRunner().invoke(main, ["export", str(finished_run), "--onnx", str(target)])
    assert exported.exit_code == 0, exported.stderr
    assert not (finished_run / "model.onnx").exists()
    timed = CliRunner().invoke(main, ["bench", str(finished_run), "--batch", "1", "--threads", "1", "--runs", "3",
                                      "--no-memory", "--no-torch", "--provider", "cpu", "--json"])  # fmt: skip
    assert timed.exit_code == 0, timed.stderr
    files = {row["model"] for row in json.loads(timed.stdout)["latency"]}
    assert files == {"pruned", "baseline"}
    bench = json.loads((finished_run / "bench.json").read_text())
    assert bench["models"]["pruned"]["path"] == str(target)
    assert bench["models"]["baseline"]["path"] == str(target.with_name("baseline.onnx"))
