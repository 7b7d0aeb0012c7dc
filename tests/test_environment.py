"""The facts stamped on every result: the commit, the library versions, the machine, the time."""

from __future__ import annotations

import datetime
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sddpx_tp.environment import environment

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_every_library_version_is_known_and_the_commit_is_this_checkouts() -> None:
    facts = environment()
    for library in ("torch", "torchvision", "torch_pruning", "zennit", "onnx", "onnxruntime"):
        assert facts[library] and facts[library] != "unknown", library
    import zennit  # zennit 0.5.1 carries no __version__: the installed distribution's metadata names it

    assert Path(zennit.__file__).parent.parent.joinpath(f"zennit-{facts['zennit']}.dist-info").is_dir()
    if (ROOT / ".git").exists():
        assert facts["commit"].removesuffix("+dirty") == _git("rev-parse", "HEAD")
        assert facts["commit"].endswith("+dirty") == bool(_git("status", "--porcelain", "--untracked-files=no"))
    written = datetime.datetime.fromisoformat(facts["written"])
    assert abs((datetime.datetime.now(datetime.UTC) - written).total_seconds()) < 60
    assert facts["threads"] >= 1 and facts["cpu"]


def test_a_benchmark_stamps_each_new_run_and_keeps_the_stamps_of_earlier_ones(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("results_file", ROOT / "benchmarks" / "results_file.py")
    assert spec is not None and spec.loader is not None
    results_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results_file)
    path = tmp_path / "results.json"
    earlier = {"commit": "0" * 40, "written": "2026-01-01T00:00:00+00:00"}
    document = {"runs": [{"seed": 0, "environment": earlier}, {"seed": 1}]}
    results_file.write_results(path, document, architecture="resnet18")
    written = json.loads(path.read_text())
    assert written["runs"][0]["environment"] == earlier
    stamp = written["runs"][1]["environment"]
    assert stamp == written["environment"] and stamp["architecture"] == "resnet18"
    assert stamp["zennit"] and stamp["commit"] != earlier["commit"]


@pytest.mark.parametrize("library", ["torch_pruning", "zennit"])
def test_a_version_matches_what_pip_reports(library: str) -> None:
    shown = subprocess.run([sys.executable, "-m", "pip", "show", library.replace("_", "-")],
                           capture_output=True, text=True, check=True)  # fmt: skip
    version = next(line.split(":", 1)[1].strip() for line in shown.stdout.splitlines() if line.startswith("Version:"))
    assert environment()[library] == version
