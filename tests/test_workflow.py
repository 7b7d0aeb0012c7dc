"""The library workflow and its seams: a plug-in method, the presets, the stored settings' schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import fashion_folders, prune_args
from torch import nn

from sddpx_tp.api import prune
from sddpx_tp.cli import main
from sddpx_tp.cli.prune import config_from_options, prune_command
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.method_registry import available_methods, register_method
from sddpx_tp.pruning.session import PruningSession
from sddpx_tp.run.export import export_run
from sddpx_tp.run.folder import RunDirectory
from sddpx_tp.run.settings import ImageFolders, ModelSource, Preprocessing, RunSettings
from sddpx_tp.run.workflow import prune_run

calls: list[str] = []


@register_method("l1-magnitude")
def l1_magnitude(session: PruningSession, config: PruneConfig) -> None:
    """A fourth method defined here alone: filters ranked by the L1 norm of their weights, no relevance."""
    calls.append("l1-magnitude")
    while (limit := int(config.max_rate * session.original.filters) - session.removed_filters()) > 0:
        norms = {name: module.weight.detach().abs().sum(dim=(1, 2, 3)) for name, module in
                 session.current.model.named_modules() if isinstance(module, nn.Conv2d)}  # fmt: skip
        candidates = session.current.candidates(session.current.group_scores(norms))
        chosen = session.current.select(candidates, min(limit, round(config.step * session.original.filters)))
        if not chosen:
            return
        session.current.remove(chosen, None)
        session.accept(session.current, attempts=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """As conftest's `data`, with 8 held-out images a class (not 16)."""
    return fashion_folders(tmp_path_factory.mktemp("workflow"), {0: 8, 6: 8}, {0: 8, 6: 8})


def _settings(data: dict[str, Path], config: PruneConfig) -> RunSettings:
    return RunSettings(
        model=ModelSource("resnet18", str(data["weights"]), num_classes=10),
        images=ImageFolders(references=str(data["refs"]), evaluation=str(data["eval"])),
        config=config,
        preprocessing=Preprocessing(32, 32, (0.286,) * 3, (0.353,) * 3),
    )


def test_a_fourth_method_runs_through_prune(fashion_task: tuple) -> None:
    model, references, evaluation = fashion_task
    calls.clear()
    config = PruneConfig.paper(method="l1-magnitude", max_rate=0.4, step=0.2)
    result = prune(model, references, [0, 6], config, evaluation=evaluation, progress=False)
    assert calls == ["l1-magnitude"]
    assert "l1-magnitude" in available_methods()
    assert result.trajectory[-1].filter_rate == pytest.approx(0.4, abs=0.02)
    assert result.trajectory[-1].relevance_passes == 0  # not DPX in disguise: no relevance was computed


def test_a_fourth_method_runs_through_the_cli(data: dict[str, Path], tmp_path: Path) -> None:
    calls.clear()
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*prune_args(data, out), "--method", "l1-magnitude", "--round-to", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    assert calls == ["l1-magnitude"]
    assert json.loads(result.stdout)["method"] == "l1-magnitude"
    assert RunDirectory(out).settings().config.method == "l1-magnitude"


def test_prune_without_a_config_is_the_recommended_one(fashion_task: tuple) -> None:
    model, references, _ = fashion_task
    implicit = prune(model, references, [0, 6], progress=False, **{})  # no config at all
    explicit = prune(model, references, [0, 6], PruneConfig.recommended(), progress=False)
    assert implicit.config == explicit.config == PruneConfig.recommended()
    assert [r.filters for r in implicit.trajectory] == [r.filters for r in explicit.trajectory]
    assert [r.reference_accuracy for r in implicit.trajectory] == [r.reference_accuracy for r in explicit.trajectory]


def test_the_presets_differ_where_the_readme_says() -> None:
    recommended, paper = PruneConfig.recommended(), PruneConfig.paper()
    assert (recommended.round_to, recommended.repair.compensation, recommended.search.patience) == (16, "auto", 2)
    assert (recommended.repair.methods, paper.repair.methods) == (("lstsq",), ())
    assert (paper.round_to, paper.repair.compensation, paper.search.patience) == (1, "never", 0)
    assert (recommended.max_rate, paper.max_rate) == (0.97, 0.9)  # the cap: accuracy decides, or the papers' 0.9
    assert recommended.replace(max_rate=0.9, round_to=1, compensation="never", patience=0, repair=()) == paper


def test_the_cli_defaults_are_the_recommended_config(data: dict[str, Path], tmp_path: Path) -> None:
    parsed = prune_command.make_context("prune", ["--model", "resnet18", "--refs", "refs"]).params
    assert config_from_options(parsed) == PruneConfig.recommended()
    # And what a real run with only the required options (and a short max rate) stores.
    out = tmp_path / "run"
    args = ["prune", "--model", "resnet18", "--num-classes", "10", "--weights", str(data["weights"]), "--refs",
            str(data["refs"]), "--input-size", "32", "--max-rate", "0.1", "--out", str(out)]  # fmt: skip
    assert CliRunner().invoke(main, args).exit_code == 0
    assert RunDirectory(out).settings().config == PruneConfig.recommended(max_rate=0.1)


def test_contradictions_are_refused_in_one_place(fashion_task: tuple) -> None:
    model, references, _ = fashion_task
    with pytest.raises(ValueError, match="compensation adaptive needs a method that evaluates"):
        prune(model, references, [0, 6], PruneConfig.recommended(method="dpx", compensation="adaptive"), progress=False)
    with pytest.raises(ValueError, match="method must be one of"):
        prune(model, references, [0, 6], PruneConfig.recommended(method="no-such-method"), progress=False)


def test_the_workflow_runs_from_python_and_its_run_exports(data: dict[str, Path], tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    config = PruneConfig.paper(method="dpx", max_rate=0.2, step=0.1)
    summary = prune_run(_settings(data, config), run.path, progress=False)
    assert summary["filter_rate"] == pytest.approx(0.2, abs=0.03)
    stored = run.settings()  # the typed record, read back from state.json
    assert stored.config == config
    assert stored.resolved is not None and stored.resolved.classes == (0, 6)
    exported = export_run(run)
    assert run.onnx.is_file() and run.baseline_onnx.is_file()
    assert exported["model"]["params"] < exported["baseline"]["params"]
    assert "ONNX export" in run.report_md.read_text()


def test_a_run_of_an_older_schema_is_one_line_not_a_traceback(data: dict[str, Path], tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    prune_run(_settings(data, PruneConfig.paper(method="dpx", max_rate=0.1, step=0.1)), run.path, progress=False)
    state = json.loads(run.state.read_text())
    # The layout schema 1 had: the raw option dict of the command line.
    state["settings"] = {"model": "resnet18", "refs_dir": str(data["refs"]), "random_init": False, "max_rate": 0.1}
    run.state.write_text(json.dumps(state))
    for args in (["export", str(run.path), "--onnx"], ["report", str(run.path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "schema 1" in lines[0] and "Traceback" not in result.output
    assert not run.onnx.exists()


def test_a_method_registered_before_the_built_ins_load_replaces_the_built_in() -> None:
    # A fresh interpreter: in this one the built-ins loaded long ago. The user's "dpx" is registered
    # before any lookup, which is what loads the built-in "dpx" that must not overwrite it.
    script = (
        "from sddpx_tp.pruning.method_registry import get_method, register_method\n"
        "@register_method('dpx')\ndef mine(session, config):\n    pass\n"
        "print('dpx is mine:', get_method('dpx').run is mine, 'px built in:', get_method('px').name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "dpx is mine: True px built in: px" in result.stdout, result.stdout
