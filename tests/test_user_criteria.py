"""A user's own torch-pruning Importance as the criterion: through prune(), by reference, and refused where
it must be (a bad reference, a config file that names code)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from click.testing import CliRunner
from helpers import calibrate_batch_norms, prune_args
from torch import nn

from sddpx_tp.api import prune
from sddpx_tp.cli import main
from sddpx_tp.errors import SettingError, UserError
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.method_registry import check_config
from sddpx_tp.sweep.config import read_config


class IndexImportance(tp.importance.Importance):
    """Judgement each channel of a group by its position: the lowest positions are removed first.

    Records whether torch-pruning's convention for data-driven importances held: every parameter's
    ``.grad`` set when it is called."""

    def __init__(self) -> None:
        self.calls = 0
        self.saw_gradients = True

    def __call__(self, group: tp.Group) -> torch.Tensor:
        self.calls += 1
        weight = group[0].dep.target.module.weight
        self.saw_gradients &= weight.grad is not None
        return torch.arange(len(group[0].idxs), dtype=torch.float32)


def _net() -> nn.Sequential:
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    return calibrate_batch_norms(model, size=8).eval()


def _references() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(12, 3, 8, 8, generator=generator), torch.tensor([0, 1, 2] * 4)


def _config(criterion: object) -> PruneConfig:
    return PruneConfig.paper(method="dpx", criterion=criterion, max_rate=0.5, step=0.25)


def test_a_users_importance_instance_decides_which_filters_go() -> None:
    model, importance = _net(), IndexImportance()
    original = model[0].weight.detach().clone()
    result = prune(model, _references(), [0, 1, 2], _config(importance), progress=False)
    kept = result.model[0].weight.detach()
    assert importance.calls > 0 and importance.saw_gradients
    # Lowest positions first, at every step: the first conv keeps exactly its last filters, unchanged.
    assert 0 < kept.shape[0] < original.shape[0]
    assert torch.equal(kept, original[original.shape[0] - kept.shape[0] :])
    # The record names the class, as a module:attribute reference.
    assert result.config.to_dict()["criterion"] == f"{__name__}:IndexImportance"
    # Gradients were lent for the call, not left behind.
    assert all(parameter.grad is None for parameter in result.model.parameters())


def test_a_reference_to_a_users_importance_is_imported_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_scores.py").write_text(
        "import torch, torch_pruning as tp\n"
        "class Lowest(tp.importance.Importance):\n"
        "    def __call__(self, group):\n"
        "        return torch.arange(len(group[0].idxs), dtype=torch.float32)\n"
        "shared = Lowest()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for reference in ("my_scores:Lowest", "my_scores:shared"):
        model = _net()
        original = model[0].weight.detach().clone()
        result = prune(model, _references(), [0, 1, 2], _config(reference), progress=False)
        kept = result.model[0].weight.detach()
        assert 0 < kept.shape[0] < 16 and torch.equal(kept, original[16 - kept.shape[0] :]), reference
        assert result.config.to_dict()["criterion"] == reference
    monkeypatch.delitem(sys.modules, "my_scores")


@pytest.mark.parametrize(
    ("criterion", "words"),
    [
        ("lrpx", ["must be one of", "module:attribute", "'lrpx'"]),
        ("no_such_module_anywhere:Thing", ["cannot import no_such_module_anywhere", "PYTHONPATH"]),
        ("torch:nothing_here", ["torch has no attribute nothing_here"]),
        ("torch.nn:Conv2d", ["is a type, not a torch_pruning.importance.Importance"]),
        ("torch.nn.functional:relu", ["is a function, not a torch_pruning.importance.Importance"]),
    ],
)
def test_a_criterion_that_is_no_importance_is_refused_before_anything_runs(criterion: str, words: list[str]) -> None:
    with pytest.raises(SettingError) as raised:
        check_config(PruneConfig.recommended(criterion=criterion), has_training=False)
    message = raised.value.render(lambda field: f"--{field}")
    assert message.startswith("--criterion"), message
    for word in words:
        assert word in message, message


def test_an_importance_that_needs_arguments_is_refused_by_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "needs_args.py").write_text(
        "import torch_pruning as tp\n"
        "class Needs(tp.importance.Importance):\n"
        "    def __init__(self, p):\n"
        "        self.p = p\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SettingError, match="cannot be built without arguments"):
        check_config(PruneConfig.recommended(criterion="needs_args:Needs"), has_training=False)
    monkeypatch.delitem(sys.modules, "needs_args")


@pytest.mark.parametrize("section", ["prune", "grid"])
def test_a_sweep_config_that_names_code_is_refused_without_importing_it(
    section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    refs = tmp_path / "refs"
    for name in ("a", "b"):
        (refs / name).mkdir(parents=True)
    value = '"planted:Thing"' if section == "prune" else '["magnitude", "planted:Thing"]'
    config = tmp_path / "sweep.toml"
    config.write_text(
        f'[data]\nreferences = "{refs}"\n\n[models.m]\nname = "resnet18"\nrandom_init = true\n\n'
        f'[classes]\nsubsets = [["a", "b"]]\n\n[{section}]\ncriterion = {value}\n'
    )
    with pytest.raises(UserError, match=r"criterion.*names Python code.*a config file may not"):
        read_config(config)
    assert not marker.exists()


def test_sddpx_tp_prune_takes_a_users_importance_by_reference(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cli_scores.py").write_text(
        "import torch, torch_pruning as tp\n"
        "calls = []\n"
        "class Lowest(tp.importance.Importance):\n"
        "    def __call__(self, group):\n"
        "        calls.append(len(group[0].idxs))\n"
        "        return torch.arange(len(group[0].idxs), dtype=torch.float32)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    result = CliRunner().invoke(main, prune_args(data, run, "--criterion", "cli_scores:Lowest", "--json"))
    assert result.exit_code == 0, result.stderr
    import cli_scores  # the module the command imported: its importance was called

    assert cli_scores.calls
    report = json.loads((run / "report.json").read_text())
    assert report["settings"]["config"]["criterion"] == "cli_scores:Lowest"
    assert report["trajectory"][-1]["filter_rate"] > 0.2
    monkeypatch.delitem(sys.modules, "cli_scores")


@pytest.mark.parametrize(
    ("criterion", "words"),
    [("entropy", ["Invalid value for '--criterion'", "module:attribute"]), ("nowhere_at_all:X", ["cannot import"])],
)
def test_sddpx_tp_prune_refuses_a_bad_criterion_in_one_line_and_writes_nothing(
    criterion: str, words: list[str], data: dict[str, Path], tmp_path: Path
) -> None:
    result = CliRunner().invoke(main, prune_args(data, tmp_path / "run", "--criterion", criterion))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sddpx-tp: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "run").exists()
