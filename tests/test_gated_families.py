"""Gated families (issue 32: torchvision's MobileNetV3 and EfficientNet B0-B7/V2, tested on their smallest):
squeeze-excitation gates ``x * g(x)`` pass relevance to ``x`` with ``g`` a constant weight (signal-take-all),
hardswish and SiLU pass it as ReLU6 does, stochastic depth is the identity it is in eval mode, and the gates'
squeeze channels are not pruned; removal, reloading, the command line and ONNX export work by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from family_checks import assert_lowest_channels_masked_as_removed, assert_prunes_and_exports_by_name
from helpers import calibrate_batch_norms
from torch import nn
from torchvision import models
from zennit.core import Composite

from sddpx_tp import PruneConfig, prune
from sddpx_tp.lrp.architectures import EFFICIENTNET, MOBILENET_V3, support_for
from sddpx_tp.lrp.relevance import RelevanceConfig, filter_relevance, layer_relevance
from sddpx_tp.models.checkpoint import load_pruned, save_pruned

ENGINES = ["fast", "zennit"]
# name: (its record, its gates, stage outputs where relevance is summed)
FAMILIES = {
    "mobilenet_v3_small": (MOBILENET_V3, 9, ("features.1", "features.3", "features.6", "features.9", "features.12")),
    "efficientnet_b0": (EFFICIENTNET, 16, ("features.1", "features.3", "features.5", "features.7", "features.8")),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return calibrate_batch_norms(getattr(models, name)(num_classes=10)).eval()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_family_is_recognised_and_canonized_without_changing_its_outputs(name: str) -> None:
    model = _model(name).double()
    record = FAMILIES[name][0]
    assert support_for(model) is record
    images = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        plain = model(images)
        with Composite(canonizers=record.canonizers(model)).context(model) as canonized:
            torch.testing.assert_close(canonized(images), plain, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("engine", ENGINES)
def test_a_gate_passes_its_inputs_relevance_whole(engine: str, name: str) -> None:
    """The rule, checked on every gate: relevance at the gate's output equals relevance at its input, channel by
    channel (``y = g * x`` with ``g`` constant: ``R_x = x * g * dR/dy = R_y``)."""
    model = _model(name).double()
    modules = dict(model.named_modules())
    gates = [gate for gate, module in modules.items() if type(module).__name__ == "SqueezeExcitation"]
    assert len(gates) == FAMILIES[name][1]
    layers = {}
    for gate in gates:
        block = gate.rpartition(".")[0]  # features.N.block: [expand], depthwise, gate, project
        position = int(gate.rpartition(".")[2])
        layers[f"{gate}:in"] = modules[f"{block}.{position - 1}"]
        layers[f"{gate}:out"] = modules[gate]
    images, labels = torch.randn(4, 3, 64, 64, dtype=torch.float64), torch.tensor([0, 3, 5, 9])
    found = layer_relevance(model, (images, labels), layers, RelevanceConfig(engine=engine))  # type: ignore[arg-type]
    for gate in gates:
        inside, outside = found[f"{gate}:in"].signed, found[f"{gate}:out"].signed
        assert outside.abs().sum() > 0
        torch.testing.assert_close(inside, outside, rtol=1e-5, atol=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("engine", ENGINES)
def test_relevance_is_conserved_through_the_stages(engine: str, name: str) -> None:
    model = _model(name)
    modules = dict(model.named_modules())
    stages = {stage: modules[stage] for stage in FAMILIES[name][2]}
    images, labels = torch.randn(6, 3, 64, 64), torch.randint(0, 10, (6,))
    found = layer_relevance(model, (images, labels), stages, RelevanceConfig(engine=engine))  # type: ignore[arg-type]
    for stage in stages:
        total = found[stage].signed.sum().item() / len(images)  # one unit of relevance an image at the start
        assert abs(total - 1.0) <= 0.15, (stage, total)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_engines_agree_and_the_gates_convs_get_no_score(name: str) -> None:
    model = _model(name).double()
    images, labels = torch.randn(4, 3, 64, 64, dtype=torch.float64), torch.randint(0, 10, (4,))
    fast = filter_relevance(model, (images, labels), RelevanceConfig(engine="fast"))
    reference = filter_relevance(model, (images, labels), RelevanceConfig(engine="zennit"))
    assert fast.keys() == reference.keys() and not any(name.endswith((".fc1", ".fc2")) for name in fast)
    for layer, scores in reference.items():
        torch.testing.assert_close(fast[layer], scores, rtol=1e-4, atol=1e-4 * scores.sum().item())


@pytest.mark.slow
@pytest.mark.parametrize(("name", "method"), [("mobilenet_v3_small", "dpx"), ("mobilenet_v3_small", "sd-dpx"),
                                              ("efficientnet_b0", "dpx")])  # fmt: skip
def test_pruning_keeps_the_squeeze_channels_and_reloads_exactly(name: str, method: str, tmp_path: Path) -> None:
    model = _model(name)
    images, labels = torch.randn(8, 3, 64, 64), torch.tensor([1, 3] * 4)
    config = PruneConfig.paper(method=method, max_rate=0.5, step=0.25)
    result = prune(model, (images, labels), [1, 3], config, progress=False)
    assert result.trajectory[-1].filter_rate == pytest.approx(0.5, abs=0.02)
    squeezes = {layer: module.out_channels for layer, module in model.named_modules() if layer.endswith(".fc1")}
    pruned = dict(result.model.named_modules())
    assert {layer: pruned[layer].out_channels for layer in squeezes} == squeezes  # type: ignore[union-attr]
    for squeeze in squeezes:  # each gate's outputs still match the channels it gates
        block, position, _ = squeeze.rsplit(".", 2)
        excite = pruned[f"{squeeze[:-4]}.fc2"]
        depthwise = pruned[f"{block}.{int(position) - 1}.0"]
        assert excite.out_channels == depthwise.out_channels  # type: ignore[union-attr]
    with torch.no_grad():
        outputs = result.model(images)
    save_pruned(result.model, tmp_path / "model.pt")
    rebuilt = load_pruned(tmp_path / "model.pt", getattr(models, name)(num_classes=10))
    with torch.no_grad():
        assert torch.equal(rebuilt(images), outputs)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_masked_removal_equals_physical_removal(name: str) -> None:
    assert_lowest_channels_masked_as_removed(_model(name), torch.randn(4, 3, 64, 64), 200)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_command_line_prunes_and_exports_it_by_name(data: dict[str, Path], tmp_path: Path, name: str) -> None:
    assert_prunes_and_exports_by_name(data["refs"], tmp_path / "run", name, step="0.1")


def test_whole_blocks_asked_of_a_family_without_removable_ones_is_said() -> None:
    model = _model("mobilenet_v3_small")
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([1, 3] * 2)
    config = PruneConfig.paper(method="dpx", max_rate=0.1, step=0.1, blocks=True)
    with pytest.warns(UserWarning, match="no residual block that can be removed whole"):
        result = prune(model, (images, labels), [1, 3], config, progress=False)
    assert [record.phase for record in result.trajectory] == ["pruning", "pruning"]
