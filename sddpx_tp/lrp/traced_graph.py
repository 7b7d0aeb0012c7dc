"""Canonizing any conv net by its traced graph: concatenations, residual sums and functional pooling.

Families without a hand-written record (VGG and AlexNet, DenseNet, GoogLeNet, Inception v3, MNASNet, RegNet,
a user's plain conv net) are traced with ``torch.fx``, and every operation *between* modules is
either passed, rewritten into a module that an LRP rule can see, or refused:

* passed, because their gradient is their LRP rule: a concatenation (relevance split by channel),
  a functional ReLU (the ReLU's own rule), a functional max pooling (winner takes all, as for the
  ``MaxPool2d`` module), and shape-only operations;
* rewritten: a sum of two activations (a residual) into zennit's ``Sum`` module (relevance split
  in proportion to each branch's contribution, zennit's Norm rule; a bare ``+`` would pass the
  whole relevance to both branches and double it at every block), and average pooling written as a
  function or as ``x.mean((2, 3))`` into a pooling module (the Norm rule, as for ``AvgPool2d``);
* held constant: torchvision's squeeze-excitation gates ``x * g(x)`` (RegNetY), traced whole and made the
  signal-take-all rule's constant weight, as :mod:`sddpx_tp.lrp.canonizers` does for MobileNetV3;
* never looked at: operations whose inputs are only the model's input and constants (GoogLeNet's
  and Inception's ``transform_input``), because no relevance is read below the first conv;
* refused, naming the operation: anything else (a product of activations, a channel split or
  shuffle, a layer scale).

A BatchNorm is folded into the conv or linear layer whose output is its only input (found in the
graph, so a BatchNorm after a concatenation, as in DenseNet, is never folded into whichever conv
happens to precede it in module order); an unfolded BatchNorm passes relevance unchanged (zennit's
Pass rule for BatchNorm, and the fast engine's).

The rewritten graph runs the model's own modules: :class:`TracedGraphCanonizer` makes it the model's
``forward`` for the duration and adds the new modules as the model's children, so both relevance
engines and zennit's composites see them; removing it restores the model exactly.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.ops.misc import SqueezeExcitation
from zennit.canonizers import Canonizer, NamedMergeBatchNorm
from zennit.layer import Sum

from sddpx_tp.errors import UnsupportedArchitectureError
from sddpx_tp.lrp.canonizers import ConstantGate, make_exact_identity

# Functions and tensor methods that pass relevance as their gradient does.
_PASSED_FUNCTIONS = {
    torch.flatten,
    torch.reshape,
    operator.getitem,
    getattr,
    torch.cat,
    F.relu,
    torch.relu,
    F.max_pool2d,
    operator.floordiv,
}  # fmt: skip  (floordiv: of sizes, for a reshape)
_PASSED_METHODS = {"view", "reshape", "flatten", "size", "contiguous", "relu"}
_SUMS = {operator.add, operator.iadd, torch.add}
# Said when an operation is refused: what it is and why no rule here splits it.
_REASONS = {
    "mul": "a product of two activations (a gate or a layer scale) outside the gate blocks sddpx-tp knows",
    "chunk": "a channel split, which torch-pruning cannot keep consistent with the shuffle that follows",
    "split": "a channel split, which torch-pruning cannot keep consistent with the shuffle that follows",
    "transpose": "a channel shuffle, which torch-pruning cannot keep consistent",
    "permute": "a permutation of the channel axis (LayerNorm over channels), which has no rule here yet",
}
SUPPORTED_GRAPHS = "concatenations, residual sums, pooling, ReLU and shape operations between modules"


class SpatialMean(nn.AdaptiveAvgPool2d):
    """``x.mean((2, 3))`` as a module: global average pooling that returns ``(N, C)``."""

    def __init__(self) -> None:
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).flatten(1)


class ConstantSqueezeExcitation(nn.Module):
    """A torchvision squeeze-excitation gate ``x * g(x)`` with ``g`` a constant weight (signal-take-all): all
    relevance passes to ``x`` through a :class:`~sddpx_tp.lrp.canonizers.ConstantGate`, none to the gate's layers
    (which stay where they are: the gate is held, not registered twice)."""

    def __init__(self, gate: SqueezeExcitation) -> None:
        super().__init__()
        self.held: list[SqueezeExcitation] = [gate]  # in a list: not a child
        self.multiply = ConstantGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.multiply.scale = self.held[0]._scale(x).detach()
        return self.multiply(x)


class _GateTracer(fx.Tracer):
    """fx's tracer, with torchvision's squeeze-excitation gates kept whole (then made constant, as above)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, SqueezeExcitation) or super().is_leaf_module(module, qualified_name)


def _has_gates(model: nn.Module) -> bool:
    return any(isinstance(module, SqueezeExcitation) for module in model.modules())


def _name(target: Any) -> str:
    return str(getattr(target, "__name__", target))


def _bound(function: Any, node: fx.Node) -> dict[str, Any]:
    arguments = inspect.signature(function).bind(*node.args, **node.kwargs)
    arguments.apply_defaults()
    return dict(arguments.arguments)


def _pooling_module(node: fx.Node) -> nn.Module | None:
    """The module that computes ``node``'s average pooling, or None if it is not one."""
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        return nn.AdaptiveAvgPool2d(_bound(lambda input, output_size: None, node)["output_size"])
    if node.op == "call_function" and node.target is F.avg_pool2d:
        options = _bound(
            lambda input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
            divisor_override=None: None, node,
        )  # fmt: skip
        options.pop("input")
        return nn.AvgPool2d(**options)
    if node.op == "call_method" and node.target == "mean":
        options = _bound(lambda input, dim, keepdim=False, dtype=None: None, node)
        dims = options["dim"]
        if sorted(int(dim) % 4 for dim in (dims if isinstance(dims, (list, tuple)) else [dims])) == [2, 3]:
            return nn.AdaptiveAvgPool2d(1) if options["keepdim"] else SpatialMean()
    return None


def _identity_dropout(node: fx.Node) -> bool:
    """A functional dropout that the eval-mode trace shows is the identity (``training=False``, as timm's heads pass
    it); one that drops in eval mode too (``F.dropout(x, 0.5)``: training defaults to True) is not."""
    if node.op != "call_function" or node.target is not F.dropout:
        return False
    options = _bound(lambda input, p=0.5, training=True, inplace=False: None, node)
    return options["training"] is False or options["p"] == 0


def _on_input_only(node: fx.Node, constant: set[fx.Node]) -> bool:
    return all(argument in constant for argument in node.all_input_nodes)


def canonical_graph(model: nn.Module) -> tuple[fx.GraphModule, dict[str, nn.Module]]:
    """``model`` traced, with its residual sums and average pooling rewritten into modules.

    Returns the graph module (it calls ``model``'s own modules) and the new modules by name.
    Raises :class:`UnsupportedArchitectureError` naming an operation no rule here makes correct.
    """
    kind = type(model).__name__
    was_training = model.training
    model.eval()  # the graph relevance runs through: training-only branches are not in it
    try:
        traced = fx.GraphModule(model, _GateTracer().trace(model)) if _has_gates(model) else fx.symbolic_trace(model)
    except Exception as error:
        raise UnsupportedArchitectureError(
            f"cannot trace {kind} to check how relevance passes between its layers ({error})"
        ) from None
    finally:
        model.train(was_training)
    _refuse_layers_that_never_run(traced, model)
    graph = traced.graph
    constant: set[fx.Node] = set()  # the input and what is computed from it and from constants alone
    added: dict[str, nn.Module] = {}
    for node in list(graph.nodes):
        if node.op in ("placeholder", "get_attr") or (node.op in ("call_function", "call_method")
                                                      and _on_input_only(node, constant)):  # fmt: skip
            constant.add(node)
            continue
        if node.op == "call_module" and isinstance(traced.get_submodule(str(node.target)), SqueezeExcitation):
            gate = ConstantSqueezeExcitation(traced.get_submodule(str(node.target)))
            name = f"canonizer_gate_{len(added)}"
            traced.add_submodule(name, gate)
            added[name] = gate
            node.target = name
            continue
        if node.op in ("call_module", "output"):
            continue
        module = _pooling_module(node)
        is_sum = node.op == "call_function" and node.target in _SUMS
        if is_sum and len(node.args) == 2 and all(isinstance(argument, fx.Node) for argument in node.args):
            module = Sum()
        if module is not None:
            name = f"canonizer_{type(module).__name__.lower()}_{len(added)}"
            traced.add_submodule(name, module)
            added[name] = module
            with graph.inserting_before(node):
                source = node.args[0]
                if isinstance(module, Sum):
                    source = graph.call_function(torch.stack, (tuple(node.args),), {"dim": -1})
                replacement = graph.call_module(name, (source,))
            node.replace_all_uses_with(replacement)
            graph.erase_node(node)
            continue
        passed = node.target in _PASSED_FUNCTIONS if node.op == "call_function" else node.target in _PASSED_METHODS
        passed = passed or _identity_dropout(node)
        if not passed:
            operation = _name(node.target)
            reason = _REASONS.get(operation, "an operation between activations that has no LRP rule here")
            raise UnsupportedArchitectureError(
                f"{kind} computes {operation} at {node.name!r}: {reason}; supported: {SUPPORTED_GRAPHS}"
            )
    traced.recompile()
    return traced, added


def _refuse_layers_that_never_run(traced: fx.GraphModule, model: nn.Module) -> None:
    called = set()
    for node in traced.graph.nodes:
        if node.op == "call_module":  # a whole gate is one call: its layers run inside it
            inside = model.get_submodule(str(node.target)).named_modules()
            called |= {f"{node.target}.{inner}".rstrip(".") for inner, _ in inside}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in called:
            raise UnsupportedArchitectureError(
                f"layer {name!r} of {type(model).__name__} never runs in eval mode (a training-only auxiliary "
                "head?): build the model without it (torchvision: aux_logits=False)"
            )


def batch_norm_pairs(traced: fx.GraphModule) -> list[tuple[list[str], str]]:
    """(layer, BatchNorm) by qualified name, for each BatchNorm whose only input is a conv's or linear layer's
    output that nothing else reads: the BatchNorms that can be folded."""
    modules = dict(traced.named_modules())
    pairs = []
    for node in traced.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.modules.batchnorm._BatchNorm):
            continue
        (source,) = node.all_input_nodes
        if (source.op == "call_module" and isinstance(modules[source.target], (nn.Conv2d, nn.Linear))
                and len(source.users) == 1):  # fmt: skip
            pairs.append(([str(source.target)], str(node.target)))
    return pairs


class ExactNamedMergeBatchNorm(NamedMergeBatchNorm):
    """zennit's merge by name, with the emptied BatchNorm an exact identity (zennit leaves ``1/sqrt(1+eps)``)."""

    @staticmethod
    def merge_batch_norm(modules: list[nn.Module], batch_norm: nn.BatchNorm2d) -> None:
        NamedMergeBatchNorm.merge_batch_norm(modules, batch_norm)
        make_exact_identity(batch_norm)


class TracedGraphCanonizer(Canonizer):
    """Runs the model through its canonical graph (:func:`canonical_graph`, traced once) while applied."""

    def __init__(self, traced: fx.GraphModule, added: dict[str, nn.Module]) -> None:
        super().__init__()
        self.traced, self.added = traced, added
        self.model: nn.Module | None = None

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        instance = TracedGraphCanonizer(self.traced, self.added)
        instance.register(root_module)
        return [instance]

    def register(self, model: nn.Module) -> None:
        for name, module in self.added.items():
            model.add_module(name, module)  # a child of the model, so composites and hooks find it
        model.forward = self.traced.forward
        self.model = model

    def remove(self) -> None:
        assert self.model is not None, "removed after register"
        for name in self.added:
            delattr(self.model, name)
        del self.model.forward
        self.model = None


def traced_graph_canonizers(model: nn.Module) -> list[Canonizer]:
    """The canonizers of a traced family: BatchNorms folded where the graph allows, then the canonical graph.

    The graph calls ``model``'s own modules: the canonizers are for this model (and it must not be pruned
    between their uses: build them again after a change)."""
    traced, added = canonical_graph(model)
    return [ExactNamedMergeBatchNorm(batch_norm_pairs(traced)), TracedGraphCanonizer(traced, added)]
