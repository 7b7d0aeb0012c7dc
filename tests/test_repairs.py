"""Repairs without training: exact where they must be, and a masked trial equals the physical removal."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import calibrate_batch_norms
from torch import nn
from torchvision import models

from sddpx_tp.api import prune
from sddpx_tp.errors import SettingError
from sddpx_tp.models.classifier import restrict_to_classes
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.reconstruction import Reconstruction
from sddpx_tp.pruning.repairs import recalibrate_batch_norms, step_repair
from sddpx_tp.pruning.surgery import Candidate, PrunableModel

EXACT = 1e-10  # a ridge this small leaves an exactly representable target exact (to float rounding)


def _remove_with_repair(model: nn.Module, images: torch.Tensor, root: str, channel: int, repairs: tuple) -> nn.Module:
    """``model`` without ``channel`` of ``root``'s group, repaired towards the unpruned ``model``."""
    prunable = PrunableModel(copy.deepcopy(model), images)
    repair = step_repair(repairs, prunable.model, model, prunable.origins, images, ridge=EXACT)
    group = prunable.groups()[root]
    filters = sum(1 for item in group if isinstance(item.dep.target.module, nn.Conv2d)) or 1
    prunable.remove([Candidate(0.0, root, (channel,), filters)], repair=repair)
    return prunable.model


def _combine(weight: torch.Tensor, bias: torch.Tensor | None, removed: int, constant: float = 0.0) -> None:
    """Make output ``removed`` the combination 0.5 * out0 - 2 * out1 (+ constant) of two kept outputs."""
    with torch.no_grad():
        weight[removed] = 0.5 * weight[0] - 2.0 * weight[1]
        if bias is not None:
            bias[removed] = 0.5 * bias[0] - 2.0 * bias[1] + constant


class _ConvPair(nn.Module):
    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.producer = nn.Conv2d(3, 4, 3, padding=1)
        self.consumer = nn.Conv2d(4, 5, kernel, padding=kernel // 2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.consumer(self.producer(x))).flatten(1))


class _LinearPair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.producer = nn.Conv2d(3, 4, 3, padding=1)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.producer(x)).flatten(1))


class _Residual(nn.Module):
    """A stream (stem and block outputs summed) read by the block and by the last conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.last = nn.Conv2d(4, 6, 3, padding=1)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stream = self.stem(x)
        stream = stream + self.block(stream)
        return self.fc(self.pool(self.last(stream)).flatten(1))


def _images(count: int = 16, size: int = 8) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def _gap(first: nn.Module, second: nn.Module, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float((first(images) - second(images)).abs().max())


@pytest.mark.parametrize(("kernel", "constant"), [(3, 0.0), (1, 0.7)], ids=["3x3 padded", "1x1 with a constant"])
def test_a_conv_consumer_is_reconstructed_exactly(kernel: int, constant: float) -> None:
    model = _ConvPair(kernel).eval()
    # A constant offset meets zero padding at the border, so it is exact only for a 1x1 consumer.
    _combine(model.producer.weight, model.producer.bias, removed=3, constant=constant)
    images = _images()
    repaired = _remove_with_repair(model, images, "producer", 3, ("lstsq",))
    plain = _remove_with_repair(model, images, "producer", 3, ())
    assert repaired.consumer.in_channels == 3
    assert _gap(repaired, model, images) < 1e-5
    assert _gap(plain, model, images) > 1e-2, "the removal must show without the repair: the test would prove nothing"


class _SamePaddingPair(nn.Module):
    """EfficientNet-Lite's own TF-style conv as the consumer: it pads asymmetrically in its forward."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

        self.producer = nn.Conv2d(3, 4, 1)
        self.consumer = Conv2dStaticSamePadding(4, 5, 3, stride=2, image_size=8)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.consumer(self.producer(x))).flatten(1))


def test_a_same_padding_conv_consumer_is_reconstructed_exactly() -> None:
    model = _SamePaddingPair().eval()
    assert model.consumer.static_padding.padding != (1, 1, 1, 1)  # asymmetric: unfold's own padding would be wrong
    _combine(model.producer.weight, model.producer.bias, removed=3)
    images = _images()
    repaired = _remove_with_repair(model, images, "producer", 3, ("lstsq",))
    assert repaired.consumer.in_channels == 3
    assert _gap(repaired, model, images) < 1e-5
    assert _gap(_remove_with_repair(model, images, "producer", 3, ()), model, images) > 1e-2


@pytest.mark.parametrize("kernel", [1, 3])
def test_the_statistics_of_many_rows_match_float64_products(kernel: int) -> None:
    # 12 images of 40x40 give 19200 rows per consumer: several float32 blocks, added up in float64.
    model = _ConvPair(kernel).eval()
    images = _images(12, 40)
    origins = {name: list(range(module.out_channels)) for name, module in model.named_modules()
               if isinstance(module, nn.Conv2d)}  # fmt: skip
    statistics = Reconstruction(model, model, origins, images).statistics["consumer"]
    with torch.no_grad():  # the reference: the design matrix built by hand, in float64
        inputs = model.producer(images)
        patches = F.unfold(inputs.double(), kernel, padding=kernel // 2).transpose(1, 2).reshape(-1, 4 * kernel**2)
        design = torch.cat([patches, torch.ones(len(patches), 1, dtype=torch.float64)], 1)
        outputs = model.consumer(inputs).double().permute(0, 2, 3, 1).reshape(-1, 5)
    assert statistics.gram is not None and statistics.cross is not None, "19200 rows: the Gram form"
    scale = design.pow(2).sum(0).mean()
    assert float((statistics.gram - design.T @ design).abs().max() / scale) < 1e-6
    assert float((statistics.cross - design.T @ outputs).abs().max() / scale) < 1e-6


def test_a_linear_consumer_is_reconstructed_exactly_with_its_bias() -> None:
    model = _LinearPair().eval()
    _combine(model.producer.weight, model.producer.bias, removed=3, constant=-1.3)
    images = _images()
    repaired = _remove_with_repair(model, images, "producer", 3, ("lstsq",))
    assert repaired.fc.in_features == 3
    assert _gap(repaired, model, images) < 1e-5
    assert _gap(_remove_with_repair(model, images, "producer", 3, ()), model, images) > 1e-2


def test_every_consumer_of_a_residual_stream_is_reconstructed_exactly() -> None:
    model = _Residual().eval()
    _combine(model.stem.weight, model.stem.bias, removed=3)
    _combine(model.block.weight, model.block.bias, removed=3)  # the summed stream keeps the combination
    images = _images()
    prunable = PrunableModel(copy.deepcopy(model), images)
    stem = prunable.model.stem
    (root,) = [name for name, group in prunable.groups().items() if stem in {item.dep.target.module for item in group}]
    repaired = _remove_with_repair(model, images, root, 3, ("lstsq",))
    assert repaired.stem.out_channels == repaired.block.in_channels == repaired.last.in_channels == 3
    assert _gap(repaired, model, images) < 1e-5
    assert _gap(_remove_with_repair(model, images, root, 3, ()), model, images) > 1e-2


class _ConvBatchNorm(nn.Module):
    """A bias-free 1x1 consumer followed by a BatchNorm (torchvision's layout): the intercept lives in BN."""

    def __init__(self) -> None:
        super().__init__()
        self.producer = nn.Conv2d(3, 4, 3, padding=1)
        self.consumer = nn.Conv2d(4, 5, 1, bias=False)
        self.bn = nn.BatchNorm2d(5)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.bn(self.consumer(self.producer(x)))).flatten(1))


def _batch_norm_output(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    outputs: list[torch.Tensor] = []
    handle = model.bn.register_forward_hook(lambda module, args, output: outputs.append(output))
    with torch.no_grad():
        model(images)
    handle.remove()
    return outputs[0]


def test_two_steps_keep_a_batch_norm_intercept_and_the_channel_origins_exact() -> None:
    model = calibrate_batch_norms(_ConvBatchNorm()).eval()
    _combine(model.producer.weight, model.producer.bias, removed=3, constant=0.7)
    _combine(model.producer.weight, model.producer.bias, removed=2, constant=-0.4)
    images = _images()
    prunable = PrunableModel(copy.deepcopy(model), images)
    for chosen in ([Candidate(0.0, "producer", (3,), 1), Candidate(0.0, "consumer", (1,), 1)],
                   [Candidate(0.0, "producer", (2,), 1)]):  # fmt: skip
        repair = step_repair(("lstsq",), prunable.model, model, prunable.origins, images, ridge=EXACT)
        prunable.remove(chosen, repair=repair)
    assert prunable.origins["consumer"] == [0, 2, 3, 4] and prunable.origins["producer"] == [0, 1]
    # The kept outputs are the unpruned ones: the second step's intercept replaced the first's.
    expected = _batch_norm_output(model, images)[:, [0, 2, 3, 4]]
    assert (_batch_norm_output(prunable.model, images) - expected).abs().max() < 1e-4


def test_batch_norm_recalibration_reproduces_the_batch_statistics_of_the_references() -> None:
    model = calibrate_batch_norms(restrict_to_classes(models.resnet18(num_classes=10), [1, 3])).eval()
    images = _images(12, 32)
    in_training_mode = copy.deepcopy(model).train()  # normalises every BatchNorm with this batch's statistics
    inputs: list[torch.Tensor] = []
    handle = model.bn1.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    recalibrate_batch_norms(model, images)
    handle.remove()
    with torch.no_grad():
        expected = in_training_mode(images)
        assert (model.eval()(images) - expected).abs().max() < 1e-4
    first = inputs[0].transpose(0, 1).flatten(1)
    assert torch.allclose(model.bn1.running_mean, first.mean(1), atol=1e-5)
    assert torch.allclose(model.bn1.running_var, first.var(1, unbiased=False), rtol=1e-4)
    assert not model.training and model.bn1.momentum == in_training_mode.bn1.momentum  # settings restored


@pytest.mark.parametrize("architecture", ["resnet18", "mobilenet_v2"])
def test_a_repaired_masked_trial_equals_the_repaired_removal_and_restores_the_model(architecture: str) -> None:
    model = getattr(models, architecture)(num_classes=10)
    # In float64: the two paths order their sums differently, and MobileNetV2's depth spreads float32
    # rounding past 1e-5 on some CPUs; in float64 any gap above 1e-5 is a real difference.
    model = restrict_to_classes(calibrate_batch_norms(model), [1, 3]).eval().double()
    images = _images(12, 32).double()
    original = copy.deepcopy(model)
    prunable = PrunableModel(model, images, round_to=8)
    scores = {root: group for root, group in list(prunable.scored_by(_Ordered()).items())}
    chosen = prunable.select(prunable.candidates(scores), 400)
    repair = step_repair(("lstsq", "bn", "bias"), model, original, prunable.origins, images)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    pruned, unrepaired = prunable.copy(), prunable.copy()
    pruned.remove(chosen, repair=repair)
    unrepaired.remove(chosen)
    with torch.no_grad(), prunable.masked(chosen, repair=repair) as masked_model:
        masked = masked_model(images)
    with torch.no_grad():
        assert (masked - pruned.model(images)).abs().max() < 1e-5
        assert (masked - model(images)).abs().max() > 1e-3, "the removal must show: the test would prove nothing"
        assert (masked - unrepaired.model(images)).abs().max() > 1e-3, "the repair must show, or it proves nothing"
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    gone: dict[str, set[int]] = {}
    for candidate in chosen:
        gone.setdefault(candidate.root, set()).update(candidate.channels)
    for root, channels in gone.items():  # the unpruned model's indices: the removed ones are missing, in order
        assert pruned.origins[root] == [index for index in range(len(prunable.origins[root])) if index not in channels]


class _Ordered:
    """Judgement each channel by its index: deterministic candidates without any criterion under test."""

    def __call__(self, group: object) -> torch.Tensor:
        return torch.arange(len(group[0].idxs), dtype=torch.float32)  # type: ignore[index]


def test_reconstruction_brings_a_pruned_model_closer_to_the_unpruned_one(fashion_task: tuple) -> None:
    model, references, evaluation = fashion_task
    config = PruneConfig.paper(method="dpx", max_rate=0.5, step=0.25)
    results = {
        repairs: prune(model, references, [0, 6], config.replace(repair=repairs), progress=False)
        for repairs in [(), ("lstsq",)]
    }
    unpruned = restrict_to_classes(model, [0, 6]).eval()
    with torch.no_grad():
        target = unpruned(evaluation[0])
        errors = {key: float((result.model(evaluation[0]) - target).pow(2).mean()) for key, result in results.items()}
    assert errors[("lstsq",)] < 0.5 * errors[()], errors


@pytest.mark.parametrize("repair", [("stretch",), ("bn", "bn")])
def test_unknown_or_repeated_repairs_are_refused(repair: tuple) -> None:
    with pytest.raises(SettingError, match="repair"):
        PruneConfig.recommended(repair=repair)
