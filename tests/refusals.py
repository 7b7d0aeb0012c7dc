"""What the hostile-input tests share: one way to check a refusal, snapshots, copies of a finished run to damage
(the `finished_run` fixture itself is in conftest.py).

Every refusal is checked the same way: exit code 2, one line on stderr, no traceback,
and nothing written or changed (byte for byte where user files are involved).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import Result


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (folders as empty entries): to prove nothing changed."""
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else b"<dir>"
        for path in sorted(root.rglob("*"))
    }


def refused(result: Result, expected: str) -> str:
    """The one error line, after checking exit code 2, a single line and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sddpx-tp: error:"), result.stderr
    assert "Traceback" not in result.output and "weights_only" not in result.output
    assert expected in lines[0], lines[0]
    return lines[0]


def write_user_files(folder: Path) -> None:
    (folder / "notes").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "notes" / "data.bin").write_bytes(bytes(range(256)))
    (folder / "model.pt").write_bytes(b"my own file, which happens to share a run file's name")


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def interrupted_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A finished run made to look interrupted after its last checkpoint (the final model removed)."""
    run = copy_run(finished_run, tmp_path)
    for name in ("model.pt", "model_full.pt", "report.json", "report.md"):
        (run / name).unlink()
    return run
