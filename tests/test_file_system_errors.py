"""File-system trouble in one line, exit 2 (issue 34, item 5): symbolic link loops, configs nested too deep, a
disk that fills while torch writes."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from click.testing import CliRunner

from sddpx_tp.cli import main
from sddpx_tp.files import atomic_write, file_system_problem


def _one_line(arguments: list[str]) -> str:
    result = CliRunner().invoke(main, arguments)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("role", ["--refs", "--eval", "--out"])
def test_a_symbolic_link_loop_is_named_in_one_line(role: str, data: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    given = {"--refs": str(data["refs"]), "--out": str(tmp_path / "run"), role: str(tmp_path / "a")}
    arguments = ["prune", "--model", "resnet18", "--num-classes", "10", "--weights", str(data["weights"]),
                 "--input-size", "32", *(item for pair in given.items() for item in pair)]  # fmt: skip
    line = _one_line(arguments)
    assert "symbolic link that leads back to itself" in line and str(tmp_path) in line
    assert not (tmp_path / "run").exists()


def test_a_sweep_config_nested_a_thousand_deep_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "deep.toml"
    config.write_text('[data]\nreferences = "x"\n[prune]\nrelevance = ' + "[" * 1000 + "]" * 1000 + "\n")
    line = _one_line(["sweep", str(config), "--out", str(tmp_path / "out")])
    assert "nests arrays or tables too deeply" in line
    assert not (tmp_path / "out").exists()


def test_a_writer_that_fails_like_torch_on_a_full_disk_leaves_nothing_and_says_so(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"

    def torch_on_a_full_disk(temporary: Path) -> None:
        temporary.write_bytes(b"half a model")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . basic_ios::clear: iostream error")

    with pytest.raises(OSError) as caught:
        atomic_write(target, torch_on_a_full_disk)
    assert caught.value.errno in (errno.EIO, errno.ENOSPC) and caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temporary
    full = OSError(errno.ENOSPC, "No space left on device", str(target))
    assert file_system_problem(full) == (
        f"cannot use {target}: the disk is full: free some space and run it again (a pruning run continues with "
        "--resume)"
    )
    assert file_system_problem(ValueError("not ours")) is None
