"""Two exports to one ONNX path at once (issue 34, item 4): the second is refused in one line; nothing is mixed up."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sddpx_tp.cli import main
from sddpx_tp.run.owned_folder import file_locks


def test_an_onnx_path_another_process_is_writing_is_refused(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "shared" / "model.onnx"
    with file_locks([target]):  # what a concurrent export of another run holds while it writes there
        result = CliRunner().invoke(main, ["export", str(finished_run), "--onnx", str(target), "--no-baseline"])
        assert result.exit_code == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [
            f"sddpx-tp: error: {target} is being written by another sddpx-tp process; wait for it to finish, "
            "or choose another file"
        ]
        assert not target.exists()
    exported = CliRunner().invoke(main, ["export", str(finished_run), "--onnx", str(target), "--no-baseline"])
    assert exported.exit_code == 0, exported.stderr
    assert target.is_file() and sorted(path.name for path in target.parent.iterdir()) == ["model.onnx"]  # no lock
