"""Activation compensation: removed channels leave their mean contribution behind (issue 8, direction 1).

When channels are removed, every layer that consumed them loses their input. If a
removed channel carried a (nearly) constant signal on the reference images, the
consumer can keep receiving its average: for a conv or linear consumer ``W``, the
lost contribution is ``W[:, removed] · mean_input[removed]`` (summed over the
kernel), a constant per output channel. It is folded into the consumer's bias, or,
for a bias-free conv followed by a BatchNorm (torchvision's layout), into that
BatchNorm's running mean. No training, no new parameters: the exported model has
exactly the pruned shapes.

Exact for channels that are constant on the references and convs without zero
padding; with padding, border positions see zeros instead of the mean, so the
correction is approximate there.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import torch
from torch import nn

InputMeans = dict[str, torch.Tensor]  # layer name -> mean of each input channel


@torch.no_grad()
def input_channel_means(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> InputMeans:
    """Mean over images and positions of every input channel of every conv and linear layer."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def recorder(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            dims = [0, *range(2, x.ndim)]
            sums[name] = sums[name] + x.sum(dim=dims).double() if name in sums else x.sum(dim=dims).double()
            counts[name] = counts.get(name, 0) + x.numel() // x.shape[1]

        return record

    consumers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    handles = [module.register_forward_pre_hook(recorder(name)) for name, module in consumers.items()]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: (sums[name] / counts[name]).float() for name in sums}


def following_batch_norms(model: nn.Module) -> dict[nn.Module, nn.BatchNorm2d]:
    """Each conv directly followed by a BatchNorm of its width in module order (torchvision's conv-bn pairs).

    The width check keeps a DenseNet layer's last conv from being paired with the next layer's first BatchNorm,
    which follows it in module order but normalises the concatenation of every earlier output."""
    leaves = [m for m in model.modules() if next(m.children(), None) is None or isinstance(m, nn.Conv2d)]
    return {
        first: second
        for first, second in itertools.pairwise(leaves)
        if isinstance(first, nn.Conv2d)
        and isinstance(second, nn.BatchNorm2d)
        and second.num_features == first.out_channels
    }


@torch.no_grad()
def lost_contribution(consumer: nn.Module, channels: list[int], means: torch.Tensor) -> torch.Tensor | None:
    """Per output channel, what ``consumer`` received on average from the removed input ``channels``."""
    index = torch.as_tensor(channels, dtype=torch.long, device=means.device)
    if isinstance(consumer, nn.Linear):
        return consumer.weight[:, index] @ means[index]
    if isinstance(consumer, nn.Conv2d) and consumer.groups == 1:
        return consumer.weight[:, index].sum(dim=(2, 3)) @ means[index]
    return None  # grouped/depthwise convs lose the matching outputs too: nothing to compensate


@torch.no_grad()
def compensate(model: nn.Module, removed_inputs: Mapping[str, list[int]], means: InputMeans) -> int:
    """Fold the lost mean contributions into biases (or following BatchNorms); returns how many layers changed.

    ``removed_inputs`` maps a consumer layer's name to the indices of its input
    channels about to be removed (indices before removal).
    """
    batch_norm_after = following_batch_norms(model)
    changed = 0
    for name, channels in removed_inputs.items():
        if name not in means or not channels:
            continue
        consumer = model.get_submodule(name)
        delta = lost_contribution(consumer, channels, means[name])
        if delta is None:
            continue
        bias = consumer.bias
        if isinstance(bias, torch.Tensor):
            bias.add_(delta.to(bias))
        elif isinstance(running_mean := getattr(batch_norm_after.get(consumer), "running_mean", None), torch.Tensor):
            running_mean.sub_(delta.to(running_mean))  # BN(y + d) with mean mu == BN(y) with mean mu - d
        else:
            continue
        changed += 1
    return changed
