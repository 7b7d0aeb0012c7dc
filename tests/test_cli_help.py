"""The command line's help: it names every verb without importing the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from sddpx_tp.cli import _VERBS, main

HEAVY = ("torch", "torchvision", "zennit", "onnxruntime", "torch_pruning")


def test_the_top_level_help_lists_every_verb_and_imports_no_heavy_library() -> None:
    # A fresh interpreter: this test process has long imported torch.
    script = (
        "import sys\nfrom sddpx_tp.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('loaded:', sorted(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout, result.stdout
    for verb in ("bench", "demo", "export", "prune", "report", "sweep"):
        assert f"  {verb}  " in result.stdout, (verb, result.stdout)


@pytest.mark.parametrize("verb", sorted(_VERBS))
def test_each_verbs_listed_help_is_its_own(verb: str) -> None:
    command = main.get_command(None, verb)  # type: ignore[arg-type]
    assert command is not None and command.name == verb
    assert _VERBS[verb][2].rstrip(".") == command.get_short_help_str(limit=1000).rstrip(".")


def test_a_verb_still_runs_and_an_unknown_one_is_refused() -> None:
    assert "--refs" in CliRunner().invoke(main, ["prune", "--help"]).output
    result = CliRunner().invoke(main, ["prun"])
    assert result.exit_code == 2 and "No such command 'prun'" in result.stderr


def test_every_public_name_of_the_package_resolves_on_first_use() -> None:
    import sddpx_tp

    assert set(sddpx_tp.__all__) == {*sddpx_tp._PUBLIC, "__version__"}
    for name in sddpx_tp.__all__:
        assert getattr(sddpx_tp, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        sddpx_tp.nothing_here  # noqa: B018


def test_no_verb_prints_the_help_without_calling_it_an_error() -> None:
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 2
    assert result.stderr.startswith("Usage:") and "error" not in result.stderr, result.stderr
    assert "  prune  " in result.stderr


def test_the_package_lists_its_public_names_before_their_first_use() -> None:
    script = "import sddpx_tp\nprint('prune' in dir(sddpx_tp), 'PruneConfig' in dir(sddpx_tp))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "True True", result.stderr
