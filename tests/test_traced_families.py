"""Traced families (issue 32: DenseNet, GoogLeNet, Inception v3, MNASNet, and any conv net whose graph has a rule for
every operation between modules): concatenations split relevance by channel, residual sums by contribution (the
Norm rule), functional pooling is the pooling module; BatchNorms are folded only where the graph says a conv feeds
them alone. Checked against hand-computed LRP on small instances, then on each family's smallest member."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from family_checks import (
    assert_engines_agree,
    assert_lowest_channels_masked_as_removed,
    assert_prunes_and_exports_by_name,
    assert_relevance_conserved,
)
from helpers import calibrate_batch_norms
from torch import nn
from torchvision import models
from zennit.core import Composite
from zennit.layer import Sum

from sddpx_tp.errors import UnsupportedArchitectureError
from sddpx_tp.lrp.architectures import TRACED_GRAPH, support_for
from sddpx_tp.lrp.relevance import RelevanceConfig, filter_relevance
from sddpx_tp.lrp.traced_graph import SpatialMean, batch_norm_pairs, canonical_graph
from sddpx_tp.models.registry import builder_options

ENGINES = ["fast", "zennit"]
EPSILON = 1e-6  # the engines' stabilizer: negligible against the activations below


class _TwoBranches(nn.Module):
    """Two ReLU conv branches joined by ``join`` ("sum" or "cat"), averaged over space, a linear head."""

    def __init__(self, join: str) -> None:
        super().__init__()
        self.join = join
        self.left, self.right = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(8 if join == "cat" else 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = F.relu(self.left(x)), F.relu(self.right(x))
        joined = left + right if self.join == "sum" else torch.cat([left, right], 1)
        return self.head(joined.mean((2, 3)))


def _hand_relevance(model: _TwoBranches, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """LRP by hand, summed over images and space per filter: epsilon at the head, the mean's Norm rule
    (``R_x = x / sum(x) * R``), then the join: by channel (cat) or by each branch's share (sum)."""
    with torch.no_grad():
        left, right = F.relu(model.left(images)), F.relu(model.right(images))
        joined = left + right if model.join == "sum" else torch.cat([left, right], 1)
        pooled = joined.mean((2, 3))
        logits = model.head(pooled)
        start = torch.zeros_like(logits).scatter_(1, labels[:, None], 1.0)
        pooled_relevance = pooled * ((start / logits) @ model.head.weight)  # epsilon: x_j w_kj / z_k R_k
        joined_relevance = joined / joined.sum((2, 3), keepdim=True) * pooled_relevance[:, :, None, None]
        if model.join == "cat":
            parts = {"left": joined_relevance[:, :4], "right": joined_relevance[:, 4:]}
        else:
            parts = {"left": left / joined * joined_relevance, "right": right / joined * joined_relevance}
    return {name: part.abs().sum((0, 2, 3)) for name, part in parts.items()}  # DPX: sum of |R|


@pytest.mark.parametrize("join", ["sum", "cat"])
@pytest.mark.parametrize("engine", ENGINES)
def test_sums_and_concatenations_split_relevance_as_computed_by_hand(join: str, engine: str) -> None:
    torch.manual_seed(0)
    model = _TwoBranches(join).double().eval()
    for conv in (model.left, model.right):  # positive activations everywhere: no ReLU zeros, no 0/0 in the shares
        conv.bias.data = conv.bias.data.abs() + 1.0
        conv.weight.data = conv.weight.data.abs()
    images, labels = torch.rand(5, 3, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    assert support_for(model) is TRACED_GRAPH
    found = filter_relevance(model, (images, labels), RelevanceConfig(engine=engine))  # type: ignore[arg-type]
    expected = _hand_relevance(model, images, labels)
    for name in ("left", "right"):
        torch.testing.assert_close(found[name], expected[name], rtol=1e-5, atol=1e-8)


def test_the_canonical_graph_makes_sums_and_pooling_modules_and_keeps_the_outputs() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.avg_pool2d(x + F.relu(self.conv(x)), 2, stride=2)
            return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1) + x.mean((2, 3)))

    model = Residual().eval()
    traced, added = canonical_graph(model)
    kinds = sorted(type(module).__name__ for module in added.values())
    assert kinds == ["AdaptiveAvgPool2d", "AvgPool2d", "SpatialMean", "Sum", "Sum"]
    assert isinstance(added["canonizer_avgpool2d_1"], nn.AvgPool2d) and added["canonizer_avgpool2d_1"].stride == 2
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(traced(images), model(images), rtol=0, atol=1e-6)
    assert isinstance(added["canonizer_sum_0"], Sum) and isinstance(added["canonizer_spatialmean_3"], SpatialMean)


def test_operations_on_the_input_alone_are_not_refused_but_products_of_activations_are() -> None:
    class Scaled(nn.Module):  # GoogLeNet's transform_input: arithmetic on the input before the first conv
        def __init__(self, gate: bool) -> None:
            super().__init__()
            self.gate, self.conv, self.head = gate, nn.Conv2d(3, 3, 1), nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(torch.cat([x[:, :1] * 0.5 + 0.1, x[:, 1:]], 1))
            return self.head((y * y if self.gate else y).mean((2, 3)))

    assert support_for(Scaled(gate=False)) is TRACED_GRAPH
    with pytest.raises(UnsupportedArchitectureError, match="computes mul at 'mul_1': a product of two activations"):
        support_for(Scaled(gate=True))


def test_a_batch_norm_after_a_concatenation_is_not_folded() -> None:
    """DenseNet: each layer's norm1 reads the concatenation of all earlier outputs (a Pass rule, unfolded);
    only conv1 -> norm2 inside a layer, and the stem's conv0 -> norm0, can be folded."""
    model = models.densenet121(num_classes=10).eval()
    traced, _ = canonical_graph(model)
    pairs = {norm: layers for layers, norm in batch_norm_pairs(traced)}
    layers = [name for name, _ in model.named_modules() if name.rpartition(".")[2].startswith("denselayer")]
    assert len(layers) == 6 + 12 + 24 + 16
    assert pairs == {"features.norm0": ["features.conv0"], **{f"{layer}.norm2": [f"{layer}.conv1"] for layer in layers}}


def _model(name: str, size: int) -> nn.Module:
    torch.manual_seed(0)
    built = models.get_model(name, num_classes=10, **builder_options(name))
    return calibrate_batch_norms(built, size=size).eval()


# name: (input size, layers whose outputs together carry all the relevance: a cut of the graph)
FAMILIES = {
    "densenet121": (64, ["features.transition3.pool"]),  # every later layer reads it: a cut of the graph
    "googlenet": (
        64,
        [
            "inception5b.branch1.conv",
            "inception5b.branch2.1.conv",
            "inception5b.branch3.1.conv",
            "inception5b.branch4.1.conv",
        ],
    ),
    "inception_v3": (
        96,
        [
            "Mixed_7c.branch1x1.conv",
            "Mixed_7c.branch3x3_2a.conv",
            "Mixed_7c.branch3x3_2b.conv",
            "Mixed_7c.branch3x3dbl_3a.conv",
            "Mixed_7c.branch3x3dbl_3b.conv",
            "Mixed_7c.branch_pool.conv",
        ],
    ),
    "mnasnet0_5": (64, ["layers.14"]),
    # Residual sums, grouped convs and squeeze-excitation gates (RegNetY): the one-but-last block's output.
    "regnet_x_400mf": (64, ["trunk_output.block4.block4-10.activation"]),
    "regnet_y_400mf": (64, ["trunk_output.block4.block4-4.activation"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_is_canonized_without_changing_its_outputs_and_the_engines_agree(name: str) -> None:
    size, _ = FAMILIES[name]
    model = _model(name, size).double()
    assert support_for(model) is TRACED_GRAPH
    images, labels = torch.randn(3, 3, size, size, dtype=torch.float64), torch.tensor([0, 3, 5])
    with torch.no_grad():
        plain = model(images)
        with Composite(canonizers=TRACED_GRAPH.canonizers(model)).context(model) as canonized:
            torch.testing.assert_close(canonized(images), plain, rtol=1e-7, atol=1e-8)
        torch.testing.assert_close(model(images), plain, rtol=0, atol=0)  # and restored exactly
    assert "forward" not in vars(model) and not any(child.startswith("canonizer_") for child, _ in
                                                    model.named_children())  # fmt: skip
    assert_engines_agree(model, images, labels)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("engine", ENGINES)
def test_relevance_is_conserved_through_the_concatenation_or_the_head(name: str, engine: str) -> None:
    size, parts = FAMILIES[name]
    assert_relevance_conserved(_model(name, size), parts, size, engine)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_masked_removal_equals_physical_removal(name: str) -> None:
    size, _ = FAMILIES[name]
    assert_lowest_channels_masked_as_removed(_model(name, size), torch.randn(2, 3, size, size), 300)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_command_line_prunes_and_exports_it_by_name(data: dict[str, Path], tmp_path: Path, name: str) -> None:
    assert_prunes_and_exports_by_name(
        data["refs"], tmp_path / "run", name, size="96" if name == "inception_v3" else "32"
    )


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("shufflenet_v2_x0_5", "channel shuffle"),
        ("squeezenet1_1", "no nn.Linear class head"),
        ("convnext_tiny", "LayerNorm2d"),
    ],
)
def test_families_still_refused_say_which_block_and_why(name: str, problem: str) -> None:
    with torch.device("meta"):
        model = models.get_model(name, weights=None)
    with pytest.raises(UnsupportedArchitectureError, match=problem):
        support_for(model)


def test_a_training_only_head_left_in_the_model_is_refused_by_name() -> None:
    with torch.device("meta"):
        model = models.googlenet(weights=None, aux_logits=True, init_weights=False)
    with pytest.raises(UnsupportedArchitectureError, match=r"'aux1\.conv\.conv' of GoogLeNet never runs in eval mode"):
        support_for(model)
