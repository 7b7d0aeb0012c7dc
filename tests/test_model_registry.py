"""Models as records: a user's builder registered by name is built, listed and pruned like the built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import calibrate_batch_norms
from torch import nn
from torchvision import models

from sddpx_tp.api import prune
from sddpx_tp.errors import SettingError
from sddpx_tp.models import registry
from sddpx_tp.models.registry import ModelSpec, available_models, create_model, read_weights, register_model
from sddpx_tp.pruning.config import PruneConfig


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test end with it (the registry is the process's)."""
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))


def _small_resnet(weights: Path | None, num_classes: int | None, random_init: bool) -> tuple[nn.Module, ModelSpec]:
    torch.manual_seed(0)
    model = models.resnet18(num_classes=num_classes or 4)
    if weights is not None:
        model.load_state_dict(read_weights(weights))
    elif not random_init:
        calibrate_batch_norms(model, size=32)
    return model, ModelSpec("small-resnet", input_size=32, resize_size=32)


def test_a_registered_builder_is_built_by_name_and_listed(fresh_registry: None, tmp_path: Path) -> None:
    register_model("small-resnet")(_small_resnet)
    assert "small-resnet" in available_models()
    model, spec = create_model("small-resnet", num_classes=3)
    assert not model.training and model.fc.out_features == 3 and spec.input_size == 32
    # Weights go through the builder: the same tensors come back.
    weights = tmp_path / "w.pt"
    source = models.resnet18(num_classes=3)
    torch.save(source.state_dict(), weights)
    loaded, _ = create_model("small-resnet", weights=weights, num_classes=3)
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    with pytest.raises(SettingError, match="contradict"):  # the registry's own checks still apply
        create_model("small-resnet", weights=weights, random_init=True)


def test_a_registered_model_prunes_through_the_api(fresh_registry: None) -> None:
    register_model("small-resnet")(_small_resnet)
    model, _ = create_model("small-resnet")
    generator = torch.Generator().manual_seed(0)
    references = (torch.randn(16, 3, 32, 32, generator=generator), torch.tensor([0, 1] * 8))
    config = PruneConfig.recommended(method="dpx", max_rate=0.3, step=0.15)
    result = prune(model, references, [0, 1], config, progress=False)
    assert result.trajectory[-1].filter_rate > 0.1
    assert result.model(torch.randn(2, 3, 32, 32)).shape == (2, 2)


@pytest.mark.parametrize("name", ["small-resnet", "resnet18", "efficientnet-lite0", "mine.pt"])
def test_a_name_that_is_taken_or_a_file_name_is_refused(fresh_registry: None, name: str) -> None:
    if name == "small-resnet":
        register_model(name)(_small_resnet)
    with pytest.raises(ValueError, match="is taken"):
        register_model(name)(_small_resnet)
