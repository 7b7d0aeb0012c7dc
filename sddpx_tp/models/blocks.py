"""Residual blocks that can be removed whole, and what removing one leaves (issue 31, part 3).

A block with an identity shortcut computes ``out = act(x + branch(x))``. Removed, it leaves its
shortcut, ``out = x``, which is exactly the block whose branch outputs zero:

* torchvision's ResNet ``BasicBlock`` and ``Bottleneck`` without a downsample: ``act`` is a ReLU,
  and the block's input is itself the output of a ReLU (the stem's, through max pooling, or the
  block before's), so ``relu(x) = x``;
* torchvision's MobileNetV2 ``InvertedResidual`` with ``use_res_connect`` and EfficientNet-Lite's
  ``MBConvBlock`` with its skip (stride 1, as many channels out as in): no activation after the sum.

The branch ends in a BatchNorm in every case; zeroing its weight and bias zeroes the branch
(:func:`zero_branch`, what a trial does in place), and :func:`skip_block` puts a
:class:`SkippedBlock` in the block's place (what a removal does). The two compute the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock, Bottleneck


class SkippedBlock(nn.Identity):
    """What a removed residual block leaves: its shortcut, the identity (an ``nn.Identity``, so relevance and
    every check treat it as one). Extra arguments (EfficientNet-Lite passes its blocks a drop-connect rate) are
    accepted and ignored."""

    def forward(self, input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return input


@dataclass(frozen=True)
class Block:
    """A removable block: its module name and the BatchNorm that ends its residual branch."""

    name: str
    branch_end: str


def _branch_end(name: str, module: nn.Module) -> str | None:
    """The last BatchNorm of ``module``'s residual branch, if it is a block with an identity shortcut."""
    if isinstance(module, BasicBlock) and module.downsample is None:
        return f"{name}.bn2"
    if isinstance(module, Bottleneck) and module.downsample is None:
        return f"{name}.bn3"
    if isinstance(module, InvertedResidual) and module.use_res_connect and isinstance(module.conv[-1], nn.BatchNorm2d):
        return f"{name}.conv.{len(module.conv) - 1}"
    if type(module).__name__ == "MBConvBlock":  # efficientnet_lite_pytorch: its forward's own skip condition
        arguments = module._block_args  # its forward skips only when stride == 1 (an int: a list [1] is not)
        has_skip = module.id_skip and arguments.stride == 1 and arguments.input_filters == arguments.output_filters
        return f"{name}._bn2" if has_skip else None
    return None


def removable_blocks(model: nn.Module) -> list[Block]:
    """Every block of ``model`` that can be removed whole, in the model's order."""
    found = []
    for name, module in model.named_modules():
        end = _branch_end(name, module)
        if end is not None:
            found.append(Block(name, end))
    return found


def zero_branch(model: nn.Module, block: Block) -> dict[str, torch.Tensor]:
    """Zero ``block``'s branch in place (its last BatchNorm's weight and bias); returns what restores it."""
    norm = model.get_submodule(block.branch_end)
    assert isinstance(norm, nn.BatchNorm2d)
    saved = {"weight": norm.weight.detach().clone(), "bias": norm.bias.detach().clone()}
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.zero_()
    return saved


def restore_branch(model: nn.Module, block: Block, saved: dict[str, torch.Tensor]) -> None:
    norm = model.get_submodule(block.branch_end)
    assert isinstance(norm, nn.BatchNorm2d)
    with torch.no_grad():
        norm.weight.copy_(saved["weight"])
        norm.bias.copy_(saved["bias"])


def skip_block(model: nn.Module, name: str) -> None:
    """Replace the block ``name`` by its shortcut, in place."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential | nn.ModuleList) and child.isdigit():
        parent[int(child)] = SkippedBlock()
    else:
        setattr(parent, child, SkippedBlock())


def skipped_blocks(model: nn.Module) -> list[str]:
    """The names of the blocks removed from ``model``."""
    return [name for name, module in model.named_modules() if isinstance(module, SkippedBlock)]
