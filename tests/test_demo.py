"""The README's first command, end to end, in fast mode (a tiny source model trained for seconds)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sddpx_tp.cli import main


def test_demo_runs_end_to_end_and_reuses_its_cache(tmp_path: Path) -> None:
    out, cache = tmp_path / "demo", tmp_path / "cache"
    args = ["demo", "--fast", "--out", str(out), "--cache-dir", str(cache), "--json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.stderr
    summary = json.loads(first.stdout)
    assert "training the source model" in first.stderr
    assert sorted(summary["classes"]) == ["Shirt", "T-shirt-top"]  # folders are read in name order
    report_json = json.loads((out / "run" / "report.json").read_text())
    trajectory = report_json["trajectory"]
    assert trajectory[-1]["params"] < trajectory[0]["params"]  # it pruned
    # "After" is the step the run recommends. --fast's source model is weak, and whether a pruned step keeps
    # its accuracy depends on the thread count it was trained with; when none does, the unpruned one ships.
    recommended = report_json["recommended"]["step"]
    assert summary["params"][1] == trajectory[recommended]["params"]
    assert (summary["onnx_bytes"][1] < summary["onnx_bytes"][0]) == (recommended > 0)
    assert len(summary["held_out_accuracy"][0]) == 2
    for name in ("report.md", "accuracy.png", "model.onnx", "baseline.onnx", "bench.json"):
        assert (out / "run" / name).is_file(), name
    assert len(list((out / "refs" / "Shirt").glob("*.png"))) == 30
    report = (out / "run" / "report.md").read_text()
    assert "## ONNX export" in report and "## Latency" in report

    cached = next(cache.iterdir())
    stamp = cached.stat().st_mtime_ns
    second = CliRunner().invoke(main, [*args, "--force"])
    assert second.exit_code == 0, second.stderr
    assert "training the source model" not in second.stderr
    assert cached.stat().st_mtime_ns == stamp


def test_demo_refuses_unknown_classes_and_existing_output(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--fast", "--classes", "Shirt,Hat", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "unknown Fashion-MNIST class 'Hat'" in result.stderr
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("keep")
    result = CliRunner().invoke(main, ["demo", "--fast", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "--force" in result.stderr
    assert (tmp_path / "d" / "mine.txt").read_text() == "keep"


def test_transfer_demo_fits_a_head_for_classes_imagenet_lacks(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # One pruning step (--fast steps by 0.4): the scenario is what is tested here, at 224 px each step costs minutes.
    args = ["demo", "--transfer", "--fast", "--max-rate", "0.4", "--out", str(out), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "training the source model" not in result.stderr  # the packaged ImageNet weights, nothing trained
    assert sorted(summary["classes"]) == ["Shirt", "T-shirt-top"]
    assert summary["params"][1] < summary["params"][0] and summary["onnx_bytes"][1] < summary["onnx_bytes"][0]
    # A 1000-way ImageNet model now has two outputs, fitted on the references: it tells the classes apart.
    assert min(summary["held_out_accuracy"][0]) > 0.6
    assert len(list((out / "eval" / "Shirt").glob("*.png"))) == 50 and not (out / "labels.txt").exists()
    report = (out / "run" / "report.md").read_text()
    assert "head" in report.lower() and "## ONNX export" in report
    assert (out / "run" / "head.pt").is_file()
