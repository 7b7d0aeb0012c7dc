"""Architecture records: torchvision names admitted by family, checks run once per relevance call, refusals."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner
from helpers import SmallConvNet
from PIL import Image
from torch import nn
from torchvision import models as tv

import sddpx_tp.lrp.canonizers
from sddpx_tp.cli import main
from sddpx_tp.data.fashion import load_split
from sddpx_tp.errors import ModelSourceError, SettingError, UnsupportedArchitectureError, UserError
from sddpx_tp.lrp.architectures import (
    MOBILENET_V2,
    RESNET,
    TRACED_GRAPH,
    family_of,
    support_for,
)
from sddpx_tp.lrp.relevance import RelevanceConfig, filter_relevance
from sddpx_tp.models.classifier import classifier_name
from sddpx_tp.models.registry import available_models, builder_options, create_model


def _meta_model(name: str) -> nn.Module:
    """torchvision's ``name`` without memory or initialisation: enough for the type and graph checks."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return tv.get_model(name, weights=None, **builder_options(name))


def _supported(model: nn.Module) -> bool:
    try:
        support_for(model)
    except UnsupportedArchitectureError:
        return False
    return True


def test_required_names_are_listed_and_unsupported_ones_are_not() -> None:
    names = set(available_models())
    required = {"resnet101", "resnet152", "wide_resnet50_2", "efficientnet-lite0", "densenet121", "googlenet"}
    required |= {"inception_v3", "mnasnet0_5", "mnasnet1_3", "densenet201", "resnext50_32x4d", "resnext101_64x4d"}
    required |= {f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")}
    required |= {"mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b7", "efficientnet_v2_s"}
    assert required <= names
    required |= {"regnet_x_400mf", "regnet_y_400mf", "regnet_y_128gf"}
    refused = {"vit_b_16", "convnext_tiny", "shufflenet_v2_x0_5", "squeezenet1_0"}
    assert not names & refused


def test_the_listing_agrees_with_the_checks_on_every_torchvision_classifier() -> None:
    """The list is derived from builder modules; the records' checks on the built models must agree."""
    listed = set(available_models())
    for name in tv.list_models(module=tv):
        try:
            model = _meta_model(name)
        except NotImplementedError:  # RegNet computes its widths with real tensors: checked on CPU below
            assert name.startswith("regnet") and name in listed, name
            continue
        assert _supported(model) == (name in listed), name


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("resnet18", RESNET),
        ("wide_resnet50_2", RESNET),
        ("resnext50_32x4d", RESNET),
        ("mobilenet_v2", MOBILENET_V2),
        ("vgg11_bn", TRACED_GRAPH),
        ("alexnet", TRACED_GRAPH),
        ("densenet121", TRACED_GRAPH),
        ("mnasnet0_5", TRACED_GRAPH),
    ],
)
def test_each_family_is_recognised_and_finds_its_head(name: str, family: object) -> None:
    model = _meta_model(name)
    assert support_for(model) is family
    head = model.get_submodule(classifier_name(model))
    assert isinstance(head, nn.Linear) and head.out_features == 1000


def test_efficientnet_lite_has_its_own_record_and_preprocessing() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    model, spec = create_model("efficientnet-lite0", random_init=True)
    support = support_for(model)
    assert support.family == "efficientnet_lite"
    assert spec.mean == support.preprocessing.mean and spec.mean != (0.485, 0.456, 0.406)
    assert classifier_name(model) == "_fc"


def test_the_compatibility_names_are_the_same_objects() -> None:
    assert sddpx_tp.lrp.canonizers.UnsupportedArchitectureError is UnsupportedArchitectureError
    assert issubclass(UnsupportedArchitectureError, ValueError)


class _TraceCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        trace = torch.fx.symbolic_trace

        def counting(*args: object, **kwargs: object) -> torch.fx.GraphModule:
            self.calls += 1
            return trace(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(torch.fx, "symbolic_trace", counting)


@pytest.mark.parametrize("engine", ["fast", "zennit"])
def test_the_model_is_traced_once_per_relevance_call_not_per_batch(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _TraceCounter(monkeypatch)
    model = SmallConvNet().eval()
    images, labels = torch.randn(9, 3, 8, 8), torch.randint(0, 3, (9,))
    config = RelevanceConfig(chunk_size=2, engine=engine)  # type: ignore[arg-type]
    filter_relevance(model, (images, labels), config)  # five batches
    per_call = counter.calls
    assert per_call == 2, "once to check, once to build the canonical graph"
    filter_relevance(model, (images[:2], labels[:2]), config)  # one batch
    assert counter.calls == 2 * per_call

    support = support_for(model)
    assert counter.calls == 2 * per_call + 1, "support_for checks"
    given = filter_relevance(model, [(images[:4], labels[:4]), (images[4:], labels[4:])], config, support=support)
    assert counter.calls == 2 * per_call + 2, "a given support record is trusted: its graph is built, not checked"
    looked_up = filter_relevance(model, (images, labels), config)
    for name, scores in looked_up.items():
        torch.testing.assert_close(given[name], scores)


def test_family_lookup_alone_does_not_check() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.head = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head((x * self.conv(x)).mean(dim=(2, 3)))

    model = Residual()
    assert family_of(model) is TRACED_GRAPH and classifier_name(model) == "head"
    with pytest.raises(UnsupportedArchitectureError, match="mul"):
        support_for(model)


@pytest.mark.parametrize(("name", "problem"), [("vit_b_16", "LayerNorm"), ("shufflenet_v2_x0_5", "channel shuffle")])
def test_unsupported_torchvision_names_are_refused_naming_the_problem(name: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedArchitectureError, match=problem) as caught:
        create_model(name, random_init=True)
    assert isinstance(caught.value, UserError) and name in str(caught.value)

    refs = tmp_path / "refs"
    _write_references(refs, per_class=1)
    args = ["prune", "--model", name, "--random-init", "--refs", str(refs), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and problem in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_errors_name_settings_not_flags(tmp_path: Path) -> None:
    with pytest.raises(SettingError) as contradiction:
        create_model("resnet18", weights=tmp_path / "w.pt", random_init=True)
    assert str(contradiction.value) == "weights and random_init contradict each other: choose one"

    weights = tmp_path / "ten_way.pt"
    torch.save(tv.resnet18(num_classes=10).state_dict(), weights)
    with pytest.raises(ModelSourceError) as mismatch:
        create_model("resnet18", weights=weights)
    message = str(mismatch.value)
    assert "does not match resnet18" in message and "(check model and num_classes)" in message
    assert "--" not in message
    assert isinstance(mismatch.value, SettingError)
    assert "(check <model> and <num_classes>)" in mismatch.value.render(lambda field: f"<{field}>")


def _write_references(root: Path, per_class: int) -> None:
    """Real Fashion-MNIST test images as PNGs in folders ``0`` and ``1``: ImageNet output indices."""
    images, labels = load_split("test")
    for cls in (0, 1):
        folder = root / str(cls)
        folder.mkdir(parents=True)
        for index in (labels == cls).nonzero().flatten()[:per_class].tolist():
            Image.fromarray(images[index].numpy()).save(folder / f"{index}.png")


def _conv_filters(path: Path) -> int:
    document = onnx.load(str(path), load_external_data=False)
    return sum(init.dims[0] for init in document.graph.initializer if len(init.dims) == 4)


def _params(path: Path) -> int:
    document = onnx.load(str(path), load_external_data=False)
    total = 0
    for init in document.graph.initializer:
        count = 1
        for dim in init.dims:
            count *= dim
        total += count
    return total


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet101", "vgg11_bn"])
def test_newly_admitted_models_prune_and_export_through_the_cli(name: str, tmp_path: Path) -> None:
    refs, out = tmp_path / "refs", tmp_path / "run"
    _write_references(refs, per_class=3)
    args = ["prune", "--model", name, "--random-init", "--refs", str(refs), "--input-size", "32", "--resize-size",
            "32", "--max-rate", "0.1", "--step", "0.1", "--method", "dpx", "--out", str(out)]  # fmt: skip
    pruned = CliRunner().invoke(main, args)
    assert pruned.exit_code == 0, pruned.stderr
    # Random-init deep nets have large logits, and float32 differences grow with them: a looser parity bound.
    exported = CliRunner().invoke(main, ["export", str(out), "--onnx", "--tolerance", "1e-2"])
    assert exported.exit_code == 0, exported.stderr

    model_onnx, baseline_onnx = out / "model.onnx", out / "baseline.onnx"
    assert model_onnx.is_file() and baseline_onnx.is_file()
    unpruned_filters = sum(m.out_channels for m in _meta_model(name).modules() if isinstance(m, nn.Conv2d))
    assert _conv_filters(baseline_onnx) == unpruned_filters
    assert _conv_filters(model_onnx) < unpruned_filters
    assert _params(model_onnx) < _params(baseline_onnx)
    shutil.rmtree(out)  # VGG's files are ~2 GB; pytest keeps old temporary folders
