"""SIGTERM and SIGHUP end a prune and a sweep as Ctrl-C does (issue 34, item 2): no process left behind, the
work resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import prune_args

from sddpx_tp.cli import main

SDDPX_TP = str(Path(sys.executable).parent / "sddpx-tp")


def _wait_for_step(process: subprocess.Popen[bytes], *states: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if all(state.is_file() and json.loads(state.read_text())["step"] >= 1 for state in states):
            return
        time.sleep(0.05)
    raise AssertionError("the command ended before it could be stopped")


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (read from /proc: no library needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = set(), [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.add(child)
            queue.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left


def _deaf_to_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a script's background job starts: Python keeps it ignored


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_prune_stopped_by_a_termination_signal_resumes(name: str, data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    arguments = prune_args(data, out, "--max-rate", "0.4")
    process = subprocess.Popen([SDDPX_TP, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=_deaf_to_sigint)  # fmt: skip
    _wait_for_step(process, out / "state.json")
    process.send_signal(getattr(signal, name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert "--resume" in stderr.decode().strip().splitlines()[-1] and "Traceback" not in stderr.decode()
    resumed = CliRunner().invoke(main, [*arguments, "--resume"])
    assert resumed.exit_code == 0, resumed.stderr


def test_a_sweep_stopped_by_sigterm_leaves_no_process_and_resumes(data: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(
        f'[data]\nreferences = "{data["refs"]}"\n\n[classes]\nsubsets = [["0", "6"]]\n\n'
        f'[models.resnet18]\nname = "resnet18"\nweights = "{data["weights"]}"\nnum_classes = 10\ninput_size = 32\n'
        'resize_size = 32\nmean = 0.286\nstd = 0.353\n\n[prune]\nmax_rate = 0.5\nstep = 0.1\nrepair = "none"\n\n'
        '[grid]\nmethod = ["px", "dpx"]\n\n[run]\nthreads = 1\n'
    )
    out = tmp_path / "out"
    command = [SDDPX_TP, "sweep", str(config), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    cells = [out / "cells" / f"resnet18__0+6__{method}" / "state.json" for method in ("px", "dpx")]
    _wait_for_step(process, *cells)
    below = _descendants(process.pid)
    assert len(below) >= 2, "the workers should be running"
    process.send_signal(signal.SIGTERM)  # to the sweep's process only, as timeout and systemd send it
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 130, stderr.decode()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in below):
        time.sleep(0.1)
    assert [pid for pid in below if _alive(pid)] == [], "worker processes outlived the sweep"
    again = CliRunner().invoke(main, ["sweep", str(config), "--out", str(out), "--json"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["counts"]["done"] == 2
