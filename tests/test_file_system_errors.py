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


def test_an_unwritable_cache_is_refused_before_the_source_model_is_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("SDDPX_CACHE", str(tmp_path / "a-file"))
    line = _one_line(["demo", "--fast", "--out", str(tmp_path / "demo")])
    assert line == (
        f"sddpx-tp: error: cannot cache the trained source model in {tmp_path / 'a-file'} (File exists); "
        "set SDDPX_CACHE to a folder you can write"
    )
    assert not (tmp_path / "demo").exists()


def _pooling_model(path: Path, size: int) -> Path:
    """An ONNX model that takes [batch, 3, size, size] images (one global average pool), written to ``path``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["images"], ["pooled"])],
        "pooling",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 3, 1, 1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_bench_refuses_an_input_that_cannot_fit_in_memory_before_allocating_it(tmp_path: Path) -> None:
    model = _pooling_model(tmp_path / "huge.onnx", 60000)
    line = _one_line(["bench", str(model), "--batch", "1", "--threads", "1", "--no-memory"])
    assert f"{model} takes inputs of [3, 60000, 60000]: one batch of 1 needs 40.2 GiB" in line


def test_bench_says_which_asked_provider_it_timed_without(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = _pooling_model(tmp_path / "small.onnx", 8)
    result = CliRunner().invoke(main, ["bench", str(model), "--batch", "1", "--threads", "1", "--runs", "3",
                                       "--no-memory", "--provider", "cpu", "--provider", "cuda"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    note = "sddpx-tp: note: cuda not available in this onnxruntime: timed without it"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert note not in result.stderr
    else:
        assert note in result.stderr.splitlines()
