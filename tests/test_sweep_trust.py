"""A sweep config someone hands you never makes sddpx-tp unpickle a model file (issue 34, item 1)."""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sddpx_tp.cli import main
from sddpx_tp.sweep.config import read_config
from sddpx_tp.sweep.reader import ConfigError


class _Planted:
    """Unpickling this touches ``marker``: what any code in a pickled file could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def _config(tmp_path: Path) -> tuple[Path, Path, Path]:
    marker, model = tmp_path / "code-ran", tmp_path / "model.pt"
    torch.save(_Planted(marker), model)
    refs = tmp_path / "refs"
    for name in ("a", "b"):
        (refs / name).mkdir(parents=True)
    config = tmp_path / "sweep.toml"
    config.write_text(
        f'[data]\nreferences = "{refs}"\n\n[models.m]\nname = "model.pt"\n\n[classes]\nsubsets = [["a", "b"]]\n'
    )
    return config, model, marker


def test_a_model_file_named_in_a_config_is_refused_in_one_line_and_never_loaded(tmp_path: Path) -> None:
    config, model, marker = _config(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sweep", str(config), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "models.m.name" in lines[0] and f"--trust-model {model.resolve()}" in lines[0]
    assert not marker.exists() and not out.exists()


def test_the_command_line_can_trust_that_file(tmp_path: Path) -> None:
    config, model, marker = _config(tmp_path)
    with pytest.raises(ConfigError, match="unpickles"):
        read_config(config, trusted_models=[tmp_path / "another.pt"])
    read = read_config(config, trusted_models=[model])  # relative or absolute, the same file
    assert read.models[0].source.name == str(model.resolve())
    assert not marker.exists()  # reading the config loads nothing; the cells load the trusted file
