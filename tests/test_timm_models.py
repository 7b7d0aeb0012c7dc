"""timm's CNNs by ``timm:NAME`` (issue 32): the fused timm layers rewritten as plain torch layers without changing a
single output, relevance through them checked against LRP computed by hand on a small timm-built net, then each
family's smallest member canonized, conserved, pruned (masked = physical) and exported by name. timm is an optional
extra that `make install` installs; without it these tests fail, as they should for a feature that is promised."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from family_checks import (
    assert_engines_agree,
    assert_lowest_channels_masked_as_removed,
    assert_prunes_and_exports_by_name,
    assert_relevance_conserved,
)
from helpers import calibrate_batch_norms
from safetensors.torch import save_file
from timm.layers import activations
from timm.layers.linear import Linear
from timm.layers.norm_act import BatchNormAct2d
from timm.layers.squeeze_excite import SEModule
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from sddpx_tp.cli import main
from sddpx_tp.errors import SettingError, UnsupportedArchitectureError
from sddpx_tp.lrp.architectures import TRACED_GRAPH, support_for
from sddpx_tp.lrp.relevance import RelevanceConfig, filter_relevance
from sddpx_tp.models.registry import create_model
from sddpx_tp.models.timm_models import plain_layers

ENGINES = ["fast", "zennit"]


class _TinyTimmNet(nn.Module):
    """conv, timm's BatchNorm + SiLU, timm's squeeze-excitation gate, 1x1 conv, BatchNorm + ReLU, mean, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = BatchNormAct2d(4, act_layer=nn.SiLU)
        self.se = SqueezeExcite(4, rd_channels=2)
        self.conv2 = nn.Conv2d(4, 5, 1)
        self.bn2 = BatchNormAct2d(5, act_layer=nn.ReLU)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv2(self.se(self.bn1(self.conv1(x)))))
        return self.head(x.mean((2, 3)))


def _tiny_net() -> _TinyTimmNet:
    torch.manual_seed(0)
    model = _TinyTimmNet().double()
    for batch_norm in (model.bn1, model.bn2):  # statistics that are not the identity, so folding them matters
        batch_norm.running_mean.uniform_(-0.5, 0.5)
        batch_norm.running_var.uniform_(0.5, 2.0)
        batch_norm.weight.data.uniform_(0.5, 1.5)
        batch_norm.bias.data.uniform_(0.1, 0.5)
    model.bn2.bias.data.uniform_(2.0, 3.0)  # every channel active somewhere: the mean's shares are never 0 / 0
    model.head.bias.data.fill_(2.0)  # logits well away from zero: epsilon's stabilizer is negligible
    return model.eval()


def _hand_relevance(model: _TinyTimmNet, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """LRP by hand, sum of |R| per filter: epsilon at the head, the mean's Norm rule, ReLU and SiLU passed, the gate
    held constant (its product passes relevance to x whole), and z+ at the 1x1 conv with its BatchNorm folded in
    (positive weights and bias on the positive inputs, negative weights on the negative ones)."""
    with torch.no_grad():
        bn1, bn2 = model.bn1[0], model.bn2[0]  # rewritten: (BatchNorm2d, activation)
        gated = model.se(F.silu(F.batch_norm(model.conv1(images), bn1.running_mean, bn1.running_var, bn1.weight,
                                             bn1.bias, eps=bn1.eps)))  # fmt: skip
        scale = bn2.weight / torch.sqrt(bn2.running_var + bn2.eps)
        weight = model.conv2.weight[:, :, 0, 0] * scale[:, None]  # [out, in]
        bias = (model.conv2.bias - bn2.running_mean) * scale + bn2.bias
        folded = torch.einsum("oi,nihw->nohw", weight, gated) + bias[None, :, None, None]
        activation = folded.clamp(min=0)
        pooled = activation.mean((2, 3))
        logits = model.head(pooled)
        start = torch.zeros_like(logits).scatter_(1, labels[:, None], 1.0)
        pooled_relevance = pooled * ((start / logits) @ model.head.weight)
        conv2_relevance = activation / activation.sum((2, 3), keepdim=True) * pooled_relevance[:, :, None, None]
        positive, negative = gated.clamp(min=0), gated.clamp(max=0)
        w_plus, w_minus = weight.clamp(min=0), weight.clamp(max=0)
        z_plus = (torch.einsum("oi,nihw->nohw", w_plus, positive) + torch.einsum("oi,nihw->nohw", w_minus, negative)
                  + bias.clamp(min=0)[None, :, None, None])  # fmt: skip
        ratio = conv2_relevance / z_plus
        conv1_relevance = positive * torch.einsum("oi,nohw->nihw", w_plus, ratio) + negative * torch.einsum(
            "oi,nohw->nihw", w_minus, ratio
        )
    return {"conv1": conv1_relevance.abs().sum((0, 2, 3)), "conv2": conv2_relevance.abs().sum((0, 2, 3))}


class _TimmGateNet(nn.Module):
    """timm's SEModule (RegNet's, SE-ResNet's gate) and timm's own activation classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.act = activations.HardSwish()
        self.se = SEModule(8, rd_channels=4, gate_layer=activations.Sigmoid)
        self.head = Linear(8, 3)  # timm's own Linear (F.linear inside)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.se(self.act(self.conv(x))).mean((2, 3)))


def _rewritten_with_the_same_outputs(model: nn.Module) -> nn.Module:
    images = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = model(images)
        plain_layers(model)
        torch.testing.assert_close(model(images), before, rtol=0, atol=1e-12)
    return model


def test_timm_gates_activations_and_linear_layers_are_rewritten_with_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = _rewritten_with_the_same_outputs(_TimmGateNet().double().eval())
    assert type(model.act) is nn.Hardswish and type(model.se.scale_activation) is nn.Sigmoid
    assert isinstance(model.se, SqueezeExcitation) and type(model.head) is nn.Linear
    assert support_for(model) is TRACED_GRAPH


class _FunctionalDropout(nn.Module):
    def __init__(self, training: bool) -> None:
        super().__init__()
        self.conv, self.head, self.training_flag = nn.Conv2d(3, 4, 3), nn.Linear(4, 2), training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.dropout(self.conv(x).mean((2, 3)), 0.5, training=self.training_flag))


def test_a_functional_dropout_is_passed_only_where_eval_mode_makes_it_the_identity() -> None:
    assert support_for(_FunctionalDropout(training=False).eval()) is TRACED_GRAPH
    with pytest.raises(UnsupportedArchitectureError, match="computes dropout"):
        support_for(_FunctionalDropout(training=True).eval())  # drops in eval mode too


def test_timm_layers_are_rewritten_as_plain_torch_layers_with_the_same_outputs() -> None:
    model = _rewritten_with_the_same_outputs(_tiny_net())
    assert isinstance(model.bn1, nn.Sequential) and isinstance(model.bn1[0], nn.BatchNorm2d)
    assert isinstance(model.se, SqueezeExcitation) and model.se.fc1.out_channels == 2
    assert not any(isinstance(module, (BatchNormAct2d, SqueezeExcite)) for module in model.modules())


@pytest.mark.parametrize("engine", ENGINES)
def test_relevance_through_timm_layers_equals_lrp_computed_by_hand(engine: str) -> None:
    model = plain_layers(_tiny_net())
    images, labels = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    assert support_for(model) is TRACED_GRAPH
    found = filter_relevance(model, (images, labels), RelevanceConfig(engine=engine))  # type: ignore[arg-type]
    expected = _hand_relevance(model, images, labels)
    for name in ("conv1", "conv2"):
        torch.testing.assert_close(found[name], expected[name], rtol=1e-5, atol=1e-8)


def _timm(name: str, size: int = 64) -> nn.Module:
    model, _ = create_model(f"timm:{name}", num_classes=10, random_init=True)
    return calibrate_batch_norms(model, size=size).eval()


# timm name: a cut of the graph whose outputs together carry all the relevance (the last block's output; a conv's
# output is its BatchNorm's, which is folded into it)
FAMILIES = {
    "mobilenetv3_small_100": ["blocks.5.0.conv"],  # squeeze-excitation gated by a hard sigmoid, hardswish
    "efficientnet_b0": ["blocks.6.0.conv_pwl"],  # squeeze-excitation gated by a sigmoid, SiLU
    "regnety_002": ["s4.b7.act3"],  # grouped convs, timm's SEModule, residual sums
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_timm_family_is_canonized_without_changing_its_outputs_and_the_engines_agree(name: str) -> None:
    torch.manual_seed(0)
    reference = timm.create_model(name, num_classes=10).eval()
    torch.manual_seed(0)
    model, _ = create_model(f"timm:{name}", num_classes=10, random_init=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=0, atol=1e-6)
    model = calibrate_batch_norms(model, size=64).eval().double()
    assert support_for(model) is TRACED_GRAPH
    labels = torch.tensor([0, 3])
    assert_engines_agree(model, images.double(), labels)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("engine", ENGINES)
def test_relevance_is_conserved_from_the_head_to_the_last_block(name: str, engine: str) -> None:
    assert_relevance_conserved(_timm(name), FAMILIES[name], 64, engine)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_masked_removal_equals_physical_removal(name: str) -> None:
    assert_lowest_channels_masked_as_removed(_timm(name), torch.randn(2, 3, 64, 64), 200)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["timm:mobilenetv3_small_100", "timm:regnety_002"])
def test_the_command_line_prunes_and_exports_a_timm_model_by_name(data: dict[str, Path], tmp_path: Path,
                                                                  name: str) -> None:  # fmt: skip
    assert_prunes_and_exports_by_name(data["refs"], tmp_path / "run", name)


def test_weights_come_from_a_timm_state_dict_file_read_without_running_code(tmp_path: Path) -> None:
    torch.manual_seed(3)
    trained = timm.create_model("mobilenetv3_small_050", num_classes=4).eval()
    weights = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in trained.state_dict().items()}, str(weights))
    model, spec = create_model("timm:mobilenetv3_small_050", weights=weights, num_classes=4)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), trained(images), rtol=0, atol=1e-6)
    assert spec.input_size == 224 and spec.mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "timm:efficientnet_bX", "--random-init"], "timm has no model 'efficientnet_bX'"),
        (["--model", "timm:mobilenetv3_small_050"], "weights are not in the local cache (nothing is downloaded)"),
        (["--model", "timm:tf_efficientnet_b0", "--random-init"], "cannot trace EfficientNet"),
        (["--model", "timm:mixnet_s", "--random-init"], "a channel split"),
        (["--model", "timm:resnet18.no_such_tag", "--random-init"], "timm cannot build resnet18.no_such_tag"),
        (["--model", "timm:", "--random-init"], "timm has no model ''"),
    ],
)
def test_a_timm_model_that_cannot_be_used_is_refused_in_one_line(
    data: dict[str, Path], tmp_path: Path, arguments: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever this machine's Hugging Face cache holds: nothing, as on a fresh machine.
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *arguments, **options: None)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["prune", *arguments, "--refs", str(data["refs"]), "--out", str(run)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not run.exists()


def test_without_timm_the_name_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sddpx_tp.models.timm_models.timm_available", lambda: False)
    with pytest.raises(SettingError, match=r"pip install 'sddpx-tp\[timm\]'"):
        create_model("timm:resnet18", random_init=True)


def test_the_refusal_names_the_timm_layer_without_a_rule() -> None:
    model, _ = create_model("timm:resnet18", random_init=True, num_classes=10)
    model.layer1[0].act1 = nn.Softplus()
    with pytest.raises(UnsupportedArchitectureError, match=r"'layer1\.0\.act1' of type Softplus"):
        support_for(model)
