"""The fast LRP engine: the z+, epsilon and pass rules built into the forward pass.

Each conv returns its ordinary output ``z`` whose gradient flows through the rule's
carrier, ``z+ * stop_grad(z / (z+ + eps))`` (z+ rule); each linear, pooling and
residual sum through ``z * stop_grad(z / stabilize(z))`` (epsilon, norm). Then
``activation * gradient`` is the LRP relevance at every layer, and one ordinary
backward gives all of it: one forward, one forward with clamped weights, one
backward. :mod:`sddpx_tp.lrp.relevance` supplies the canonizers and aggregates.

Where the time goes (EfficientNet-Lite0 at 224 px, profiled): the backward's
element-wise rule arithmetic, not the convolutions. So the rule's backward is one
division and one product in place, a z+ carrier (never negative) skips zennit's
sign-aware stabilizer (for a non-negative value it is exactly ``+ eps``), an input
with no negative entries skips the clamps, and the pass runs in channels_last,
where the depthwise and 1x1 convs of mobile networks are much faster on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, TypeVar

import torch
from torch import nn
from zennit.core import stabilize
from zennit.layer import Sum
from zennit.types import Activation, AvgPool, BatchNorm

STABILIZER = 1e-6
# What the rule's carrier is known to be: >= 0 (z+), any sign, or any sign with a value that is 0
# wherever the carrier is <= 0 (a ReLU6's output against its input).
CarrierSign = Literal["nonnegative", "signed", "rectified"]
Reduced = TypeVar("Reduced")


def fast_relevance(
    model: nn.Module,
    images: torch.Tensor,
    start: Callable[[torch.Tensor], torch.Tensor],
    layers: Mapping[str, nn.Module],
    merged_batch_norms: set[nn.Module],
    reduce: Callable[[torch.Tensor], Reduced],
) -> dict[str, Reduced]:
    """``reduce`` of the relevance at the output of each of ``layers``, for one batch.

    ``start(logits)`` is the relevance at the output; ``merged_batch_norms`` are the
    BatchNorms a canonizer has folded into their convs (they must not pass relevance
    on their own). The model must already be canonized and in eval mode.
    """
    results: dict[str, Reduced] = {}
    rules = _FastRules(model, merged_batch_norms)
    # Registered after the rules so each capture sees the rule's output tensor.
    handles = [module.register_forward_hook(_capture(name, rules, results, reduce)) for name, module in layers.items()]
    try:
        logits = model(images.contiguous(memory_format=torch.channels_last) if images.ndim == 4 else images)
        relevance = start(logits)
        # Gradient convention: relevance = activation * gradient.
        safe_logits = torch.where(logits == 0, torch.ones_like(logits), logits.detach())
        torch.autograd.backward(logits, relevance / safe_logits)
    finally:
        for handle in handles:
            handle.remove()
        rules.remove()
        rules.stash.clear()
        rules.values.clear()
    return results


@contextlib.contextmanager
def channels_last(model: nn.Module) -> Iterator[None]:
    """The model's 4-d parameters in channels_last for the duration, then the very same tensors back.

    (Parameters must not require gradients: their data is swapped, not copied into.)"""
    saved = [(parameter, parameter.data) for parameter in model.parameters() if parameter.ndim == 4]
    try:
        for parameter, data in saved:
            parameter.data = data.contiguous(memory_format=torch.channels_last)
        yield
    finally:
        for parameter, data in saved:
            parameter.data = data


class _FastRules:
    """Forward hooks that build z+ (conv), epsilon (linear) and norm (pool, sum) into the autograd graph."""

    def __init__(self, model: nn.Module, merged_batch_norms: set[nn.Module]) -> None:
        self.stash: dict[nn.Module, torch.Tensor] = {}
        self.values: dict[nn.Module, torch.Tensor] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.inplace_flags: list[nn.Module] = []
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                self._hook(module, self._conv_output)
            elif isinstance(module, (nn.Linear, AvgPool, Sum)):
                # Epsilon (linear) and Norm (pooling, residual sum) share one form.
                self._hook(module, self._stabilized_output)
            elif (isinstance(module, Activation) and not isinstance(module, nn.ReLU)) or (
                isinstance(module, BatchNorm) and module not in merged_batch_norms
            ):
                # ReLU's own gradient already passes relevance; other activations and
                # unmerged BatchNorms must pass it unchanged (zennit's Pass rule).
                self._hook(module, self._pass_output)
                if getattr(module, "inplace", False):
                    module.inplace = False
                    self.inplace_flags.append(module)

    def _hook(self, module: nn.Module, output_hook: Callable[..., torch.Tensor]) -> None:
        self.handles.append(module.register_forward_pre_hook(self._detach_input))
        self.handles.append(module.register_forward_hook(output_hook))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        for module in self.inplace_flags:
            module.inplace = True  # type: ignore[assignment]

    def _detach_input(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        # The module's own forward then builds no graph; the rule's forward carries the gradient.
        self.stash[module] = inputs[0]
        return (inputs[0].detach(), *inputs[1:])

    def _conv_output(self, module: nn.Conv2d, inputs: object, output: torch.Tensor) -> torch.Tensor:
        x = self.stash.pop(module)
        self.values[module] = output
        if not x.requires_grad:  # first layer: nothing below it needs relevance
            return _graph_start(output)
        weight, bias = module.weight, module.bias
        positive = {"weight": weight.clamp(min=0), "bias": None if bias is None else bias.clamp(min=0)}
        if not bool((x < 0).any()):  # after a ReLU: clamping the input would change nothing
            return _value_with_gradient_of(output, _forward_with(module, positive, x), "nonnegative")
        negative = {"weight": weight.clamp(max=0), "bias": None if bias is None else torch.zeros_like(bias)}
        z_plus = _forward_with(module, positive, x.clamp(min=0)) + _forward_with(module, negative, x.clamp(max=0))
        return _value_with_gradient_of(output, z_plus, "nonnegative")

    def _stabilized_output(self, module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        x = self.stash.pop(module)
        self.values[module] = output
        if not x.requires_grad:
            return _graph_start(output)
        z = module.forward(x)  # the plain forward again, now with a graph: epsilon keeps the weights
        return _value_with_gradient_of(output, z, "signed")

    def _pass_output(self, module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        x = self.stash.pop(module)
        if not x.requires_grad:
            return _graph_start(output)
        # Gradient times output/input: relevance passes through unchanged.
        return _value_with_gradient_of(output, x, "rectified" if isinstance(module, nn.ReLU6) else "signed")


def _graph_start(output: torch.Tensor) -> torch.Tensor:
    # A non-leaf, so that a following in-place ReLU is allowed on it.
    return output.detach().requires_grad_(True).clone()


def _forward_with(module: nn.Module, parameters: dict[str, torch.Tensor | None], x: torch.Tensor) -> torch.Tensor:
    """``module.forward(x)`` with some parameters replaced (no hooks run: we are inside one)."""
    saved = {name: module._parameters[name] for name in parameters}
    try:
        module._parameters.update(parameters)  # type: ignore[arg-type]
        return module.forward(x)
    finally:
        module._parameters.update(saved)


class _RuleGradient(torch.autograd.Function):
    """Forward: ``value``. Backward: the gradient goes to ``carrier``, times ``value / stabilize(carrier)``.

    With ``carrier`` the layer's rule-modified forward (z+ >= 0, or z itself for
    epsilon) this is exactly the LRP rule in the "relevance = activation * gradient"
    convention, at the cost of one fused expression in the backward pass.
    """

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, carrier: torch.Tensor, sign: CarrierSign) -> torch.Tensor:
        ctx.save_for_backward(value, carrier)
        ctx.sign = sign
        return value.clone()  # a fresh tensor: a later in-place ReLU must not touch `value`

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        value, carrier = ctx.saved_tensors
        # zennit's stabilize adds eps times sign (1 at zero): for a carrier >= 0 that is carrier + eps.
        if ctx.sign == "nonnegative":
            denominator = carrier + STABILIZER
        elif ctx.sign == "rectified":
            # The value is 0 wherever the carrier is <= 0 (a ReLU6 and its input), so the quotient is 0
            # there whatever the denominator; elsewhere it is carrier + eps, as stabilize gives. Two
            # element-wise passes instead of stabilize's five: the pass rule at ReLU6 was a sixth of
            # EfficientNet-Lite0's relevance time.
            denominator = carrier.clamp(min=0).add_(STABILIZER)
        else:
            denominator = stabilize(carrier, STABILIZER)
        return None, torch.div(value, denominator, out=denominator).mul_(grad), None


def _value_with_gradient_of(value: torch.Tensor, carrier: torch.Tensor, sign: CarrierSign) -> torch.Tensor:
    return _RuleGradient.apply(value.detach(), carrier, sign)


def _capture(name: str, rules: _FastRules, results: dict[str, Reduced], reduce: Callable[[torch.Tensor], Reduced]
             ) -> Callable[..., None]:  # fmt: skip
    def forward_hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        # The value before any in-place op that follows (VGG's ReLU(inplace=True)).
        value = rules.values.get(module, output).detach()
        if value is output:
            value = value.clone()

        def on_grad(grad: torch.Tensor) -> None:
            results[name] = reduce(value * grad)

        output.register_hook(on_grad)

    return forward_hook
