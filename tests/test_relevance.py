"""Relevance against an independent matrix-form LRP, conservation, and leaving the model as found."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import SmallConvNet, calibrate_batch_norms
from torch import nn
from torchvision import models
from zennit.canonizers import SequentialMergeBatchNorm

import sddpx_tp.lrp.relevance as relevance_module
from sddpx_tp import RelevanceConfig, UnsupportedArchitectureError, filter_relevance, layer_relevance

EPS = 1e-6
ENGINES = ["fast", "zennit"]


def _stabilize(z: torch.Tensor) -> torch.Tensor:
    return z + EPS * torch.where(z >= 0, 1.0, -1.0).to(z)


def _reference_conv_output_relevance(
    model: SmallConvNet, images: torch.Tensor, start: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Plain-torch LRP without autograd: epsilon (linear), norm (avg-pool), z+ (conv) in matrix form."""
    conv1, conv2, linear = model[0], model[2], model[6]
    h1 = F.relu(conv1(images))
    h2 = F.relu(conv2(h1))
    pooled = F.avg_pool2d(h2, 2)
    flat = pooled.flatten(1)

    # Epsilon rule at the linear layer: R_a = a * W^T (R / stab(z)).
    z = flat @ linear.weight.T + linear.bias
    r_flat = flat * ((start / _stabilize(z)) @ linear.weight)
    r_pooled = r_flat.view_as(pooled)

    # Norm rule at the 2x2 average pool: each input gets its share of the window's sum.
    share = r_pooled / _stabilize(pooled) / 4
    r_h2 = h2 * share.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    # z+ rule at conv2 (inputs may be signed in general): unfold into a matrix product.
    height, width = h1.shape[2:]
    columns = F.unfold(h1, 3, padding=1)
    positive_columns, negative_columns = columns.clamp(min=0), columns.clamp(max=0)
    w_pos = conv2.weight.clamp(min=0).flatten(1)
    w_neg = conv2.weight.clamp(max=0).flatten(1)
    z_plus = w_pos @ positive_columns + w_neg @ negative_columns + conv2.bias.clamp(min=0)[:, None]
    ratio = r_h2.flatten(2) / (z_plus + EPS)
    r_columns = positive_columns * (w_pos.T @ ratio) + negative_columns * (w_neg.T @ ratio)
    r_h1 = F.fold(r_columns, (height, width), 3, padding=1)
    # ReLU passes relevance unchanged, so a conv's output relevance is its ReLU's.
    return {"0": r_h1, "2": r_h2}


def _aggregate(relevance: torch.Tensor, aggregation: str) -> torch.Tensor:
    if aggregation == "dpx":
        return relevance.abs().sum(dim=(0, 2, 3))
    return relevance.sum(dim=(2, 3)).abs().sum(dim=0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("aggregation", ["dpx", "px"])
@pytest.mark.parametrize("start", ["one_hot", "one_hot_logit"])
def test_matches_matrix_form_reference(engine: str, aggregation: str, start: str) -> None:
    model = SmallConvNet().double().eval()
    for module in model:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.bias.data.normal_(0, 0.1)  # signed biases exercise the z+ bias clamp
    images = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        one_hot = F.one_hot(labels, 3).double()
        start_relevance = one_hot * model(images) if start == "one_hot_logit" else one_hot
        expected = _reference_conv_output_relevance(model, images, start_relevance)
    config = RelevanceConfig(engine=engine, aggregation=aggregation, start=start, chunk_size=2)  # type: ignore[arg-type]
    actual = filter_relevance(model, (images, labels), config)
    assert set(actual) == {"0", "2"}
    for name, reference in expected.items():
        torch.testing.assert_close(actual[name], _aggregate(reference, aggregation), rtol=1e-5, atol=1e-9)


def test_normalisation_is_per_layer_l1() -> None:
    model = SmallConvNet().eval()
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    raw = filter_relevance(model, (images, labels))
    normalised = filter_relevance(model, (images, labels), RelevanceConfig(normalize=True))
    for name, scores in raw.items():
        torch.testing.assert_close(normalised[name], scores / scores.sum())


STAGES = {
    "resnet18": ["layer1", "layer2", "layer3", "layer4"],
    "vgg16_bn": ["features.6", "features.13", "features.23", "features.33", "features.43"],
    "mobilenet_v2": ["features.3", "features.6", "features.10", "features.13", "features.16", "features.18"],
}


def _stage_sums(model: nn.Module, architecture: str, engine: str) -> list[float]:
    modules = dict(model.named_modules())
    images = torch.randn(6, 3, 64, 64)
    labels = torch.randint(0, 10, (6,))
    stages = {name: modules[name] for name in STAGES[architecture]}
    result = layer_relevance(model, (images, labels), stages, RelevanceConfig(engine=engine))  # type: ignore[arg-type]
    # One-hot start: one unit of relevance per image.
    return [result[name].signed.sum().item() / len(images) for name in stages]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("architecture", list(STAGES))
def test_relevance_is_conserved_through_stages(architecture: str, engine: str) -> None:
    model = calibrate_batch_norms(getattr(models, architecture)(num_classes=10))
    for total in _stage_sums(model, architecture, engine):
        assert abs(total - 1.0) <= 0.15, f"relevance at a stage output is {total:.3f} of the start relevance"


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["resnet18", "mobilenet_v2"])
def test_conservation_check_catches_a_missing_residual_canonizer(
    architecture: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = calibrate_batch_norms(getattr(models, architecture)(num_classes=10))
    # Only fold BatchNorms: the residual additions then pass all relevance to both branches.
    monkeypatch.setattr(relevance_module, "canonizers_for", lambda model: [SequentialMergeBatchNorm()])
    totals = _stage_sums(model, architecture, "zennit")
    assert max(totals) > 3.0, "without the residual canonizer relevance must blow up; the check would miss it"


@pytest.mark.slow
@pytest.mark.parametrize("architecture", list(STAGES))
def test_engines_agree(architecture: str) -> None:
    model = calibrate_batch_norms(getattr(models, architecture)(num_classes=10)).double()
    images = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    labels = torch.randint(0, 10, (4,))
    fast = filter_relevance(model, (images, labels), RelevanceConfig(engine="fast"))
    reference = filter_relevance(model, (images, labels), RelevanceConfig(engine="zennit"))
    for name, scores in reference.items():
        torch.testing.assert_close(fast[name], scores, rtol=1e-4, atol=1e-4 * scores.sum().item())


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {key: value.clone() for key, value in model.state_dict().items()},
        "grad_flags": [parameter.requires_grad for parameter in model.parameters()],
        "training": model.training,
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
        ),
        "patched": [name for name, m in model.named_modules() if "forward" in m.__dict__],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
    }


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("architecture", ["resnet18", "vgg16", "mobilenet_v2"])
def test_model_is_left_exactly_as_found(architecture: str, engine: str) -> None:
    model = calibrate_batch_norms(getattr(models, architecture)(num_classes=10))
    model.train()  # relevance runs in eval mode; the caller's mode must come back
    images = torch.randn(3, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        before_outputs = model(images)
    model.train()
    before = _snapshot(model)
    filter_relevance(model, (images, torch.tensor([1, 2, 3])), RelevanceConfig(engine=engine))  # type: ignore[arg-type]
    after = _snapshot(model)
    assert after["training"] is True
    for key in ("grad_flags", "hooks", "patched", "inplace"):
        assert after[key] == before[key], key
    for key, value in before["state"].items():  # type: ignore[union-attr]
        assert torch.equal(after["state"][key], value), key  # type: ignore[index]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), before_outputs)


def test_memory_is_bounded_by_chunks() -> None:
    """Chunking must give the same numbers as one big batch."""
    model = SmallConvNet().double().eval()
    images, labels = torch.randn(9, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (9,))
    whole = filter_relevance(model, (images, labels), RelevanceConfig(chunk_size=9))
    chunked = filter_relevance(model, (images, labels), RelevanceConfig(chunk_size=2))
    batches = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    from_batches = filter_relevance(model, batches, RelevanceConfig(chunk_size=3))
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name])
        torch.testing.assert_close(from_batches[name], whole[name])


class _UnknownGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.conv(x))  # a gate outside the known gate blocks
        return self.head(x.mean(dim=(2, 3)))


def test_unknown_gated_architecture_is_refused() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="sigmoid"):
        filter_relevance(_UnknownGate(), (torch.randn(2, 3, 8, 8), torch.tensor([0, 1])))


def test_unknown_layer_type_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    model[1] = nn.LayerNorm([4, 6, 6])
    with pytest.raises(UnsupportedArchitectureError, match="LayerNorm"):
        filter_relevance(model, (torch.randn(2, 3, 8, 8), torch.tensor([0, 1])))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown composite"):
        RelevanceConfig(composite="nope")
    with pytest.raises(ValueError, match="fast engine"):
        RelevanceConfig(composite="epsilon_alpha2_beta1_flat", engine="fast")
    with pytest.raises(ValueError, match="no reference images"):
        filter_relevance(SmallConvNet(), [])


def test_other_composites_run_on_the_zennit_engine() -> None:
    config = RelevanceConfig(composite="epsilon_alpha2_beta1_flat")
    assert config.resolved_engine == "zennit"
    scores = filter_relevance(SmallConvNet().eval(), (torch.randn(2, 3, 8, 8), torch.tensor([0, 1])), config)
    assert all(torch.isfinite(value).all() and value.sum() > 0 for value in scores.values())
